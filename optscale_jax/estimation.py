"""Maximum-likelihood and MAP fits of the truncated normal on [0, 1], batched.

The likelihood of scores s_1..s_n under TN(mu, sigma; [0, 1]) depends on the data only
through (n, s1 = sum s, s2 = sum s^2). With m = s1 / n and v = s2 / n - m^2, the mean
negative log-likelihood per sample is

    nll(mu, sigma) = log(sqrt(2 pi) sigma) + log Z(mu, sigma) + (v + (m - mu)^2) / (2 sigma^2),

Z = Phi((1 - mu) / sigma) - Phi(-mu / sigma). It is minimised over the box
MU_BOUNDS x SIGMA_BOUNDS by Newton's method in the natural parameters
eta = (mu / sigma^2, -1 / (2 sigma^2)), where the NLL is convex. Gradient and Hessian are
written out from the moments M_k = E[Y^k] of the standardised truncated normal
Y = (X - mu) / sigma (D_k the same moments of the data); in theta = (mu, log sigma):

    d nll / d mu = (M1 - D1) / sigma,       d nll / d log sigma = M2 - D2,
    Fisher = [[Var Y / sigma^2, Cov(Y, Y^2) / sigma], [., Var Y^2]],

and the Fisher-scoring direction -Fisher^-1 grad is the image of the Newton direction in
eta. The step follows the straight line in eta (mapped back to theta), stops at the
first bound of the box on its way, and holds a coordinate that sits at a bound the
gradient pushes against (epsilon-active set; the other coordinate takes a 1-D step). A
step is accepted if it satisfies the Armijo condition; otherwise that element tries a
step 4 times shorter in the next iteration (no inner loop, so every iteration costs the
same two `log_ndtr` evaluations). An element has converged when a full step moves mu by
less than sqrt(eps) sigma and log sigma by less than sqrt(eps), or gains (or is predicted
to gain) less than the objective's rounding noise, eps times the size of its terms (log Z
and the quadratic term are far larger than their sum when the optimum is deep in a tail);
iteration stops when all have, or after MAX_STEPS.
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
_ARMIJO = 1e-4
_STEP_CUT = 0.25
_NEAR_BOUND = 1e-2


class FitStatus(enum.IntEnum):
    """How a fit ended (`Fit.status`)."""

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


def _derivatives(mu, log_sigma, log_z, mean, var):
    """Gradient and Fisher matrix (in mu, log sigma) of the data NLL, from the moments."""
    sigma = jnp.exp(log_sigma)
    a = -mu / sigma
    b = (1.0 - mu) / sigma
    # phi(a) / Z and phi(b) / Z in log space (Z can be far below the float range of phi).
    ra = jnp.exp(-0.5 * a * a - _HALF_LOG_2PI - log_z)
    rb = jnp.exp(-0.5 * b * b - _HALF_LOG_2PI - log_z)
    m1 = ra - rb
    m2 = 1.0 + a * ra - b * rb
    m3 = 2.0 * m1 + a * a * ra - b * b * rb
    m4 = 3.0 * m2 + a * a * a * ra - b * b * b * rb
    d1 = (mean - mu) / sigma
    d2 = (var + (mean - mu) ** 2) / (sigma * sigma)
    var_y = jnp.maximum(m2 - m1 * m1, 0.0)
    cov = m3 - m1 * m2
    var_y2 = jnp.maximum(m4 - m2 * m2, 0.0)
    grad = ((m1 - d1) / sigma, m2 - d2)
    h11 = var_y / (sigma * sigma)
    fisher = (h11, cov / sigma, var_y2)
    return grad, fisher


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


def _solve_2x2(h11, h12, h22, g1, g2):
    det = h11 * h22 - h12 * h12
    positive = (h11 > 0) & (h22 > 0) & (det > 1e-12 * h11 * h22)
    safe_det = jnp.where(positive, det, 1.0)
    d1 = -(h22 * g1 - h12 * g2) / safe_det
    d2 = -(h11 * g2 - h12 * g1) / safe_det
    return d1, d2, positive


def _direction(grad, fisher, free_mu, free_ls, fallback=None):
    """Newton direction in eta on the free coordinates, in (mu, log sigma).

    `fisher` is the curvature (J^T H_eta J); where it is not positive definite (MAP only),
    `fallback`, a positive one, is used instead; a singular matrix gives a scaled gradient.
    """
    g1, g2 = grad
    if fallback is not None:
        ok = _solve_2x2(*fisher, g1, g2)[2]
        h11 = jnp.where(fisher[0] > 0, fisher[0], fallback[0])
        h22 = jnp.where(fisher[2] > 0, fisher[2], fallback[2])
        fisher = tuple(jnp.where(ok, f, b) for f, b in zip(fisher, fallback, strict=True))
    else:
        h11, h22 = fisher[0], fisher[2]
    f1, f2, fisher_ok = _solve_2x2(*fisher, g1, g2)
    h1 = jnp.maximum(h11, 1e-30)
    h2 = jnp.maximum(h22, 1e-30)
    only1 = -g1 / h1
    only2 = -g2 / h2
    both = free_mu & free_ls
    d1 = jnp.where(both, jnp.where(fisher_ok, f1, only1), jnp.where(free_mu, only1, 0.0))
    d2 = jnp.where(both, jnp.where(fisher_ok, f2, only2), jnp.where(free_ls, only2, 0.0))
    return d1, d2


def _natural_step(mu, log_sigma, d_mu, d_ls, length):
    """Moves along the straight line in natural parameters eta = (mu, -1/2) / sigma^2.

    (d_mu, d_ls) is a Fisher-scoring direction in (mu, log sigma); its image under the
    Jacobian is the Newton direction in eta, where the data NLL is convex. Along it
    1 / sigma^2 scales by q = 1 - 2 t d_ls and mu moves to (mu + t (d_mu - 2 mu d_ls)) / q.
    """
    q = jnp.maximum(1.0 - 2.0 * length * d_ls, 1e-30)
    new_mu = (mu + length * (d_mu - 2.0 * mu * d_ls)) / q
    return new_mu, log_sigma - 0.5 * jnp.log(q)


def _box_limit(mu, log_sigma, d_mu, d_ls, moving_mu, moving_ls):
    """Largest step length along `_natural_step` that stays inside the box (inf if none)."""
    slope = d_mu - 2.0 * mu * d_ls
    limits = []
    # mu(t) = bound  <=>  t (slope + 2 bound d_ls) = bound - mu. A bound the point sits on
    # is one it leaves (outward moves are held): only the other bound counts, however
    # close its crossing (a huge direction can reach it at a tiny length).
    for bound in MU_BOUNDS:
        rate = slope + 2.0 * bound * d_ls
        safe = jnp.where(rate == 0, 1.0, rate)
        lim = (bound - mu) / safe
        ok = moving_mu & (rate != 0) & (mu != bound) & (lim > 0)
        limits.append(jnp.where(ok, lim, jnp.inf))
    # log sigma(t) = bound  <=>  q(t) = sigma^2 / bound^2
    sigma2 = jnp.exp(2.0 * log_sigma)
    safe_d = jnp.where(d_ls == 0, 1.0, d_ls)
    for bound, towards in zip(SIGMA_BOUNDS, (d_ls < 0, d_ls > 0), strict=True):
        lim = (1.0 - sigma2 / bound**2) / (2.0 * safe_d)
        ok = moving_ls & towards & (log_sigma != math.log(bound)) & (lim > 0)
        limits.append(jnp.where(ok, lim, jnp.inf))
    return functools.reduce(jnp.minimum, limits)


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


def _iterate(state: _State, data, start: int, stop: int) -> _State:
    """Newton iterations start..stop-1 in natural parameters, projected onto the box.

    Runs until every fit is done or `stop` is reached; `data` is (mean, var, prior).
    """
    mean, var, prior = data
    dtype = state.mu.dtype
    eps = jnp.finfo(dtype).eps
    tol = math.sqrt(float(eps))
    mu_lo, mu_hi = MU_BOUNDS
    ls_lo, ls_hi = math.log(SIGMA_BOUNDS[0]), math.log(SIGMA_BOUNDS[1])

    def propose(state: _State, iteration):
        mu, ls = state.mu, state.log_sigma
        grad, fisher = _separately(iteration >= 0, _derivatives, mu, ls, state.log_z, mean, var)
        fallback = None
        if prior is not None:
            _, pgrad, exact, gauss_newton = _penalty(mu, ls, prior)
            grad = (grad[0] + pgrad[0], grad[1] + pgrad[1])
            fallback = tuple(f + p for f, p in zip(fisher, gauss_newton, strict=True))
            fisher = tuple(f + p for f, p in zip(fisher, exact, strict=True))
        # Epsilon-active set (Bertsekas): a coordinate near a bound that the gradient pushes
        # against is moved onto the bound, and Newton runs on the other one alone.
        to_mu_lo = (mu <= mu_lo + _NEAR_BOUND) & (grad[0] > 0)
        to_mu_hi = (mu >= mu_hi - _NEAR_BOUND) & (grad[0] < 0)
        to_ls_lo = (ls <= ls_lo + _NEAR_BOUND) & (grad[1] > 0)
        to_ls_hi = (ls >= ls_hi - _NEAR_BOUND) & (grad[1] < 0)
        active_mu = to_mu_lo | to_mu_hi
        active_ls = to_ls_lo | to_ls_hi
        bound_mu = jnp.where(to_mu_lo, mu_lo, mu_hi)
        bound_ls = jnp.where(to_ls_lo, ls_lo, ls_hi)

        def step_and_limit(grad, fisher, fallback, active_mu, active_ls):
            d_mu, d_ls = _direction(grad, fisher, ~active_mu, ~active_ls, fallback)
            # Through the coupling, the direction can push a coordinate that sits on its
            # bound outwards while the gradient pulls it in; the path would then be clipped
            # there while the other coordinate runs far along the eta line. Hold it instead.
            out_mu = ((mu <= mu_lo) & (d_mu < 0)) | ((mu >= mu_hi) & (d_mu > 0))
            out_ls = ((ls <= ls_lo) & (d_ls < 0)) | ((ls >= ls_hi) & (d_ls > 0))
            d_mu, d_ls = _direction(
                grad, fisher, ~(active_mu | out_mu), ~(active_ls | out_ls), fallback
            )
            # Stop at the first bound on the path rather than clip a far step into the box.
            return d_mu, d_ls, _box_limit(mu, ls, d_mu, d_ls, ~active_mu, ~active_ls)

        d_mu, d_ls, limit = _separately(
            iteration >= 0, step_and_limit, grad, fisher, fallback, active_mu, active_ls
        )

        def candidate(length):
            length = jnp.minimum(length, limit)
            new_mu, new_ls = _natural_step(mu, ls, d_mu, d_ls, length)
            new_mu = jnp.clip(jnp.where(active_mu, bound_mu, new_mu), mu_lo, mu_hi)
            new_ls = jnp.clip(jnp.where(active_ls, bound_ls, new_ls), ls_lo, ls_hi)
            return new_mu, new_ls

        new_mu, new_ls = candidate(state.step_length)
        return new_mu, new_ls, grad[0], grad[1]

    def body(carry):
        state, iteration = carry
        mu, ls = state.mu, state.log_sigma
        # The loop counter is a runtime value, so XLA cannot fold the conditionals away.
        new_mu, new_ls, g_mu, g_ls = _separately(iteration >= 0, propose, state, iteration)
        grad = (g_mu, g_ls)
        t = state.step_length
        # Converged when a full projected step (t = 1) is negligible: mu in units of sigma.
        mu_scale = tol * jnp.exp(ls) + 4.0 * eps * jnp.abs(mu)
        small = (t >= 1.0) & (jnp.abs(new_mu - mu) <= mu_scale) & (jnp.abs(new_ls - ls) <= tol)
        new_value, new_log_z = _separately(
            iteration >= 0, lambda m, s: _objective(m, s, mean, var, prior), new_mu, new_ls
        )
        decrease = grad[0] * (new_mu - mu) + grad[1] * (new_ls - ls)
        # Rounding noise of the objective: its terms log Z and the quadratic can be far
        # larger than their sum (optimum deep in a tail), and |quad / 2| <= |value| + |log Z|
        # + |log sigma| + 1.
        slack = 8.0 * eps * (jnp.abs(state.value) + 2.0 * jnp.abs(state.log_z) + jnp.abs(ls) + 1.0)
        accept = jnp.isfinite(new_value) & (
            new_value <= state.value + _ARMIJO * jnp.minimum(decrease, 0.0) + slack
        )
        stalled = t < 1e-6
        active = ~state.done
        take = active & accept
        # A full step whose gain is below the objective's rounding noise: nothing left to gain.
        flat = (t >= 1.0) & accept & (state.value - new_value <= slack)
        # ... or whose predicted gain (Newton decrement) is: then the step is noise-driven.
        flat = flat | ((t >= 1.0) & (-decrease <= slack))
        done = state.done | (active & (small | flat | stalled))
        new_state = _State(
            mu=jnp.where(take, new_mu, mu),
            log_sigma=jnp.where(take, new_ls, ls),
            value=jnp.where(take, new_value, state.value),
            log_z=jnp.where(take, new_log_z, state.log_z),
            step_length=jnp.where(accept, 1.0, t * _STEP_CUT).astype(dtype),
            done=done,
            steps=state.steps + active.astype(jnp.int32),
        )
        return new_state, iteration + 1

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
        part = jax.tree_util.tree_map(
            lambda x: lax.dynamic_slice(x, (first,), (BLOCK,)), (state, data)
        )
        part = _iterate(*part, start, stop)
        return jax.tree_util.tree_map(
            lambda x, y: lax.dynamic_update_slice(x, y, (first,)), state, part
        )

    return lax.fori_loop(0, size // BLOCK, block, state)


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
        # log_z and step_length are not needed after the last round: left stale.
        state = state._replace(
            **{
                field: getattr(state, field).at[index].set(getattr(sub_state, field), mode="drop")
                for field in ("mu", "log_sigma", "value", "done", "steps")
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


def _fit(n, s1, s2, prior, schedule=None):
    """Shared MLE / MAP driver on flat arrays of one float dtype."""
    dtype = s1.dtype
    eps = jnp.finfo(dtype).eps
    has_data = n > 0
    safe_n = jnp.where(has_data, n, 1.0)
    mean = s1 / safe_n
    var = jnp.maximum(s2 / safe_n - mean * mean, 0.0)
    # All scores equal, up to the rounding of the sums: sigma -> 0 (see module docstring).
    degenerate = has_data & (var <= 16.0 * eps * jnp.maximum(s2 / safe_n, eps))
    sigma_lo = jnp.asarray(SIGMA_BOUNDS[0], dtype)
    mu_start = jnp.clip(mean, *MU_BOUNDS)
    sigma_start = jnp.clip(jnp.sqrt(var), *SIGMA_BOUNDS)
    if prior is not None:
        prior_mu, prior_sigma, scale_mu, scale_sigma = prior
        prior_terms = (
            prior_mu,
            prior_sigma,
            1.0 / (scale_mu**2 * safe_n),
            1.0 / (scale_sigma**2 * safe_n),
        )
        frozen = ~has_data
        empty_mu = jnp.clip(prior_mu, *MU_BOUNDS)
        empty_sigma = jnp.clip(prior_sigma, *SIGMA_BOUNDS)
    else:
        prior_terms = None
        frozen = ~has_data | degenerate
        empty_mu = jnp.full_like(mean, NO_DATA_MU)
        empty_sigma = jnp.full_like(mean, NO_DATA_SIGMA)
    mu_start = jnp.where(has_data, mu_start, empty_mu)
    sigma_start = jnp.where(has_data, sigma_start, empty_sigma)
    if prior is None:
        mu_start = jnp.where(degenerate, mean, mu_start)
        sigma_start = jnp.where(degenerate, sigma_lo, sigma_start)
    data = (mean, var, prior_terms)
    state = _start(mu_start, jnp.log(sigma_start), *data, frozen)
    state = _solve(state, data, schedule)
    mu = state.mu
    sigma = jnp.exp(state.log_sigma)
    sigma = jnp.where(state.log_sigma <= math.log(SIGMA_BOUNDS[0]), sigma_lo, sigma)
    at_bound = (
        (mu <= MU_BOUNDS[0])
        | (mu >= MU_BOUNDS[1])
        | (state.log_sigma <= math.log(SIGMA_BOUNDS[0]))
        | (state.log_sigma >= math.log(SIGMA_BOUNDS[1]))
    )
    if prior is None:
        at_bound = at_bound | degenerate
    status = jnp.where(
        ~has_data,
        FitStatus.NO_DATA,
        jnp.where(
            ~state.done,
            FitStatus.MAX_STEPS,
            jnp.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED),
        ),
    ).astype(jnp.int32)
    nll = jnp.where(has_data, state.value, 0.0)
    if prior is not None:
        # No data: report the prior term at the (clipped) centre alone.
        empty = 0.5 * (
            ((mu - prior_mu) / scale_mu) ** 2 + ((sigma - prior_sigma) / scale_sigma) ** 2
        )
        nll = jnp.where(has_data, nll, empty)
    return Fit(mu, sigma, nll, status, state.steps)


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
