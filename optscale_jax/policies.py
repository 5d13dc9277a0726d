"""Stopping policies for Best-of-N sampling, vectorised over questions and permutations.

Every policy reads arrays whose last axis is the order in which samples were drawn
(`[..., K]`: any leading shape, e.g. `[permutations, questions]`) and returns a
`Decision`: how many samples were drawn and which one's answer is returned. Samples are
drawn in order, so a mask must be a prefix (True for the first `k` entries of a row);
replay keeps it so when it permutes the samples. A question without samples draws 0 and
returns index 0.

Tie rules (fair under permutation: a tie goes to whichever candidate the random sample
order happened to show first, so over random orders no candidate is favoured):

* Best-of-n: the first drawn sample with the highest score.
* Majority / weighted vote: among the answers whose tally equals the highest (within a
  relative `K * eps` for weighted sums, so that summation order cannot break a true tie),
  the one that appeared first; the returned sample is that answer's first appearance.
  Samples without an answer (code -1) do not vote; if no drawn sample has an answer, the
  first sample is returned.

Costs are the caller's business: the tokens of the first `samples` entries.

Each public function validates its input once (ValueError naming the argument) and runs a
jit-compiled private body (`_running_best`, `_vote_leaders`, `_esc`, `_asc`, `_oracle`,
`_prefix_fits`, `_optscale_grid`, ...); a caller that has validated its input already (the
replay engine) calls the private bodies directly. Pieces such as `running_best`,
`first_stop` and `peek_samples` let a replay share one prefix fit across a whole
hyper-parameter grid.

Example:
    >>> import numpy as np
    >>> from optscale_jax import policies
    >>> answers = np.array([[2, 0, 0, 2, 1]])
    >>> policies.majority_vote(answers, answers >= -1, n=4).chosen  # 2-2 tie: 2 came first
    Array([0], dtype=int32)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from optscale_jax import devices, estimation, nstar, truncnorm, validation

__all__ = [
    "Decision",
    "adaptive_consistency_stop",
    "best_of_n",
    "early_stopping_consistency",
    "first_stop",
    "majority_vote",
    "optscale_grid",
    "oracle",
    "peek_samples",
    "peek_stop",
    "prefix_fits",
    "running_best",
    "sequential_stop",
    "vote_leaders",
]


class Decision(NamedTuple):
    """What a stopping policy did for each question.

    Attributes:
        samples: int32 `[...]`, samples drawn (1..K; 0 only for a question without samples).
        chosen: int32 `[...]`, index into the last axis of the sample whose answer is returned.
    """

    samples: jax.Array
    chosen: jax.Array


# --- validation at the boundary ------------------------------------------------------------------


def _check_mask(mask: ArrayLike, shape: tuple[int, ...] | None = None) -> ArrayLike:
    """mask must be boolean, of `shape`, and a prefix along the last axis."""
    if validation.is_traced(mask):
        return mask
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise ValueError(f"mask must be boolean, got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError("mask must have at least one dimension (samples on the last axis)")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"mask has shape {array.shape}, expected {tuple(shape)}")
    if np.any(array[..., 1:] > array[..., :-1]):
        raise ValueError("mask must be a prefix along the last axis (samples are drawn in order)")
    return mask


def _check_answers(answers: ArrayLike, mask: ArrayLike) -> None:
    if validation.is_traced(answers):
        return
    array = np.asarray(answers)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"answers must be integer codes (-1 = no answer), got dtype {array.dtype}")
    if np.any(array < -1):
        raise ValueError("answers must be >= -1 (-1 = no answer)")
    _check_mask(mask, array.shape)


def _check_count(n: ArrayLike, name: str) -> None:
    """n must be an integer >= 1 (scalar or array)."""
    validation.check_max_n(n, name)


def _check_prior(prior_mu, prior_sigma, prior_scale) -> None:
    if (prior_mu is None) != (prior_sigma is None):
        raise ValueError("prior_mu and prior_sigma must be given together")
    if prior_mu is not None:
        estimation._check_prior(prior_mu, prior_sigma, prior_scale)


def _check_optscale(scores, mask, s_min, alpha, max_n, prior, counts):
    """Checks a single-cell OptScale policy's arguments; returns (scores, mask) as arrays.

    Args:
        prior: (prior_mu, prior_sigma, prior_scale).
        counts: argument name -> value of the integer arguments that must be >= 1.
    """
    scores, checked_mask = validation.check_scores(scores, mask)
    _check_mask(mask, np.shape(scores))
    validation.check_unit(s_min, "s_min")
    validation.check_open_unit(alpha, "alpha")
    validation.check_max_n(max_n)
    for name, value in counts.items():
        _check_count(value, name)
    _check_prior(*prior)
    return scores, checked_mask


# --- shared pieces -------------------------------------------------------------------------------


def _cap(mask: jax.Array, max_n: ArrayLike | None) -> jax.Array:
    """Samples available to a policy: the row's sample count, capped at max_n."""
    available = jnp.sum(mask, axis=-1, dtype=jnp.int32)
    if max_n is None:
        return available
    return jnp.minimum(available, jnp.asarray(max_n, jnp.int32))


def _at_prefix(per_prefix: jax.Array, samples: jax.Array) -> jax.Array:
    """`per_prefix[..., samples - 1]` (index 0 where samples == 0)."""
    index = jnp.maximum(samples - 1, 0)[..., None]
    per_prefix = jnp.broadcast_to(per_prefix, (*index.shape[:-1], per_prefix.shape[-1]))
    return jnp.take_along_axis(per_prefix, index, axis=-1)[..., 0]


def _first_true(condition: jax.Array, fallback: jax.Array) -> jax.Array:
    """1 + index of the first True along the last axis, or `fallback` where there is none."""
    found = jnp.any(condition, axis=-1)
    first = jnp.argmax(condition, axis=-1).astype(jnp.int32) + 1
    return jnp.where(found, first, fallback).astype(jnp.int32)


def _positions(shape: tuple[int, ...]) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(shape[-1], dtype=jnp.int32), shape)


# --- best-of-n and the oracle ----------------------------------------------------------------------


@jax.jit
def _running_best(scores, mask):
    values = jnp.where(jnp.asarray(mask, bool), jnp.asarray(scores), -jnp.inf)
    index = _positions(values.shape)

    def keep_better(earlier, later):
        value_a, index_a = earlier
        value_b, index_b = later
        take_later = value_b > value_a  # strict: a tie stays with the earlier sample
        return jnp.where(take_later, value_b, value_a), jnp.where(take_later, index_b, index_a)

    _, best = jax.lax.associative_scan(keep_better, (values, index), axis=values.ndim - 1)
    return best


def running_best(scores: ArrayLike, mask: ArrayLike) -> jax.Array:
    """Index of the best-scored sample among the first j + 1, for every prefix j.

    Ties go to the earliest sample; masked samples never win (index 0 if all are masked).

    Args:
        scores: `[..., K]` verifier scores.
        mask: `[..., K]` bool prefix mask.

    Returns:
        int32 `[..., K]`.
    """
    scores, _ = validation.check_scores(scores, mask)
    _check_mask(mask, np.shape(scores))
    return _running_best(scores, mask)


@jax.jit
def _best_of_n(scores, mask, n):
    samples = _cap(mask, n)
    return Decision(samples, _at_prefix(_running_best(scores, mask), samples))


def best_of_n(scores: ArrayLike, mask: ArrayLike, n: ArrayLike) -> Decision:
    """Fixed-N Best-of-N: draw min(n, available) samples, return the highest-scored one.

    Args:
        scores: `[..., K]` verifier scores.
        mask: `[..., K]` bool prefix mask.
        n: samples to draw (>= 1), broadcasting against the leading shape.

    Returns:
        Decision.
    """
    scores, _ = validation.check_scores(scores, mask)
    _check_mask(mask, np.shape(scores))
    _check_count(n, "n")
    return _best_of_n(scores, mask, n)


@jax.jit
def _oracle(correct, mask, n):
    mask = jnp.asarray(mask, bool)
    samples = _cap(mask, n)
    hit = jnp.asarray(correct, bool) & mask & (_positions(mask.shape) < samples[..., None])
    chosen = jnp.where(jnp.any(hit, axis=-1), jnp.argmax(hit, axis=-1), 0).astype(jnp.int32)
    return Decision(samples, chosen)


def oracle(correct: ArrayLike, mask: ArrayLike, n: ArrayLike) -> Decision:
    """pass@n: correct if any of the first n samples is; returns that sample (else the first).

    Args:
        correct: `[..., K]` bool.
        mask: `[..., K]` bool prefix mask.
        n: samples to draw (>= 1), broadcasting against the leading shape.

    Returns:
        Decision.
    """
    _check_mask(mask, np.shape(correct))
    _check_count(n, "n")
    return _oracle(correct, mask, n)


# --- voting --------------------------------------------------------------------------------------


def _num_codes(answers: ArrayLike) -> int:
    """Static size of the one-hot answer axis (at least 1)."""
    return max(int(np.max(np.asarray(answers), initial=-1)) + 1, 1)


@functools.partial(jax.jit, static_argnames=("num_codes",))
def _tallies(answers, mask, weights, num_codes):
    """Running vote tallies `[..., K, C]` and first appearances `[..., C]` (K if never)."""
    answers = jnp.asarray(answers)
    k = answers.shape[-1]
    votes = (answers[..., None] == jnp.arange(num_codes)) & jnp.asarray(mask, bool)[..., None]
    if weights is None:
        tally = jnp.cumsum(votes.astype(jnp.int32), axis=-2)
    else:
        tally = jnp.cumsum(jnp.where(votes, jnp.asarray(weights)[..., None], 0), axis=-2)
    first = jnp.where(jnp.any(votes, axis=-2), jnp.argmax(votes, axis=-2), k).astype(jnp.int32)
    return tally, first


def _leaders(tally, first):
    """The leading answer's first sample for every prefix (0 if no answer yet): `[..., K]`."""
    k = tally.shape[-2]
    best = jnp.max(tally, axis=-1, keepdims=True)
    if jnp.issubdtype(tally.dtype, jnp.floating):
        # Weighted sums of the same votes may differ in the last bits with summation order.
        slack = k * jnp.finfo(tally.dtype).eps * jnp.abs(best)
    else:
        slack = 0
    seen = first[..., None, :] <= jnp.arange(k, dtype=jnp.int32)[:, None]
    tied = seen & (tally >= best - slack)
    winner_first = jnp.min(jnp.where(tied, first[..., None, :], k), axis=-1)
    return jnp.where(winner_first < k, winner_first, 0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_codes",))
def _vote_leaders(answers, mask, weights, num_codes):
    return _leaders(*_tallies(answers, mask, weights, num_codes))


def vote_leaders(
    answers: ArrayLike, mask: ArrayLike, weights: ArrayLike | None = None
) -> jax.Array:
    """For every prefix j, the first sample of the answer leading the vote of samples 0..j.

    Args:
        answers: `[..., K]` int answer codes (-1 = no answer).
        mask: `[..., K]` bool prefix mask.
        weights: optional `[..., K]` vote weights (e.g. verifier scores); None = one vote each.

    Returns:
        int32 `[..., K]` sample indices (0 while no drawn sample has an answer).
    """
    _check_answers(answers, mask)
    if weights is not None:
        validation.check_finite(weights, "weights")
    return _vote_leaders(answers, mask, weights, num_codes=_num_codes(answers))


def majority_vote(
    answers: ArrayLike, mask: ArrayLike, n: ArrayLike, weights: ArrayLike | None = None
) -> Decision:
    """Self-consistency (no weights) or weighted majority vote over the first n samples.

    Args:
        answers: `[..., K]` int answer codes (-1 = no answer).
        mask: `[..., K]` bool prefix mask.
        n: samples to draw (>= 1).
        weights: optional `[..., K]` weights; the weighted vote sums them per answer.

    Returns:
        Decision.
    """
    leaders = vote_leaders(answers, mask, weights)
    _check_count(n, "n")
    samples = _cap(jnp.asarray(mask, bool), n)
    return Decision(samples, _at_prefix(leaders, samples))


@functools.partial(jax.jit, static_argnames=("num_codes",))
def _esc(answers, mask, window, max_n, num_codes):
    answers = jnp.asarray(answers, jnp.int32)
    mask = jnp.asarray(mask, bool)
    valid = mask & (answers >= 0)
    position = _positions(answers.shape)
    # Length of the run of one (valid) answer ending at each position.
    previous = jnp.concatenate([jnp.full_like(answers[..., :1], -1), answers[..., :-1]], -1)
    run_start = jnp.where(valid & (answers == previous), 0, position)
    run_start = jax.lax.cummax(run_start, axis=answers.ndim - 1)
    run = jnp.where(valid, position - run_start + 1, 0)
    cap = _cap(mask, max_n)
    window = jnp.asarray(window, jnp.int32)
    stop = ((position + 1) % window == 0) & (run >= window) & (position < cap[..., None])
    samples = _first_true(stop, cap)
    return Decision(samples, _at_prefix(_vote_leaders(answers, mask, None, num_codes), samples))


def early_stopping_consistency(
    answers: ArrayLike, mask: ArrayLike, window: ArrayLike, max_n: ArrayLike | None = None
) -> Decision:
    """ESC: draw windows of `window` samples; stop after the first unanimous window.

    A window is unanimous when all its samples carry the same answer (a sample without an
    answer breaks unanimity). Only complete windows are tested; without a unanimous one the
    policy draws up to the cap (max_n or the samples available). The answer is the majority
    vote of all drawn samples.

    Args:
        answers: `[..., K]` int answer codes (-1 = no answer).
        mask: `[..., K]` bool prefix mask.
        window: window size w >= 1.
        max_n: cap on samples (None: all available).

    Returns:
        Decision.
    """
    _check_answers(answers, mask)
    _check_count(window, "window")
    validation.check_max_n(max_n)
    return _esc(answers, mask, window, max_n, num_codes=_num_codes(answers))


@functools.lru_cache(maxsize=16)
def _majority_confidence(max_votes: int) -> np.ndarray:
    """Adaptive-Consistency's statistic for every pair of integer vote counts, once per size.

    P(X > 1/2) for X ~ Beta(a + 1, b + 1) is I_{1/2}(b + 1, a + 1), which for integer
    counts is a binomial tail: P(Bin(a + b + 1, 1/2) <= a). The Bin(n, 1/2) probabilities
    follow Pascal's rule p(n, i) = (p(n - 1, i) + p(n - 1, i - 1)) / 2 (sums of positive
    terms: no cancellation), so the table costs O(max_votes^2) additions at setup instead of
    one `betainc` per position.

    Args:
        max_votes: the most votes an answer can have (the samples per question).

    Returns:
        float64 `[max_votes + 2, max_votes + 2]`, entry [n, a] = P(Bin(n, 1/2) <= a); the
        statistic of (lead a, runner-up b) is entry [a + b + 1, a].
    """
    size = max_votes + 2
    pmf = np.zeros((size, size))
    pmf[0, 0] = 1.0
    for n in range(1, size):
        pmf[n, 0] = 0.5 * pmf[n - 1, 0]
        pmf[n, 1:] = 0.5 * (pmf[n - 1, 1:] + pmf[n - 1, :-1])
    table = np.minimum(np.cumsum(pmf, axis=1), 1.0)
    table.setflags(write=False)  # shared by every caller through the cache
    return table


@functools.partial(jax.jit, static_argnames=("num_codes",))
def _asc(answers, mask, threshold, min_samples, max_n, num_codes):
    tally, first = _tallies(answers, mask, None, num_codes)
    # The two largest tallies; the runner-up is the largest once the leader's slot is
    # emptied (0 with a single code). lax.top_k costs 6x as much on CPU.
    lead = jnp.max(tally, axis=-1)
    leader = jnp.argmax(tally, axis=-1)[..., None] == jnp.arange(num_codes)
    runner_up = jnp.max(jnp.where(leader, 0, tally), axis=-1)
    k = tally.shape[-2]
    table = jnp.asarray(_majority_confidence(k), jnp.result_type(float)).reshape(-1)
    confidence = table[(lead + runner_up + 1) * (k + 2) + lead]
    position = _positions(confidence.shape)
    cap = _cap(jnp.asarray(mask, bool), max_n)
    stop = (confidence >= threshold) & (position + 1 >= min_samples) & (position < cap[..., None])
    samples = _first_true(stop, cap)
    return Decision(samples, _at_prefix(_leaders(tally, first), samples))


def adaptive_consistency_stop(
    answers: ArrayLike,
    mask: ArrayLike,
    threshold: ArrayLike,
    *,
    min_samples: ArrayLike = 1,
    max_n: ArrayLike | None = None,
) -> Decision:
    """Adaptive-Consistency: stop once the leading answer beats the runner-up with posterior
    probability >= threshold.

    With v1, v2 the vote counts of the leading and the second answer among the samples
    drawn, the stopping statistic is P(X > 1/2) with X ~ Beta(v1 + 1, v2 + 1)
    (= I_{1/2}(v2 + 1, v1 + 1) = P(Bin(v1 + v2 + 1, 1/2) <= v1), read from a table of all
    integer counts). The answer is the majority vote of the drawn samples. This is the
    stop of the authors' `adaptiveconsistency.BetaStoppingCriteria` (tested to agree).

    Args:
        answers: `[..., K]` int answer codes (-1 = no answer).
        mask: `[..., K]` bool prefix mask.
        threshold: stop when the probability reaches this, in (0, 1).
        min_samples: never stop before this many samples.
        max_n: cap on samples (None: all available).

    Returns:
        Decision.
    """
    _check_answers(answers, mask)
    validation.check_open_unit(threshold, "threshold")
    _check_count(min_samples, "min_samples")
    validation.check_max_n(max_n)
    return _asc(answers, mask, threshold, min_samples, max_n, num_codes=_num_codes(answers))


# --- OptScale ------------------------------------------------------------------------------------


def prefix_fits(
    scores: ArrayLike,
    mask: ArrayLike,
    prior_mu: ArrayLike | None = None,
    prior_sigma: ArrayLike | None = None,
    prior_scale: tuple[ArrayLike, ArrayLike] = (0.1, 0.1),
) -> estimation.Fit:
    """Truncated-normal fit of every prefix of samples, from cumulative sufficient statistics.

    The MLE (OptScale0) or, with a prior, the MAP fit (OptScalet). Each MLE starts from
    the previous prefix's fit (`_warm_scan`) and is solved to the same tolerance, with the
    same honest `FitStatus`, as an independent `estimation.fit_mle_stats` of that prefix:
    the two agree to within the solver's tolerance. MAP fits are independent fits.

    Args:
        scores: `[..., K]` scores in [0, 1].
        mask: `[..., K]` bool prefix mask.
        prior_mu: optional prior centre of mu, broadcasting against `[...]`.
        prior_sigma: optional prior centre of sigma, broadcasting against `[...]`.
        prior_scale: standard deviations of the Gaussian priors on (mu, sigma), scalars or
            per question like the centres.

    Returns:
        Fit with fields `[..., K]`: entry j fits the first j + 1 samples.
    """
    scores, mask = validation.check_scores(scores, mask)
    _check_prior(prior_mu, prior_sigma, prior_scale)
    return _prefix_fits(scores, mask, prior_mu, prior_sigma, prior_scale)


def _prefix_fits(scores, mask, prior_mu=None, prior_sigma=None, prior_scale=(0.1, 0.1)):
    """`prefix_fits` without the checks."""
    n, s1, s2 = estimation._prefix_stats(scores, mask)
    if prior_mu is None:
        return _warm_mle_fits(n, s1, s2)
    # Per-question prior arguments broadcast over the prefix axis.
    prior_mu, prior_sigma, scale_mu, scale_sigma = (
        jnp.asarray(x)[..., None] for x in (prior_mu, prior_sigma, *prior_scale)
    )
    return estimation._fit_map_stats(n, s1, s2, prior_mu, prior_sigma, scale_mu, scale_sigma)


def _warm_mle_fits(n, s1, s2):
    """MLE of every prefix from cumulative statistics `[..., K]`, each prefix's fit started
    from the previous one's (`_warm_scan`), the rows in chunks of at most the solver's block."""
    shape = n.shape
    rows = math.prod(shape[:-1])
    chunks, width = _chunking(rows)

    def per_chunk(x):  # [..., K] -> [chunks, K, width]; padding rows have n = 0 (no work)
        x = jnp.pad(x.reshape(rows, shape[-1]), ((0, chunks * width - rows), (0, 0)))
        return x.reshape(chunks, width, shape[-1]).transpose(0, 2, 1)

    fit = _warm_chunks(per_chunk(n), per_chunk(s1), per_chunk(s2))
    return jax.tree_util.tree_map(
        lambda x: x.transpose(0, 2, 1).reshape(chunks * width, -1)[:rows].reshape(shape), fit
    )


def _chunking(rows: int) -> tuple[int, int]:
    """(chunks, width): the rows split into equal chunks of at most the solver's block.

    Widths are powers of two up to 128, then multiples of 128: little padding, and
    differently shaped batches share compiled code.
    """
    chunks = max(1, -(-rows // estimation.BLOCK))
    width = -(-rows // chunks)
    if width <= 128:
        return chunks, max(8, 1 << (width - 1).bit_length())
    return chunks, -(-width // 128) * 128


# Newton iterations all fits of a prefix run from their warm start before the unfinished
# ones (about 5%) are gathered and finished apart.
_WARM_STEPS = 3


def _warm_schedule(width: int) -> tuple[tuple[int, int | None], ...]:
    """The solver's rounds for one prefix of a chunk (see `estimation._solve`): all fits
    for `_WARM_STEPS` iterations, then the unfinished ones gathered into narrower buffers."""
    return (
        (_WARM_STEPS, None),
        (_WARM_STEPS + 2, max(width // 8, 8)),
        (estimation.MAX_STEPS, max(width // 64, 8)),
    )


@jax.jit
def _warm_chunks(n, s1, s2):
    """`_warm_scan` of every chunk in turn: stats `[chunks, K, width]`."""
    return jax.lax.map(lambda chunk: _warm_scan(*chunk), (n, s1, s2))


class _Previous(NamedTuple):
    """What the fit of prefix j + 1 starts from (`_warm_scan`): prefix j's fit and moments."""

    mu: jax.Array
    sigma: jax.Array
    mean: jax.Array
    sd: jax.Array
    follow: jax.Array  # its fit was solved and certified: start from it


def _warm_start(previous: _Previous, mean, sd):
    """(mu_0, sigma_0, use) of the next prefix: the previous fit moved with the moments,
    mu_0 = m + (mu - m'), sigma_0 = sd sigma / sd' (m', sd' the previous prefix's mean
    and standard deviation), a coordinate on its bound of the box staying there."""
    mu_lo, mu_hi = estimation.MU_BOUNDS
    sigma_lo, sigma_hi = estimation.SIGMA_BOUNDS
    moved_mu = mean + (previous.mu - previous.mean)
    moved_sigma = sd * previous.sigma / jnp.where(previous.sd > 0, previous.sd, 1.0)
    mu = jnp.where((previous.mu <= mu_lo) | (previous.mu >= mu_hi), previous.mu, moved_mu)
    on_bound = (previous.sigma <= sigma_lo) | (previous.sigma >= sigma_hi)
    return mu, jnp.where(on_bound, previous.sigma, moved_sigma), previous.follow


def _warm_scan(n, s1, s2):
    """MLE of every prefix, prefix j + 1 started from prefix j's solution.

    The NLL is convex in the natural parameters, over a box that is convex there too, so
    the optimum is unique and the start only decides how fast it is reached. The start is
    the previous fit moved with the sample moments (`_warm_start`): the gap between a fit
    and its moments (the truncation's correction) changes little from one prefix to the
    next while the moments move by O(1 / n), so this start is closer than either the
    moments or the previous fit alone; a fit on an edge of the box mostly stays there. A
    prefix whose previous fit is uncertified or a convention (no data, all scores equal)
    starts from its moments, as an independent fit does; so does a fit that the warm start
    left uncertified (`_fit_or_refit`). MAP objectives can have several local optima, and
    a warm start would follow one of them along the prefixes: they are not warm-started.

    Args:
        n, s1, s2: `[K, width]` cumulative sufficient statistics, prefix j in row j.

    Returns:
        Fit with fields `[K, width]`.
    """
    schedule = _warm_schedule(n.shape[1])

    def step(previous: _Previous, stats):
        mean, var = estimation._moments(*stats)
        sd = jnp.sqrt(var)
        fit = _fit_or_refit(stats, schedule, _warm_start(previous, mean, sd))
        certified = (fit.status == estimation.FitStatus.CONVERGED) | (
            fit.status == estimation.FitStatus.AT_BOUND
        )
        # A fit without iterations is a convention (no data, or all scores equal).
        return _Previous(fit.mu, fit.sigma, mean, sd, certified & (fit.steps > 0)), fit

    zeros = jnp.zeros(n.shape[1], n.dtype)
    first = _Previous(zeros, zeros, zeros, zeros, jnp.zeros(n.shape[1], bool))
    return jax.lax.scan(step, first, (n, s1, s2))[1]


def _fit_or_refit(stats, schedule, start):
    """`estimation._fit` (MLE) from the warm start; fits that end uncertified there are
    fitted again from the moments, as an independent fit is (from a start far from the
    moments the solver can stop on a flat ridge, where rounding noise hides the last steps)."""
    fit = estimation._fit(*stats, None, schedule, start)
    stuck = fit.status == estimation.FitStatus.MAX_STEPS

    def refit():
        cold = estimation._fit(*stats, None, schedule)
        cold = cold._replace(steps=cold.steps + fit.steps)
        return jax.tree_util.tree_map(lambda c, w: jnp.where(stuck, c, w), cold, fit)

    return jax.lax.cond(jnp.any(stuck), refit, lambda: fit)


def nstar_reached(n: ArrayLike, n_star: ArrayLike, min_samples: ArrayLike) -> ArrayLike:
    """OptScale's stopping test before the cap: n >= max(min_samples, N*), elementwise.

    Written with operators only, so that the replay policies (jax arrays) and the live loop
    (numpy arrays) call the same test. The rule stops at the first n where this holds or
    n reaches max_n.
    """
    return (n >= min_samples) & (n >= n_star)


@jax.jit
def _first_stop(n_star, mask, min_samples, max_n):
    mask = jnp.asarray(mask, bool)
    n = _positions(mask.shape) + 1
    cap = _cap(mask, max_n)
    stop = nstar_reached(n, n_star, min_samples) & (n <= cap[..., None])
    return _first_true(stop, cap)


def first_stop(
    n_star: ArrayLike, mask: ArrayLike, min_samples: ArrayLike = 1, max_n: ArrayLike | None = None
) -> jax.Array:
    """Samples drawn by the sequential rule: the first n with n >= max(min_samples, N*_n).

    Args:
        n_star: `[..., K]` int, N* of the fit to the first j + 1 samples, for every prefix j.
        mask: `[..., K]` bool prefix mask.
        min_samples: m, the minimum number of samples.
        max_n: cap (None: all available).

    Returns:
        int32 `[...]`: the stopping n, or the cap if the rule never fires.
    """
    _check_mask(mask, np.shape(n_star))
    _check_count(min_samples, "min_samples")
    validation.check_max_n(max_n)
    return _first_stop(n_star, mask, min_samples, max_n)


@jax.jit
def _peek_samples(n_star, mask, peek, max_n):
    cap = _cap(jnp.asarray(mask, bool), max_n)
    peek = jnp.asarray(peek, jnp.int32)
    planned = jnp.maximum(_at_prefix(jnp.asarray(n_star), jnp.minimum(peek, cap)), peek)
    return jnp.minimum(planned, cap).astype(jnp.int32)


def peek_samples(
    n_star: ArrayLike, mask: ArrayLike, peek: ArrayLike, max_n: ArrayLike | None = None
) -> jax.Array:
    """Samples drawn by the released code's rule: max(N* of the first `peek`, peek), capped.

    Args:
        n_star: `[..., K]` int, N* of every prefix fit (only prefix `peek` is read).
        mask: `[..., K]` bool prefix mask.
        peek: k, the samples drawn before the single fit.
        max_n: cap (None: all available).

    Returns:
        int32 `[...]`.
    """
    _check_mask(mask, np.shape(n_star))
    _check_count(peek, "peek")
    validation.check_max_n(max_n)
    return _peek_samples(n_star, mask, peek, max_n)


@jax.jit
def _log_cdf(s_min, mu, sigma):
    # The grid's own path, so that a cell of the grid and the single policy agree exactly.
    s_min = jnp.asarray(s_min, mu.dtype)
    return truncnorm.logcdf_from(s_min, mu, sigma, truncnorm.endpoints(mu, sigma))


@functools.partial(jax.jit, static_argnames=("num_alpha", "num_m", "num_peek"))
def _cells_of_s_min(
    mu, sigma, ends, mask, s_min, alphas, ms, peeks, max_n, num_alpha, num_m, num_peek
):
    """Stops of every (alpha, m) and (alpha, k) cell of one s_min: `[A, M + P, ...]`."""
    log_f = truncnorm.logcdf_from(s_min, mu, sigma, ends)
    return _cells_from_log_f(log_f, mask, alphas, ms, peeks, max_n, num_alpha, num_m, num_peek)


def _cells_from_log_f(log_f, mask, alphas, ms, peeks, max_n, num_alpha, num_m, num_peek):
    """Stops of every (alpha, m) and (alpha, k) cell from log P(X < s_min) of every prefix
    fit (`[..., K]`): `[A, M + P, ...]`. Traced inside its callers' jit."""
    mask = jnp.asarray(mask, bool)
    n = _positions(mask.shape) + 1
    cap = _cap(mask, max_n)
    # n >= N*_n  <=>  confidence_n = 1 - F_n^n >= alpha (N* is the minimal such n): one
    # array per s_min, then one comparison per cell.
    confidence = -jnp.expm1(n.astype(log_f.dtype) * log_f)
    drawable = n <= cap[..., None]
    per_alpha = []
    for i in range(num_alpha):
        reached = (confidence >= alphas[i]) & drawable
        stops = [_first_true(reached & (n >= ms[j]), cap) for j in range(num_m)]
        if num_peek:
            n_star = nstar._optimal_n_from_log_cdf(log_f, alphas[i], max_n)
            stops += [_peek_samples(n_star, mask, peeks[j], max_n) for j in range(num_peek)]
        per_alpha.append(jnp.stack(stops))
    return jnp.stack(per_alpha)


def optscale_grid(
    fit: estimation.Fit,
    mask: ArrayLike,
    s_min: Sequence[float],
    alpha: Sequence[float],
    *,
    min_samples: Sequence[int] = (1,),
    peek: Sequence[int] = (),
    max_n: int | None = None,
    on_cell: Callable[[int], None] | None = None,
) -> tuple[list[tuple[float, float, str, int]], jax.Array]:
    """Samples drawn by OptScale over a hyper-parameter grid, from one set of prefix fits.

    Nothing is refitted per cell. Per s_min, log F(s_min) and the confidence
    1 - F_n(s_min)^n of every prefix are computed once; the sequential stop of each
    (alpha, m) is then the first n >= m whose confidence reaches alpha (the same as
    n >= N*_n, N* being minimal), and the one-fit stop of each (alpha, k) reads N* at
    prefix k only. Gives the same samples as `sequential_stop` / `peek_stop` cell by cell.

    Args:
        fit: `prefix_fits` of the scores, fields `[..., K]`.
        mask: `[..., K]` bool prefix mask.
        s_min: thresholds in [0, 1].
        alpha: target probabilities in (0, 1).
        min_samples: m values of the sequential rule (empty: none).
        peek: k values of the one-fit rule (empty: none).
        max_n: cap (None: all available).
        on_cell: called after each s_min with the number of (s_min, alpha) cells done.

    Returns:
        (cells, samples): cells[i] = (s_min, alpha, "m" or "k", value), ordered by s_min,
        alpha, then the m values followed by the k values; samples int32 `[len(cells), ...]`.
    """
    _check_grid(mask, s_min, alpha, min_samples, peek, max_n, np.shape(fit.mu))
    return _optscale_grid(fit, mask, s_min, alpha, min_samples, peek, max_n, on_cell)


def _check_grid(mask, s_min, alpha, min_samples, peek, max_n, shape=None) -> None:
    """Checks the mask (of `shape`) and the hyper-parameter grids of `optscale_grid`."""
    _check_mask(mask, shape)
    validation.check_unit(np.asarray(s_min, float), "s_min")
    validation.check_open_unit(np.asarray(alpha, float), "alpha")
    for name, values in (("min_samples", min_samples), ("peek", peek)):
        if len(values):
            _check_count(np.asarray(values), name)
    validation.check_max_n(max_n)


def _optscale_grid(
    fit, mask, s_min, alpha, min_samples, peek, max_n, on_cell=None, mesh=None, axis=0
):
    """`optscale_grid` without the checks; each s_min's cells sharded over `mesh` unless it
    is None (`devices.run_on_mesh`; `axis`: the question axis of the fits and mask)."""
    cells = _grid_cells(s_min, alpha, min_samples, peek)
    if not cells:
        return cells, jnp.zeros((0, *np.shape(mask)[:-1]), jnp.int32)
    dtype = fit.mu.dtype
    thresholds = (
        jnp.asarray(alpha, dtype), jnp.asarray(min_samples, jnp.int32), jnp.asarray(peek, jnp.int32)
    )  # fmt: skip
    cells_of = devices.bound(_cells_of_s_min, **_grid_statics(max_n, alpha, min_samples, peek))
    # The truncation-point terms of log F are shared by every s_min.
    ends = truncnorm.endpoints(jnp.asarray(fit.mu), jnp.asarray(fit.sigma))

    def stops_of(s):
        return devices.run_on_mesh(
            cells_of, fit.mu, fit.sigma, ends, mask, mesh=mesh, axis=axis, out_axis=axis + 2,
            replicated=(jnp.asarray(s, dtype), *thresholds),
        )  # fmt: skip

    return cells, _stops_by_s_min(stops_of, s_min, len(alpha), on_cell)


def _grid_statics(max_n, alpha, min_samples, peek) -> dict:
    """The arguments of `_cells_of_s_min` and `_cells_of_log_miss` fixed by the grid's shape."""
    return {
        "max_n": max_n, "num_alpha": len(alpha), "num_m": len(min_samples), "num_peek": len(peek)
    }  # fmt: skip


def _stops_by_s_min(stops_of, s_min, num_alpha, on_cell):
    """`[cells, ...]`: `stops_of(s)` (`[A, M + P, ...]`) of every s_min, in the grid's cell
    order; `on_cell` is told of the A cells done after each s_min."""
    per_s_min = []
    for s in s_min:
        stops = stops_of(s)
        per_s_min.append(stops.reshape(-1, *stops.shape[2:]))
        if on_cell is not None:
            on_cell(num_alpha)
    return jnp.concatenate(per_s_min)


def _grid_cells(s_min, alpha, min_samples, peek) -> list[tuple[float, float, str, int]]:
    """The cells of an OptScale grid: by s_min, alpha, then the m values and the k values."""
    return [
        (s, a, kind, value)
        for s in s_min
        for a in alpha
        for kind, values in (("m", min_samples), ("k", peek))
        for value in values
    ]


_cells_of_log_miss = jax.jit(_cells_from_log_f, static_argnames=("num_alpha", "num_m", "num_peek"))


def _optscale_grid_of_log_miss(
    log_miss_at: Callable[[float], jax.Array],
    mask,
    s_min,
    alpha,
    min_samples,
    peek,
    max_n,
    on_cell=None,
    mesh=None,
    axis=0,
):
    """`_optscale_grid` for any score law: `log_miss_at(s)` gives log P(X < s) under the
    fit of every prefix (`[..., K]`, the law's `log_miss`; see `optscale_jax.laws`), from
    which every cell stops at the first n >= max(m, N*_n) (N* as `laws.optimal_n`), or
    reads N* at prefix k. Same cells and shapes as `_optscale_grid`, and the same `mesh`."""
    cells = _grid_cells(s_min, alpha, min_samples, peek)
    if not cells:
        return cells, jnp.zeros((0, *np.shape(mask)[:-1]), jnp.int32)
    ms = jnp.asarray(min_samples, jnp.int32)
    peeks = jnp.asarray(peek, jnp.int32)
    cells_of = devices.bound(_cells_of_log_miss, **_grid_statics(max_n, alpha, min_samples, peek))

    def stops_of(s):
        log_f = log_miss_at(s)
        return devices.run_on_mesh(
            cells_of, log_f, mask, mesh=mesh, axis=axis, out_axis=axis + 2,
            replicated=(jnp.asarray(alpha, log_f.dtype), ms, peeks),
        )  # fmt: skip

    return cells, _stops_by_s_min(stops_of, s_min, len(alpha), on_cell)


def sequential_stop(
    scores: ArrayLike,
    mask: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    min_samples: ArrayLike = 1,
    max_n: ArrayLike | None = None,
    prior_mu: ArrayLike | None = None,
    prior_sigma: ArrayLike | None = None,
    prior_scale: tuple[ArrayLike, ArrayLike] = (0.1, 0.1),
) -> Decision:
    """OptScale as in the paper: refit after every sample, stop once n >= max(m, N*).

    Without a prior this is OptScale0 (MLE); with `prior_mu`/`prior_sigma` it is OptScalet
    (MAP). After n samples N* = ceil(log(1 - alpha) / log F(s_min; mu_n, sigma_n)) with
    (mu_n, sigma_n) the fit to those n; the policy stops at the first n >= max(m, N*), or
    at the cap. The returned sample is the best-scored one drawn.

    Args:
        scores: `[..., K]` scores in [0, 1].
        mask: `[..., K]` bool prefix mask.
        s_min: score threshold, in [0, 1].
        alpha: target probability, in (0, 1).
        min_samples: m, the minimum number of samples.
        max_n: cap (None: all available).
        prior_mu: optional prior centre of mu, broadcasting against `[...]`.
        prior_sigma: optional prior centre of sigma.
        prior_scale: standard deviations of the priors on (mu, sigma).

    Returns:
        Decision.
    """
    prior = (prior_mu, prior_sigma, prior_scale)
    scores, mask = _check_optscale(
        scores, mask, s_min, alpha, max_n, prior, {"min_samples": min_samples}
    )
    fit = _prefix_fits(scores, mask, *prior)
    log_f = _log_cdf(s_min, fit.mu, fit.sigma)
    samples = _first_stop(
        nstar._optimal_n_from_log_cdf(log_f, alpha, max_n), mask, min_samples, max_n
    )
    return Decision(samples, _at_prefix(_running_best(scores, mask), samples))


def peek_stop(
    scores: ArrayLike,
    mask: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    peek: ArrayLike,
    max_n: ArrayLike | None = None,
    prior_mu: ArrayLike | None = None,
    prior_sigma: ArrayLike | None = None,
    prior_scale: tuple[ArrayLike, ArrayLike] = (0.1, 0.1),
) -> Decision:
    """OptScale as released: one fit on the first `peek` samples, draw max(N*, peek), capped.

    Args:
        scores, mask, s_min, alpha, max_n, prior_mu, prior_sigma, prior_scale: as in
            `sequential_stop` (a prior makes the single fit a MAP fit).
        peek: k, the samples drawn before the single fit.

    Returns:
        Decision.
    """
    scores, mask = _check_optscale(
        scores, mask, s_min, alpha, max_n, (prior_mu, prior_sigma, prior_scale), {"peek": peek}
    )
    mask = jnp.asarray(mask, bool)
    cap = _cap(mask, max_n)
    peek = jnp.asarray(peek, jnp.int32)
    first_k = mask & (_positions(mask.shape) < jnp.minimum(peek, cap)[..., None])
    stats = estimation._sufficient_stats(scores, first_k)
    if prior_mu is None:
        fit = estimation._fit_mle_stats(*stats)
    else:
        fit = estimation._fit_map_stats(*stats, prior_mu, prior_sigma, *prior_scale)
    log_f = _log_cdf(s_min, fit.mu, fit.sigma)
    planned = jnp.maximum(nstar._optimal_n_from_log_cdf(log_f, alpha, max_n), peek)
    samples = jnp.minimum(planned, cap).astype(jnp.int32)
    return Decision(samples, _at_prefix(_running_best(scores, mask), samples))
