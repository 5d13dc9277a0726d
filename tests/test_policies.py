"""Vectorised stopping policies against slow per-question Python references, exactly.

Random logs use scores on a grid of 1/8 (sums are exact in floating point, and ties in
best score and in weighted votes are frequent), ragged sample counts (including questions
with no sample) and answers with missing values (-1).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import optscale_jax
from optscale_jax import estimation, policies

Q, K = 40, 12


def random_log(seed, dtype=np.float64, codes=4, grid=8):
    rng = np.random.default_rng(seed)
    available = rng.integers(0, K + 1, Q)
    available[:3] = (0, 1, K)  # always cover the edge cases
    mask = np.arange(K) < available[:, None]
    scores = rng.integers(0, grid + 1, (Q, K)) / grid
    answers = rng.integers(-1, codes, (Q, K))
    # Some questions with one dominant answer, so that early stops happen.
    dominant = rng.random(Q) < 0.4
    answers[dominant] = np.where(rng.random((dominant.sum(), K)) < 0.85, 1, answers[dominant])
    correct = rng.random((Q, K)) < 0.3
    scores = np.where(mask, scores, 0).astype(dtype)
    answers = np.where(mask, answers, -1).astype(np.int32)
    return scores, answers, correct & mask, mask


# --- references: one question at a time, plain Python ----------------------------------------


def ref_best(scores, drawn):
    best = 0
    for i in range(drawn):
        if scores[i] > scores[best]:
            best = i
    return best


def ref_vote(answers, drawn, weights=None):
    tally, first = {}, {}
    for i in range(drawn):
        a = answers[i]
        if a < 0:
            continue
        tally[a] = tally.get(a, 0) + (1 if weights is None else weights[i])
        first.setdefault(a, i)
    if not tally:
        return 0
    top = max(tally.values())
    return min(first[a] for a in tally if tally[a] == top)


def ref_counts(answers, drawn):
    counts = {}
    for a in answers[:drawn]:
        if a >= 0:
            counts[a] = counts.get(a, 0) + 1
    return sorted(counts.values(), reverse=True) + [0, 0]


def ref_esc(answers, available, window, max_n):
    cap = min(available, max_n)
    end = window
    while end <= cap:
        block = list(answers[end - window : end])
        if block[0] >= 0 and all(a == block[0] for a in block):
            return end
        end += window
    return cap


def ref_asc(answers, available, threshold, min_samples, max_n):
    cap = min(available, max_n)
    for n in range(1, cap + 1):
        v1, v2 = ref_counts(answers, n)[:2]
        if n >= min_samples and stats.beta.sf(0.5, v1 + 1, v2 + 1) >= threshold:
            return n
    return cap


def ref_oracle(correct, drawn):
    for i in range(drawn):
        if correct[i]:
            return i
    return 0


def check(decision, expected_samples, expected_chosen):
    np.testing.assert_array_equal(np.asarray(decision.samples), expected_samples)
    np.testing.assert_array_equal(np.asarray(decision.chosen), expected_chosen)
    assert decision.samples.dtype == jnp.int32 and decision.chosen.dtype == jnp.int32


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_best_of_n_matches_reference(seed, dtype):
    scores, _, _, mask = random_log(seed, dtype)
    available = mask.sum(1)
    for n in (1, 3, K, K + 5):
        drawn = np.minimum(n, available)
        expected = [ref_best(scores[q], drawn[q]) for q in range(Q)]
        check(policies.best_of_n(scores, mask, n), drawn, expected)


def test_running_best_is_best_of_every_prefix():
    scores, _, _, mask = random_log(2)
    best = np.asarray(policies.running_best(scores, mask))
    for q in range(Q):
        for j in range(mask[q].sum()):
            assert best[q, j] == ref_best(scores[q], j + 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_majority_and_weighted_vote_match_reference(seed):
    scores, answers, _, mask = random_log(seed, codes=3)
    available = mask.sum(1)
    for n in (1, 2, 5, K):
        drawn = np.minimum(n, available)
        expected_sc = [ref_vote(answers[q], drawn[q]) for q in range(Q)]
        expected_wmv = [ref_vote(answers[q], drawn[q], scores[q]) for q in range(Q)]
        check(policies.majority_vote(answers, mask, n), drawn, expected_sc)
        check(policies.majority_vote(answers, mask, n, weights=scores), drawn, expected_wmv)


def test_vote_ties_go_to_first_appearance_in_the_order():
    answers = np.array([[2, 0, 0, 2, 1], [1, 1, 0, 0, -1], [-1, -1, 3, -1, -1]])
    mask = np.ones_like(answers, bool)
    leaders = np.asarray(policies.vote_leaders(answers, mask))
    np.testing.assert_array_equal(leaders[0], [0, 0, 1, 0, 0])  # 2 appeared before 0
    np.testing.assert_array_equal(leaders[1], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(leaders[2], [0, 0, 2, 2, 2])  # no answer yet: sample 0
    # A 2-2 tie goes to whichever answer the order shows first.
    tie = np.array([[2, 0, 2, 0], [0, 2, 0, 2]])
    tie_leaders = np.asarray(policies.vote_leaders(tie, np.ones_like(tie, bool)))
    assert tie[0, tie_leaders[0, -1]] == 2 and tie[1, tie_leaders[1, -1]] == 0


def test_weighted_vote_ties_survive_summation_order():
    # 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in the last bit; they must still tie.
    answers = np.array([[0, 1, 0, 1, 0, 1]])
    weights = np.array([[0.1, 0.3, 0.2, 0.2, 0.3, 0.1]])
    leaders = policies.vote_leaders(answers, np.ones_like(answers, bool), weights)
    assert int(leaders[0, -1]) == 0


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("max_n", [K, 7])
def test_esc_matches_reference(window, max_n):
    _, answers, _, mask = random_log(3, codes=2)
    available = mask.sum(1)
    samples = [ref_esc(answers[q], available[q], window, max_n) for q in range(Q)]
    chosen = [ref_vote(answers[q], samples[q]) for q in range(Q)]
    check(policies.early_stopping_consistency(answers, mask, window, max_n), samples, chosen)
    assert np.any(np.asarray(samples) < np.minimum(available, max_n))  # some early stops


@pytest.mark.parametrize(("threshold", "min_samples", "max_n"), [(0.7, 1, K), (0.93, 3, 9)])
def test_adaptive_consistency_matches_reference(threshold, min_samples, max_n):
    _, answers, _, mask = random_log(4, codes=3)
    available = mask.sum(1)
    samples = [ref_asc(answers[q], available[q], threshold, min_samples, max_n) for q in range(Q)]
    chosen = [ref_vote(answers[q], samples[q]) for q in range(Q)]
    decision = policies.adaptive_consistency_stop(
        answers, mask, threshold, min_samples=min_samples, max_n=max_n
    )
    check(decision, samples, chosen)
    assert len(set(samples)) > 2  # the rule really adapts


def test_majority_confidence_table_is_the_beta_tail():
    # Entry [a + b + 1, a] = P(X > 1/2), X ~ Beta(a + 1, b + 1), for every integer pair.
    table = policies._majority_confidence(K * 5)
    a, b = np.meshgrid(np.arange(K * 5 + 1), np.arange(K * 5 + 1), indexing="ij")
    keep = a + b <= K * 5
    expected = stats.beta.sf(0.5, a[keep] + 1, b[keep] + 1)
    np.testing.assert_allclose(table[a[keep] + b[keep] + 1, a[keep]], expected, rtol=1e-13)


@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.95, 0.99])
def test_adaptive_consistency_equals_the_authors_package(threshold):
    # The peer: adaptiveconsistency.BetaStoppingCriteria after every sample (numerical
    # integration), run as its README does; same samples drawn, same answer returned.
    from optscale_jax.experiments.bench_replay import peer_asc_stops

    _, ragged, _, ragged_mask = random_log(7, codes=3)
    many = np.random.default_rng(8).integers(-1, 3, (60, 40)).astype(np.int32)
    many[:30] = np.where(np.random.default_rng(9).random((30, 40)) < 0.7, 2, many[:30])
    for answers, mask in ((ragged, ragged_mask), (many, np.ones(many.shape, bool))):
        rows = [row[:available] for row, available in zip(answers, mask.sum(1), strict=True)]
        peer_samples, peer_answers = peer_asc_stops(rows, threshold)
        decision = policies.adaptive_consistency_stop(answers, mask, threshold)
        np.testing.assert_array_equal(decision.samples, peer_samples)
        chosen = answers[np.arange(len(answers)), np.asarray(decision.chosen)]
        for ours, theirs in zip(chosen.tolist(), peer_answers, strict=True):
            assert ours == (-1 if theirs is None else theirs)


def test_oracle_matches_reference():
    _, _, correct, mask = random_log(5)
    for n in (1, 4, K):
        drawn = np.minimum(n, mask.sum(1))
        check(
            policies.oracle(correct, mask, n),
            drawn,
            [ref_oracle(correct[q], drawn[q]) for q in range(Q)],
        )


def test_policies_broadcast_over_permutations():
    scores, answers, _, mask = random_log(6)
    stacked = policies.majority_vote(
        np.stack([answers, answers[::-1]]), np.stack([mask, mask[::-1]]), 5
    )
    single = policies.majority_vote(answers[::-1], mask[::-1], 5)
    np.testing.assert_array_equal(stacked.chosen[1], single.chosen)
    per_question_n = np.arange(Q) % K + 1
    decision = policies.best_of_n(scores, mask, per_question_n)
    np.testing.assert_array_equal(decision.samples, np.minimum(per_question_n, mask.sum(1)))


# --- OptScale --------------------------------------------------------------------------------


_FITS = {}


def ref_fit(scores, n, prior):
    """Fit to the first n scores of one question (padded to K so jit compiles once)."""
    key = (scores.tobytes(), scores.dtype.str, n, prior)
    if key not in _FITS:
        first_n = np.arange(K) < n
        padded = np.where(first_n, scores, 0.0)
        if prior is None:
            _FITS[key] = optscale_jax.fit_mle(padded, first_n)
        else:
            _FITS[key] = optscale_jax.fit_map(padded, prior[0], prior[1], (0.2, 0.3), first_n)
    return _FITS[key]


def ref_optscale_n_star(scores, n, s_min, alpha, max_n, prior):
    fit = ref_fit(scores, n, prior)
    return int(optscale_jax.optimal_n(fit.mu, fit.sigma, s_min, alpha, max_n))


def ref_sequential(scores, available, s_min, alpha, min_samples, max_n, prior=None):
    cap = min(available, max_n)
    for n in range(1, cap + 1):
        if n >= max(min_samples, ref_optscale_n_star(scores, n, s_min, alpha, max_n, prior)):
            return n
    return cap


def ref_peek(scores, available, s_min, alpha, peek, max_n):
    cap = min(available, max_n)
    if cap == 0:
        return 0
    n_star = ref_optscale_n_star(scores, min(peek, cap), s_min, alpha, max_n, None)
    return min(max(n_star, peek), cap)


def warm_test_log(rows, k, dtype, seed):
    """Scores of several kinds: truncated-normal-like, piled at 1.0, constant, ragged."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.2, 1.2, (rows, 1))
    scores = np.clip(rng.normal(centre, rng.uniform(0.02, 0.4, (rows, 1)), (rows, k)), 0, 1)
    piled = rng.random(rows) < 0.2
    scores[piled] = np.where(rng.random((piled.sum(), k)) < 0.5, 1.0, scores[piled])
    scores[rng.random(rows) < 0.05] = 0.625
    mask = np.arange(k) < rng.integers(0, k + 1, (rows, 1))
    return np.where(mask, scores, 0.0).astype(dtype), mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 40, 24), (8300, 3)])  # one chunk; two chunks
def test_warm_started_prefix_fits_are_the_independent_fits(dtype, shape):
    # Prefix j + 1 starts from prefix j's MLE; the result must be the fit an independent
    # (cold) solve of that prefix gives: same status, same objective to the tolerance of
    # FitStatus.CONVERGED (sqrt(eps) (1 + |nll|)). MAP fits are the independent ones.
    scores, mask = warm_test_log(math.prod(shape[:-1]), shape[-1], dtype, seed=len(shape))
    scores, mask = scores.reshape(shape), mask.reshape(shape)
    stats = estimation.prefix_stats(scores, mask)
    warm, cold = policies.prefix_fits(scores, mask), estimation.fit_mle_stats(*stats)
    assert warm.mu.shape == shape and warm.mu.dtype == dtype
    assert np.mean(np.asarray(cold.status) == estimation.FitStatus.MAX_STEPS) < 0.01
    nll, cold_nll = np.asarray(warm.nll, float), np.asarray(cold.nll, float)
    tolerance = np.sqrt(np.finfo(dtype).eps)
    assert np.all(np.abs(nll - cold_nll) <= 2 * tolerance * (1 + np.abs(cold_nll)))
    # Whether a point is certified can hang on its last bits, which XLA computes slightly
    # differently in batches of other layouts (float32: a cold fit alone can differ from
    # the same fit in a large batch); such rare flips must be to or from MAX_STEPS.
    differ = np.asarray(warm.status) != np.asarray(cold.status)
    assert differ.mean() < 1e-3
    flips = np.stack([np.asarray(warm.status)[differ], np.asarray(cold.status)[differ]])
    assert np.all(np.any(flips == estimation.FitStatus.MAX_STEPS, axis=0))
    assert np.mean(warm.steps) < np.mean(cold.steps)  # the warm start saves iterations
    rng = np.random.default_rng(5)
    prior_mu = rng.uniform(0.2, 0.9, shape[:-1]).astype(dtype)
    prior_sigma = rng.uniform(0.05, 0.3, shape[:-1]).astype(dtype)
    prior = (prior_mu[..., None], prior_sigma[..., None])
    map_fit = policies.prefix_fits(scores, mask, prior_mu, prior_sigma, (0.1, 0.2))
    expected = estimation.fit_map_stats(*stats, *prior, (0.1, 0.2))
    for field in ("mu", "sigma", "nll", "status", "steps"):
        np.testing.assert_array_equal(getattr(map_fit, field), getattr(expected, field))


def test_prefix_fits_under_jit_equal_eager():
    # The simulator fits prefixes inside its own jit: no host round trip in the warm start.
    scores, mask = warm_test_log(30, 16, np.float64, seed=3)
    eager = policies.prefix_fits(scores, mask)
    traced = jax.jit(policies.prefix_fits)(scores, mask)
    for field in ("mu", "sigma", "nll", "status", "steps"):
        np.testing.assert_array_equal(getattr(eager, field), getattr(traced, field))


OPTSCALE_Q = 12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_stop_matches_reference(dtype):
    scores, _, _, mask = random_log(7, dtype, grid=16)
    scores, mask = scores[:OPTSCALE_Q], mask[:OPTSCALE_Q]
    available = mask.sum(1)
    for s_min, alpha, m, max_n in [(0.7, 0.6, 1, K), (0.8, 0.9, 3, 8)]:
        samples = [
            ref_sequential(scores[q], available[q], s_min, alpha, m, max_n)
            for q in range(OPTSCALE_Q)
        ]
        chosen = [ref_best(scores[q], samples[q]) for q in range(OPTSCALE_Q)]
        decision = policies.sequential_stop(scores, mask, s_min, alpha, min_samples=m, max_n=max_n)
        check(decision, samples, chosen)
        assert len(set(samples)) > 2


def test_sequential_stop_with_prior_matches_reference():
    scores, _, _, mask = random_log(8, grid=16)
    scores, mask = scores[:OPTSCALE_Q], mask[:OPTSCALE_Q]
    rng = np.random.default_rng(8)
    prior_mu = rng.integers(2, 7, OPTSCALE_Q) / 8
    prior_sigma = rng.integers(1, 4, OPTSCALE_Q) / 8
    available = mask.sum(1)
    samples = [
        ref_sequential(scores[q], available[q], 0.75, 0.8, 2, K, (prior_mu[q], prior_sigma[q]))
        for q in range(OPTSCALE_Q)
    ]
    decision = policies.sequential_stop(
        scores,
        mask,
        0.75,
        0.8,
        min_samples=2,
        max_n=K,
        prior_mu=prior_mu,
        prior_sigma=prior_sigma,
        prior_scale=(0.2, 0.3),
    )
    check(decision, samples, [ref_best(scores[q], samples[q]) for q in range(OPTSCALE_Q)])


def test_peek_stop_matches_reference_and_grid():
    scores, _, _, mask = random_log(9, grid=16)
    scores, mask = scores[:OPTSCALE_Q], mask[:OPTSCALE_Q]
    available = mask.sum(1)
    fit = policies.prefix_fits(scores, mask)
    s_mins, alphas = (0.6, 0.85), (0.5, 0.9)
    cells, grid = policies.optscale_grid(
        fit, mask, s_mins, alphas, min_samples=(1, 3), peek=(2, 5), max_n=10
    )
    assert len(cells) == 2 * 2 * 4 and grid.shape == (len(cells), OPTSCALE_Q)
    for (s_min, alpha, kind, value), samples in zip(cells, np.asarray(grid), strict=True):
        if kind == "k":
            expected = [
                ref_peek(scores[q], available[q], s_min, alpha, value, 10)
                for q in range(OPTSCALE_Q)
            ]
            direct = policies.peek_stop(scores, mask, s_min, alpha, peek=value, max_n=10)
            check(direct, expected, [ref_best(scores[q], expected[q]) for q in range(OPTSCALE_Q)])
        else:
            direct = policies.sequential_stop(
                scores, mask, s_min, alpha, min_samples=value, max_n=10
            )
        # The grid (one fit, reused) gives the same stops as each policy on its own.
        np.testing.assert_array_equal(samples, direct.samples)


def test_invalid_input_names_the_argument():
    scores, answers, _, mask = random_log(0)
    with pytest.raises(ValueError, match="alpha"):
        policies.sequential_stop(scores, mask, 0.5, 1.0)
    with pytest.raises(ValueError, match="s_min"):
        policies.sequential_stop(scores, mask, 1.5, 0.5)
    with pytest.raises(ValueError, match="prefix"):
        policies.best_of_n(scores, mask[:, ::-1], 3)
    with pytest.raises(ValueError, match="window"):
        policies.early_stopping_consistency(answers, mask, 0)
    with pytest.raises(ValueError, match="threshold"):
        policies.adaptive_consistency_stop(answers, mask, 1.2)
    with pytest.raises(ValueError, match="scores"):
        policies.best_of_n(scores + 2.0, mask, 3)


def test_optscale_prior_and_count_arguments_are_named():
    scores, _, _, mask = random_log(1)
    with pytest.raises(ValueError, match="prior_mu and prior_sigma"):
        policies.prefix_fits(scores, mask, prior_mu=0.5)
    with pytest.raises(ValueError, match=r"prior_scale\[1\]"):
        policies.peek_stop(
            scores, mask, 0.6, 0.9, peek=2, prior_mu=0.5, prior_sigma=0.2, prior_scale=(0.1, 0.0)
        )
    with pytest.raises(ValueError, match="min_samples"):
        policies.sequential_stop(scores, mask, 0.6, 0.9, min_samples=0)
    with pytest.raises(ValueError, match="peek"):
        policies.optscale_grid(policies.prefix_fits(scores, mask), mask, (0.6,), (0.9,), peek=(0,))


def test_private_bodies_agree_with_the_public_functions():
    # The replay engine validates once and calls the private bodies: they must agree.
    scores, answers, _, mask = random_log(2)
    public, private = policies.prefix_fits(scores, mask), policies._prefix_fits(scores, mask)
    for field in ("mu", "sigma", "status"):
        np.testing.assert_array_equal(getattr(public, field), getattr(private, field))
    cells, samples = policies.optscale_grid(public, mask, (0.6, 0.8), (0.5, 0.9), max_n=6)
    same_cells, same = policies._optscale_grid(private, mask, (0.6, 0.8), (0.5, 0.9), (1,), (), 6)
    assert cells == same_cells
    np.testing.assert_array_equal(samples, same)
    codes = policies._num_codes(answers)
    np.testing.assert_array_equal(
        policies.vote_leaders(answers, mask), policies._vote_leaders(answers, mask, None, codes)
    )
