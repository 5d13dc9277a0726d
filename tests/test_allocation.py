"""Tests of the budget allocation across questions (optscale_jax.allocation)."""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from optscale_jax import allocation, truncnorm
from optscale_jax.allocation import (
    allocate,
    best_gains,
    elimination_samples,
    oracle_samples,
    reach_gains,
    replay_allocation,
    uniform_samples,
)

PRIOR = (0.6, 0.15, (0.2, 0.1))


def _cdf(x, mu, sigma):
    return stats.truncnorm.cdf(x, -mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)


def _random_laws(rng, size):
    mu = rng.uniform(-0.5, 1.5, size)
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(3.0), size))
    return mu, sigma


# --- allocate -----------------------------------------------------------------------------------


def _best_composition(gains, budget):
    """Exhaustive search: the largest total gain over all allocations of `budget`."""
    questions, horizon = gains.shape
    totals = np.concatenate([np.zeros((questions, 1)), np.cumsum(gains, axis=1)], axis=1)
    best = -np.inf
    for counts in itertools.product(range(horizon + 1), repeat=questions):
        if sum(counts) == budget:
            best = max(best, sum(totals[q, c] for q, c in enumerate(counts)))
    return best


@pytest.mark.parametrize("shape", [(4, 4), (3, 2)])
def test_allocate_matches_exhaustive_search(shape):
    rng = np.random.default_rng(0)
    for trial in range(12):
        gains = -np.sort(-rng.exponential(size=shape), axis=1)
        if trial % 3 == 0:
            gains = np.round(gains, 1)  # ties within and across rows
        for budget in range(shape[0] * shape[1] + 2):
            counts = np.asarray(allocate(gains, budget, seed=trial))
            assert counts.sum() == min(budget, gains.size)
            assert np.all((counts >= 0) & (counts <= shape[1]))
            value = sum(gains[q, :c].sum() for q, c in enumerate(counts))
            assert value == pytest.approx(_best_composition(gains, min(budget, gains.size)))


def test_allocate_ties_are_seeded():
    gains = np.full((6, 2), 0.5)
    runs = {seed: np.asarray(allocate(gains, 3, seed=seed)).tolist() for seed in range(8)}
    assert all(sum(c) == 3 and max(c) == 1 for c in runs.values())  # m = 1 before m = 2
    assert runs[0] == np.asarray(allocate(gains, 3, seed=0)).tolist()
    assert len({tuple(c) for c in runs.values()}) > 1


def test_allocate_accepts_rounding_noise_in_rows():
    gains = np.array([[0.5, 0.5 + 1e-15, 0.2]])
    assert np.asarray(allocate(gains, 2)).tolist() == [2]


@pytest.mark.parametrize(
    ("gains", "budget", "seed", "message"),
    [
        ([[0.5, 0.2]], -1, 0, "^budget must be an integer >= 0"),
        ([[0.5, 0.2]], 1.5, 0, "^budget must be an integer >= 0"),
        ([[0.5, 0.2]], True, 0, "^budget must be an integer >= 0"),
        ([[0.5, np.nan]], 1, 0, "^marginal_gains contains NaN"),
        ([[0.2, 0.5]], 1, 0, "^marginal_gains must not increase along a row"),
        ([0.5, 0.2], 1, 0, "^marginal_gains must be a numeric \\[Q, M\\] table"),
        ([[0.5, 0.2]], 1, 0.5, "^seed must be an integer"),
    ],
)
def test_allocate_rejects_bad_input(gains, budget, seed, message):
    with pytest.raises(ValueError, match=message):
        allocate(gains, budget, seed=seed)


# --- marginal gains -----------------------------------------------------------------------------


# Laws and horizon shared by the gains tests (one compilation per objective and dtype).
LAWS, HORIZON = 300, 40


def _random_state(seed):
    rng = np.random.default_rng(seed)
    mu, sigma = _random_laws(rng, LAWS)
    return mu, sigma, np.where(rng.random(LAWS) < 0.4, rng.uniform(0, 1, LAWS), -np.inf)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_reach_gains_match_the_direct_formula(dtype):
    mu, sigma, best = _random_state(1)
    gains = reach_gains(jnp.asarray(mu, dtype), jnp.asarray(sigma, dtype), best, 0.8, HORIZON)
    assert gains.dtype == dtype and gains.shape == (LAWS, HORIZON)
    # log of F^(m-1) (1 - F) from scipy's log F and log(1 - F); compared in log space, where
    # truncnorm's relative accuracy of log F (1e-9) carries over.
    law = stats.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    log_f, log_sf = law.logcdf(0.8)[:, None], law.logsf(0.8)[:, None]
    expected = np.arange(HORIZON) * log_f + log_sf
    gains = np.asarray(gains, np.float64)
    assert np.all(gains[best >= 0.8] == 0)
    floor = -80.0 if dtype == jnp.float32 else -700.0  # beyond: underflow to 0
    shown = (best < 0.8)[:, None] & (expected > floor)
    rtol = 2e-4 if dtype == jnp.float32 else 1e-9
    np.testing.assert_allclose(np.log(gains[shown]), expected[shown], rtol=rtol, atol=10 * rtol)


@pytest.mark.parametrize(
    ("mu", "sigma", "best"),
    [
        (0.5, 0.2, -np.inf),
        (0.7, 0.05, 0.6),
        (0.3, 1e-3, -np.inf),  # width 1e-3
        (2.0, 0.1, -np.inf),  # piled against 1
        (-1.0, 0.3, 0.1),  # piled against 0
        (0.5, 3.0, 0.2),  # nearly uniform
        (0.95, 0.01, 0.5),
    ],
)
def test_best_gains_match_scipy_quadrature(mu, sigma, best):
    horizon = 32
    gains = np.asarray(best_gains(mu, sigma, best, horizon))
    low = min(max(best, 0.0), 1.0)
    law = stats.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    points = [x for x in law.ppf([1e-9, 1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999]) if low < x < 1]
    # E[max(b, X_1..X_m)] = b + int_b^1 (1 - F^m), for m = 0..horizon at once.
    powers = np.arange(horizon + 1)
    integral, _ = integrate.quad_vec(
        lambda x: 1 - law.cdf(x) ** powers, low, 1, points=points, epsabs=1e-15, epsrel=1e-12
    )
    reference = low + integral
    np.testing.assert_allclose(np.cumsum(gains), reference[1:] - reference[0], atol=1e-12)
    np.testing.assert_allclose(gains, np.diff(reference), rtol=1e-8, atol=1e-14)
    if best == -np.inf:  # from nothing, the first sample's gain is the law's mean
        assert gains[0] == pytest.approx(law.mean(), rel=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("objective", ["reach", "best"])
def test_gains_are_concave(objective, dtype):
    mu, sigma, best = _random_state(2)
    mu, sigma = jnp.asarray(mu, dtype), jnp.asarray(sigma, dtype)
    if objective == "reach":
        gains = np.asarray(reach_gains(mu, sigma, best, 0.7, HORIZON))
    else:
        gains = np.asarray(best_gains(mu, sigma, best, HORIZON))
    assert np.all(np.isfinite(gains)) and np.all(gains >= 0)
    assert np.all(np.diff(gains, axis=1) <= 0)


# --- waves --------------------------------------------------------------------------------------


def _ragged_log(seed, questions=24, samples=12):
    rng = np.random.default_rng(seed)
    mu, sigma = rng.uniform(0.3, 0.9, questions), rng.uniform(0.05, 0.3, questions)
    scores = np.clip(rng.normal(mu[:, None], sigma[:, None], (questions, samples)), 0, 1)
    available = rng.integers(3, samples + 1, questions)
    mask = np.arange(samples) < available[:, None]
    return scores, mask, rng.integers(50, 400, (questions, samples)).astype(float)


def test_waves_spend_exactly_the_budget_and_respect_caps():
    scores, mask, _ = _ragged_log(3)
    questions = scores.shape[0]
    for budget in (2, 3.5, 6):
        samples = np.asarray(
            replay_allocation(scores, mask, budget, m0=2, wave=5, prior=PRIOR, max_n=8)
        )
        assert samples.sum() == math.floor(budget * questions)
        assert np.all(samples <= np.minimum(mask.sum(1), 8)) and np.all(samples >= 2)
    # A budget beyond what the log holds: every available sample, no more.
    samples = np.asarray(replay_allocation(scores, mask, 8, m0=2, wave=5, prior=PRIOR))
    assert np.array_equal(samples, np.minimum(mask.sum(1), 12))


def test_waves_in_tokens_stay_within_the_budget():
    scores, mask, tokens = _ragged_log(4)
    questions = scores.shape[0]
    budget = 4 * tokens[mask].mean()
    samples = np.asarray(
        replay_allocation(scores, mask, budget, m0=2, wave=5, prior=PRIOR, cost=tokens)
    )
    spent = np.sum(np.where(np.arange(12) < samples[:, None], tokens, 0.0))
    assert spent <= budget * questions
    # ...and stop only when the next sample would overrun it (at most one sample's cost left
    # over per wave entry; at least most of the budget is used).
    assert spent >= budget * questions - tokens.max() * 5
    assert np.all(samples <= mask.sum(1))


def test_waves_batch_over_orders_like_single_orders():
    scores, mask, _ = _ragged_log(5)
    orders = np.stack([np.roll(scores, shift, axis=1) for shift in (0, 1)])
    masks = np.stack([np.ones_like(mask), np.ones_like(mask)])
    batched = np.asarray(replay_allocation(orders, masks, 4, m0=2, wave=5, prior=PRIOR))
    for r in range(2):
        single = replay_allocation(orders[r], masks[r], 4, m0=2, wave=5, prior=PRIOR)
        assert np.array_equal(batched[r], np.asarray(single))


def test_live_waves_reproduce_the_replay():
    # init / plan_wave / update, as a live loop runs them, draw what the replay draws.
    scores, mask, _ = _ragged_log(6)
    questions, budget, wave = scores.shape[0], 4, 5
    expected = np.asarray(replay_allocation(scores, mask, budget, m0=2, wave=wave, prior=PRIOR))
    drawn = np.minimum(2, mask.sum(1))
    state = allocation.init(scores[:, :2], np.arange(2) < drawn[:, None], prior=PRIOR)
    for wave_index in range(100):
        left = budget * questions - drawn.sum()
        capacity = mask.sum(1) - drawn
        counts = np.asarray(
            allocation.plan_wave(state, wave, left, capacity=capacity, wave_index=wave_index)
        )
        if counts.sum() == 0:
            break
        # Question q's new samples are scores[q, drawn_q : drawn_q + counts_q].
        shifted = np.stack([np.roll(row, -d) for row, d in zip(scores, drawn, strict=True)])
        state = allocation.update(state, shifted, np.arange(12) < counts[:, None])
        drawn = drawn + counts
    assert np.array_equal(drawn, expected)


def test_empirical_bayes_prior_by_default():
    scores, mask, _ = _ragged_log(7)
    state = allocation.init(scores[:, :2])
    assert np.allclose(state.prior_mu, state.prior_mu[0]) and 0.3 < state.prior_mu[0] < 0.9
    fit = allocation.fitted_law(state)
    assert np.all(np.isfinite(fit.mu)) and np.all(fit.sigma > 0)
    # The replay fits the same prior on the first m0 = 2 samples of every question.
    samples = np.asarray(replay_allocation(scores, mask, 4, m0=2, wave=5))
    prior = [state.prior_mu, state.prior_sigma, (state.prior_scale_mu, state.prior_scale_sigma)]
    assert np.array_equal(samples, replay_allocation(scores, mask, 4, m0=2, wave=5, prior=prior))


# --- true parameters: the allocation against the baselines, in expectation ----------------------


def _spread_population(questions=500, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.2, 0.9, questions)
    sigma = np.exp(rng.uniform(np.log(0.03), np.log(0.3), questions))
    return mu, sigma


def _elimination_expected_reach(f, budget, samples):
    """Expected reach of the elimination rule as Q grows: t rounds cost sum_q E[min(T_q, t)]
    = sum_q (1 - F_q^t) / (1 - F_q) (T_q geometric) and reach sum_q (1 - F_q^t); t (real,
    the last round shared) solves cost = budget * Q by bisection."""
    p = np.maximum(1 - f, 1e-300)

    def cost(t):
        return np.sum(np.where(f < 1, (1 - f**t) / p, t))

    low, high = 0.0, float(samples)
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if cost(middle) <= budget * len(f) else (low, middle)
    return np.sum(1 - f**low)


def test_true_parameters_reach_at_least_the_baselines_in_expectation():
    mu, sigma = _spread_population()
    f = _cdf(0.8, mu, sigma)
    horizon = 64
    gains = reach_gains(mu, sigma, -np.inf, 0.8, horizon)
    for budget in (2, 4, 8):
        counts = np.asarray(allocate(gains, budget * len(mu)))
        allocated = np.sum(1 - f**counts)
        assert allocated >= np.sum(1 - f**budget)  # uniform
        assert allocated >= _elimination_expected_reach(f, budget, horizon)


def test_true_parameter_waves_beat_the_baselines_on_the_same_scores():
    mu, sigma = _spread_population()
    scores = np.asarray(truncnorm.sample(_key(0), mu[:, None], sigma[:, None], (len(mu), 64)))
    mask = np.ones(scores.shape, bool)
    reached = lambda n: np.sum(  # noqa: E731
        np.max(np.where(np.arange(64) < n[:, None], scores, -1), axis=1) >= 0.8
    )
    for budget in (2, 4, 8):
        waves = replay_allocation(scores, mask, budget, m0=1, law=(mu, sigma), s_min=0.8)
        assert np.asarray(waves).sum() == budget * len(mu)
        others = (uniform_samples(mask, budget), elimination_samples(scores, mask, budget, 0.8))
        assert all(reached(np.asarray(waves)) >= reached(np.asarray(n)) for n in others)


def _key(seed):
    import jax

    return jax.random.PRNGKey(seed)


# --- baselines ----------------------------------------------------------------------------------


def _elimination_reference(scores, mask, budget, s_min):
    """Round robin in Python: counts before the last, partial round (order-free part)."""
    questions = scores.shape[0]
    stop = []
    for q in range(questions):
        available = int(mask[q].sum())
        hits = [j + 1 for j in range(available) if scores[q, j] >= s_min]
        stop.append(hits[0] if hits else available)
    counts, left = [0] * questions, math.floor(budget * questions)
    while True:
        going = [q for q in range(questions) if counts[q] < stop[q]]
        if not going or len(going) > left:
            return counts, going, left
        for q in going:
            counts[q] += 1
        left -= len(going)


def test_elimination_matches_a_round_robin_reference():
    rng = np.random.default_rng(8)
    for trial in range(20):
        scores, mask, _ = _ragged_log(trial, questions=7, samples=6)
        scores = rng.uniform(0, 1, scores.shape)
        budget = rng.uniform(0.5, 5)
        got = np.asarray(elimination_samples(scores, mask, budget, 0.7, seed=trial))
        counts, going, left = _elimination_reference(scores, mask, budget, 0.7)
        extra = got - np.array(counts)
        assert np.all((extra == 0) | (extra == 1)) and extra.sum() == min(left, len(going))
        assert np.all(np.isin(np.flatnonzero(extra), going))


def test_oracle_solves_the_most_questions_within_the_budget():
    rng = np.random.default_rng(9)
    for _ in range(20):
        correct = rng.random((5, 6)) < 0.25
        mask = np.ones((5, 6), bool)
        budget = rng.uniform(0.2, 3)
        samples = np.asarray(oracle_samples(correct, mask, budget))
        assert samples.sum() <= math.floor(budget * 5)
        solved = sum(correct[q, : samples[q]].any() for q in range(5))
        first = [np.argmax(row) + 1 for row in correct if row.any()]
        most = max(
            (len(s) for r in range(len(first) + 1) for s in itertools.combinations(first, r)
             if sum(s) <= math.floor(budget * 5)),
        )  # fmt: skip
        assert solved == most


def test_uniform_is_fixed_n():
    mask = np.arange(6) < np.array([[2], [6]])
    assert np.asarray(uniform_samples(mask, 4)).tolist() == [2, 4]
    assert np.asarray(uniform_samples(mask, 4, max_n=3)).tolist() == [2, 3]


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"budget": 1}, "^budget must be >= m0"),
        ({"budget": 9, "max_n": 8}, "^budget must be <= max_n"),
        ({"budget": -1}, "^budget must be finite and > 0"),
        ({"wave": 0}, "^wave must be an integer >= 1"),
        ({"objective": "votes"}, "^objective: unknown objective 'votes'"),
        ({"m0": 0}, "^m0 must be >= 1"),
        ({"m0": 4, "max_n": 3, "budget": 3}, "^m0 must be <= max_n"),
        ({"s_min": 1.5}, "^s_min must lie in \\[0, 1\\]"),
        ({"prior": (0.5, 0.1)}, "^prior must be a PopulationPrior"),
        ({"law": (0.5, -0.1)}, "^law must be > 0"),
        ({"cost": np.ones((2, 2))}, "^cost has shape"),
        ({"cost": np.ones((4, 6)), "budget": 1.5}, "^budget must cover the first m0 samples"),
    ],
)
def test_replay_allocation_rejects_bad_input(arguments, message):
    scores = np.full((4, 6), 0.5)
    arguments = {"budget": 4, **arguments}
    with pytest.raises(ValueError, match=message):
        replay_allocation(scores, scores >= 0, **arguments)


def test_baselines_reject_bad_input():
    mask = np.ones((3, 4), bool)
    with pytest.raises(ValueError, match="^budget must be an integer >= 1"):
        uniform_samples(mask, 2.5)
    with pytest.raises(ValueError, match="^budget must be finite and > 0"):
        elimination_samples(np.zeros((3, 4)), mask, 0, 0.8)
    with pytest.raises(ValueError, match="^s_min must lie in"):
        elimination_samples(np.zeros((3, 4)), mask, 2, -0.1)
    with pytest.raises(ValueError, match="^mask must be a prefix"):
        oracle_samples(mask, np.broadcast_to(np.arange(4) > 0, (3, 4)), 2)
