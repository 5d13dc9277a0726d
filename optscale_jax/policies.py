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
jit-compiled body; pieces such as `running_best`, `first_stop` and `peek_samples` let a
replay share one prefix fit across a whole hyper-parameter grid.

Example:
    >>> import numpy as np
    >>> from optscale_jax import policies
    >>> answers = np.array([[2, 0, 0, 2, 1]])
    >>> policies.majority_vote(answers, answers >= -1, n=4).chosen  # 2-2 tie: 2 came first
    Array([0], dtype=int32)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from optscale_jax import estimation, nstar, truncnorm, validation

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


def _check_optscale(scores, mask, s_min, alpha, max_n, prior_mu, prior_sigma):
    scores, _ = validation.check_scores(scores, mask)
    _check_mask(mask, np.shape(scores))
    validation.check_unit(s_min, "s_min")
    validation.check_open_unit(alpha, "alpha")
    validation.check_max_n(max_n)
    if (prior_mu is None) != (prior_sigma is None):
        raise ValueError("prior_mu and prior_sigma must be given together")


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


@functools.partial(jax.jit, static_argnames=("num_codes",))
def _asc(answers, mask, threshold, min_samples, max_n, num_codes):
    tally, first = _tallies(answers, mask, None, num_codes)
    if num_codes == 1:
        lead, runner_up = tally[..., 0], jnp.zeros_like(tally[..., 0])
    else:
        top, _ = jax.lax.top_k(tally, 2)
        lead, runner_up = top[..., 0], top[..., 1]
    dtype = jnp.result_type(float)
    # P(X > 1/2) for X ~ Beta(lead + 1, runner_up + 1) equals I_{1/2}(runner_up + 1, lead + 1).
    confidence = jax.scipy.special.betainc(
        (runner_up + 1).astype(dtype), (lead + 1).astype(dtype), jnp.asarray(0.5, dtype)
    )
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
    (= I_{1/2}(v2 + 1, v1 + 1)). The answer is the majority vote of the drawn samples.

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

    One batched call: the MLE (OptScale0) or, with a prior, the MAP fit (OptScalet).

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
    n, s1, s2 = estimation.prefix_stats(scores, mask)
    if prior_mu is None:
        return estimation.fit_mle_stats(n, s1, s2)
    # Per-question prior arguments broadcast over the prefix axis.
    prior_mu, prior_sigma, scale_mu, scale_sigma = (
        jnp.asarray(x)[..., None] for x in (prior_mu, prior_sigma, *prior_scale)
    )
    return estimation.fit_map_stats(n, s1, s2, prior_mu, prior_sigma, (scale_mu, scale_sigma))


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
    mask = jnp.asarray(mask, bool)
    log_f = truncnorm.logcdf_from(s_min, mu, sigma, ends)
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
            n_star = nstar.optimal_n_from_log_cdf(log_f, alphas[i], max_n)
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
    _check_mask(mask, np.shape(fit.mu))
    validation.check_unit(np.asarray(s_min, float), "s_min")
    validation.check_open_unit(np.asarray(alpha, float), "alpha")
    for name, values in (("min_samples", min_samples), ("peek", peek)):
        if len(values):
            _check_count(np.asarray(values), name)
    validation.check_max_n(max_n)
    cells = [
        (s, a, kind, value)
        for s in s_min
        for a in alpha
        for kind, values in (("m", min_samples), ("k", peek))
        for value in values
    ]
    if not cells:
        return cells, jnp.zeros((0, *np.shape(mask)[:-1]), jnp.int32)
    dtype = fit.mu.dtype
    alphas = jnp.asarray(alpha, dtype)
    ms = jnp.asarray(min_samples, jnp.int32)
    peeks = jnp.asarray(peek, jnp.int32)
    # The truncation-point terms of log F are shared by every s_min.
    ends = truncnorm.endpoints(fit.mu, fit.sigma)
    per_s_min = []
    for s in s_min:
        stops = _cells_of_s_min(
            fit.mu, fit.sigma, ends, mask, jnp.asarray(s, dtype), alphas, ms, peeks, max_n,
            num_alpha=len(alpha), num_m=len(min_samples), num_peek=len(peek),
        )  # fmt: skip
        per_s_min.append(stops.reshape(-1, *stops.shape[2:]))
        if on_cell is not None:
            on_cell(len(alpha))
    return cells, jnp.concatenate(per_s_min)


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
    _check_optscale(scores, mask, s_min, alpha, max_n, prior_mu, prior_sigma)
    _check_count(min_samples, "min_samples")
    fit = prefix_fits(scores, mask, prior_mu, prior_sigma, prior_scale)
    log_f = _log_cdf(s_min, fit.mu, fit.sigma)
    samples = _first_stop(
        nstar.optimal_n_from_log_cdf(log_f, alpha, max_n), mask, min_samples, max_n
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
        scores: `[..., K]` scores in [0, 1].
        mask: `[..., K]` bool prefix mask.
        s_min: score threshold, in [0, 1].
        alpha: target probability, in (0, 1).
        peek: k, the samples drawn before the single fit.
        max_n: cap (None: all available).
        prior_mu: optional prior centre of mu (MAP fit).
        prior_sigma: optional prior centre of sigma.
        prior_scale: standard deviations of the priors on (mu, sigma).

    Returns:
        Decision.
    """
    _check_optscale(scores, mask, s_min, alpha, max_n, prior_mu, prior_sigma)
    _check_count(peek, "peek")
    mask = jnp.asarray(mask, bool)
    cap = _cap(mask, max_n)
    peek = jnp.asarray(peek, jnp.int32)
    first_k = mask & (_positions(mask.shape) < jnp.minimum(peek, cap)[..., None])
    if prior_mu is None:
        fit = estimation.fit_mle(scores, first_k)
    else:
        fit = estimation.fit_map(scores, prior_mu, prior_sigma, prior_scale, first_k)
    log_f = _log_cdf(s_min, fit.mu, fit.sigma)
    planned = jnp.maximum(nstar.optimal_n_from_log_cdf(log_f, alpha, max_n), peek)
    samples = jnp.minimum(planned, cap).astype(jnp.int32)
    return Decision(samples, _at_prefix(_running_best(scores, mask), samples))
