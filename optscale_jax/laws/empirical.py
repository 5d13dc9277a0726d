"""`empirical`: the empirical law of the scores seen, with a one-sided DKW band for N*.

The "fit" of n scores is the scores themselves: F_n(s) = #{s_i <= s} / n, the
nonparametric maximum-likelihood estimate of any law (continuous, discrete or mixed).
`log_cdf`, `log_sf`, `log_pdf_or_pmf` (the mass #{s_i = s} / n), `sample` (resampling)
and `loglik` (sum of log masses) are those of F_n. Its masses are densities with respect to
counting measure, not the measure the parametric laws share (`base`), so the law has no
AIC (`fit_all` reports +inf) and no goodness-of-fit test.

N* uses instead an upper confidence bound on P(X < s_min). By the one-sided
Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant, for i.i.d. scores from any
law F (continuous or not) and delta <= 1/2,

    P(sup_s (F(s) - F_n(s)) > eps) <= exp(-2 n eps^2),   eps = sqrt(log(1 / delta) / (2 n)),

and the bound holds for the left limits F(s^-) - F_n(s^-) too (limits of the same
differences). So with probability at least `level` = 1 - delta,

    P(X < s_min) <= min(1, #{s_i < s_min} / n + eps) =: F_upper(s_min^-),

and N* computed from F_upper is at least the N* of the true law: conservative for any law,
i.i.d. still assumed. The band is wide at small n (eps = 0.22 at n = 32 and level 0.95):
N* is unbounded (max_n) until fewer than 1 - eps of the scores seen fall below s_min.

Parameters are the sorted scores padded with +inf (which no score reaches), n, and eps.
Conventions: n = 0 gives the uniform law on [0, 1] for `log_cdf`, `log_sf`,
`log_pdf_or_pmf` and `sample`, eps = 1 (F_upper = 1: N* = max_n), status NO_DATA.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax.estimation import FitStatus
from optscale_jax.laws import base

__all__ = ["DEFAULT_LEVEL", "LAW", "EmpiricalParams", "EmpiricalStats", "fit", "law"]

DEFAULT_LEVEL = 0.95


class EmpiricalStats(NamedTuple):
    """The data: scores sorted along the last axis (+inf where masked, at the end), and n."""

    sorted: jax.Array
    n: jax.Array


class EmpiricalParams(NamedTuple):
    """The empirical law and its DKW band.

    Attributes:
        sorted: `[..., k]` sorted scores, +inf padding after the n present ones.
        n: `[...]` number of scores.
        margin: `[...]` the band's eps = sqrt(log(1 / (1 - level)) / (2 n)) (1 where n = 0).
    """

    sorted: jax.Array
    n: jax.Array
    margin: jax.Array


def _sorted_present(scores, present):
    return jnp.sort(jnp.where(present, scores, jnp.inf), axis=-1)


@jax.jit
def stats(scores: ArrayLike, mask: ArrayLike | None) -> EmpiricalStats:
    """The sorted present scores (+inf padding) and their count."""
    scores, mask = base.masked(scores, mask)
    return EmpiricalStats(_sorted_present(scores, mask), mask.sum(-1).astype(scores.dtype))


@jax.jit
def prefix_stats(scores: ArrayLike, mask: ArrayLike | None) -> EmpiricalStats:
    """`stats` of every prefix: batch `[..., k]`, each with its own sorted `[k]` scores."""
    scores, mask = base.masked(scores, mask)
    k = scores.shape[-1]
    in_prefix = jnp.arange(k)[None, :] <= jnp.arange(k)[:, None]  # [prefix, sample]
    present = mask[..., None, :] & in_prefix
    sorted_scores = _sorted_present(scores[..., None, :], present)
    return EmpiricalStats(sorted_scores, present.sum(-1).astype(scores.dtype))


@functools.partial(jax.jit, static_argnames="level")
def fit(
    stats: EmpiricalStats, prior: None = None, level: float = DEFAULT_LEVEL
) -> tuple[EmpiricalParams, jax.Array]:
    """The empirical law and its DKW margin at `level` (no prior: `prior` must be None).

    Args:
        stats: `EmpiricalStats` of batch `[...]`.
        prior: unused (there is no prior for the empirical law).
        level: confidence level of the band, in [0.5, 1).

    Returns:
        (`EmpiricalParams`, int32 `FitStatus`: CONVERGED, or NO_DATA where n = 0).
    """
    del prior
    n = stats.n
    margin = jnp.sqrt(math.log(1.0 / (1.0 - level)) / (2.0 * base.nonzero_count(n)))
    margin = jnp.where(n > 0, margin, 1.0).astype(n.dtype)
    status = jnp.where(n > 0, FitStatus.CONVERGED, FitStatus.NO_DATA).astype(jnp.int32)
    return EmpiricalParams(stats.sorted, n, margin), status


def _count(params: EmpiricalParams, s, compare):
    """(#{s_i compare s} as a float, s in the parameters' dtype), broadcasting s with the batch."""
    s = jnp.asarray(s, _float_dtype(params.sorted, s))
    count = compare(params.sorted, s[..., None]).sum(-1).astype(s.dtype)
    return count, s


def _log_fraction(params: EmpiricalParams, count, uniform):
    """log(count / n) where n > 0, else log of the uniform law's value `uniform`."""
    n = params.n
    return jnp.where(n > 0, jnp.log(count / base.nonzero_count(n)), jnp.log(uniform))


@jax.jit
def log_cdf(params: EmpiricalParams, s: ArrayLike) -> jax.Array:
    """log F_n(s) = log(#{s_i <= s} / n)."""
    count, s = _count(params, s, jnp.less_equal)
    return _log_fraction(params, count, jnp.clip(s, 0.0, 1.0))


@jax.jit
def log_sf(params: EmpiricalParams, s: ArrayLike) -> jax.Array:
    """log(1 - F_n(s)) = log(#{s_i > s} / n) (padding +inf is not a score: n - #{s_i <= s})."""
    count, s = _count(params, s, jnp.less_equal)
    return _log_fraction(params, params.n - count, 1.0 - jnp.clip(s, 0.0, 1.0))


@jax.jit
def log_pdf_or_pmf(params: EmpiricalParams, s: ArrayLike) -> jax.Array:
    """log(#{s_i = s} / n), the empirical mass at s (uniform density 1 where n = 0)."""
    count, s = _count(params, s, jnp.equal)
    return _log_fraction(params, count, jnp.ones_like(s))


@jax.jit
def log_miss(params: EmpiricalParams, s: ArrayLike) -> jax.Array:
    """log F_upper(s^-) = log min(1, #{s_i < s} / n + eps): the DKW bound N* uses."""
    count, s = _count(params, s, jnp.less)
    fraction = count / base.nonzero_count(params.n)
    return jnp.log(jnp.minimum(1.0, fraction + params.margin))


@jax.jit
def loglik(params: EmpiricalParams, stats: EmpiricalStats) -> jax.Array:
    """sum_i log(#{s_j = s_i} / n) over the scores (counting measure)."""
    scores = stats.sorted
    present = jnp.isfinite(scores)
    log_mass = log_pdf_or_pmf(with_sample_axis(params), jnp.where(present, scores, 0.5))
    return jnp.where(present, log_mass, 0.0).sum(-1)


@functools.partial(jax.jit, static_argnames="shape")
def sample(key: jax.Array, params: EmpiricalParams, shape: tuple[int, ...]) -> jax.Array:
    """Draws of shape `shape` with replacement from the scores (uniform where n = 0)."""
    dtype = params.sorted.dtype
    u = jax.random.uniform(key, shape, dtype)
    n = jnp.broadcast_to(params.n, shape)
    index = jnp.clip(jnp.floor(u * n), 0, jnp.maximum(n - 1, 0)).astype(jnp.int32)
    pool = jnp.broadcast_to(params.sorted, tuple(shape) + params.sorted.shape[-1:])
    drawn = jnp.take_along_axis(pool, index[..., None], axis=-1)[..., 0]
    return jnp.where(n > 0, drawn, u)


def atoms(params: EmpiricalParams) -> tuple[jax.Array, jax.Array]:
    """The empirical masses at 0 and at 1 (0 where n = 0)."""
    return tuple(jnp.exp(log_pdf_or_pmf(params, v)) * (params.n > 0) for v in (0.0, 1.0))


def with_sample_axis(params: EmpiricalParams) -> EmpiricalParams:
    """Batch `[...]` -> `[..., 1]` (the sorted scores keep their own last axis)."""
    return EmpiricalParams(
        params.sorted[..., None, :], params.n[..., None], params.margin[..., None]
    )


def law(level: float = DEFAULT_LEVEL) -> base.ScoreLaw:
    """The empirical `ScoreLaw` whose N* uses the DKW band at `level`.

    Args:
        level: confidence level 1 - delta of the band, in [0.5, 1) (Massart's constant
            needs delta <= 1/2).

    Returns:
        A `ScoreLaw` named "empirical".

    Raises:
        ValueError: naming `level`.
    """
    if not 0.5 <= float(level) < 1.0:
        raise ValueError(f"level must lie in [0.5, 1), got {level!r}")
    return base.ScoreLaw(
        name="empirical",
        num_params=None,
        stats=stats,
        prefix_stats=prefix_stats,
        fit=functools.partial(fit, level=float(level)),
        loglik=loglik,
        log_pdf_or_pmf=log_pdf_or_pmf,
        log_cdf=log_cdf,
        log_sf=log_sf,
        log_cdf_sf=base.log_cdf_sf_from(log_cdf, log_sf),
        log_miss=log_miss,
        sample=sample,
        atoms=atoms,
        with_sample_axis=with_sample_axis,
    )


LAW = law()
