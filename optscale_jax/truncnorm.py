"""The normal distribution truncated to [low, high], in log space.

All functions are elementwise and broadcast over their array arguments: points x, the
location mu and scale sigma (> 0) of the untruncated normal, and the truncation points
low < high (default [0, 1]); outside [low, high] the log CDF is -inf or 0. With
z = (x - mu) / sigma, a = (low - mu) / sigma and b = (high - mu) / sigma:

    pdf(x) = phi(z) / (sigma * Z),   Z = Phi(b) - Phi(a),
    cdf(x) = (Phi(z) - Phi(a)) / Z.

Differences of Phi are formed by reflection: when the interval [u, v] lies mostly
to the right of 0 it is mirrored to [-v, -u], so that `log_ndtr` is only asked
about the left tail, where it is accurate to relative precision; the difference
then follows from log-diff-exp. The cdf and survival function are both computed
from the two masses left and right of x, F = L / (L + R), so that neither loses
precision when it is close to 1. Values are stable for mu in [-30, 31] and
sigma in [1e-3, 10] on [0, 1], in float32 and float64, with finite gradients.

Example:
    >>> from optscale_jax import truncnorm
    >>> float(truncnorm.cdf(0.5, 0.5, 0.2))
    0.5
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtri
from jax.typing import ArrayLike

from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax._numerics import log1mexp as _log1mexp

__all__ = [
    "Endpoints",
    "cdf",
    "endpoints",
    "log_normaliser",
    "logcdf",
    "logcdf_from",
    "logpdf",
    "logsf",
    "ppf",
    "sample",
    "sf",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_HALF = math.log(0.5)


def _log_ndtr_diff(u: jax.Array, v: jax.Array) -> jax.Array:
    """log(Phi(v) - Phi(u)) for u <= v, using only the left tail of log_ndtr."""
    mirror = u + v > 0
    lo = jnp.where(mirror, -v, u)
    hi = jnp.where(mirror, -u, v)
    log_hi = log_ndtr(hi)
    return log_hi + _log1mexp(log_ndtr(lo) - log_hi)


def _log_ndtr_diff_from(u, v, log_u, log_neg_u, log_v, log_neg_v):
    """`_log_ndtr_diff` from given log_ndtr(+-u), log_ndtr(+-v): the same values, no new ones."""
    mirror = u + v > 0
    log_hi = jnp.where(mirror, log_neg_u, log_v)
    return log_hi + _log1mexp(jnp.where(mirror, log_neg_v, log_u) - log_hi)


class Endpoints(NamedTuple):
    """Standardised truncation points a, b and log_ndtr at +-a, +-b (see `logcdf_from`)."""

    a: jax.Array
    b: jax.Array
    log_a: jax.Array
    log_neg_a: jax.Array
    log_b: jax.Array
    log_neg_b: jax.Array


@jax.jit
def endpoints(mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0):
    """The parts of `logcdf` that do not depend on x, to evaluate it at many x cheaply.

    Returns:
        `Endpoints`, broadcast over the arguments.
    """
    _, mu, sigma, low, high = _standardise(0.0, mu, sigma, low, high)
    a, b = (low - mu) / sigma, (high - mu) / sigma
    return Endpoints(a, b, *_log_ndtr_both(a), *_log_ndtr_both(b))


def _log_ndtr_both(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log_ndtr(x), log_ndtr(-x)) from one log_ndtr call, in the tail where it is accurate.

    log Phi of the other side is log(1 - Phi(-|x|)), which log1p keeps exact.
    """
    tail = log_ndtr(-jnp.abs(x))
    body = jnp.log1p(-jnp.exp(tail))
    negative = x < 0
    return jnp.where(negative, tail, body), jnp.where(negative, body, tail)


@jax.jit
def logcdf_from(x: ArrayLike, mu: ArrayLike, sigma: ArrayLike, ends: Endpoints) -> jax.Array:
    """`logcdf(x, mu, sigma, low, high)` given `ends = endpoints(mu, sigma, low, high)`.

    Agrees with `logcdf` to rounding; costs one `log_ndtr` evaluation instead of four, which
    is what matters when one fit is evaluated at several thresholds (a replay grid).

    Args:
        x: points.
        mu: location of the untruncated normal.
        sigma: scale of the untruncated normal (> 0).
        ends: the fit's `endpoints`.

    Returns:
        log F(x), broadcast over the arguments.
    """
    dtype = _float_dtype(x, mu, sigma, ends.a)
    x, mu, sigma = (jnp.asarray(t, dtype) for t in (x, mu, sigma))
    z = jnp.clip((x - mu) / sigma, ends.a, ends.b)
    log_z, log_neg_z = _log_ndtr_both(z)
    log_left = _log_ndtr_diff_from(ends.a, z, ends.log_a, ends.log_neg_a, log_z, log_neg_z)
    log_right = _log_ndtr_diff_from(z, ends.b, log_z, log_neg_z, ends.log_b, ends.log_neg_b)
    return -jax.nn.softplus(log_right - log_left)


def _standardise(x, mu, sigma, low, high):
    dtype = _float_dtype(x, mu, sigma, low, high)
    x, mu, sigma, low, high = (jnp.asarray(t, dtype) for t in (x, mu, sigma, low, high))
    return x, mu, sigma, low, high


@jax.jit
def log_normaliser(mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0):
    """log Z = log(Phi(b) - Phi(a)), the log probability that N(mu, sigma^2) lies in [low, high].

    Returns:
        log Z, broadcast over the arguments.
    """
    _, mu, sigma, low, high = _standardise(0.0, mu, sigma, low, high)
    return _log_ndtr_diff((low - mu) / sigma, (high - mu) / sigma)


@jax.jit
def logpdf(
    x: ArrayLike, mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0
) -> jax.Array:
    """log pdf(x) = -z^2/2 - log(sqrt(2 pi) sigma) - log Z; -inf outside [low, high].

    Returns:
        The log density, broadcast over the arguments.
    """
    x, mu, sigma, low, high = _standardise(x, mu, sigma, low, high)
    inside = (x >= low) & (x <= high)
    z = (jnp.clip(x, low, high) - mu) / sigma
    log_z = _log_ndtr_diff((low - mu) / sigma, (high - mu) / sigma)
    value = -0.5 * z * z - _HALF_LOG_2PI - jnp.log(sigma) - log_z
    return jnp.where(inside, value, -jnp.inf)


def _log_masses(x, mu, sigma, low, high):
    """log of the (unnormalised) normal masses of [low, x] and [x, high]."""
    x, mu, sigma, low, high = _standardise(x, mu, sigma, low, high)
    a = (low - mu) / sigma
    b = (high - mu) / sigma
    z = jnp.clip((x - mu) / sigma, a, b)
    return _log_ndtr_diff(a, z), _log_ndtr_diff(z, b)


@jax.jit
def logcdf(
    x: ArrayLike, mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0
) -> jax.Array:
    """log F(x) = -softplus(log R - log L), L and R the normal masses of [low, x] and [x, high].

    Accurate both when F(x) is tiny and when it is close to 1 (then log F ~ -R/L).


    Returns:
        log F(x), broadcast over the arguments.
    """
    log_left, log_right = _log_masses(x, mu, sigma, low, high)
    return -jax.nn.softplus(log_right - log_left)


@jax.jit
def logsf(
    x: ArrayLike, mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0
) -> jax.Array:
    """log(1 - F(x)) = -softplus(log L - log R), broadcast over the arguments; see `logcdf`."""
    log_left, log_right = _log_masses(x, mu, sigma, low, high)
    return -jax.nn.softplus(log_left - log_right)


@jax.jit
def cdf(
    x: ArrayLike, mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0
) -> jax.Array:
    """F(x) = exp(logcdf(x)). Args as in `logcdf`.

    Returns:
        F(x), broadcast over the arguments.
    """
    return jnp.exp(logcdf(x, mu, sigma, low, high))


@jax.jit
def sf(
    x: ArrayLike, mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0
) -> jax.Array:
    """1 - F(x) = exp(logsf(x)). Args as in `logsf`.

    Returns:
        1 - F(x), broadcast over the arguments.
    """
    return jnp.exp(logsf(x, mu, sigma, low, high))


def _inverse_log_ndtr(log_p: jax.Array) -> jax.Array:
    """z with log Phi(z) = log_p (log_p <= 0), accurate far into the left tail."""
    left = log_p < _LOG_HALF
    # z >= 0: Phi(-z) = 1 - exp(log_p) is formed without cancellation.
    log_p_right = jnp.where(left, _LOG_HALF, log_p)
    z_right = -ndtri(-jnp.expm1(log_p_right))
    # z < 0: ndtri while exp(log_p) is a normal float, else the asymptotic start
    # z^2 = -2 log p - log(-2 log p) - log(2 pi); then Newton on log_ndtr polishes.
    log_p_left = jnp.where(left, log_p, 2.0 * _LOG_HALF)
    moderate = log_p_left > -30.0
    z_mid = ndtri(jnp.exp(jnp.where(moderate, log_p_left, -1.0)))
    t = -2.0 * jnp.where(moderate, -40.0, log_p_left)
    z_tail = -jnp.sqrt(t - jnp.log(t) - 2.0 * _HALF_LOG_2PI)
    z = jnp.where(moderate, z_mid, z_tail)
    for _ in range(3):
        log_cdf = log_ndtr(z)
        slope = jnp.exp(-0.5 * z * z - _HALF_LOG_2PI - log_cdf)  # d log Phi / dz
        z = z - (log_cdf - log_p_left) / slope
    return jnp.where(left, z, z_right)


@jax.jit
def ppf(
    q: ArrayLike, mu: ArrayLike, sigma: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0
) -> jax.Array:
    """Quantile function F^{-1}(q).

    Works in the mirrored frame where the interval lies in the left tail, and in the
    tail of q that is small: Phi(z) = Phi(a) + q Z for q <= 1/2, Phi(z) = Phi(b) - (1 - q) Z
    above, both in log space; then inverts log_ndtr.

    Args:
        q: probabilities in [0, 1].
        mu: location of the untruncated normal.
        sigma: scale of the untruncated normal (> 0).
        low: lower truncation point.
        high: upper truncation point (> low).

    Returns:
        The quantiles, in [low, high], broadcast over the arguments.
    """
    q, mu, sigma, low, high = _standardise(q, mu, sigma, low, high)
    a = (low - mu) / sigma
    b = (high - mu) / sigma
    mirror = a + b > 0
    lo = jnp.where(mirror, -b, a)
    hi = jnp.where(mirror, -a, b)
    # In the mirrored frame the probability below the quantile is 1 - q.
    log_q = jnp.log(q)
    log_1mq = jnp.log1p(-q)
    log_below = jnp.where(mirror, log_1mq, log_q)
    log_above = jnp.where(mirror, log_q, log_1mq)
    log_lo = log_ndtr(lo)
    log_hi = log_ndtr(hi)
    log_z = log_hi + _log1mexp(log_lo - log_hi)
    lower_half = log_below <= _LOG_HALF
    from_low = jnp.logaddexp(log_lo, log_below + log_z)
    gap = jnp.minimum(jnp.where(lower_half, -1.0, log_above + log_z - log_hi), 0.0)
    from_high = log_hi + _log1mexp(gap)
    z = _inverse_log_ndtr(jnp.where(lower_half, from_low, from_high))
    z = jnp.clip(z, lo, hi)
    x = mu + sigma * jnp.where(mirror, -z, z)
    return jnp.clip(x, low, high)


def sample(
    key: jax.Array,
    mu: ArrayLike,
    sigma: ArrayLike,
    shape: tuple[int, ...] = (),
    low: ArrayLike = 0.0,
    high: ArrayLike = 1.0,
    dtype: jnp.dtype | None = None,
) -> jax.Array:
    """Draws by inversion: ppf(U) with U uniform on [0, 1).

    Args:
        key: a `jax.random` key.
        mu: location of the untruncated normal.
        sigma: scale of the untruncated normal (> 0).
        shape: output shape; must broadcast with the parameters' shape.
        low: lower truncation point.
        high: upper truncation point (> low).
        dtype: float dtype of the draws (default: the parameters' float dtype).

    Returns:
        Draws of shape `broadcast(shape, parameters)`.
    """
    if dtype is None:
        dtype = _float_dtype(mu, sigma, low, high)
    return _sample(key, mu, sigma, tuple(shape), low, high, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _sample(key, mu, sigma, shape, low, high, dtype):
    shape = jnp.broadcast_shapes(shape, *(jnp.shape(t) for t in (mu, sigma, low, high)))
    u = jax.random.uniform(key, shape, dtype)
    return ppf(u, mu, sigma, low, high).astype(dtype)
