"""Budget allocation across questions: where the next samples of a fixed total budget help most.

OptScale decides for each question on its own when to stop. With one total budget for a
batch of questions, the same fitted score laws say which question's next sample is worth
most. Data flow (each arrow one function):

    scores drawn so far -> `init` / `update` (`AllocationState`: n, sum s, sum s^2, best
    score, cost, prior per question) -> `fitted_law` (MAP truncated normal) ->
    `marginal_gains` ([Q, M] table) -> `allocate` / `plan_wave` (counts [Q]) -> draw them ->
    `update` -> ...

`replay_allocation` runs that loop on a logged score array (one batched fit per wave);
`uniform_samples`, `elimination_samples` and `oracle_samples` are the baselines at the same
total budget.

Objectives. Question q has best score b_q so far (-inf before its first sample) and fitted
score CDF F_q. Its value after m more samples X_1..X_m is

* `reach`: G_q(m) = 1[b_q < s_min] (1 - F_q(s_min)^m), the probability that its best score
  reaches s_min (already reached: nothing to gain). Summed over questions: the expected
  number of questions whose best score reaches s_min.
* `best`: V_q(m) = E[max(b, X_1..X_m)] with b = clip(b_q, 0, 1) (a question without samples
  counts as 0). Since max(b, M_m) > x iff M_m > x for x >= b, and the scores lie in [0, 1],
  V_q(m) = b + int_b^1 (1 - F_q(x)^m) dx.

The marginal gain of the m-th extra sample (m = 1..M) is the difference in m:

    reach:  g_q(m) = 1[b_q < s_min] F^(m-1) (1 - F),         F = F_q(s_min),
    best:   g_q(m) = int_b^1 F_q(x)^(m-1) (1 - F_q(x)) dx.

Concavity (each question's total gain is concave in m). reach: g_q(m) >= 0 and
g_q(m + 1) = F g_q(m) <= g_q(m) since 0 <= F <= 1. best: for every x, 0 <= F(x) <= 1 gives
F(x)^m (1 - F(x)) <= F(x)^(m-1) (1 - F(x)), so the integrand, and with it the integral,
does not increase with m. Both tables therefore have non-negative rows that do not increase
along m.

Greedy is optimal. Choose counts c_q (sum c_q = B, 0 <= c_q <= M) to maximise
sum_q G_q(c_q) = sum_q sum_{m <= c_q} g_q(m): every allocation is a choice of B entries of
the table that forms a prefix of each row, so its value is at most the sum of the B largest
entries. The B largest entries, ties broken by m within a row, are prefixes of the rows (if
g_q(m') is among them and m < m', then g_q(m) >= g_q(m') is too), so taking them attains the
bound: `allocate` sorts the table once, no loop. In tokens, the entries are ranked by gain
per expected token of their question (the knapsack greedy, exact for the fractional
relaxation, so within one entry's gain of the optimum).

Numerics. reach gains are exp((m - 1) log F + log(1 - F)) from `truncnorm.logcdf`, accurate
in both tails. best gains use composite Gauss-Legendre quadrature on [b, 1], never sampling: the
panels end at quantiles of the fitted law (probabilities 1e-12 .. 1 - 1e-12) clipped to
[b, 1], so a law of width sigma = 1e-3, or one piled against an end of [0, 1], is resolved as
well as a wide one; every node's term decreases in m, so the computed rows are monotone too.

Parameter uncertainty (`posterior`). A MAP fit of two or three scores is often too sure of a
short upper tail, and the plug-in F_q(s_min) then writes off questions that can still reach
s_min. By default (`posterior="laplace"`) every gain is averaged over the Laplace
approximation of the question's posterior in theta = (mu, log sigma), N(theta_MAP, H^-1) with
H the Hessian of the negative log posterior at the MAP fit, at the nine points of the 3 x 3
Gauss-Hermite rule: g_q(m) = sum_j w_j g_q(m; theta_j), so `reach` becomes the posterior
predictive 1 - E[F_q(s_min)^m]. The weights are positive, so the rows stay non-negative and
non-increasing and greedy stays optimal. `posterior="map"` plugs the MAP fit in.

Waves (`replay_allocation`, or `init` / `plan_wave` / `update` in a live loop): every
question starts with m0 samples (without a given prior, the empirical-Bayes prior is fitted
on them); then, until the budget is spent, all questions are refitted in one batched call
and the next `wave` samples go to the largest gains.

Example:
    >>> import numpy as np
    >>> from optscale_jax import allocation
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.uniform(0.0, 1.0, size=(20, 16))
    >>> samples = allocation.replay_allocation(scores, scores >= 0, budget=4, m0=2)
    >>> int(samples.sum())
    80
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from optscale_jax import empirical_bayes, estimation, policies, truncnorm, validation
from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax._numerics import log1mexp as _log1mexp

__all__ = [
    "DEFAULT_POSTERIOR",
    "OBJECTIVES",
    "POSTERIORS",
    "AllocationState",
    "allocate",
    "best_gains",
    "elimination_samples",
    "fitted_law",
    "init",
    "marginal_gains",
    "oracle_samples",
    "plan_wave",
    "reach_gains",
    "replay_allocation",
    "uniform_samples",
    "update",
    "with_empirical_prior",
]

# Panel ends of the `best` quadrature, as probabilities of the fitted law (below 1/2; the
# complements are added). Outside the outer ones the integrand is below 1e-12.
_PANEL_TAILS = (1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 1e-2, 0.05, 0.15, 0.3)
_PANEL_PROBABILITIES = (*_PANEL_TAILS, 0.5, *(1.0 - p for p in reversed(_PANEL_TAILS)))
_NODES_PER_PANEL = 8
_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(_NODES_PER_PANEL)
# Prior fields of a state whose empirical-Bayes prior is fitted next (never used in a fit).
_UNSET_PRIOR = (0.5, 0.25, 1.0, 1.0)


class AllocationState(NamedTuple):
    """What the allocation knows about each question; every field is `[Q]`.

    Attributes:
        n: samples drawn (float count).
        s1: sum of their scores.
        s2: sum of their squared scores.
        best: best score drawn (-inf before the first sample).
        cost: total cost of the drawn samples (tokens; equal to n when costs are in samples).
        prior_mu: centre of the Gaussian prior on mu of the MAP fit.
        prior_sigma: centre of the prior on sigma.
        prior_scale_mu: standard deviation of the prior on mu.
        prior_scale_sigma: standard deviation of the prior on sigma.
    """

    n: jax.Array
    s1: jax.Array
    s2: jax.Array
    best: jax.Array
    cost: jax.Array
    prior_mu: jax.Array
    prior_sigma: jax.Array
    prior_scale_mu: jax.Array
    prior_scale_sigma: jax.Array


# --- marginal gains ------------------------------------------------------------------------------


def _reach_gains(mu, sigma, best, s_min, horizon):
    """`reach_gains` without the checks: [..., horizon], exp((m - 1) log F + log(1 - F))."""
    dtype = _float_dtype(mu, sigma)  # the law's dtype; best is cast to it
    s_min = jnp.asarray(s_min, dtype)
    mu, sigma = jnp.asarray(mu, dtype), jnp.asarray(sigma, dtype)
    log_f = truncnorm.logcdf(s_min, mu, sigma)[..., None]
    steps = jnp.arange(horizon, dtype=dtype)  # m - 1
    # steps * (-inf) would be NaN at steps = 0 (F = 0): floor log F at the lowest float.
    log_power = steps * jnp.maximum(log_f, jnp.finfo(dtype).min)
    gains = jnp.exp(log_power + _log1mexp(log_f))
    return jnp.where((jnp.asarray(best, dtype) < s_min)[..., None], gains, 0.0)


def _quadrature(mu, sigma, low):
    """Nodes and weights [..., P * G] of composite Gauss-Legendre on [low, 1], panels at the
    fitted law's quantiles (`_PANEL_PROBABILITIES`) clipped to [low, 1]."""
    dtype = mu.dtype
    probabilities = jnp.asarray(_PANEL_PROBABILITIES, dtype)
    inner = truncnorm.ppf(probabilities, mu[..., None], sigma[..., None])
    inner = jnp.clip(inner, low[..., None], 1.0)
    ones = jnp.ones_like(low)[..., None]
    edges = jnp.concatenate([low[..., None], inner, ones], axis=-1)
    half = 0.5 * (edges[..., 1:] - edges[..., :-1])
    centre = 0.5 * (edges[..., 1:] + edges[..., :-1])
    nodes = centre[..., None] + half[..., None] * jnp.asarray(_LEGENDRE_NODES, dtype)
    weights = half[..., None] * jnp.asarray(_LEGENDRE_WEIGHTS, dtype)
    flat = (*nodes.shape[:-2], -1)
    return nodes.reshape(flat), weights.reshape(flat)


def _best_gains(mu, sigma, best, s_min, horizon):
    """`best_gains` without the checks: [..., horizon] (`s_min` unused, for the table)."""
    del s_min
    dtype = _float_dtype(mu, sigma)  # the law's dtype; best is cast to it
    mu, sigma, best = jnp.broadcast_arrays(*(jnp.asarray(x, dtype) for x in (mu, sigma, best)))
    low = jnp.clip(best, 0.0, 1.0)
    nodes, weights = _quadrature(mu, sigma, low)
    ends = truncnorm.endpoints(mu[..., None], sigma[..., None])
    log_f = truncnorm.logcdf_from(nodes, mu[..., None], sigma[..., None], ends)
    cdf = jnp.exp(log_f)
    weighted_tail = weights * jnp.exp(_log1mexp(log_f))  # w (1 - F), exact near F = 1

    # Gain m is sum_nodes w (1 - F) F^(m-1); F^(m-1) by repeated products keeps memory at
    # [..., nodes] (not [..., M, nodes]), and fl(p F) <= p, so rows stay non-increasing.
    def next_sample(power, _):
        return power * cdf, jnp.sum(weighted_tail * power, axis=-1)

    _, gains = lax.scan(next_sample, jnp.ones_like(cdf), None, length=horizon)
    return jnp.moveaxis(gains, 0, -1)


# Objective name -> gains function (mu, sigma, best, s_min, horizon) -> [..., horizon].
OBJECTIVES: dict[str, Callable[..., jax.Array]] = {"reach": _reach_gains, "best": _best_gains}
# How a fitted question's gains treat its parameters: averaged over the Laplace posterior
# (the default: MAP fits of 2-3 scores are too sure of a short upper tail), or the MAP plug-in.
POSTERIORS = ("laplace", "map")
DEFAULT_POSTERIOR = "laplace"


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective: unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})"
        )


def _check_integer(value: Any, name: str, minimum: int | None = None) -> int:
    """value must be a Python or numpy integer (not a bool), >= minimum if given."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return int(value)


def _check_mean_budget(budget: Any) -> float:
    """A mean budget per question: a finite number > 0."""
    if isinstance(budget, bool) or not isinstance(budget, int | float | np.number):
        raise ValueError(f"budget must be a number, got {budget!r}")
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be finite and > 0, got {budget!r}")
    return float(budget)


def _check_law(mu: ArrayLike, sigma: ArrayLike, best: ArrayLike) -> None:
    validation.check_finite(mu, "mu")
    validation.check_positive(sigma, "sigma")
    if not validation.is_traced(best) and np.any(np.isnan(np.asarray(best))):
        raise ValueError("best must not be NaN (use -inf before the first sample)")
    validation.check_broadcast({"mu": mu, "sigma": sigma, "best": best})


def reach_gains(
    mu: ArrayLike, sigma: ArrayLike, best: ArrayLike, s_min: ArrayLike, horizon: int
) -> jax.Array:
    """Marginal gains of the `reach` objective: 1[best < s_min] F^(m-1) (1 - F), m = 1..horizon.

    F = F(s_min; mu, sigma), the truncated-normal CDF on [0, 1]; computed in log space.

    Args:
        mu: location of each question's law, `[...]`.
        sigma: its scale (> 0).
        best: best score drawn so far (-inf if none).
        s_min: score threshold in [0, 1].
        horizon: M, the number of extra samples.

    Returns:
        `[..., M]`: entry m - 1 is the gain of the m-th extra sample.
    """
    _check_law(mu, sigma, best)
    validation.check_unit(s_min, "s_min")
    _check_integer(horizon, "horizon", 1)
    return _jit_gains(mu, sigma, best, s_min, "reach", int(horizon))


def best_gains(mu: ArrayLike, sigma: ArrayLike, best: ArrayLike, horizon: int) -> jax.Array:
    """Marginal gains of the `best` objective: int_b^1 F(x)^(m-1) (1 - F(x)) dx, m = 1..horizon.

    The differences in m of E[max(b, X_1..X_m)], b = clip(best, 0, 1), by composite
    Gauss-Legendre quadrature (module docstring).

    Args:
        mu: location of each question's law, `[...]`.
        sigma: its scale (> 0).
        best: best score drawn so far (-inf if none: counts as 0).
        horizon: M, the number of extra samples.

    Returns:
        `[..., M]`.
    """
    _check_law(mu, sigma, best)
    _check_integer(horizon, "horizon", 1)
    return _jit_gains(mu, sigma, best, 0.0, "best", int(horizon))


@functools.partial(jax.jit, static_argnames=("objective", "horizon"))
def _jit_gains(mu, sigma, best, s_min, objective, horizon):
    return OBJECTIVES[objective](mu, sigma, best, s_min, horizon)


# --- the state -----------------------------------------------------------------------------------


@jax.jit
def _absorb(state: AllocationState, scores, units, start, count) -> AllocationState:
    """Adds samples start .. start + count - 1 of each row of `scores` [..., Q, K]."""
    position = jnp.arange(scores.shape[-1])
    window = (position >= start[..., None]) & (position < (start + count)[..., None])
    values = jnp.where(window, scores, 0.0)
    best = jnp.max(jnp.where(window, scores, -jnp.inf), axis=-1)
    return state._replace(
        n=state.n + count.astype(state.n.dtype),
        s1=state.s1 + values.sum(-1),
        s2=state.s2 + (values * values).sum(-1),
        best=jnp.maximum(state.best, best),
        cost=state.cost + jnp.where(window, units, 0.0).sum(-1),
    )


def _empty_state(shape: tuple[int, ...], dtype, prior_fields) -> AllocationState:
    zeros = jnp.zeros(shape, dtype)
    prior = (jnp.broadcast_to(jnp.asarray(x, dtype), shape) for x in prior_fields)
    return AllocationState(zeros, zeros, zeros, jnp.full(shape, -jnp.inf, dtype), zeros, *prior)


def _prior_fields(prior: Any) -> tuple[Any, Any, Any, Any]:
    """(mu, sigma, scale_mu, scale_sigma) from a `PopulationPrior` (4 fields) or
    (mu, sigma, (scale_mu, scale_sigma)) as replay's priors are; checked."""
    try:
        fields = tuple(prior)
        if len(fields) == 3:
            fields = (fields[0], fields[1], *fields[2])
        mu, sigma, scale_mu, scale_sigma = fields
    except (TypeError, ValueError):
        raise ValueError(
            "prior must be a PopulationPrior (mu, sigma, mu_scale, sigma_scale) or "
            f"(mu, sigma, (mu_scale, sigma_scale)), got {prior!r}"
        ) from None
    estimation._check_prior(mu, sigma, (scale_mu, scale_sigma))
    return mu, sigma, scale_mu, scale_sigma


def _check_cost(cost: ArrayLike | None, shape: tuple[int, ...], mask) -> None:
    if cost is None or validation.is_traced(cost):
        return
    array = np.asarray(cost, np.float64)
    if array.shape != tuple(shape):
        raise ValueError(f"cost has shape {array.shape}, expected {tuple(shape)} like the scores")
    present = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if not np.all(np.isfinite(array[present])) or np.any(array[present] < 0):
        raise ValueError("cost must be finite and >= 0 wherever a sample exists")


def _checked_samples(scores, mask, cost):
    """scores [Q, K], mask, cost checked; returns (scores, mask, units) as jax arrays."""
    scores, _ = validation.check_scores(scores, mask)
    if np.ndim(scores) != 2:
        raise ValueError(f"scores must be [Q, K] (one row per question), got {np.shape(scores)}")
    if mask is None:
        mask = np.ones(np.shape(scores), bool)
    policies._check_mask(mask, np.shape(scores))
    _check_cost(cost, np.shape(scores), mask)
    scores = jnp.asarray(scores)
    mask = jnp.asarray(mask, bool)
    units = mask.astype(scores.dtype) if cost is None else jnp.asarray(cost, scores.dtype)
    return jnp.where(mask, scores, 0.0), mask, jnp.where(mask, units, 0.0)


def init(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    prior: Any = None,
    cost: ArrayLike | None = None,
) -> AllocationState:
    """The state of questions whose first samples are `scores` (each row's masked prefix).

    Args:
        scores: `[Q, k]` scores in [0, 1] drawn so far (e.g. the first m0 of each question).
        mask: optional `[Q, k]` bool prefix mask.
        prior: the MAP fit's prior: a `PopulationPrior`, or (mu, sigma, (scale_mu,
            scale_sigma)), scalars or `[Q]`; None for the empirical-Bayes prior of these
            statistics (`with_empirical_prior`).
        cost: optional `[Q, k]` cost of each sample (tokens); default one per sample.

    Returns:
        `AllocationState` with `[Q]` fields.
    """
    scores, mask, units = _checked_samples(scores, mask, cost)
    fields = _UNSET_PRIOR if prior is None else _prior_fields(prior)
    state = _empty_state(scores.shape[:-1], scores.dtype, fields)
    counts = mask.sum(-1, dtype=jnp.int32)
    state = _absorb(state, scores, units, jnp.zeros_like(counts), counts)
    return state if prior is not None else with_empirical_prior(state)


def update(
    state: AllocationState,
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    cost: ArrayLike | None = None,
) -> AllocationState:
    """Adds newly drawn samples to the state (the prior is kept; see `with_empirical_prior`).

    Args:
        state: the current state, `[Q]` fields.
        scores: `[Q, k]` new scores (rows padded to a common k).
        mask: optional `[Q, k]` bool prefix mask, True where a new sample exists.
        cost: optional `[Q, k]` cost of each new sample.

    Returns:
        The updated `AllocationState`.
    """
    scores, mask, units = _checked_samples(scores, mask, cost)
    if scores.shape[0] != state.n.shape[-1]:
        raise ValueError(f"scores has {scores.shape[0]} rows but the state {state.n.shape[-1]}")
    counts = mask.sum(-1, dtype=jnp.int32)
    return _absorb(state, scores.astype(state.n.dtype), units, jnp.zeros_like(counts), counts)


@jax.jit
def with_empirical_prior(state: AllocationState) -> AllocationState:
    """The state with the empirical-Bayes prior of its own statistics
    (`empirical_bayes.fit_population_prior_stats`; one prior for all questions).

    Questions with fewer than two distinct scores carry no information on the spread and
    are left out of the prior's fit (see `optscale_jax.empirical_bayes`).
    """
    p = empirical_bayes.fit_population_prior_stats(state.n, state.s1, state.s2)

    def per_question(value):
        return jnp.broadcast_to(value.astype(state.n.dtype), state.n.shape)

    return state._replace(
        prior_mu=per_question(p.mu),
        prior_sigma=per_question(p.sigma),
        prior_scale_mu=per_question(p.mu_scale),
        prior_scale_sigma=per_question(p.sigma_scale),
    )


def _fitted_law(state: AllocationState) -> estimation.Fit:
    return estimation._fit_map_stats(
        state.n, state.s1, state.s2, state.prior_mu, state.prior_sigma,
        state.prior_scale_mu, state.prior_scale_sigma,
    )  # fmt: skip


def fitted_law(state: AllocationState) -> estimation.Fit:
    """MAP truncated-normal fit of every question with the state's prior (one batched call).

    Args:
        state: `AllocationState`.

    Returns:
        `estimation.Fit` with `[Q]` fields.
    """
    return _fitted_law(state)


def _law_of(state: AllocationState, law) -> tuple[jax.Array, jax.Array]:
    """(mu, sigma) of each question: the given law, or the MAP fit of the state."""
    if law is not None:
        return law
    fit = _fitted_law(state)
    return fit.mu, fit.sigma


def _check_posterior(posterior: str) -> None:
    if posterior not in POSTERIORS:
        raise ValueError(
            f"posterior: unknown posterior {posterior!r} (choose from {', '.join(POSTERIORS)})"
        )


def _negative_log_posterior(mu, log_sigma, state: AllocationState):
    """-log p(mu, log sigma | scores) up to a constant, elementwise `[Q]` (the MAP objective
    times n: n nll + the prior's quadratic terms)."""
    seen = state.n > 0
    n = jnp.where(seen, state.n, 1.0)
    mean = jnp.where(seen, state.s1 / n, 0.5)
    var = jnp.where(seen, jnp.maximum(state.s2 / n - mean * mean, 0.0), 1.0 / 12.0)
    data, _ = estimation._data_nll(mu, log_sigma, mean, var)
    prior = ((mu - state.prior_mu) / state.prior_scale_mu) ** 2 + (
        (jnp.exp(log_sigma) - state.prior_sigma) / state.prior_scale_sigma
    ) ** 2
    return state.n * data + 0.5 * prior


def _laplace_points(state: AllocationState) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sigma points of the Laplace approximation of each question's posterior.

    The posterior of theta = (mu, log sigma) is approximated by N(theta_MAP, H^-1), H the
    Hessian of `_negative_log_posterior` at the MAP fit; the points are the 3 x 3
    Gauss-Hermite product rule mapped through its Cholesky factor (exact for polynomials of
    degree 5 in theta). Where H is not positive definite (a fit on a bound), the prior's
    standard deviations stand in: (scale_mu, scale_sigma / sigma) in (mu, log sigma).

    Returns:
        (mu `[J, Q]`, sigma `[J, Q]`, weights `[J]`), J = 9, weights positive summing to 1.
    """
    fit = _fitted_law(state)
    mu, log_sigma = fit.mu, jnp.log(fit.sigma)

    def grad(f, argnum):  # elementwise derivative of an elementwise function
        return jax.grad(lambda *x: jnp.sum(f(*x)), argnums=argnum)

    nlp = functools.partial(_negative_log_posterior, state=state)
    h11 = grad(grad(nlp, 0), 0)(mu, log_sigma)
    h12 = grad(grad(nlp, 0), 1)(mu, log_sigma)
    h22 = grad(grad(nlp, 1), 1)(mu, log_sigma)
    det = h11 * h22 - h12 * h12
    definite = (h11 > 0) & (det > 0) & jnp.isfinite(det)
    safe_det = jnp.where(definite, det, 1.0)
    var_mu = jnp.where(definite, h22 / safe_det, state.prior_scale_mu**2)
    cov = jnp.where(definite, -h12 / safe_det, 0.0)
    var_ls = jnp.where(definite, h11 / safe_det, (state.prior_scale_sigma / fit.sigma) ** 2)
    l11 = jnp.sqrt(var_mu)
    l21 = cov / l11
    l22 = jnp.sqrt(jnp.maximum(var_ls - l21 * l21, 0.0))
    nodes = np.sqrt(3.0) * np.array([-1.0, 0.0, 1.0])
    weights = np.array([1.0, 4.0, 1.0]) / 6.0
    z1, z2 = (a.ravel()[:, None] for a in np.meshgrid(nodes, nodes, indexing="ij"))
    point_mu = jnp.clip(mu + l11 * z1, *estimation.MU_BOUNDS)
    point_log_sigma = log_sigma + l21 * z1 + l22 * z2
    point_sigma = jnp.clip(jnp.exp(point_log_sigma), *estimation.SIGMA_BOUNDS)
    point_weights = jnp.asarray(np.outer(weights, weights).ravel(), mu.dtype)
    return point_mu, point_sigma, point_weights


def _state_gains(state, law, objective, s_min, horizon, posterior):
    """`[Q, horizon]` gains of each question's next samples: with the given law, the MAP
    plug-in law (`posterior="map"`), or averaged over the Laplace posterior's sigma points
    (`"laplace"`: g(m) = sum_j w_j g(m; theta_j), still non-negative and non-increasing
    in m since every term is and w_j > 0)."""
    gains = OBJECTIVES[objective]
    if law is not None or posterior == "map":
        mu, sigma = _law_of(state, law)
        return gains(mu, sigma, state.best, s_min, horizon)
    mu, sigma, weights = _laplace_points(state)
    per_point = gains(mu, sigma, state.best, s_min, horizon)
    return jnp.tensordot(weights, per_point, axes=1)


def _checked_law(law: Any, dtype) -> tuple[jax.Array, jax.Array] | None:
    """A known law (mu, sigma) checked and cast to `dtype`, or None."""
    if law is None:
        return None
    try:
        mu, sigma = law
    except (TypeError, ValueError):
        raise ValueError(f"law must be a pair (mu, sigma), got {law!r}") from None
    validation.check_finite(mu, "law")
    validation.check_positive(sigma, "law")
    return jnp.asarray(mu, dtype), jnp.asarray(sigma, dtype)


def marginal_gains(
    state: AllocationState,
    objective: str = "reach",
    s_min: ArrayLike = 0.8,
    horizon: int = 8,
    law: tuple[ArrayLike, ArrayLike] | None = None,
    posterior: str = DEFAULT_POSTERIOR,
) -> jax.Array:
    """The `[Q, horizon]` table of marginal gains of each question's next samples.

    Args:
        state: `AllocationState`.
        objective: "reach" or "best" (module docstring).
        s_min: score threshold of `reach`.
        horizon: M, extra samples per question in the table.
        law: known (mu, sigma) per question instead of the fits (true parameters).
        posterior: "laplace" (gains averaged over the Laplace approximation of each
            question's posterior) or "map" (the MAP fit plugged in); see `POSTERIORS`.

    Returns:
        `[Q, M]` gains, rows non-increasing; ready for `allocate`.
    """
    _check_objective(objective)
    _check_posterior(posterior)
    validation.check_unit(s_min, "s_min")
    _check_integer(horizon, "horizon", 1)
    law = _checked_law(law, state.n.dtype)
    dtype = state.n.dtype
    return _jit_state_gains(
        state, law, objective, jnp.asarray(s_min, dtype), int(horizon), posterior
    )


_jit_state_gains = jax.jit(_state_gains, static_argnames=("objective", "horizon", "posterior"))


# --- greedy allocation ---------------------------------------------------------------------------


def _ranked(values: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Entries of a `[Q, M]` table from the largest value down: (question, m - 1, available).

    -inf marks an unavailable entry (ranked last). Ties go to the smaller m (so each row's
    entries appear in order, and equal gains are spread over questions), then to the
    question first in a seeded random permutation.
    """
    questions, horizon = values.shape
    question = jnp.repeat(jnp.arange(questions, dtype=jnp.int32), horizon)
    step = jnp.tile(jnp.arange(horizon, dtype=jnp.int32), questions)
    tie_rank = jax.random.permutation(key, questions).astype(jnp.int32)
    negated = -values.reshape(-1)
    negated, step, _, question = lax.sort((negated, step, tie_rank[question], question), num_keys=3)
    return question, step, negated < jnp.inf


def _counts(question: jax.Array, taken: jax.Array, questions: int) -> jax.Array:
    return jnp.zeros(questions, jnp.int32).at[question].add(taken.astype(jnp.int32))


@jax.jit
def _allocate(values, budget, key):
    question, _, available = _ranked(values, key)
    taken = available & (jnp.arange(question.shape[0]) < budget)
    return _counts(question, taken, values.shape[0])


def _row_tolerance(values: np.ndarray) -> float:
    """Rounding slack of the non-increasing check: 64 eps of the table's dtype and scale."""
    eps = np.finfo(values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64).eps
    return 64.0 * float(eps) * max(1.0, float(np.max(np.abs(values), initial=0.0)))


def _check_gains(marginal_gains: ArrayLike) -> np.ndarray:
    values = np.asarray(marginal_gains)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            f"marginal_gains must be a numeric [Q, M] table, got shape {values.shape} "
            f"and dtype {values.dtype}"
        )
    validation.check_finite(values, "marginal_gains")
    rises = values[:, 1:] - values[:, :-1] > _row_tolerance(values)
    if rises.any():
        row = int(np.argwhere(rises)[0][0])
        raise ValueError(
            f"marginal_gains must not increase along a row (concave gains); row {row} does"
        )
    return values


def allocate(marginal_gains: ArrayLike, budget: int, seed: int = 0) -> jax.Array:
    """Greedy allocation: the `budget` largest entries of the table, counted per question.

    Optimal for rows that do not increase (concave total gains; module docstring). Ties go to
    the smaller m, then to the question first in a random permutation seeded by `seed`.

    Args:
        marginal_gains: `[Q, M]` finite; entry (q, m - 1) is question q's gain from its m-th
            extra sample, non-increasing along each row (within rounding).
        budget: total extra samples (integer >= 0).
        seed: seed of the tie rule.

    Returns:
        int32 `[Q]` counts in [0, M], summing to min(budget, Q * M).

    Example:
        >>> from optscale_jax.allocation import allocate
        >>> allocate([[0.5, 0.25, 0.125], [0.9, 0.01, 0.0]], budget=3).tolist()
        [2, 1]
    """
    values = _check_gains(marginal_gains)
    budget = _check_integer(budget, "budget", 0)
    seed = _check_integer(seed, "seed")
    values = jnp.asarray(values, _float_dtype(values))
    return _allocate(values, min(budget, values.size), jax.random.PRNGKey(seed))


# --- waves ---------------------------------------------------------------------------------------


def _wave_ranking(state, law, options, s_min, capacity, key):
    """Ranked entries (`_ranked`) of each question's next `horizon` samples by gain per
    expected unit of cost, and that unit cost [Q]; a question has `capacity` samples left.

    A question's expected cost per sample is its mean so far (the mean over all questions
    before its first sample). `options` = (objective, horizon, posterior).
    """
    objective, horizon, posterior = options
    gains = _state_gains(state, law, objective, s_min, horizon, posterior)
    drawn = state.n > 0
    mean_unit = jnp.sum(state.cost) / jnp.maximum(jnp.sum(state.n), 1.0)
    unit = jnp.where(drawn, state.cost / jnp.where(drawn, state.n, 1.0), mean_unit)
    # A free sample (cost 0) ranks first; dividing by 0 would make NaN from a 0 gain.
    per_unit = gains / jnp.maximum(unit, jnp.finfo(gains.dtype).tiny)[..., None]
    open_slot = jnp.arange(horizon) < capacity[..., None]
    return _ranked(jnp.where(open_slot, per_unit, -jnp.inf), key), unit


def _take_wave(ranked, entry_cost, wave, remaining):
    """Entries taken: available, among the first `wave`, and within `remaining` in total."""
    question, _, available = ranked
    spent = jnp.cumsum(jnp.where(available, entry_cost, 0.0))
    return available & (jnp.arange(question.shape[0]) < wave) & (spent <= remaining)


@functools.partial(jax.jit, static_argnames=("wave", "options"))
def _plan_wave(state, capacity, law, budget_left, s_min, key, wave, options):
    ranked, unit = _wave_ranking(state, law, options, s_min, capacity, key)
    taken = _take_wave(ranked, unit[ranked[0]], wave, budget_left)
    return _counts(ranked[0], taken, state.n.shape[0])


def plan_wave(
    state: AllocationState,
    wave: int,
    budget_left: float,
    objective: str = "reach",
    s_min: float = 0.8,
    capacity: ArrayLike | None = None,
    law: tuple[ArrayLike, ArrayLike] | None = None,
    seed: int = 0,
    wave_index: int = 0,
    posterior: str = DEFAULT_POSTERIOR,
) -> jax.Array:
    """How many samples each question draws in the next wave (live loop; one batched fit).

    The `wave` entries of largest gain per expected unit of cost, while their expected cost
    fits `budget_left`, with the state's prior (`replay_allocation` keeps the empirical-Bayes
    prior of the first m0 samples; `with_empirical_prior` refits it). The result is a
    function of (state, seed, wave_index), so a resumed run plans the same wave again, and
    the same waves as `replay_allocation` on the same samples.

    Args:
        state: `AllocationState` of the samples drawn so far.
        wave: samples in this wave (>= 1).
        budget_left: budget not yet spent (samples, or the state's cost units).
        objective: "reach" or "best".
        s_min: score threshold of `reach`.
        capacity: optional int `[Q]`, samples each question may still draw (default: `wave`).
        law: known (mu, sigma) per question instead of the MAP fits.
        seed: seed of the tie rule.
        wave_index: number of this wave (its tie rule is seeded by seed and wave_index).
        posterior: "laplace" or "map": how the gains treat the fitted parameters
            (`marginal_gains`).

    Returns:
        int32 `[Q]` samples to draw; all zero when nothing fits the budget.
    """
    _check_integer(wave, "wave", 1)
    _check_objective(objective)
    _check_posterior(posterior)
    validation.check_unit(s_min, "s_min")
    law = _checked_law(law, state.n.dtype)
    validation.check_finite(budget_left, "budget_left")
    seed, wave_index = _check_integer(seed, "seed"), _check_integer(wave_index, "wave_index", 0)
    questions = state.n.shape[-1]
    capacity = np.full(questions, wave) if capacity is None else np.asarray(capacity)
    if capacity.shape != (questions,) or np.any(capacity < 0):
        raise ValueError(f"capacity must be [Q] = [{questions}] integers >= 0")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), wave_index)
    dtype = state.n.dtype
    horizon = max(1, min(int(wave), int(capacity.max(initial=1))))
    return _plan_wave(
        state, jnp.asarray(capacity, jnp.int32), law, jnp.asarray(budget_left, dtype),
        jnp.asarray(s_min, dtype), key, int(wave), (objective, horizon, posterior),
    )  # fmt: skip


class _Loop(NamedTuple):
    """Carry of the replay's wave loop."""

    state: AllocationState
    spent: jax.Array
    wave: jax.Array
    done: jax.Array


@jax.jit
def _first_samples(scores, units, cap, prior, m0):
    """States [R, Q] after the first min(m0, cap) samples of every question and order."""
    state = _empty_state(cap.shape, scores.dtype, prior)
    first = jnp.minimum(m0, cap)
    return _absorb(state, scores, units, jnp.zeros_like(first), first)


# The empirical-Bayes prior of each order's first samples (states [R, Q]).
_empirical_prior_per_order = jax.jit(jax.vmap(with_empirical_prior))


def _replay_one(state, scores, units, cap, law, total, s_min, seed, options):
    """`replay_allocation`'s waves on one order: state [Q], scores, units [Q, K], cap [Q]."""
    wave, ranking = options[0], options[1:]  # ranking: (objective, horizon, posterior)
    questions = scores.shape[0]
    key = jax.random.PRNGKey(seed)

    def one_wave(loop: _Loop) -> _Loop:
        state = loop.state
        drawn = state.n.astype(jnp.int32)
        ranked, _ = _wave_ranking(
            state, law, ranking, s_min, cap - drawn, jax.random.fold_in(key, loop.wave)
        )
        question, step, _ = ranked
        index = jnp.minimum(drawn[question] + step, scores.shape[1] - 1)
        taken = _take_wave(ranked, units[question, index], wave, total - loop.spent)
        counts = _counts(question, taken, questions)
        state = _absorb(state, scores, units, drawn, counts)
        spent = loop.spent + jnp.sum(jnp.where(taken, units[question, index], 0.0))
        return _Loop(state, spent, loop.wave + 1, ~jnp.any(taken) | (spent >= total))

    start = _Loop(state, jnp.sum(state.cost), jnp.int32(0), jnp.sum(state.cost) >= total)
    final = lax.while_loop(lambda loop: ~loop.done, one_wave, start)
    return final.state.n.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("options",))
def _replay(state, scores, units, cap, law, total, s_min, seed, options):
    """`_replay_one` over the leading (order) axis of [R, ...] arrays."""
    law_axes = None if law is None else (0, 0)
    one = functools.partial(_replay_one, options=options)
    return jax.vmap(one, in_axes=(0, 0, 0, 0, law_axes, None, None, None))(
        state, scores, units, cap, law, total, s_min, seed
    )


def _check_wave_arguments(budget, m0, wave, objective, s_min, max_n, tokens):
    validation.check_max_n(m0, "m0")
    _check_integer(wave, "wave", 1)
    _check_objective(objective)
    validation.check_unit(s_min, "s_min")
    validation.check_max_n(max_n)
    if max_n is not None and m0 > max_n:
        raise ValueError(f"m0 must be <= max_n ({max_n}), got {m0}")
    _check_mean_budget(budget)
    if tokens:
        return
    if budget < m0:
        raise ValueError(f"budget must be >= m0 ({m0}): every question starts with m0 samples")
    if max_n is not None and budget > max_n:
        raise ValueError(f"budget must be <= max_n ({max_n}), got {budget}")


def replay_allocation(
    scores: ArrayLike,
    mask: ArrayLike,
    budget: float,
    m0: int = 2,
    wave: int | None = None,
    objective: str = "reach",
    s_min: float = 0.8,
    prior: Any = None,
    cost: ArrayLike | None = None,
    max_n: int | None = None,
    law: tuple[ArrayLike, ArrayLike] | None = None,
    seed: int = 0,
    posterior: str = DEFAULT_POSTERIOR,
) -> jax.Array:
    """Samples per question that the wave allocation draws from a logged sample order.

    Every question first draws min(m0, available) samples (without a `prior`, the
    empirical-Bayes prior is fitted on them: every question contributes the same number of
    samples); then, wave after wave, all questions are refitted in one batched call (MAP
    with the prior) and the next `wave` samples go to the
    largest marginal gains of `objective` (per expected unit of cost: a question's mean cost
    per sample so far), in the logged order of each question. It stops when the budget is
    spent: exactly floor(budget * Q) samples, or, in tokens, when the next sample in rank
    order would overrun it (costs are those of the logged samples). No question draws more
    than its available samples or `max_n`.

    Args:
        scores: `[Q, K]` scores in the drawn order, or `[R, Q, K]` for R orders (replay).
        mask: bool prefix mask of the same shape.
        budget: mean budget per question, in samples, or in cost units when `cost` is given
            (total budget * Q); in samples it must lie in [m0, max_n].
        m0: samples every question starts with (>= 1; 2 lets the first fits see a spread).
        wave: samples per wave (>= 1); default Q, one per question on average.
        objective: "reach" or "best" (module docstring).
        s_min: score threshold of `reach`.
        prior: the MAP prior (see `init`), or None for the empirical-Bayes prior.
        cost: optional cost of each sample (tokens), like `scores`.
        max_n: cap on samples per question.
        law: known (mu, sigma) per question (`[Q]`, or `[R, Q]`) instead of the fits: the
            allocation with true parameters.
        seed: seed of the tie rule.
        posterior: "laplace" (gains averaged over each question's Laplace posterior) or
            "map" (the MAP fit plugged in); unused with `law`.

    Returns:
        int32 samples per question, `[Q]` (or `[R, Q]`).
    """
    array, _ = validation.check_scores(scores, mask)
    if np.ndim(array) not in (2, 3):
        raise ValueError(f"scores must be [Q, K] or [R, Q, K], got shape {np.shape(array)}")
    questions = np.shape(array)[-2]
    wave = questions if wave is None else wave
    _check_wave_arguments(budget, m0, wave, objective, s_min, max_n, cost is not None)
    _check_posterior(posterior)
    policies._check_mask(mask, np.shape(array))
    _check_cost(cost, np.shape(array), mask)
    _checked_law(law, None)
    prior_fields = _UNSET_PRIOR if prior is None else _prior_fields(prior)
    seed = _check_integer(seed, "seed")
    batched = np.ndim(array) == 3
    scores, units, cap = _per_order_arrays(array, mask, cost, max_n)
    total = _total(budget, questions) if cost is None else budget * questions
    _check_first_wave_cost(units, cap, m0, total)
    per_order = functools.partial(_per_order, shape=cap.shape, dtype=scores.dtype)
    state = _first_samples(scores, units, cap, per_order(prior_fields), m0)
    if prior is None and law is None:
        state = _empirical_prior_per_order(state)
    law = None if law is None else per_order(law)
    options = (int(wave), objective, int(min(wave, scores.shape[-1])), posterior)
    dtype = scores.dtype
    samples = _replay(
        state, scores, units, cap, law, jnp.asarray(total, dtype), jnp.asarray(s_min, dtype),
        seed, options,
    )  # fmt: skip
    return samples if batched else samples[0]


def _per_order_arrays(scores, mask, cost, max_n):
    """(scores, cost of each sample, samples each question may draw) with an order axis:
    `[R, Q, K]`, `[R, Q, K]` (one per sample without `cost`; 0 where masked), `[R, Q]`."""
    mask = np.asarray(mask, bool)
    if mask.ndim == 2:
        scores, mask = np.asarray(scores)[None], mask[None]
        cost = None if cost is None else np.asarray(cost)[None]
    dtype = _float_dtype(scores)
    units = mask.astype(dtype) if cost is None else np.asarray(cost, dtype)
    cap = mask.sum(-1) if max_n is None else np.minimum(mask.sum(-1), max_n)
    scores = jnp.asarray(np.where(mask, scores, 0.0), dtype)
    return scores, jnp.asarray(np.where(mask, units, 0.0), dtype), jnp.asarray(cap, jnp.int32)


def _check_first_wave_cost(units, cap, m0: int, total: float) -> None:
    """In tokens, the first m0 samples of every question must fit the budget."""
    units, cap = np.asarray(units), np.asarray(cap)
    first = np.arange(units.shape[-1]) < np.minimum(m0, cap)[..., None]
    needed = float(np.max(np.sum(np.where(first, units, 0.0), axis=(-2, -1))))
    if needed > total:
        raise ValueError(
            f"budget must cover the first m0 samples of every question: they cost {needed:g} "
            f"in total, the budget is {total:g}"
        )


def _per_order(fields: Sequence[ArrayLike], shape: tuple[int, ...], dtype) -> tuple[jax.Array, ...]:
    """Per-question fields (scalars, `[Q]` or `[R, Q]`) broadcast to `[R, Q]`."""
    return tuple(jnp.broadcast_to(jnp.asarray(x, dtype), shape) for x in fields)


# --- baselines at the same total budget ----------------------------------------------------------


def _check_baseline(mask: ArrayLike, budget: Any, max_n: Any, integer: bool) -> None:
    policies._check_mask(mask)
    if np.ndim(mask) < 2:
        raise ValueError(f"mask must be [..., Q, K], got shape {np.shape(mask)}")
    validation.check_max_n(max_n)
    if integer:
        validation.check_max_n(budget, "budget")
    else:
        _check_mean_budget(budget)


def _total(budget: float, questions: int) -> int:
    """Total samples of a mean budget per question: floor(budget * Q), with slack for the
    rounding of budget * Q (4.1 * 10 is 40.99999999999999)."""
    return math.floor(budget * questions * (1.0 + 1e-12))


def _tie_order(key: jax.Array, questions: int) -> jax.Array:
    """A seeded random rank of each question, for ties."""
    return jax.random.permutation(key, questions).astype(jnp.int32)


def uniform_samples(mask: ArrayLike, budget: int, max_n: int | None = None) -> jax.Array:
    """Fixed-N Best-of-N at the same budget: N = budget samples per question (fewer if a
    question has fewer, or `max_n` is smaller).

    Args:
        mask: `[..., Q, K]` bool prefix mask.
        budget: N, samples per question (integer >= 1).
        max_n: cap on samples per question.

    Returns:
        int32 `[..., Q]`.
    """
    _check_baseline(mask, budget, max_n, integer=True)
    cap = budget if max_n is None else min(budget, max_n)
    return policies._cap(jnp.asarray(mask, bool), cap)


@jax.jit
def _elimination(scores, mask, cap, total, s_min, key):
    mask = jnp.asarray(mask, bool)
    positions = policies._positions(mask.shape)
    hit = mask & (scores >= s_min) & (positions < cap[..., None])
    stop = policies._first_true(hit, cap)
    # Round t gives one sample to every question still going: sum_q min(stop_q, t) spent.
    rounds = jnp.arange(mask.shape[-1] + 1)
    spent = jnp.minimum(stop[..., None], rounds).sum(-2)
    full_rounds = jnp.sum(spent <= total, axis=-1) - 1
    counts = jnp.minimum(stop, full_rounds[..., None])
    left = total - jnp.take_along_axis(spent, full_rounds[..., None], -1)
    # The part of the next round the budget still covers goes to questions in a seeded order.
    order = jnp.argsort(_tie_order(key, stop.shape[-1]))
    going = jnp.take(stop > full_rounds[..., None], order, axis=-1)
    extra = going & (jnp.cumsum(going, axis=-1) <= left)
    return counts + jnp.take(extra, jnp.argsort(order), axis=-1)


def elimination_samples(
    scores: ArrayLike,
    mask: ArrayLike,
    budget: float,
    s_min: float,
    max_n: int | None = None,
    seed: int = 0,
) -> jax.Array:
    """The elimination rule at the same total budget: in rounds, every question whose best
    score has not reached `s_min` draws one more sample, until floor(budget * Q) samples are
    spent (the last round's part in a seeded order) or no question is left.

    Args:
        scores: `[..., Q, K]` scores in the drawn order.
        mask: `[..., Q, K]` bool prefix mask.
        budget: mean samples per question (> 0).
        s_min: score threshold in [0, 1].
        max_n: cap on samples per question.
        seed: seed of the order in which the last round is served.

    Returns:
        int32 `[..., Q]`.
    """
    scores, _ = validation.check_scores(scores, mask)
    _check_baseline(mask, budget, max_n, integer=False)
    validation.check_unit(s_min, "s_min")
    seed = _check_integer(seed, "seed")
    cap = policies._cap(jnp.asarray(mask, bool), max_n)
    key = jax.random.PRNGKey(seed)
    return _elimination(scores, mask, cap, _total(budget, np.shape(mask)[-2]), s_min, key).astype(
        jnp.int32
    )


@jax.jit
def _oracle(correct, mask, cap, total, key):
    mask = jnp.asarray(mask, bool)
    positions = policies._positions(mask.shape)
    hit = jnp.asarray(correct, bool) & mask & (positions < cap[..., None])
    first = policies._first_true(hit, jnp.zeros_like(cap))
    solvable = first > 0
    need = jnp.where(solvable, first, mask.shape[-1] + 1)
    questions = jnp.broadcast_to(jnp.arange(first.shape[-1], dtype=jnp.int32), first.shape)
    ties = jnp.broadcast_to(_tie_order(key, first.shape[-1]), first.shape)
    need, _, question = lax.sort((need, ties, questions), num_keys=2)
    taken = (need <= mask.shape[-1]) & (jnp.cumsum(need, axis=-1) <= total)
    counts = jnp.where(taken, need, 0)
    return jnp.take_along_axis(counts, jnp.argsort(question, axis=-1), axis=-1)


def oracle_samples(
    correct: ArrayLike,
    mask: ArrayLike,
    budget: float,
    max_n: int | None = None,
    seed: int = 0,
) -> jax.Array:
    """A ceiling, not a method: the allocation that knows each sample's correctness.

    The most questions solvable within floor(budget * Q) samples: questions in increasing
    order of the samples their first correct one needs, each drawing exactly those; the
    others draw nothing (their answer is wrong whatever they draw). Ties in a seeded order.

    Args:
        correct: `[..., Q, K]` bool correctness in the drawn order.
        mask: `[..., Q, K]` bool prefix mask.
        budget: mean samples per question (> 0).
        max_n: cap on samples per question.
        seed: seed of the tie order.

    Returns:
        int32 `[..., Q]`.
    """
    _check_baseline(mask, budget, max_n, integer=False)
    policies._check_mask(mask, np.shape(correct))
    seed = _check_integer(seed, "seed")
    cap = policies._cap(jnp.asarray(mask, bool), max_n)
    key = jax.random.PRNGKey(seed)
    return _oracle(correct, mask, cap, _total(budget, np.shape(mask)[-2]), key).astype(jnp.int32)
