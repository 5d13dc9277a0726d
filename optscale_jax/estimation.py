"""Maximum-likelihood and MAP fits of the truncated normal on [0, 1], batched.

The likelihood of scores s_1..s_n under TN(mu, sigma; [0, 1]) depends on the data only
through (n, s1 = sum s, s2 = sum s^2). With m = s1 / n and v = s2 / n - m^2, the mean
negative log-likelihood per sample is

    nll(mu, sigma) = log(sqrt(2 pi) sigma) + log Z(mu, sigma) + (v + (m - mu)^2) / (2 sigma^2),

Z = Phi((1 - mu) / sigma) - Phi(-mu / sigma). It is minimised over the box
MU_BOUNDS x SIGMA_BOUNDS by Newton's method in the natural parameters
eta = (mu / sigma^2, -1 / (2 sigma^2)), where the NLL is convex; the box is a convex
polygon in eta (its faces mu = const and sigma = const are straight lines), so the problem
has one minimum and the first-order (KKT) conditions identify it. Gradient and Hessian
come from the moments of the sufficient statistics T = (Y, Y^2) of the standardised
truncated normal Y = (X - mu) / sigma; in theta = (mu, log sigma):

    grad = (E_model[Y] - E_data[Y]) / sigma,  E_model[Y^2] - E_data[Y^2],
    Fisher = diag(1 / sigma, 1) Cov(T) diag(1 / sigma, 1)  (the Hessian in eta, mapped).

Near the middle of [0, 1] these come from the raw moments M_1..M_4 of Y. When the end of
[0, 1] nearer the mean mu lies c standard deviations beyond it (c >= 3.5 in float32, 12
in float64), the raw moments (about c^2, c^4) cancel to central moments of order c^-2 and
Cov(T) is singular to within c^-4, so there they come from a continued fraction for the
distance E from that end (`_tail_ratios`), and the Newton system is solved in the basis
(E, E^2), where it is well conditioned (`_derivatives`, `_curvature`). (From raw moments
the Fisher matrix was not even positive definite at c = 25 in float64 or c = 5 in
float32, and fits of scores piled near 0 or 1 stalled on the mu edge of the box.)

Each iteration solves the box Newton problem at the current point (`_box_newton`): the
quadratic model, with each coordinate that sits on a bound kept from leaving it, has the
free Newton step, a 1-D step with mu or log sigma held, or both held as its solution,
whichever satisfies the model's KKT conditions. The step follows the straight line in
eta (mapped back to theta), stops on the first bound it meets (the next iteration then
holds it there if the model pushes outwards), and is accepted under the Armijo condition
with the objective's rounding noise as slack; a rejected step is retried 4 times shorter
in the next iteration (no inner loop: every iteration costs the same two `log_ndtr`
evaluations). A fit stops when the predicted gain of its box Newton step, half its Newton
decrement, is below its own rounding noise (`_optimality`), when its step length falls
below 1e-6, or after MAX_STEPS iterations. The predicted gain is -g.d / 2 =
g_P.H_P^-1.g_P / 2, with g_P the projected gradient (without the held coordinates): a
first-order optimality measure scaled by the curvature, which does not vanish on a flat
ridge as the step size or the gradient alone do.

Status (`FitStatus`), decided after the iteration for every fit from the point returned:
CONVERGED or AT_BOUND (the point is on an edge of the box) only when the first-order
conditions of the box problem hold to the stated tolerance: the box Newton step exists
(every held coordinate's multiplier pushes outwards) and its predicted gain plus the
gradient's rounding noise along it is at most 1e-5 (1 + |nll|) in float32 and
1e-10 (1 + |nll|) in float64 (about eps^(2/3)). Every other fit is MAX_STEPS (not
certified: the iteration cap was reached, or rounding stopped the solver first). For the
MLE, whose objective is convex in eta, this bounds how far the reported nll is above the
optimum of the box; the MAP objective need not be convex, and its status certifies a
local optimum.

The MAP objective adds the prior's gradient and its Hessian in eta, mapped to theta
(`_penalty`), so the step stays the exact Newton step in eta; where that Hessian makes
the sum indefinite, the prior's Gauss-Newton curvature is used instead. For speed on
CPU the stages of an iteration are compiled as separate computations (`_separately`), the
batch is solved in blocks of BLOCK fits, and on large batches the fits still unfinished
after a few iterations are gathered and finished apart (`_solve`).

Conventions (documented, never NaN):

* n = 0: mu = 0.5, sigma = 1 / sqrt(12) (the uniform's moments), nll = 0, status NO_DATA.
  For MAP, the prior centre clipped into the box, status NO_DATA.
* n = 1 or all scores equal (including all at 0 or all at 1): the likelihood grows without
  bound as sigma -> 0, so the MLE sits on sigma's lower bound. Returned: mu = the common
  value, sigma = SIGMA_BOUNDS[0], status AT_BOUND, nll evaluated there.
* MAP: the objective is the mean NLL plus the prior term divided by n,
  nll + [((mu - prior_mu) / scale_mu)^2 + ((sigma - prior_sigma) / scale_sigma)^2] / (2 n),
  i.e. the negative log posterior per sample; `Fit.nll` reports this objective.
"""

from __future__ import annotations

import enum
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import log_ndtr
from jax.typing import ArrayLike

from optscale_jax import validation
from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax._numerics import log1mexp_absolute as _log1mexp

__all__ = [
    "MU_BOUNDS",
    "SIGMA_BOUNDS",
    "MAX_STEPS",
    "Fit",
    "FitStatus",
    "sufficient_stats",
    "prefix_stats",
    "fit_mle",
    "fit_map",
    "fit_mle_stats",
    "moment_match",
    "moment_match_status",
    "fit_map_stats",
    "mean_nll",
]

MU_BOUNDS = (-1.0, 2.0)
SIGMA_BOUNDS = (1e-3, 3.0)
MAX_STEPS = 40
BLOCK = 8192  # fits per block of the solver (a power of two)
COMPACT_MIN = 4 * BLOCK  # batches from this size on finish their slow fits compacted
COMPACT_STEPS = (4, 7)  # iterations at the end of the first and second rounds (`_solve`)
NO_DATA_MU = 0.5
NO_DATA_SIGMA = 1.0 / math.sqrt(12.0)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_SIGMA_BOUNDS = (math.log(SIGMA_BOUNDS[0]), math.log(SIGMA_BOUNDS[1]))
_ARMIJO = 1e-4
_STEP_CUT = 0.25
# Deep in a tail the moments come from a continued fraction (`_tail_ratios`) of this depth,
# from this distance on (where its truncation error is below the dtype's rounding and the
# far end of [0, 1] is negligibly unlikely), with rounding noise this many eps.
_TAIL_DEPTH = 8
_TAIL_FROM = {"float32": 3.5, "float64": 12.0}
_TAIL_EPS = 32.0
# Largest predicted gain (times 1 + |nll|) a CONVERGED or AT_BOUND fit may have left.
_CERTIFY = {"float32": 1e-5, "float64": 1e-10}


class FitStatus(enum.IntEnum):
    """How a fit ended (`Fit.status`); see the module docstring for the tolerance.

    CONVERGED: the first-order optimality conditions of the box problem hold at the point.
    AT_BOUND: they hold and the point is on an edge of the box (or, for the MLE, the data
    are all equal: the documented convention). NO_DATA: n = 0. MAX_STEPS: optimality is
    not certified (iteration cap reached, or rounding stopped the solver first).
    """

    CONVERGED = 0
    AT_BOUND = 1
    NO_DATA = 2
    MAX_STEPS = 3


class Fit(NamedTuple):
    """A batch of truncated-normal fits; every field has the batch shape.

    Attributes:
        mu: location of the untruncated normal.
        sigma: its scale.
        nll: mean negative log-likelihood per sample (MAP: plus the prior term over n).
        status: int32 `FitStatus`.
        steps: int32 Newton iterations used.
    """

    mu: jax.Array
    sigma: jax.Array
    nll: jax.Array
    status: jax.Array
    steps: jax.Array


# --- sufficient statistics -------------------------------------------------------------------


def _masked(scores: ArrayLike, mask: ArrayLike | None) -> tuple[jax.Array, jax.Array]:
    scores = jnp.asarray(scores)
    scores = scores.astype(_float_dtype(scores))
    if mask is None:
        return scores, jnp.ones(scores.shape, scores.dtype)
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), scores.shape)
    return jnp.where(mask, scores, 0.0), mask.astype(scores.dtype)


@jax.jit
def _sufficient_stats(scores, mask):
    values, weights = _masked(scores, mask)
    return weights.sum(-1), values.sum(-1), (values * values).sum(-1)


@jax.jit
def _prefix_stats(scores, mask):
    values, weights = _masked(scores, mask)
    return weights.cumsum(-1), values.cumsum(-1), (values * values).cumsum(-1)


def sufficient_stats(
    scores: ArrayLike, mask: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(n, sum s, sum s^2) over the last axis, counting only entries where `mask` is True.

    Args:
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists.

    Returns:
        (n, s1, s2), each `[...]`, in the scores' float dtype (n is a float count).
    """
    scores, mask = validation.check_scores(scores, mask)
    return _sufficient_stats(scores, mask)


def prefix_stats(
    scores: ArrayLike, mask: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Cumulative (n, sum s, sum s^2) along the last axis: entry j covers the first j + 1 samples.

    Feeding them to `fit_mle_stats` fits every prefix of every question in one call.

    Args:
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists.

    Returns:
        (n, s1, s2), each `[..., k]`, in the scores' float dtype.
    """
    scores, mask = validation.check_scores(scores, mask)
    return _prefix_stats(scores, mask)


# --- the objective and its derivatives ---------------------------------------------------------


def _log_z(mu, sigma):
    """log(Phi(b) - Phi(a)) on [0, 1]; the interval is at least 1/3 wide in the box."""
    a = -mu / sigma
    b = (1.0 - mu) / sigma
    mirror = a + b > 0
    lo = jnp.where(mirror, -b, a)
    hi = jnp.where(mirror, -a, b)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + _log1mexp(log_lo - log_hi)


def _data_nll(mu, log_sigma, mean, var):
    """Mean NLL per sample and log Z (reused by the derivatives)."""
    sigma = jnp.exp(log_sigma)
    log_z = _log_z(mu, sigma)
    quad = (var + (mean - mu) ** 2) / (sigma * sigma)
    return _HALF_LOG_2PI + log_sigma + log_z + 0.5 * quad, log_z


def _penalty(mu, log_sigma, prior):
    """Prior term over n, its gradient, and two curvatures, all in (mu, log sigma).

    `exact` is the prior's Hessian in natural parameters mapped to (mu, log sigma),
    J^T H_eta J = H_theta + [[0, 2 g_mu], [2 g_mu, 2 g_ls]], so that Fisher + exact gives
    the exact Newton step in eta (quadratic convergence); it can be indefinite.
    `gauss_newton` = diag(k_mu, k_sigma sigma^2) is always positive (the fallback).
    """
    prior_mu, prior_sigma, inv_var_mu, inv_var_sigma = prior  # inverse variances already / n
    sigma = jnp.exp(log_sigma)
    du = mu - prior_mu
    ds = sigma - prior_sigma
    value = 0.5 * (inv_var_mu * du * du + inv_var_sigma * ds * ds)
    grad = (inv_var_mu * du, inv_var_sigma * ds * sigma)
    exact = (inv_var_mu, 2.0 * grad[0], inv_var_sigma * sigma * (4.0 * sigma - 3.0 * prior_sigma))
    gauss_newton = (inv_var_mu, jnp.zeros_like(mu), inv_var_sigma * sigma * sigma)
    return value, grad, exact, gauss_newton


def _tail_ratios(c):
    """rho_k = E[E^k] / E[E^(k-1)], k = 1..4, of E >= 0 with density prop. to exp(-c e - e^2/2).

    E is the standardised truncated normal seen from its near end, when that end lies c
    standard deviations beyond the mean (the far end is then too unlikely to matter).
    Integration by parts gives E[E^k] = (k - 1) E[E^(k-2)] - c E[E^(k-1)] for k >= 2, which
    cancels catastrophically going up but is stable going down, as the continued fraction
    rho_(k-1) = (k - 1) / (c + rho_k) (so rho_1 = 1 / R(c) - c, R Mills' ratio). rho_4 is
    its tail 4 / (c + 5 / (c + ... K / (c + r))), K = _TAIL_DEPTH, evaluated by Wallis'
    recurrences (multiplications, one division); r = N / D estimates rho_(K+1) as the
    root of r = (K + 1) / (c + r (K + 2) / (K + 1)).
    """
    depth = _TAIL_DEPTH
    numerator = 2.0 * (depth + 1)
    denominator = jnp.sqrt(c * c + 4.0 * (depth + 2)) + c
    # Wallis: A_i = b_i A_(i-1) + a_i A_(i-2) for the partial numerators a_i = 4..K and
    # denominators b_i = c, the last one c + N / D (both sides times D).
    a_prev, a_cur = jnp.ones_like(c), jnp.zeros_like(c)
    b_prev, b_cur = jnp.zeros_like(c), jnp.ones_like(c)
    for k in range(4, depth):  # a_i = 4..K-1; the last step, a_K = K, is below
        a_prev, a_cur = a_cur, c * a_cur + k * a_prev
        b_prev, b_cur = b_cur, c * b_cur + k * b_prev
    last = c * denominator + numerator
    rho4 = (last * a_cur + depth * denominator * a_prev) / (
        last * b_cur + depth * denominator * b_prev
    )
    rho3 = 3.0 / (c + rho4)
    rho2 = 2.0 / (c + rho3)
    return 1.0 / (c + rho2), rho2, rho3, rho4


def _derivatives(mu, log_sigma, log_z, mean, var):
    """Residuals and covariance of the sufficient statistics, in a basis where both are exact.

    The gradient of the mean NLL is E_model[T] - E_data[T] and the Fisher matrix Cov(T), for
    T = (Y, Y^2) with Y standardised (module docstring). Returned: (residual, cov, basis,
    noise) for U = (V, V^2), where T = A U + const with A = [[s, 0], [2 k, 1]] and basis =
    (s, k). Near the middle V = Y (s = 1, k = 0) and the moments come from M_1..M_4. Where
    the end of [0, 1] nearer the mean lies c >= _TAIL_FROM standard deviations beyond it,
    V = E = s Y - c is the distance from that end (s = -1 when it is 1), whose moments come
    from `_tail_ratios`: there the raw moments (about c^2, c^4) cancel to central ones of
    order c^-2, and Cov(T) is singular to within c^-4. `noise` bounds the rounding error of
    the residual: phi(a) / Z is exp of a difference of a^2 / 2 and log Z, which are large
    and nearly cancel, so it carries a relative error of eps times their size.
    """
    eps = jnp.finfo(mu.dtype).eps
    inv_sigma = jnp.exp(-log_sigma)
    inv_var = inv_sigma * inv_sigma
    a = -mu * inv_sigma
    b = a + inv_sigma
    # phi(a) / Z and phi(b) / Z in log space (Z can be far below the float range of phi).
    ra = jnp.exp(-0.5 * a * a - _HALF_LOG_2PI - log_z)
    rb = jnp.exp(-0.5 * b * b - _HALF_LOG_2PI - log_z)
    m1 = ra - rb
    m2 = 1.0 + a * ra - b * rb
    m3 = 2.0 * m1 + a * a * ra - b * b * rb
    m4 = 3.0 * m2 + a * a * a * ra - b * b * b * rb
    d1 = (mean - mu) * inv_sigma
    d2 = var * inv_var + d1 * d1
    error_a = (1.0 + 0.5 * a * a + jnp.abs(log_z)) * ra
    error_b = (1.0 + 0.5 * b * b + jnp.abs(log_z)) * rb
    near_zero = mu < 0.5
    c = jnp.where(near_zero, a, -b)
    deep = c >= _TAIL_FROM[jnp.dtype(mu.dtype).name]
    rho1, rho2, rho3, rho4 = _tail_ratios(jnp.where(deep, c, 1.0))
    gap = jnp.where(near_zero, mean, 1.0 - mean) * inv_sigma  # data mean from the end
    data2 = var * inv_var + gap * gap
    e2 = rho1 * rho2

    def pick(tail, middle):
        return tuple(jnp.where(deep, t, m) for t, m in zip(tail, middle, strict=True))

    residual = pick((rho1 - gap, e2 - data2), (m1 - d1, m2 - d2))
    cov = pick(
        (rho1 * (rho2 - rho1), e2 * (rho3 - rho1), e2 * (rho3 * rho4 - e2)),
        (m2 - m1 * m1, m3 - m1 * m2, m4 - m2 * m2),
    )
    noise = pick(
        (_TAIL_EPS * (rho1 + gap), _TAIL_EPS * (e2 + data2)),
        (
            error_a + error_b + jnp.abs(m1) + (jnp.abs(mean) + jnp.abs(mu)) * inv_sigma,
            jnp.abs(a) * error_a + jnp.abs(b) * error_b + jnp.abs(m2) + d2,
        ),
    )
    basis = (jnp.where(deep & ~near_zero, -1.0, 1.0).astype(mu.dtype), jnp.where(deep, c, 0.0))
    return residual, cov, basis, (eps * noise[0], eps * noise[1])


def _curvature(mu, log_sigma, log_z, mean, var, prior, always=None):
    """Gradient, Newton curvature, gradient noise and the free Newton step, in (mu, log sigma).

    Returns (grad, hess, diag, noise, free): `noise` = (n_mu, n_mixed, n_ls), the rounding
    noise of g.d being |n_mu d_mu + n_mixed d_ls| + |n_ls d_ls|; `hess` the 2x2 curvature
    (for the held coordinates' multipliers); `diag` the curvatures of one-coordinate steps;
    `free` = (d_mu, d_ls, positive) the unconstrained step -hess^-1 grad, solved in the
    basis of `_derivatives` (where the curvature is well conditioned) and mapped back, with
    whether the curvature is positive definite there. MLE: the curvature is the Fisher
    matrix, the Hessian in eta. MAP adds the prior's gradient and its Hessian in eta
    (`_penalty`'s `exact`); where that sum is not positive definite, the prior's
    Gauss-Newton curvature replaces it (a diagonal entry keeps `exact` where that entry
    alone is positive).
    """
    args = (mu, log_sigma, log_z, mean, var)
    if always is None:
        (r1, r2), cov, (s, k), noise = _derivatives(*args)
    else:  # its own computation: its outputs share most of its work (`_separately`)
        (r1, r2), cov, (s, k), noise = _separately(always, _derivatives, *args)
    sigma = jnp.exp(log_sigma)
    inv_sigma = 1.0 / sigma
    # theta = (mu, log sigma) from U: d T / d theta = diag(1 / sigma, 1), T = A U + const,
    # so grad = B r and the Fisher matrix B cov B^T with B = diag(1 / sigma, 1) A.
    grad = (s * r1 * inv_sigma, 2.0 * k * r1 + r2)
    # The noise of g.d = r.u for the step's image u = B^T d in U (mapping the noise to
    # theta first would count the tail's 2 c coupling twice).
    noise = (s * noise[0] * inv_sigma, 2.0 * k * noise[0], noise[1])
    fisher = (
        cov[0] * inv_sigma * inv_sigma,
        s * (2.0 * k * cov[0] + cov[1]) * inv_sigma,
        4.0 * k * k * cov[0] + 4.0 * k * cov[1] + cov[2],
    )

    def step(curvature_u, residual_u):  # d = B^-T u for u = -curvature_u^-1 residual_u
        u1, u2, positive = _solve_2x2(*curvature_u, *residual_u)
        return s * sigma * (u1 - 2.0 * k * u2), u2, positive

    if prior is None:
        return grad, fisher, (fisher[0], fisher[2]), noise, step(cov, (r1, r2))
    # L = B^-1 maps theta gradients to U residuals and curvatures P to L P L^T.
    l11, l21 = s * sigma, -2.0 * k * s * sigma

    def in_u(p):
        return (
            l11 * l11 * p[0],
            l11 * (l21 * p[0] + p[1]),
            l21 * l21 * p[0] + 2.0 * l21 * p[1] + p[2],
        )

    _, prior_grad, exact, gauss_newton = _penalty(mu, log_sigma, prior)
    grad = (grad[0] + prior_grad[0], grad[1] + prior_grad[1])
    newton_u = tuple(c + p for c, p in zip(cov, in_u(exact), strict=True))
    fallback_u = tuple(c + p for c, p in zip(cov, in_u(gauss_newton), strict=True))
    positive = _positive_definite(*newton_u)
    curvature_u = tuple(
        jnp.where(positive, n, f) for n, f in zip(newton_u, fallback_u, strict=True)
    )
    newton = tuple(f + p for f, p in zip(fisher, exact, strict=True))
    fallback = tuple(f + p for f, p in zip(fisher, gauss_newton, strict=True))
    hess = tuple(jnp.where(positive, n, f) for n, f in zip(newton, fallback, strict=True))
    diag = tuple(jnp.where(newton[i] > 0, newton[i], fallback[i]) for i in (0, 2))
    free = step(curvature_u, (l11 * grad[0], l21 * grad[0] + grad[1]))
    return grad, hess, diag, noise, free


# --- the solver --------------------------------------------------------------------------------


class _State(NamedTuple):
    """Per-fit solver state (the iteration counter is kept apart: it is shared)."""

    mu: jax.Array
    log_sigma: jax.Array
    value: jax.Array
    log_z: jax.Array
    step_length: jax.Array
    done: jax.Array
    steps: jax.Array


def _positive_definite(h11, h12, h22):
    return (h11 > 0) & (h22 > 0) & (h11 * h22 - h12 * h12 > 1e-12 * h11 * h22)


def _solve_2x2(h11, h12, h22, g1, g2):
    """-H^-1 g and whether H is (numerically) positive definite."""
    positive = _positive_definite(h11, h12, h22)
    safe_det = jnp.where(positive, h11 * h22 - h12 * h12, 1.0)
    d1 = -(h22 * g1 - h12 * g2) / safe_det
    d2 = -(h11 * g2 - h12 * g1) / safe_det
    return d1, d2, positive


def _sides(mu, log_sigma):
    """+1 where a coordinate sits on its lower bound (it may only grow), -1 on its upper, else 0."""
    mu_lo, mu_hi = MU_BOUNDS
    ls_lo, ls_hi = _LOG_SIGMA_BOUNDS

    def side(x, lo, hi):
        return jnp.where(x <= lo, 1.0, jnp.where(x >= hi, -1.0, 0.0)).astype(x.dtype)

    return side(mu, mu_lo, mu_hi), side(log_sigma, ls_lo, ls_hi)


def _box_newton(grad, hess, diag, free, sides, always=None):
    """Newton step of the box problem at a point: (d_mu, d_log_sigma, solved).

    It solves the quadratic model min g.d + d.H.d / 2 subject to s_i d_i >= 0 for each
    coordinate on a bound (`sides`). In eta the box is a polygon whose faces are the
    straight lines mu = const and sigma = const, and a direction with d_mu = 0 (d_ls = 0)
    keeps mu (sigma) fixed along the straight line in eta, so this is the exact projected
    Newton step of the problem. The solution is the one candidate whose KKT conditions
    hold: the free step (`free`, from `_curvature`); mu held and a 1-D step in log sigma;
    log sigma held and a 1-D step in mu; both held. A held coordinate needs
    s_i (g + H d)_i >= 0 (the model's gradient pushes it outwards), a moving one
    s_i d_i >= 0. Where H is singular and no held candidate applies, a projected,
    diagonally scaled gradient step is returned with `solved` False.
    """
    g1, g2 = grad
    s1, s2 = sides
    f1, f2, positive = free
    only1 = -g1 / jnp.maximum(diag[0], 1e-30)
    only2 = -g2 / jnp.maximum(diag[1], 1e-30)

    def choose(g1, g2, h12, s1, s2, f1, f2, positive, only1, only2):
        """0 free, 1 mu held, 2 log sigma held, 3 both held, 4 none (fallback)."""
        hold_mu = (s1 != 0) & (s2 * only2 >= 0) & (s1 * (g1 + h12 * only2) >= 0)
        hold_ls = (s2 != 0) & (s1 * only1 >= 0) & (s2 * (g2 + h12 * only1) >= 0)
        hold_both = (s1 != 0) & (s2 != 0) & (s1 * g1 >= 0) & (s2 * g2 >= 0)
        choice = jnp.where(hold_mu, 1, jnp.where(hold_ls, 2, jnp.where(hold_both, 3, 4)))
        free = positive & (s1 * f1 >= 0) & (s2 * f2 >= 0)
        return jnp.where(free, 0, choice).astype(jnp.int32)

    args = (g1, g2, hess[1], s1, s2, f1, f2, positive, only1, only2)
    # Its own computation when asked (`_separately`): d_mu and d_ls both consume it.
    choice = choose(*args) if always is None else _separately(always, choose, *args)
    d1 = jnp.where(choice == 2, only1, jnp.where(s1 * only1 >= 0, only1, 0.0))
    d2 = jnp.where(choice == 1, only2, jnp.where(s2 * only2 >= 0, only2, 0.0))
    d1 = jnp.where(choice == 0, f1, jnp.where((choice == 1) | (choice == 3), 0.0, d1))
    d2 = jnp.where(choice == 0, f2, jnp.where((choice == 2) | (choice == 3), 0.0, d2))
    return d1, d2, choice < 4


def _noise_floor(value, log_z, log_sigma):
    """Rounding noise of the objective: its terms log Z and the quadratic can be far larger
    than their sum (optimum in a tail), and |quad / 2| <= |value| + |log Z| + |log sigma| + 1.
    """
    eps = jnp.finfo(value.dtype).eps
    return 8.0 * eps * (jnp.abs(value) + 2.0 * jnp.abs(log_z) + jnp.abs(log_sigma) + 1.0)


class _Optimality(NamedTuple):
    """The box Newton step at a point and what it says about optimality (`_optimality`)."""

    d_mu: jax.Array
    d_ls: jax.Array
    grad: tuple[jax.Array, jax.Array]
    slack: jax.Array
    stationary: jax.Array
    signal: jax.Array
    certified: jax.Array


def _optimality(mu, log_sigma, value, log_z, data, always=None) -> _Optimality:
    """The box Newton step at a point and the optimality tests on it.

    The step's predicted gain is half the squared Newton decrement, -g.d / 2 =
    g_P.H^-1.g_P / 2 with g_P the projected gradient (the components of coordinates held on
    a bound removed): a first-order optimality measure scaled by the curvature, so that it
    does not vanish on a flat ridge. `slack`: the objective's rounding noise
    (`_noise_floor`). `stationary`: the gain is below its own noise, the objective's plus
    the gradient's along the step (nothing measurable is left). `signal`: the gain is more
    than twice the gradient's noise (the step is not noise) and above the objective's
    rounding without the log Z term (only the cancellation of log Z hides it, as deep in a
    tail). `certified`: the gain plus
    the gradient's noise is at most _CERTIFY (1 + |value|), the stated tolerance of
    `FitStatus.CONVERGED` (a statement about the gradient, so the objective's own rounding,
    large deep in a tail, does not enter).
    """
    mean, var, prior = data
    grad, hess, diag, noise, free = _curvature(mu, log_sigma, log_z, mean, var, prior, always)
    d_mu, d_ls, solved = _box_newton(grad, hess, diag, free, _sides(mu, log_sigma), always)
    gain = -0.5 * (grad[0] * d_mu + grad[1] * d_ls)
    slack = _noise_floor(value, log_z, log_sigma)
    noise = jnp.abs(noise[0] * d_mu + noise[1] * d_ls) + jnp.abs(noise[2] * d_ls)
    stationary = solved & (gain <= slack + noise)
    tolerance = _CERTIFY[jnp.dtype(mu.dtype).name] * (1.0 + jnp.abs(value))
    certified = solved & (gain + noise <= tolerance)
    # Measurable but for the cancellation of log Z against the quadratic term.
    plain = _noise_floor(value, jnp.zeros_like(log_z), log_sigma)
    signal = (gain > 2.0 * noise) & (gain > plain)
    return _Optimality(d_mu, d_ls, grad, slack, stationary, signal, certified)


def _natural_step(mu, log_sigma, d_mu, d_ls, length):
    """Moves along the straight line in natural parameters eta = (mu, -1/2) / sigma^2.

    (d_mu, d_ls) is a Newton direction in (mu, log sigma); its image under the Jacobian is
    the Newton direction in eta, where the data NLL is convex. Along it 1 / sigma^2 scales
    by q = 1 - 2 t d_ls and mu moves to (mu + t (d_mu - 2 mu d_ls)) / q (so d_mu = 0 keeps
    mu fixed).
    """
    q = jnp.maximum(1.0 - 2.0 * length * d_ls, 1e-30)
    new_mu = (mu + length * (d_mu - 2.0 * mu * d_ls)) / q
    return new_mu, log_sigma - 0.5 * jnp.log(q)


def _box_limits(mu, log_sigma, d_mu, d_ls):
    """(limit, hit): the step length along `_natural_step` at which the path first reaches a
    bound (inf if never) and which one: 0 and 1 mu's lower and upper, 2 and 3 log sigma's."""
    slope = d_mu - 2.0 * mu * d_ls
    limits = []
    # mu(t) = bound  <=>  t (slope + 2 bound d_ls) = bound - mu. A bound the point sits on
    # is one it leaves (the step never moves outwards): only the other bound counts,
    # however close its crossing (a huge direction can reach it at a tiny length).
    for bound in MU_BOUNDS:
        rate = slope + 2.0 * bound * d_ls
        safe = jnp.where(rate == 0, 1.0, rate)
        lim = (bound - mu) / safe
        ok = (d_mu != 0) & (rate != 0) & (mu != bound) & (lim > 0)
        limits.append(jnp.where(ok, lim, jnp.inf))
    # log sigma(t) = bound  <=>  q(t) = sigma^2 / bound^2
    sigma2 = jnp.exp(2.0 * log_sigma)
    safe_d = jnp.where(d_ls == 0, 1.0, d_ls)
    for bound, towards in zip(SIGMA_BOUNDS, (d_ls < 0, d_ls > 0), strict=True):
        lim = (1.0 - sigma2 / bound**2) / (2.0 * safe_d)
        ok = towards & (log_sigma != math.log(bound)) & (lim > 0)
        limits.append(jnp.where(ok, lim, jnp.inf))
    limit = functools.reduce(jnp.minimum, limits)
    hit = functools.reduce(
        lambda code, i: jnp.where(limits[i] == limit, i, code), (3, 2, 1, 0), jnp.int32(4)
    )
    return limit, hit.astype(jnp.int32)


def _candidate(mu, log_sigma, d_mu, d_ls, length, limit, hit):
    """The point at `length` along the step, stopped at the first bound on its way.

    A point that reaches a bound is put exactly on it, so the next iteration holds it there
    if the gradient pushes outwards; a coordinate whose direction is 0 stays exactly.
    """
    mu_lo, mu_hi = MU_BOUNDS
    ls_lo, ls_hi = _LOG_SIGMA_BOUNDS
    length = jnp.minimum(length, limit)
    new_mu, new_ls = _natural_step(mu, log_sigma, d_mu, d_ls, length)
    hit = jnp.where(length >= limit, hit, 4)
    new_mu = jnp.where(hit == 0, mu_lo, jnp.where(hit == 1, mu_hi, new_mu))
    new_ls = jnp.where(hit == 2, ls_lo, jnp.where(hit == 3, ls_hi, new_ls))
    new_mu = jnp.where(d_mu == 0, mu, jnp.clip(new_mu, mu_lo, mu_hi))
    new_ls = jnp.where(d_ls == 0, log_sigma, jnp.clip(new_ls, ls_lo, ls_hi))
    return new_mu, new_ls, length


def _objective(mu, log_sigma, mean, var, prior):
    value, log_z = _data_nll(mu, log_sigma, mean, var)
    if prior is not None:
        value = value + _penalty(mu, log_sigma, prior)[0]
    return value, log_z


def _separately(always, fn, *args):
    """fn(*args) as its own XLA computation: a conditional on `always`, a traced True.

    XLA on CPU copies shared intermediates into every fusion that consumes them (the cost
    analysis of one Newton iteration showed 5x the flops of the expression). A branch of a
    conditional is a fusion boundary, so its results are computed once and materialised.
    """
    shapes = jax.eval_shape(fn, *args)
    never = lambda *_: jax.tree_util.tree_map(lambda v: jnp.zeros(v.shape, v.dtype), shapes)  # noqa: E731
    return lax.cond(always, fn, never, *args)


def _start(mu0, log_sigma0, mean, var, prior, frozen) -> _State:
    """Solver state at the starting point; `frozen` fits count as done from the start."""
    value0, log_z0 = _objective(mu0, log_sigma0, mean, var, prior)
    return _State(
        mu=mu0,
        log_sigma=log_sigma0,
        value=value0,
        log_z=log_z0,
        step_length=jnp.ones_like(mu0),
        done=frozen,
        steps=jnp.zeros(mu0.shape, jnp.int32),
    )


def _propose(state: _State, data, always):
    """The candidate of one iteration and the box Newton step's verdict at the current point.

    Returns (new_mu, new_ls, length used, `_Optimality`).
    """
    mu, ls = state.mu, state.log_sigma

    def step(state):
        here = _optimality(mu, ls, state.value, state.log_z, data, always)
        return here, _box_limits(mu, ls, here.d_mu, here.d_ls)

    here, (limit, hit) = _separately(always, step, state)
    new_mu, new_ls, length = _candidate(mu, ls, here.d_mu, here.d_ls, state.step_length, limit, hit)
    return new_mu, new_ls, length, here


def _verdict(state: _State, new_mu, new_ls, new_value, here: _Optimality, length):
    """(accept, stop): the Armijo test of the candidate and whether the fit stops here.

    The Armijo condition has the objective's rounding noise as slack. A stationary fit
    still takes its step (a Newton step from there only gets closer) and stops, unless that
    step was large (mu moved by more than sqrt(eps) sigma or log sigma by more than
    sqrt(eps)) and its predicted gain is well above the gradient's noise
    (`_Optimality.signal`): deep in a tail the objective's rounding can hide a real gain
    that the gradient still sees. A fit also stops when its step length has shrunk below
    1e-6 (rounding stops the line search).
    """
    mu, ls = state.mu, state.log_sigma
    decrease = here.grad[0] * (new_mu - mu) + here.grad[1] * (new_ls - ls)
    accept = jnp.isfinite(new_value) & (
        new_value <= state.value + _ARMIJO * jnp.minimum(decrease, 0.0) + here.slack
    )
    eps = jnp.finfo(mu.dtype).eps
    tol = math.sqrt(float(eps))
    large = (jnp.abs(new_mu - mu) > tol * jnp.exp(ls) + 4.0 * eps * jnp.abs(mu)) | (
        jnp.abs(new_ls - ls) > tol
    )
    go_on = accept & large & here.signal
    return accept, (here.stationary & ~go_on) | (length < 1e-6)


def _iteration(state: _State, data, iteration) -> _State:
    """One Newton iteration of every unfinished fit (the loop body of `_iterate`).

    A fit stops where its box Newton step can gain nothing measurable (`_optimality`,
    `_verdict`); whether it is optimal is decided afterwards, for every fit (`_status`). A
    rejected candidate is retried 4 times shorter in the next iteration (no inner loop:
    every iteration costs the same two `log_ndtr` evaluations).
    """
    mean, var, prior = data
    # The loop counter is a runtime value, so XLA cannot fold the conditionals away.
    always = iteration >= 0
    new_mu, new_ls, length, here = _separately(always, _propose, state, data, always)
    new_value, new_log_z = _separately(
        always, lambda m, s: _objective(m, s, mean, var, prior), new_mu, new_ls
    )
    accept, stop = _separately(always, _verdict, state, new_mu, new_ls, new_value, here, length)
    take = ~state.done & accept
    return _State(
        mu=jnp.where(take, new_mu, state.mu),
        log_sigma=jnp.where(take, new_ls, state.log_sigma),
        value=jnp.where(take, new_value, state.value),
        log_z=jnp.where(take, new_log_z, state.log_z),
        # A rejected step is retried shorter than the length actually tried (which the
        # box may have cut below the step length).
        step_length=jnp.where(accept, 1.0, length * _STEP_CUT).astype(state.mu.dtype),
        done=state.done | stop,
        steps=state.steps + (~state.done).astype(jnp.int32),
    )


def _iterate(state: _State, data, start: int, stop: int) -> _State:
    """Newton iterations start..stop-1 (`_iteration`) until every fit is done or `stop`.

    `data` is (mean, var, prior) with prior None for the MLE.
    """

    def body(carry):
        state, iteration = carry
        return _iteration(state, data, iteration), iteration + 1

    def cond(carry) -> jax.Array:
        state, iteration = carry
        return (iteration < stop) & ~jnp.all(state.done)

    return lax.while_loop(cond, body, (state, jnp.asarray(start, jnp.int32)))[0]


def _in_blocks(state: _State, data, start: int, stop: int) -> _State:
    """`_iterate` on blocks of BLOCK fits in sequence, updating `state` in place.

    Each block's loop stops as soon as that block is done, and its arrays stay in cache.
    (lax.map, which stacks the blocks' outputs into new arrays, cost as much as two
    iterations of the solver.)
    """
    size = state.mu.shape[0]
    if size <= BLOCK:
        return _iterate(state, data, start, stop)
    assert size % BLOCK == 0, size  # sizes are powers of two (`_bucketed`)

    def block(i, state):
        first = i * BLOCK
        part = _iterate(*_block((state, data), first), start, stop)
        return jax.tree_util.tree_map(
            lambda x, y: lax.dynamic_update_slice(x, y, (first,)), state, part
        )

    return lax.fori_loop(0, size // BLOCK, block, state)


def _block(tree, first):
    """The entries first..first+BLOCK-1 of every array in `tree`."""
    return jax.tree_util.tree_map(lambda x: lax.dynamic_slice(x, (first,), (BLOCK,)), tree)


def _blockwise(fn, *args):
    """fn(always, *args) on blocks of BLOCK entries in sequence (as `_in_blocks`), where a
    block's arrays stay in cache; `always` is a traced True for `_separately`."""
    size = jax.tree_util.tree_leaves(args)[0].shape[0]
    if size <= BLOCK:
        return fn(jnp.asarray(size) >= 0, *args)
    shape = jax.eval_shape(lambda *a: fn(True, *a), *_block(args, 0))

    def block(i, out):
        first = i * BLOCK
        return lax.dynamic_update_slice(out, fn(i >= 0, *_block(args, first)), (first,))

    return lax.fori_loop(0, size // BLOCK, block, jnp.zeros((size,), shape.dtype))


def _compacted(state: _State, data, start: int, rounds) -> _State:
    """Runs `rounds` ((stop, width), ...) on the unfinished fits only.

    The unfinished fits are gathered `width` at a time (in order, as many chunks as
    needed) and iterated up to `stop`; the next round compacts that buffer again, so
    each round scans only its parent's buffer. Every unfinished fit has run exactly
    `start` iterations, so the shared counter stays exact per fit. All of it is traced
    (no host round trip), so it also runs inside a caller's jit.
    """
    (stop, width), rest = rounds[0], rounds[1:]
    total = state.mu.shape[0]
    pending = ~state.done
    # The indices of the unfinished fits in order (jnp.nonzero, whose cumsum is 8x slower
    # on CPU than this scan), padded so every chunk's slice lies inside; `total` = empty.
    rank = lax.associative_scan(jnp.add, pending.astype(jnp.int32))
    count = rank[-1]
    order = jnp.full((total + width,), total, jnp.int32)
    order = order.at[jnp.where(pending, rank - 1, total + width)].set(
        jnp.arange(total, dtype=jnp.int32), mode="drop"
    )

    def chunk(carry):
        first, state = carry
        index = lax.dynamic_slice(order, (first,), (width,))
        gather = lambda x: x.at[index].get(mode="clip")  # noqa: E731
        sub_data = jax.tree_util.tree_map(gather, data)
        # Unfinished fits have run exactly `start` iterations: done and steps are known.
        sub_state = _State(
            *(gather(x) for x in state[:5]),
            done=index >= total,
            steps=jnp.full((width,), start, jnp.int32),
        )
        sub_state = _in_blocks(sub_state, sub_data, start, stop)
        if rest:
            sub_state = _compacted(sub_state, sub_data, stop, rest)
        # step_length is not needed after the last round: left stale.
        state = state._replace(
            **{
                field: getattr(state, field).at[index].set(getattr(sub_state, field), mode="drop")
                for field in ("mu", "log_sigma", "value", "log_z", "done", "steps")
            }
        )
        return first + width, state

    return lax.while_loop(lambda carry: carry[0] < count, chunk, (jnp.int32(0), state))[1]


def _schedule(size: int) -> tuple[tuple[int, int | None], ...]:
    """Rounds of the solver: (iteration it stops at, width of its buffer or None for all)."""
    if size < COMPACT_MIN:
        return ((MAX_STEPS, None),)
    first, second = COMPACT_STEPS
    return ((first, None), (second, size // 4), (MAX_STEPS, size // 64))


def _solve(state: _State, data, schedule=None) -> _State:
    """Runs the solver's rounds (`_schedule`): all fits in blocks, then only unfinished ones.

    A block waits for its slowest fit: about 10 iterations where the mean fit needs 4.
    So on large batches the first round stops after a few iterations, and the few fits
    left are gathered into narrower buffers for the next rounds.
    """
    if schedule is None:
        schedule = _schedule(state.mu.shape[0])
    (stop, _), rest = schedule[0], schedule[1:]
    state = _in_blocks(state, data, 0, stop)
    return _compacted(state, data, stop, rest) if rest else state


def _moments(n, s1, s2):
    """Sample mean and variance (1/n) from sufficient statistics; (0, 0) where n = 0."""
    safe_n = jnp.where(n > 0, n, 1.0)
    mean = s1 / safe_n
    return mean, jnp.maximum(s2 / safe_n - mean * mean, 0.0)


def _fit(n, s1, s2, prior, schedule=None, start=None):
    """Shared MLE / MAP driver on flat arrays of one float dtype.

    `start`: optional (mu, sigma, use), a warm start: where `use`, the solver starts at
    (mu, sigma) clipped into the box instead of at the sample moments (not for n = 0, nor
    for the MLE of degenerate data, which keep their conventions).
    """
    has_data = n > 0
    safe_n = jnp.where(has_data, n, 1.0)
    mean, var = _moments(n, s1, s2)
    eps = jnp.finfo(s1.dtype).eps
    # All scores equal, up to the rounding of the sums: sigma -> 0 (see module docstring).
    degenerate = has_data & (var <= 16.0 * eps * jnp.maximum(s2 / safe_n, eps))
    if prior is None:
        data = (mean, var, None)
        frozen = ~has_data | degenerate
        empty = (jnp.full_like(mean, NO_DATA_MU), jnp.full_like(mean, NO_DATA_SIGMA))
    else:
        prior_mu, prior_sigma, scale_mu, scale_sigma = prior
        inverse_variances = (1.0 / (scale_mu**2 * safe_n), 1.0 / (scale_sigma**2 * safe_n))
        data = (mean, var, (prior_mu, prior_sigma, *inverse_variances))
        frozen = ~has_data
        empty = (jnp.clip(prior_mu, *MU_BOUNDS), jnp.clip(prior_sigma, *SIGMA_BOUNDS))
    mu_start, sigma_start = _starting_point(mean, var, has_data, empty, degenerate, prior)
    if start is not None:
        use = start[2] & has_data
        if prior is None:
            use = use & ~degenerate
        mu_start = jnp.where(use, jnp.clip(start[0], *MU_BOUNDS), mu_start)
        sigma_start = jnp.where(use, jnp.clip(start[1], *SIGMA_BOUNDS), sigma_start)
    state = _start(mu_start, jnp.log(sigma_start), *data, frozen)
    state = _solve(state, data, schedule)
    mu = state.mu
    sigma = jnp.exp(state.log_sigma)
    sigma = jnp.where(state.log_sigma <= _LOG_SIGMA_BOUNDS[0], SIGMA_BOUNDS[0], sigma)
    status = _status(state, data, has_data, degenerate if prior is None else None)
    nll = jnp.where(has_data, state.value, 0.0)
    if prior is not None:
        # No data: report the prior term at the (clipped) centre alone.
        alone = 0.5 * (
            ((mu - prior_mu) / scale_mu) ** 2 + ((sigma - prior_sigma) / scale_sigma) ** 2
        )
        nll = jnp.where(has_data, nll, alone)
    return Fit(mu, sigma, nll, status, state.steps)


def _starting_point(mean, var, has_data, empty, degenerate, prior):
    """(mu, sigma) where the solver starts: the sample moments (`empty` without data).

    MLE of degenerate data (all scores equal) starts, and stays, at its convention.
    """
    mu_start = jnp.where(has_data, jnp.clip(mean, *MU_BOUNDS), empty[0])
    sigma_start = jnp.where(has_data, jnp.clip(jnp.sqrt(var), *SIGMA_BOUNDS), empty[1])
    if prior is None:
        mu_start = jnp.where(degenerate, mean, mu_start)
        sigma_start = jnp.where(degenerate, SIGMA_BOUNDS[0], sigma_start)
    return mu_start, sigma_start.astype(mean.dtype)


def _status(state: _State, data, has_data, degenerate) -> jax.Array:
    """`FitStatus` of every fit, from the optimality conditions at its final point.

    CONVERGED / AT_BOUND only where `_optimality` certifies the point (whatever made the
    solver stop); AT_BOUND when the point is also on an edge of the box, or, for the MLE,
    where the data are degenerate (the documented convention); else MAX_STEPS.
    """
    mu, ls = state.mu, state.log_sigma

    def certify(always, mu, ls, value, log_z, data):
        return _optimality(mu, ls, value, log_z, data, always).certified

    certified = _blockwise(certify, mu, ls, state.value, state.log_z, data)
    sides = _sides(mu, ls)
    at_bound = (sides[0] != 0) | (sides[1] != 0)
    if degenerate is not None:
        certified = certified | degenerate
        at_bound = at_bound | degenerate
    status = jnp.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED)
    status = jnp.where(certified, status, FitStatus.MAX_STEPS)
    return jnp.where(has_data, status, FitStatus.NO_DATA).astype(jnp.int32)


def _broadcast_float(dtype, *args):
    return jnp.broadcast_arrays(*(jnp.asarray(x, dtype) for x in args))


def _bucketed(solver, *args):
    """Runs `solver` on flat copies of the broadcast arguments padded to a power of two.

    Sizes share compiled code by bucket, so fitting many differently shaped batches
    compiles the solver only a few times. Padding entries have n = 0 and cost nothing.
    """
    dtype = _float_dtype(args[1], args[2])
    arrays = _broadcast_float(dtype, *args)
    shape = arrays[0].shape
    size = math.prod(shape)
    bucket = max(8, 1 << max(size - 1, 0).bit_length())
    flat = [jnp.pad(a.reshape(-1), (0, bucket - size)) for a in arrays]
    fit = solver(*flat)
    return jax.tree_util.tree_map(lambda v: v[:size].reshape(shape), fit)


# `schedule` (static) overrides `_schedule`, for tests.
@functools.partial(jax.jit, static_argnames="schedule")
def _fit_mle_flat(n, s1, s2, schedule=None):
    return _fit(n, s1, s2, None, schedule)


@functools.partial(jax.jit, static_argnames="schedule")
def _fit_map_flat(n, s1, s2, prior_mu, prior_sigma, scale_mu, scale_sigma, schedule=None):
    # Padding gives scale 0 on empty entries; any positive value keeps them finite.
    scale_mu = jnp.where(n > 0, scale_mu, 1.0)
    scale_sigma = jnp.where(n > 0, scale_sigma, 1.0)
    return _fit(n, s1, s2, (prior_mu, prior_sigma, scale_mu, scale_sigma), schedule)


def _fit_mle_stats(n, s1, s2):
    return _bucketed(_fit_mle_flat, n, s1, s2)


def _fit_map_stats(n, s1, s2, prior_mu, prior_sigma, scale_mu, scale_sigma):
    return _bucketed(_fit_map_flat, n, s1, s2, prior_mu, prior_sigma, scale_mu, scale_sigma)


def fit_mle_stats(n: ArrayLike, s1: ArrayLike, s2: ArrayLike) -> Fit:
    """Maximum-likelihood truncated-normal fit from sufficient statistics.

    Args:
        n: sample counts (>= 0), broadcastable with s1 and s2.
        s1: sums of scores.
        s2: sums of squared scores.

    Returns:
        Fit with the broadcast shape, in the float dtype of s1 / s2.

    Example:
        >>> import jax.numpy as jnp
        >>> from optscale_jax import fit_mle_stats, sufficient_stats
        >>> fit = fit_mle_stats(*sufficient_stats(jnp.array([0.2, 0.5, 0.6, 0.9])))
    """
    validation.check_stats(n, s1, s2)
    return _fit_mle_stats(n, s1, s2)


def fit_map_stats(
    n: ArrayLike,
    s1: ArrayLike,
    s2: ArrayLike,
    prior_mu: ArrayLike,
    prior_sigma: ArrayLike,
    prior_scale: tuple[ArrayLike, ArrayLike] = (0.1, 0.1),
) -> Fit:
    """MAP fit with independent Gaussian priors on mu and sigma, from sufficient statistics.

    Minimises nll(mu, sigma) + [((mu - prior_mu) / scale_mu)^2
    + ((sigma - prior_sigma) / scale_sigma)^2] / (2 n) over the box.

    Args:
        n: sample counts (>= 0).
        s1: sums of scores.
        s2: sums of squared scores.
        prior_mu: prior centre of mu.
        prior_sigma: prior centre of sigma.
        prior_scale: (scale_mu, scale_sigma), standard deviations of the priors (> 0).

    Returns:
        Fit with the broadcast shape; n = 0 gives the prior centre clipped into the box.
    """
    validation.check_stats(n, s1, s2)
    scale_mu, scale_sigma = _check_prior(prior_mu, prior_sigma, prior_scale)
    return _fit_map_stats(n, s1, s2, prior_mu, prior_sigma, scale_mu, scale_sigma)


def _check_prior(prior_mu, prior_sigma, prior_scale):
    try:
        scale_mu, scale_sigma = prior_scale
    except (TypeError, ValueError):
        raise ValueError(
            f"prior_scale must be a pair (scale_mu, scale_sigma), got {prior_scale!r}"
        ) from None
    validation.check_finite(prior_mu, "prior_mu")
    validation.check_finite(prior_sigma, "prior_sigma")
    validation.check_positive(scale_mu, "prior_scale[0]")
    validation.check_positive(scale_sigma, "prior_scale[1]")
    return scale_mu, scale_sigma


def fit_mle(scores: ArrayLike, mask: ArrayLike | None = None) -> Fit:
    """Maximum-likelihood truncated-normal fit of the scores along the last axis.

    Args:
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists (ragged rows).

    Returns:
        Fit of shape `[...]`; see the module docstring for n = 0 and degenerate data.
    """
    scores, mask = validation.check_scores(scores, mask)
    return _fit_mle_stats(*_sufficient_stats(scores, mask))


def fit_map(
    scores: ArrayLike,
    prior_mu: ArrayLike,
    prior_sigma: ArrayLike,
    prior_scale: tuple[ArrayLike, ArrayLike] = (0.1, 0.1),
    mask: ArrayLike | None = None,
) -> Fit:
    """MAP truncated-normal fit of the scores along the last axis (see `fit_map_stats`).

    Args:
        scores: `[..., k]` scores in [0, 1].
        prior_mu: prior centre of mu, broadcastable to `[...]`.
        prior_sigma: prior centre of sigma, broadcastable to `[...]`.
        prior_scale: (scale_mu, scale_sigma), the priors' standard deviations.
        mask: optional `[..., k]` bool, True where a score exists.

    Returns:
        Fit of shape `[...]`.
    """
    scores, mask = validation.check_scores(scores, mask)
    scale_mu, scale_sigma = _check_prior(prior_mu, prior_sigma, prior_scale)
    n, s1, s2 = _sufficient_stats(scores, mask)
    return _fit_map_stats(n, s1, s2, prior_mu, prior_sigma, scale_mu, scale_sigma)


@functools.partial(jax.jit)
def mean_nll(
    mu: ArrayLike, sigma: ArrayLike, n: ArrayLike, s1: ArrayLike, s2: ArrayLike
) -> jax.Array:
    """Mean negative log-likelihood per sample of TN(mu, sigma; [0, 1]) from (n, s1, s2).

    Args:
        mu: location.
        sigma: scale (> 0).
        n: sample counts (> 0).
        s1: sums of scores.
        s2: sums of squared scores.

    Returns:
        The mean NLL, broadcast over the arguments.
    """
    mu, sigma, n, s1, s2 = _broadcast_float(_float_dtype(mu, sigma, s1, s2), mu, sigma, n, s1, s2)
    mean = s1 / n
    var = jnp.maximum(s2 / n - mean * mean, 0.0)
    return _data_nll(mu, jnp.log(sigma), mean, var)[0]


# --- moment matching ---------------------------------------------------------------------------


def moment_match(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Truncated-normal (mu, sigma) on [0, 1] with the given score mean and standard deviation.

    The truncated normal on [0, 1] is an exponential family with sufficient statistics
    (s, s^2), so its maximum-likelihood fit to data with first and second moments
    (m, m^2 + sd^2) is exactly the member with that mean and variance. We therefore call the
    MLE on those population moments: the result is also what OptScale0's plug-in
    converges to with unlimited samples from a law with these moments. Inside the
    parameter box the match is exact; pairs no truncated normal reaches (a spread larger than
    an exponential tilt on [0, 1] allows, i.e. a bimodal score law) come back on the box edge
    (see `moment_match_status`).

    Args:
        mean: score means in (0, 1), any shape.
        std: score standard deviations (> 0), broadcasting with `mean`.

    Returns:
        `(mu, sigma)` as float64 numpy arrays of the broadcast shape.
    """
    fit = _moment_fit(mean, std)
    return np.asarray(fit.mu, np.float64), np.asarray(fit.sigma, np.float64)


def moment_match_status(mean, std) -> np.ndarray:
    """`FitStatus` codes of `moment_match` (0 converged, 1 on the parameter box edge)."""
    return np.asarray(_moment_fit(mean, std).status)


def _moment_fit(mean, std):
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    if np.any(~np.isfinite(mean)) or np.any((mean <= 0) | (mean >= 1)):
        raise ValueError("mean: every score mean must lie in (0, 1)")
    if np.any(~np.isfinite(std)) or np.any(std <= 0):
        raise ValueError("std: every standard deviation must be positive and finite")
    mean, std = np.broadcast_arrays(mean, std)
    dtype = jnp.float64 if _x64() else jnp.float32
    one = jnp.ones(mean.shape, dtype)
    return _fit_mle_stats(one, jnp.asarray(mean, dtype), jnp.asarray(mean**2 + std**2, dtype))


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))
