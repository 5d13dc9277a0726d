"""`beta`: Beta(a, b) on [0, 1], fitted by Newton's method from (n, sum log s, sum log(1 - s)).

With t1 = sum log s / n and t2 = sum log(1 - s) / n the mean negative log-likelihood is

    nll(a, b) = log B(a, b) - (a - 1) t1 - (b - 1) t2,

convex in (a, b) (the natural parameters of an exponential family), with

    grad = (psi(a) - psi(a + b) - t1, psi(b) - psi(a + b) - t2),
    Hessian = [[psi'(a) - psi'(a + b), -psi'(a + b)], [-psi'(a + b), psi'(b) - psi'(a + b)]]

(psi the digamma function, psi' the trigamma function, Hessian = Cov(log s, log(1 - s))).
It is minimised over the box SHAPE_BOUNDS^2 by projected Newton: a shape on a bound that
the gradient pushes outwards is held (the other takes the 1-D Newton step), the step is
clipped into the box and accepted under the Armijo test (slack: the objective's rounding
noise), else retried 2 times shorter in the next iteration. An element stops where its
Newton decrement g.H^-1.g / 2 (the projected gradient measured in the Hessian's norm: the
gain the step predicts) is below eps^(3/4) (1 + |nll|) (it still takes that last step), or
after MAX_STEPS. Status, from the last decrement evaluated: CONVERGED where it is below
sqrt(eps) (1 + |nll|) and no shape is held, AT_BOUND where one is, MAX_STEPS otherwise (also
where the fit moved after its last evaluation, i.e. stopped at MAX_STEPS).
The start is the closed-form approximation a = 1/2 + G1 / (2 (1 - G1 - G2)),
b = 1/2 + G2 / (2 (1 - G1 - G2)), G1 = exp(t1), G2 = exp(t2) (the geometric means).

MAP: with m = a / (a + b) and k = a + b, the objective adds the prior's negative log
density over n, [((m - prior.mean) / prior.scale_mean)^2
+ ((log k - log prior.concentration) / prior.scale_log_concentration)^2] / (2 n); its
curvature enters as Gauss-Newton (J^T diag(1 / scale^2) J / n, positive semi-definite).

Conventions (documented, never NaN):

* Scores at exactly 0 or 1 cannot enter log s or log(1 - s): for the fit every score is
  clamped into [CLAMP, 1 - CLAMP] (CLAMP = 1e-6, both dtypes) before its logs are taken, so
  such data still get a fit (and an N*). A Beta law has no mass at 0 or 1, though, so
  `log_pdf` there is -inf and `loglik` is -inf for a question with such a score (AIC +inf:
  the likelihoods of all laws are densities with respect to one measure, see `base`);
  the atom law `beta-atoms` models exact 0s and 1s.
* n = 0: a = b = 1 (the uniform law), status NO_DATA; MAP: the prior's centre clipped into
  the box, status NO_DATA.
* All scores equal (n = 1 included; detected from the statistics: 1 - G1 - G2, which is
  0 exactly when all scores are equal and about 1 / (2 (a + b)) otherwise, is within
  rounding of 0): the likelihood grows without bound as a + b -> inf at mean c = G1 /
  (G1 + G2) (the common clamped score). Returned: a = c K, b = (1 - c) K with K such that
  max(a, b) = SHAPE_BOUNDS[1], status AT_BOUND (the MLE does not use the solver there).

Example:
    >>> import jax.numpy as jnp
    >>> from optscale_jax.laws import beta
    >>> params, status = beta.fit(beta.stats(jnp.array([[0.2, 0.5, 0.6, 0.9]]), None))
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import digamma, polygamma
from jax.typing import ArrayLike

from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax.estimation import FitStatus
from optscale_jax.laws import _betainc, base

__all__ = [
    "CLAMP",
    "LAW",
    "MAX_STEPS",
    "SHAPE_BOUNDS",
    "BetaParams",
    "BetaPrior",
    "BetaStats",
    "fit",
    "log_cdf",
    "log_cdf_sf",
    "log_pdf",
    "log_sf",
    "sample",
    "stats",
]

CLAMP = 1e-6
SHAPE_BOUNDS = (1e-3, 1e6)
MAX_STEPS = 50
_ARMIJO = 1e-4
_STEP_CUT = 0.5


class BetaParams(NamedTuple):
    """Beta(a, b).

    Attributes:
        a: first shape (> 0).
        b: second shape (> 0).
    """

    a: jax.Array
    b: jax.Array


class BetaStats(NamedTuple):
    """Sufficient statistics (n, sum log s, sum log(1 - s)) of the clamped scores, and the
    count of scores at exactly 0 or 1 (the loglik is -inf if there is one)."""

    n: jax.Array
    sum_log: jax.Array
    sum_log1m: jax.Array
    n_ends: jax.Array


class BetaPrior(NamedTuple):
    """A Gaussian prior on the mean a / (a + b) and on log(a + b), independent.

    Attributes:
        mean: prior centre of the mean, in (0, 1).
        concentration: prior centre of a + b (> 0).
        scale_mean: standard deviation of the mean's prior (> 0).
        scale_log_concentration: standard deviation of log(a + b)'s prior (> 0).
    """

    mean: ArrayLike
    concentration: ArrayLike
    scale_mean: ArrayLike = 0.1
    scale_log_concentration: ArrayLike = 1.0


# --- statistics -------------------------------------------------------------------------------


def _contributions(scores, mask):
    """Per-sample (1, log s, log(1 - s), at 0 or 1) of the clamped scores, zero where masked."""
    scores, mask = base.masked(scores, mask)
    clamped = jnp.clip(jnp.where(mask, scores, 0.5), CLAMP, 1.0 - CLAMP)
    present = mask.astype(scores.dtype)
    ends = base.end_counts(scores, mask)
    return present, present * jnp.log(clamped), present * jnp.log1p(-clamped), ends


@jax.jit
def stats(scores: ArrayLike, mask: ArrayLike | None) -> BetaStats:
    """`BetaStats` over the last axis (scores clamped into [CLAMP, 1 - CLAMP])."""
    return BetaStats(*(c.sum(-1) for c in _contributions(scores, mask)))


@jax.jit
def prefix_stats(scores: ArrayLike, mask: ArrayLike | None) -> BetaStats:
    """`BetaStats` of every prefix along the last axis."""
    return BetaStats(*(c.cumsum(-1) for c in _contributions(scores, mask)))


# --- the objective and its derivatives ---------------------------------------------------------


class _Data(NamedTuple):
    """Per-fit data of the solver: mean log statistics, n, and the prior (or None)."""

    t1: jax.Array
    t2: jax.Array
    n: jax.Array
    prior: BetaPrior | None


def _prior_terms(a, b, data: _Data):
    """The MAP penalty over n, its gradient and Gauss-Newton curvature, in (a, b)."""
    prior = data.prior
    k = a + b
    weight_m = 1.0 / (prior.scale_mean**2 * data.n)
    weight_k = 1.0 / (prior.scale_log_concentration**2 * data.n)
    r_m = a / k - prior.mean
    r_k = jnp.log(k) - jnp.log(prior.concentration)
    value = 0.5 * (weight_m * r_m * r_m + weight_k * r_k * r_k)
    # Jacobian rows: d m / d(a, b) = (b, -a) / k^2; d log k / d(a, b) = (1, 1) / k.
    jm_a, jm_b, jk = b / (k * k), -a / (k * k), 1.0 / k
    grad = (
        weight_m * r_m * jm_a + weight_k * r_k * jk,
        weight_m * r_m * jm_b + weight_k * r_k * jk,
    )
    curvature = (
        weight_m * jm_a * jm_a + weight_k * jk * jk,
        weight_m * jm_a * jm_b + weight_k * jk * jk,
        weight_m * jm_b * jm_b + weight_k * jk * jk,
    )
    return value, grad, curvature


def _objective(a, b, data: _Data):
    """(objective, its rounding noise): mean NLL (+ the prior term over n)."""
    log_beta = _betainc.log_beta(a, b)
    linear = (a - 1.0) * data.t1 + (b - 1.0) * data.t2
    value = log_beta - linear
    size = jnp.abs(log_beta) + jnp.abs((a - 1.0) * data.t1) + jnp.abs((b - 1.0) * data.t2)
    if data.prior is not None:
        penalty = _prior_terms(a, b, data)[0]
        value, size = value + penalty, size + penalty
    return value, 8.0 * jnp.finfo(value.dtype).eps * (1.0 + size)


def _derivatives(a, b, data: _Data):
    """Gradient and curvature (h11, h12, h22) of the objective in (a, b)."""
    psi_ab = digamma(a + b)
    tri_ab = polygamma(1, a + b)
    grad = (digamma(a) - psi_ab - data.t1, digamma(b) - psi_ab - data.t2)
    hess = (polygamma(1, a) - tri_ab, -tri_ab, polygamma(1, b) - tri_ab)
    if data.prior is not None:
        _, prior_grad, curvature = _prior_terms(a, b, data)
        grad = (grad[0] + prior_grad[0], grad[1] + prior_grad[1])
        hess = tuple(h + c for h, c in zip(hess, curvature, strict=True))
    return grad, hess


def _newton_step(a, b, data: _Data):
    """Projected Newton step (d_a, d_b), the Newton decrement (gain) and whether a shape is held.

    A shape is held where it sits on a bound and the gradient pushes it outwards; the free
    ones take the Newton step of the objective restricted to them. Where the 2x2 curvature
    is not numerically positive definite, each free shape takes its 1-D Newton step.
    """
    (g1, g2), (h11, h12, h22) = _derivatives(a, b, data)
    low, high = SHAPE_BOUNDS
    hold_a = ((a <= low) & (g1 > 0)) | ((a >= high) & (g1 < 0))
    hold_b = ((b <= low) & (g2 > 0)) | ((b >= high) & (g2 < 0))
    det = h11 * h22 - h12 * h12
    positive = (h11 > 0) & (h22 > 0) & (det > 1e-12 * h11 * h22)
    safe_det = jnp.where(positive, det, 1.0)
    only_a = -g1 / jnp.maximum(h11, 1e-30)
    only_b = -g2 / jnp.maximum(h22, 1e-30)
    both_a = jnp.where(positive, -(h22 * g1 - h12 * g2) / safe_det, only_a)
    both_b = jnp.where(positive, -(h11 * g2 - h12 * g1) / safe_det, only_b)
    d_a = jnp.where(hold_a, 0.0, jnp.where(hold_b, only_a, both_a))
    d_b = jnp.where(hold_b, 0.0, jnp.where(hold_a, only_b, both_b))
    gain = jnp.maximum(-0.5 * (g1 * d_a + g2 * d_b), 0.0)
    return (d_a, d_b), (g1, g2), gain, hold_a | hold_b


# --- the solver --------------------------------------------------------------------------------


class _State(NamedTuple):
    """Per-fit solver state."""

    a: jax.Array
    b: jax.Array
    value: jax.Array
    noise: jax.Array  # the objective's rounding noise at (a, b)
    step_length: jax.Array
    gain: jax.Array  # the Newton decrement at (a, b); inf until it is evaluated there
    held: jax.Array  # a shape is held on a bound at (a, b)
    done: jax.Array


def _iteration(state: _State, data: _Data) -> _State:
    """One projected Newton iteration of every unfinished fit.

    The candidate, the step of the current length clipped into the box, is accepted under
    the Armijo condition with the objective's rounding noise as slack; a rejected one is
    retried 2 times shorter in the next iteration (no inner loop), and a fit whose length
    falls below 1e-6 stops (stalled). A fit whose decrement is below eps^(3/4) (1 + |nll|)
    stops too, after taking its step: the decrement it keeps bounds the suboptimality of the
    point it left, and the accepted step only lowers the objective further.
    """
    direction, grad, gain, held = _newton_step(state.a, state.b, data)
    stationary = gain <= jnp.finfo(gain.dtype).eps ** 0.75 * (1.0 + jnp.abs(state.value))
    a = jnp.clip(state.a + state.step_length * direction[0], *SHAPE_BOUNDS)
    b = jnp.clip(state.b + state.step_length * direction[1], *SHAPE_BOUNDS)
    value, noise = _objective(a, b, data)
    decrease = grad[0] * (a - state.a) + grad[1] * (b - state.b)
    accept = jnp.isfinite(value) & (
        value <= state.value + _ARMIJO * jnp.minimum(decrease, 0.0) + state.noise
    )
    active = ~state.done
    move = active & accept
    length = jnp.where(accept, 1.0, _STEP_CUT * state.step_length).astype(state.a.dtype)
    stalled = ~accept & (length < 1e-6)
    return _State(
        a=jnp.where(move, a, state.a),
        b=jnp.where(move, b, state.b),
        value=jnp.where(move, value, state.value),
        noise=jnp.where(move, noise, state.noise),
        step_length=jnp.where(active, length, state.step_length),
        # After a step the decrement is unknown at the new point, unless it certified the old.
        gain=jnp.where(active, jnp.where(move & ~stationary, jnp.inf, gain), state.gain),
        held=jnp.where(active, held & ~(move & ~stationary), state.held),
        done=state.done | (active & (stationary | stalled)),
    )


def _solve(a0, b0, data: _Data, frozen) -> _State:
    """`_iteration` until every fit is done or MAX_STEPS."""
    value, noise = _objective(a0, b0, data)
    unknown = jnp.full_like(a0, jnp.inf)
    state = _State(a0, b0, value, noise, jnp.ones_like(a0), unknown, jnp.zeros_like(frozen), frozen)

    def cond(carry):
        state, iteration = carry
        return (iteration < MAX_STEPS) & ~jnp.all(state.done)

    def body(carry):
        state, iteration = carry
        return _iteration(state, data), iteration + 1

    return lax.while_loop(cond, body, (state, jnp.int32(0)))[0]


def _status(state: _State, has_data, degenerate) -> jax.Array:
    """`FitStatus` from the decrement evaluated at the final point (see the module docstring)."""
    certified = state.gain <= jnp.finfo(state.a.dtype).eps ** 0.5 * (1.0 + jnp.abs(state.value))
    status = jnp.where(state.held, FitStatus.AT_BOUND, FitStatus.CONVERGED)
    status = jnp.where(certified, status, FitStatus.MAX_STEPS)
    status = jnp.where(degenerate, FitStatus.AT_BOUND, status)
    return jnp.where(has_data, status, FitStatus.NO_DATA).astype(jnp.int32)


def _starting_point(data: _Data, has_data):
    """(a0, b0, degenerate): where the solver starts, and which fits have all scores equal.

    The closed-form approximation from the geometric means G1, G2 (module docstring); for
    degenerate data the MLE convention (or, under a prior, the prior's concentration at the
    data's mean); without data the uniform law (or the prior's centre).
    """
    dtype = data.t1.dtype
    g1, g2 = jnp.exp(data.t1), jnp.exp(data.t2)
    gap = 1.0 - g1 - g2
    eps = jnp.finfo(dtype).eps
    # All scores equal: the Jensen gap 1 - G1 - G2 vanishes up to the rounding of the sums.
    noise = 8.0 * eps * (1.0 + g1 * jnp.abs(data.t1) + g2 * jnp.abs(data.t2))
    degenerate = has_data & (gap <= noise)
    safe_gap = jnp.where(degenerate, 1.0, jnp.maximum(gap, eps))
    a0 = 0.5 + g1 / (2.0 * safe_gap)
    b0 = 0.5 + g2 / (2.0 * safe_gap)
    common = g1 / (g1 + g2)
    prior = data.prior
    if prior is None:
        empty = (jnp.ones_like(a0), jnp.ones_like(a0))
        top = SHAPE_BOUNDS[1] / jnp.maximum(common, 1.0 - common)
    else:
        empty = (prior.mean * prior.concentration, (1.0 - prior.mean) * prior.concentration)
        top = prior.concentration
    a0 = jnp.where(degenerate, common * top, jnp.where(has_data, a0, empty[0]))
    b0 = jnp.where(degenerate, (1.0 - common) * top, jnp.where(has_data, b0, empty[1]))
    return jnp.clip(a0, *SHAPE_BOUNDS), jnp.clip(b0, *SHAPE_BOUNDS), degenerate


@jax.jit
def fit(stats: BetaStats, prior: BetaPrior | None = None) -> tuple[BetaParams, jax.Array]:
    """Maximum-likelihood (or, with a prior, MAP) Beta fit from `BetaStats`.

    Args:
        stats: `BetaStats` of batch `[...]`.
        prior: optional `BetaPrior`, broadcasting with the batch.

    Returns:
        (`BetaParams`, int32 `FitStatus`), batch `[...]`; see the module docstring for the
        conventions (n = 0, all scores equal).
    """
    dtype = _float_dtype(stats.sum_log, stats.sum_log1m)
    n, sum_log, sum_log1m = jnp.broadcast_arrays(*(jnp.asarray(s, dtype) for s in stats[:3]))
    if prior is not None:
        prior = BetaPrior(*(jnp.broadcast_to(jnp.asarray(p, dtype), n.shape) for p in prior))
    has_data = n > 0
    safe_n = base.nonzero_count(n)
    data = _Data(sum_log / safe_n, sum_log1m / safe_n, safe_n, prior)
    a0, b0, degenerate = _starting_point(data, has_data)
    # Degenerate data: the MLE is the convention (frozen); a prior keeps a + b finite.
    degenerate_fit = degenerate if prior is None else jnp.zeros_like(degenerate)
    state = _solve(a0, b0, data, ~has_data | degenerate_fit)
    return BetaParams(state.a, state.b), _status(state, has_data, degenerate_fit)


# --- the distribution --------------------------------------------------------------------------


@jax.jit
def loglik(params: BetaParams, stats: BetaStats) -> jax.Array:
    """Total log-likelihood (a - 1) sum log s + (b - 1) sum log(1 - s) - n log B(a, b).

    -inf where a score is exactly 0 or 1 (no mass there; `base`), 0 where n = 0.
    """
    a, b = params
    value = (a - 1.0) * stats.sum_log + (b - 1.0) * stats.sum_log1m
    value = jnp.where(stats.n > 0, value - stats.n * _betainc.log_beta(a, b), 0.0)
    return jnp.where(stats.n_ends > 0, -jnp.inf, value)


def _as_float(params: BetaParams, s: ArrayLike):
    dtype = _float_dtype(params.a, params.b, s)
    return jnp.asarray(params.a, dtype), jnp.asarray(params.b, dtype), jnp.asarray(s, dtype)


@jax.jit
def log_pdf(params: BetaParams, s: ArrayLike) -> jax.Array:
    """log density at s in (0, 1); -inf at exactly 0 or 1 (`base`: the shared measure).

    s in (0, CLAMP) or (1 - CLAMP, 1) is clamped, as in `stats`.
    """
    a, b, s = _as_float(params, s)
    x = jnp.clip(s, CLAMP, 1.0 - CLAMP)
    log_x, log_y = jnp.log(x), jnp.log1p(-x)
    log_density = _betainc.log_prefactor(a, b, log_x, log_y, x - a / (a + b)) - log_x - log_y
    return base.at_ends_impossible(log_density, s)


@jax.jit
def log_cdf_sf(params: BetaParams, s: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(log F(s), log(1 - F(s))) = (log I_s(a, b), log I_{1-s}(b, a)), accurate in both tails.

    One continued fraction gives both (`_betainc`). No reverse-mode gradients.
    """
    return _betainc.log_cdf_sf(*_as_float(params, s))


def log_cdf(params: BetaParams, s: ArrayLike) -> jax.Array:
    """log F(s): `log_cdf_sf`'s first half (its compiled code, not a second copy)."""
    return log_cdf_sf(params, s)[0]


def log_sf(params: BetaParams, s: ArrayLike) -> jax.Array:
    """log(1 - F(s)): `log_cdf_sf`'s second half."""
    return log_cdf_sf(params, s)[1]


@functools.partial(jax.jit, static_argnames="shape")
def sample(key: jax.Array, params: BetaParams, shape: tuple[int, ...]) -> jax.Array:
    """Draws of shape `shape` (`jax.random.beta`)."""
    dtype = _float_dtype(params.a, params.b)
    return jax.random.beta(key, params.a, params.b, shape, dtype)


LAW = base.continuous_law("beta", 2, globals())
