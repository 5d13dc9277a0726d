"""The optimal number of samples N* of OptScale.

With F the truncated-normal CDF of a question's scores, the probability that the best of
N samples reaches s_min is confidence(N) = 1 - F(s_min)^N. N* is the smallest N with
confidence(N) >= alpha:

    N* = ceil(log(1 - alpha) / log F(s_min)),

computed in log space (log F from `truncnorm.logcdf`, log1p(-alpha)) and then corrected
by one step either way so that it is exactly minimal for `confidence` as computed here.

Example:
    >>> from optscale_jax import optimal_n
    >>> int(optimal_n(0.6, 0.2, 0.9, 0.95))
    65
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax import truncnorm, validation
from optscale_jax._numerics import float_dtype as _float_dtype

__all__ = ["NSTAR_UNBOUNDED", "optimal_n", "confidence", "optimal_n_from_log_cdf"]

NSTAR_UNBOUNDED = 2**31 - 1
"""N* when F(s_min) = 1 (no sample can reach s_min) and no cap was given."""


def _confidence_from_log_cdf(log_f: jax.Array, n: jax.Array) -> jax.Array:
    """1 - F^n = -expm1(n log F); n = 0 gives 0 even when log F = -inf."""
    safe_log_f = jnp.where(n > 0, log_f, 0.0)
    return jnp.where(n > 0, -jnp.expm1(n * safe_log_f), 0.0)


@jax.jit
def _optimal_n(log_f, alpha, max_n):
    dtype = log_f.dtype
    alpha = jnp.asarray(alpha, dtype)
    target = jnp.log1p(-alpha)  # < 0
    # F = 1 (log F = 0): unbounded. F = 0 (log F = -inf): one sample suffices.
    unbounded = log_f >= 0.0
    safe_log_f = jnp.where(unbounded, -1.0, log_f)
    ratio = target / safe_log_f
    # Stay below 2**31 in float before the cast; larger values are unbounded anyway.
    limit = jnp.asarray(2.0**30, dtype)
    huge = unbounded | ~(ratio < limit)
    n = jnp.ceil(jnp.clip(ratio, 1.0, limit))
    # ceil of a rounded ratio can be one off: make N minimal for `confidence` itself.
    n = jnp.where((n > 1) & (_confidence_from_log_cdf(safe_log_f, n - 1) >= alpha), n - 1, n)
    n = jnp.where(_confidence_from_log_cdf(safe_log_f, n) < alpha, n + 1, n)
    n_int = jnp.where(huge, NSTAR_UNBOUNDED, n.astype(jnp.int32))
    return jnp.clip(n_int, 1, max_n)


def optimal_n_from_log_cdf(
    log_f: ArrayLike, alpha: ArrayLike, max_n: ArrayLike | None = None
) -> jax.Array:
    """N* from a precomputed log F(s_min) (lets a grid over alpha reuse one log F).

    Args:
        log_f: log F(s_min) <= 0.
        alpha: target probability in (0, 1).
        max_n: cap (integer >= 1), or None for `NSTAR_UNBOUNDED`.

    Returns:
        int32 N*, broadcast over the arguments, in [1, max_n].
    """
    validation.check_open_unit(alpha, "alpha")
    validation.check_max_n(max_n)
    return _optimal_n_from_log_cdf(log_f, alpha, max_n)


def _optimal_n_from_log_cdf(log_f, alpha, max_n=None):
    """`optimal_n_from_log_cdf` without validation, for library code that validated already."""
    log_f = jnp.asarray(log_f)
    log_f = log_f.astype(_float_dtype(log_f))
    cap = NSTAR_UNBOUNDED if max_n is None else max_n
    return _optimal_n(log_f, alpha, jnp.asarray(cap, jnp.int32))


def optimal_n(
    mu: ArrayLike,
    sigma: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    max_n: ArrayLike | None = None,
) -> jax.Array:
    """N* = ceil(log(1 - alpha) / log F(s_min; mu, sigma)), clipped to [1, max_n].

    F(s_min) = 0 gives 1; F(s_min) = 1 gives max_n, or NSTAR_UNBOUNDED (2**31 - 1) if
    max_n is None. The result is minimal: confidence(N* - 1) < alpha <= confidence(N*)
    whenever 1 < N* < max_n.

    Args:
        mu: truncated-normal location (of the untruncated normal).
        sigma: its scale (> 0).
        s_min: score threshold in [0, 1].
        alpha: target probability in (0, 1).
        max_n: cap (integer >= 1), or None.

    Returns:
        int32 N*, broadcast over the arguments.
    """
    validation.check_unit(s_min, "s_min")
    validation.check_open_unit(alpha, "alpha")
    validation.check_max_n(max_n)
    validation.check_broadcast({"mu": mu, "sigma": sigma, "s_min": s_min, "alpha": alpha})
    dtype = _float_dtype(mu, sigma, s_min)
    log_f = truncnorm.logcdf(jnp.asarray(s_min, dtype), mu, sigma)
    cap = NSTAR_UNBOUNDED if max_n is None else max_n
    return _optimal_n(log_f, alpha, jnp.asarray(cap, jnp.int32))


def confidence(mu: ArrayLike, sigma: ArrayLike, s_min: ArrayLike, n: ArrayLike) -> jax.Array:
    """P(best of n scores >= s_min) = 1 - F(s_min)^n, computed as -expm1(n log F).

    Args:
        mu: truncated-normal location.
        sigma: its scale (> 0).
        s_min: score threshold in [0, 1].
        n: number of samples (>= 0).

    Returns:
        The confidence, broadcast over the arguments.
    """
    validation.check_unit(s_min, "s_min")
    dtype = _float_dtype(mu, sigma, s_min)
    log_f = truncnorm.logcdf(jnp.asarray(s_min, dtype), mu, sigma)
    return _confidence_from_log_cdf(log_f, jnp.asarray(n, dtype))
