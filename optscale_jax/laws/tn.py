"""`tn`: the normal truncated to [0, 1], OptScale's score law, as a `ScoreLaw`.

A thin wrapper of the core: statistics and fits are `optscale_jax.estimation`'s
(`sufficient_stats`, `fit_mle_stats`, `fit_map_stats`; conventions for n = 0 and for
degenerate data are documented there), the distribution functions `optscale_jax.truncnorm`'s.
Results are those of the core, unchanged.

Example:
    >>> import jax.numpy as jnp
    >>> from optscale_jax.laws import tn
    >>> params, status = tn.fit(tn.stats(jnp.array([[0.2, 0.5, 0.6, 0.9]]), None))
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax import estimation, truncnorm
from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax.laws import base

__all__ = ["LAW", "TNParams", "TNPrior", "TNStats", "fit", "sample", "stats"]


class TNParams(NamedTuple):
    """Truncated normal TN(mu, sigma; [0, 1]).

    Attributes:
        mu: location of the untruncated normal.
        sigma: its scale (> 0).
    """

    mu: jax.Array
    sigma: jax.Array


class TNStats(NamedTuple):
    """Sufficient statistics (n, sum s, sum s^2), and the count of scores at exactly 0 or 1."""

    n: jax.Array
    s1: jax.Array
    s2: jax.Array
    n_ends: jax.Array


class TNPrior(NamedTuple):
    """Independent Gaussian priors on mu and sigma (`estimation.fit_map_stats`).

    Attributes:
        mu: prior centre of mu.
        sigma: prior centre of sigma.
        scale_mu: prior standard deviation of mu (> 0).
        scale_sigma: prior standard deviation of sigma (> 0).
    """

    mu: ArrayLike
    sigma: ArrayLike
    scale_mu: ArrayLike = 0.1
    scale_sigma: ArrayLike = 0.1


@jax.jit
def stats(scores: ArrayLike, mask: ArrayLike | None) -> TNStats:
    """(n, sum s, sum s^2) over the last axis (`estimation.sufficient_stats`), and n_ends."""
    scores, mask = base.masked(scores, mask)
    ends = base.end_counts(scores, mask).sum(-1)
    return TNStats(*estimation.sufficient_stats(scores, mask), ends)


@jax.jit
def prefix_stats(scores: ArrayLike, mask: ArrayLike | None) -> TNStats:
    """`stats` of every prefix (`estimation.prefix_stats`)."""
    scores, mask = base.masked(scores, mask)
    ends = base.end_counts(scores, mask).cumsum(-1)
    return TNStats(*estimation.prefix_stats(scores, mask), ends)


def fit(stats: TNStats, prior: TNPrior | None = None) -> tuple[TNParams, jax.Array]:
    """MLE (`estimation.fit_mle_stats`) or, with a prior, MAP (`estimation.fit_map_stats`).

    Not jitted here: the core's solver is, and calling it directly keeps its results
    bit for bit.

    Args:
        stats: `TNStats` of batch `[...]`.
        prior: optional `TNPrior`, broadcasting with the batch.

    Returns:
        (`TNParams`, int32 `FitStatus`), batch `[...]`.
    """
    n, s1, s2 = stats.n, stats.s1, stats.s2
    if prior is None:
        result = estimation.fit_mle_stats(n, s1, s2)
    else:
        result = estimation.fit_map_stats(
            n, s1, s2, prior.mu, prior.sigma, (prior.scale_mu, prior.scale_sigma)
        )
    return TNParams(result.mu, result.sigma), result.status


@jax.jit
def loglik(params: TNParams, stats: TNStats) -> jax.Array:
    """Total log-likelihood -n nll(mu, sigma) (0 where n = 0, -inf with a score at 0 or 1)."""
    n = stats.n
    safe_n = base.nonzero_count(n)
    mean_nll = estimation.mean_nll(params.mu, params.sigma, safe_n, stats.s1, stats.s2)
    value = jnp.where(n > 0, -n * mean_nll, 0.0)
    return jnp.where(stats.n_ends > 0, -jnp.inf, value)


def _at(function):
    """The law function (params, s) -> function(s, mu, sigma), jitted."""

    @jax.jit
    def law_function(params: TNParams, s: ArrayLike) -> jax.Array:
        dtype = _float_dtype(params.mu, params.sigma, s)
        return function(jnp.asarray(s, dtype), params.mu, params.sigma)

    law_function.__name__ = law_function.__qualname__ = function.__name__
    return law_function


@jax.jit
def log_pdf(params: TNParams, s: ArrayLike) -> jax.Array:
    """log density at s (`truncnorm.logpdf`); -inf at exactly 0 or 1 (`base`: shared measure)."""
    dtype = _float_dtype(params.mu, params.sigma, s)
    s = jnp.asarray(s, dtype)
    return base.at_ends_impossible(truncnorm.logpdf(s, params.mu, params.sigma), s)


log_cdf = _at(truncnorm.logcdf)
log_sf = _at(truncnorm.logsf)


@functools.partial(jax.jit, static_argnames="shape")
def sample(key: jax.Array, params: TNParams, shape: tuple[int, ...]) -> jax.Array:
    """Draws of shape `shape` by inversion (`truncnorm.sample`)."""
    return truncnorm.sample(
        key, params.mu, params.sigma, shape, dtype=_float_dtype(params.mu, params.sigma)
    )


LAW = base.continuous_law("tn", 2, globals())
