"""The regularised incomplete beta function I_x(a, b) in log space, accurate in both tails.

`jax.scipy.special.betainc` forms the prefactor x^a (1 - x)^b / B(a, b) from three `lgamma`
values, which cancel catastrophically once a + b is large (in float32 its error is 16% of
the value at a = b = 1e5), and it returns I rather than log I, so tails underflow. Here:

    I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * CF(a, b, x)

with CF the continued fraction DLMF 8.17.22, evaluated by the modified Lentz method on the
side where it converges fast (x < (a + 1) / (a + b + 2); otherwise on the mirror
I_x(a, b) = 1 - I_{1-x}(b, a)). The small side is computed as a log; the other side is
log1mexp of it, so log F and log(1 - F) both keep full relative precision. When a and b
are both >= 8 the log prefactor is written, with p = a / (a + b), q = 1 - p, d = x - p, as

    a log1pmx(d / p) + b log1pmx(-d / q) + log(a b / (2 pi (a + b))) / 2
        - c(a) - c(b) + c(a + b),

log1pmx(t) = log(1 + t) - t (a series for |t| < 1/4; from log x and log p for |t| >= 1/2)
and c the Stirling remainder of lgamma: no term is larger than the result by more than its
own size, so nothing cancels. The continued fraction needs
about sqrt(min(a, b)) / 2 iterations near the mean (about 500 at a = b = 1e6), so it runs
in a while loop that stops when every element has converged (at most `MAX_TERMS`). An
element has converged once its factor is within its rounding noise of 1: `CONVERGED_ULPS`
eps (1 + 1 / |c|), c the Lentz ratio. The factors are products of rounded terms, and
1 + coefficient / c cancels where |c| is small, so a factor's distance from 1 settles at
that noise, not below one eps: a test at one eps never passed for some elements (e.g.
a = 1e6, b = 1.7, x = 1 - 4e-6, |c| ~ 1e-5, in the bootstrap of a degenerate Beta fit, whose
factors wander by ~1e-11 for ever) and held the whole batch for `MAX_TERMS` iterations. The
factors left out change CF by about the noise: a relative error near 1e-15 in float64 where
|c| is of order 1 (every fit but such near-degenerate ones), where the CF is no more
accurate than that noise anyway.
No reverse-mode gradients (the loop has a data-dependent trip count).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammaln

from optscale_jax._numerics import log1mexp as _log1mexp

MAX_TERMS = 4000  # continued-fraction iterations, enough for a, b up to 1e7 near the mean
CONVERGED_ULPS = 8  # a factor within this many eps of 1 ends an element's iterations
STIRLING_FROM = 8.0  # both shapes at least this: the cancellation-free prefactor

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Coefficients B_2k / (2k (2k - 1)) of the Stirling series c(z) = sum_k coef_k / z^(2k - 1).
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156,
             -3617 / 122400)  # fmt: skip
_ATANH_TERMS = 10  # |u| <= 1/7 in `_log1pmx`: u^22 / 23 < 1e-20


def _stirling_remainder(z: jax.Array) -> jax.Array:
    """c(z) = lgamma(z) - [(z - 1/2) log z - z + log(2 pi) / 2] for z >= 8 (error < 1e-15)."""
    w = 1.0 / (z * z)
    total = jnp.zeros_like(z)
    for coefficient in reversed(_STIRLING):
        total = total * w + coefficient
    return total / z


def _log1pmx(t: jax.Array) -> jax.Array:
    """log(1 + t) - t for t > -1, to full relative precision also when |t| is small.

    For |t| < 1/4, with u = t / (2 + t): log(1 + t) = 2 atanh(u), so
    log(1 + t) - t = -t^2 / (2 + t) + 2 (u^3 / 3 + u^5 / 5 + ...), a sum without cancellation;
    beyond, log1p(t) - t loses at most a factor 10 of relative precision.
    """
    small = jnp.abs(t) < 0.25
    ts = jnp.where(small, t, 0.0)
    u = ts / (2.0 + ts)
    u2 = u * u
    series = jnp.zeros_like(u)
    for k in range(_ATANH_TERMS, 0, -1):
        series = series * u2 + 1.0 / (2 * k + 1)
    value_small = -ts * ts / (2.0 + ts) + 2.0 * u * u2 * series
    tl = jnp.where(small, 1.0, t)
    return jnp.where(small, value_small, jnp.log1p(tl) - tl)


def _log_ratio_minus_linear(log_x, log_p, t):
    """log(x / p) - t with t = x / p - 1 given: log1pmx(t) where |t| < 1/2, where 1 + t is
    formed without loss; log x - log p - t elsewhere, where 1 + t can be far below 1."""
    return jnp.where(jnp.abs(t) < 0.5, _log1pmx(t), log_x - log_p - t)


def log_beta(a: jax.Array, b: jax.Array) -> jax.Array:
    """log B(a, b), accurate to rounding for all a, b > 0.

    `jax.scipy.special.betaln` carries single-precision coefficients (errors near 1e-8 in
    float64). With s = min(a, b) and t = max(a, b) >= 8, Stirling's series for lgamma(t)
    and lgamma(s + t) gives, without cancellation,

        log B = lgamma(s) - s log(s + t) - (t - 1/2) log1pmx(s / t) + s / (2 t) + c(t) - c(s + t).
    """
    s, t = jnp.minimum(a, b), jnp.maximum(a, b)
    large = t >= STIRLING_FROM
    tl = jnp.where(large, t, STIRLING_FROM)
    stirling = (
        gammaln(s)
        - s * jnp.log(s + tl)
        - (tl - 0.5) * _log1pmx(s / tl)
        + s / (2.0 * tl)
        + _stirling_remainder(tl)
        - _stirling_remainder(s + tl)
    )
    return jnp.where(large, stirling, gammaln(s) + gammaln(t) - gammaln(s + t))


def log_prefactor(a, b, log_x, log_y, delta):
    """log(x^a y^b / B(a, b)) with y = 1 - x, given log x, log y and delta = x - a / (a + b).

    Args:
        a: first shape (> 0).
        b: second shape (> 0).
        log_x: log x.
        log_y: log(1 - x).
        delta: x - a / (a + b), formed by the caller from x itself (not from 1 - y).

    Returns:
        The log prefactor, broadcast over the arguments.
    """
    direct = a * log_x + b * log_y - log_beta(a, b)
    large = jnp.minimum(a, b) >= STIRLING_FROM
    al = jnp.where(large, a, STIRLING_FROM)
    bl = jnp.where(large, b, STIRLING_FROM)
    total = al + bl
    p, q = al / total, bl / total
    stirling = (
        al * _log_ratio_minus_linear(log_x, jnp.log(p), delta / p)
        + bl * _log_ratio_minus_linear(log_y, jnp.log(q), -delta / q)
        + 0.5 * (jnp.log(al) + jnp.log(bl) - jnp.log(total))
        - _HALF_LOG_2PI
        - _stirling_remainder(al)
        - _stirling_remainder(bl)
        + _stirling_remainder(total)
    )
    return jnp.where(large, stirling, direct)


def _continued_fraction(a, b, x):
    """CF(a, b, x) of I_x(a, b) = prefactor * CF / a (modified Lentz; Numerical Recipes' betacf).

    Every element iterates until its factor is within `CONVERGED_ULPS` eps of 1, the loop
    until all have (module docstring).
    """
    finfo = jnp.finfo(x.dtype)
    tiny = jnp.asarray(finfo.tiny, x.dtype) * 1e4
    tolerance = CONVERGED_ULPS * finfo.eps

    def nonzero(v):
        return jnp.where(jnp.abs(v) < tiny, tiny, v)

    def lentz(coefficient, c, d):
        d = 1.0 / nonzero(1.0 + coefficient * d)
        c = nonzero(1.0 + coefficient / c)
        return c, d, c * d

    d = 1.0 / nonzero(1.0 - (a + b) * x / (a + 1.0))
    start = (jnp.ones_like(x), d, d, jnp.zeros(x.shape, bool), jnp.asarray(1.0, x.dtype))

    def body(state):
        c, d, h, done, m = state
        even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
        c, d, factor_even = lentz(even, c, d)
        odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
        c, d, factor_odd = lentz(odd, c, d)
        factor = factor_even * factor_odd
        new_h = jnp.where(done, h, h * factor)
        # 1 + coefficient / c cancels where |c| is small: its rounding noise is eps / |c|.
        noise = tolerance * (1.0 + 1.0 / jnp.abs(c))
        done = done | (jnp.abs(factor_odd - 1.0) < noise)
        return c, d, new_h, done, m + 1.0

    def cond(state):
        return (state[4] <= MAX_TERMS) & ~jnp.all(state[3])

    return lax.while_loop(cond, body, start)[2]


def log_cdf_sf(a: jax.Array, b: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log I_x(a, b), log(1 - I_x(a, b))): the Beta(a, b) log CDF and log survival at x.

    Args:
        a: first shape (> 0), broadcasting with b and x.
        b: second shape (> 0).
        x: points; values outside (0, 1) give (-inf, 0) or (0, -inf).

    Returns:
        (log F(x), log S(x)), broadcast over the arguments.
    """
    a, b, x = jnp.broadcast_arrays(a, b, x)
    inside = (x > 0.0) & (x < 1.0)
    xs = jnp.where(inside, x, 0.5)
    # The side whose continued fraction converges fast: (a, b, x), or the mirror (b, a, 1 - x).
    direct = xs < (a + 1.0) / (a + b + 2.0)
    log_x, log_y = jnp.log(xs), jnp.log1p(-xs)
    delta = xs - a / (a + b)
    a1, b1 = jnp.where(direct, a, b), jnp.where(direct, b, a)
    log_small = (
        log_prefactor(
            a1,
            b1,
            jnp.where(direct, log_x, log_y),
            jnp.where(direct, log_y, log_x),
            jnp.where(direct, delta, -delta),
        )
        + jnp.log(_continued_fraction(a1, b1, jnp.where(direct, xs, 1.0 - xs)))
        - jnp.log(a1)
    )
    log_small = jnp.minimum(log_small, 0.0)
    log_large = _log1mexp(log_small)
    log_f = jnp.where(direct, log_small, log_large)
    log_s = jnp.where(direct, log_large, log_small)
    log_f = jnp.where(inside, log_f, jnp.where(x <= 0.0, -jnp.inf, 0.0))
    log_s = jnp.where(inside, log_s, jnp.where(x <= 0.0, 0.0, -jnp.inf))
    return log_f, log_s
