"""The interface every score law on [0, 1] implements (`ScoreLaw`), and what the laws share.

A law is a family of distributions on [0, 1]. Its fitted members are a small NamedTuple of
parameter arrays (a pytree: it passes through `jax.jit` and `jax.vmap`) whose fields share
one batch shape `[...]`, one member per question. The law itself is a `ScoreLaw`: a bundle of
module-level, jit-compiled functions that take those parameters. Data flows

    scores, mask  --stats-->  statistics  --fit-->  (params, status)  --log_miss-->  N*

and every function is batched over any leading shape. The functions of a `ScoreLaw` are
kernels: they validate nothing (they run inside callers' jit); the public entry points of
`optscale_jax.laws` validate user input once.

Conventions shared by all laws:

* `scores` is `[..., k]` (samples on the last axis), `mask` a bool array of the same shape
  (True where a score exists) or None for all present.
* Elementwise functions (`log_cdf(params, s)`, ...) broadcast `s` against the parameters'
  batch shape, like scipy.stats; `with_sample_axis(params)` gives parameters of batch
  shape `[..., 1]` that broadcast against one question's samples `[..., k]`.
* `fit` returns a status per question, `estimation.FitStatus`: CONVERGED (optimality
  certified), AT_BOUND (certified on the edge of the parameter box, or a documented
  degenerate fit), NO_DATA (n = 0: a documented convention), MAX_STEPS (not certified).
* Likelihoods are densities with respect to one measure for every law, Lebesgue measure on
  (0, 1) plus a unit mass at 0 and at 1, so that they compare (AIC): an atom's density is
  its mass, and a continuous law's density at exactly 0 or 1 is its mass there, 0 (log -inf,
  so loglik -inf and AIC +inf on a question with such a score: only the atom laws can
  explain it). A continuous law can still be fitted to such data (`beta` by its clamping
  rule, `tn` as is); only its likelihood says it cannot have produced them.
* N* uses `log_miss(params, s_min) = log P(X < s_min)`: the best of N samples reaches s_min
  unless all N fall below it, so P(best of N >= s_min) = 1 - P(X < s_min)^N. For a law with
  an atom at s_min (s_min = 1 and a point mass at 1) P(X < s_min) is the CDF just below
  s_min, not F(s_min).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax.estimation import FitStatus

__all__ = ["FitStatus", "ScoreLaw"]

Params = Any  # a NamedTuple of arrays (a pytree) whose fields share one batch shape
Stats = Any  # a NamedTuple of arrays: a law's sufficient statistics (or the data itself)


class ScoreLaw(NamedTuple):
    """A score law on [0, 1]: its name and the jit-compiled functions that make it up.

    Attributes:
        name: the law's name in `LAWS`.
        num_params: free parameters per question (for AIC); None for the empirical law,
            which is not a parametric family (no AIC, no goodness-of-fit test).
        stats: `(scores [..., k], mask [..., k] | None) -> Stats` of batch `[...]`.
        prefix_stats: the same for every prefix: entry j of the last axis covers the first
            j + 1 samples (batch `[..., k]`), so one `fit` call fits every prefix.
        fit: `(stats, prior=None) -> (params, status)`: the maximum-likelihood fit, or the
            MAP fit under a law-specific prior NamedTuple that broadcasts with the batch.
        loglik: `(params, stats) -> [...]`, the total log-likelihood of the data from the
            statistics (cheap on prefixes; `diagnostics.fit_all` sums `log_pdf_or_pmf`
            instead, which keeps float32 precision for Beta fits with a + b near its bound).
        log_pdf_or_pmf: `(params, s) -> log density at s` with respect to the measure
            every law shares (module docstring); summed over the data it gives `loglik`.
        log_cdf: `(params, s) -> log P(X <= s)`.
        log_sf: `(params, s) -> log P(X > s)`.
        log_cdf_sf: `(params, s) -> (log_cdf, log_sf)` in one evaluation (the Beta law computes
            both from one continued fraction).
        log_miss: `(params, s_min) -> log P(X < s_min)` as N* uses it (the empirical law:
            an upper confidence bound, so that N* is conservative).
        sample: `(key, params, shape) -> draws of shape shape`; the parameters' batch shape
            must broadcast to `shape`.
        atoms: `params -> (mass0, mass1)`, the point masses at 0 and at 1.
        with_sample_axis: `params -> params` of batch shape `[..., 1]`.
    """

    name: str
    num_params: int | None
    stats: Callable[[ArrayLike, ArrayLike | None], Stats]
    prefix_stats: Callable[[ArrayLike, ArrayLike | None], Stats]
    fit: Callable[..., tuple[Params, jax.Array]]
    loglik: Callable[[Params, Stats], jax.Array]
    log_pdf_or_pmf: Callable[[Params, ArrayLike], jax.Array]
    log_cdf: Callable[[Params, ArrayLike], jax.Array]
    log_sf: Callable[[Params, ArrayLike], jax.Array]
    log_cdf_sf: Callable[[Params, ArrayLike], tuple[jax.Array, jax.Array]]
    log_miss: Callable[[Params, ArrayLike], jax.Array]
    sample: Callable[[jax.Array, Params, tuple[int, ...]], jax.Array]
    atoms: Callable[[Params], tuple[jax.Array, jax.Array]]
    with_sample_axis: Callable[[Params], Params]


def at_ends_impossible(log_density: jax.Array, s: jax.Array) -> jax.Array:
    """A continuous law's log density w.r.t. the shared measure: -inf at exactly 0 or 1."""
    return jnp.where((s == 0.0) | (s == 1.0), -jnp.inf, log_density)


def end_counts(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Per sample, 1.0 where a present score is exactly 0 or 1 (a continuous law's loglik
    is -inf if any is), in the scores' dtype."""
    return (mask & ((scores == 0.0) | (scores == 1.0))).astype(scores.dtype)


def log_cdf_sf_from(log_cdf, log_sf):
    """The `log_cdf_sf` of a law whose log CDF and log survival function are separate."""

    @jax.jit
    def log_cdf_sf(params: Params, s: ArrayLike) -> tuple[jax.Array, jax.Array]:
        return log_cdf(params, s), log_sf(params, s)

    return log_cdf_sf


def continuous_law(name: str, num_params: int, functions: dict) -> ScoreLaw:
    """The `ScoreLaw` of a continuous law on [0, 1] from its module's functions.

    `functions` (a module's `globals()`) provides `stats`, `prefix_stats`, `fit`, `loglik`,
    `log_pdf`, `log_cdf`, `log_sf`, `sample` and optionally `log_cdf_sf` (default: from
    `log_cdf` and `log_sf`). No atoms (`atoms` gives (0, 0)), P(X < s) = P(X <= s)
    (`log_miss` is `log_cdf`), parameters of plain arrays.
    """
    log_cdf, log_sf = functions["log_cdf"], functions["log_sf"]
    return ScoreLaw(
        name=name,
        num_params=num_params,
        stats=functions["stats"],
        prefix_stats=functions["prefix_stats"],
        fit=functions["fit"],
        loglik=functions["loglik"],
        log_pdf_or_pmf=functions["log_pdf"],
        log_cdf=log_cdf,
        log_sf=log_sf,
        log_cdf_sf=functions.get("log_cdf_sf") or log_cdf_sf_from(log_cdf, log_sf),
        log_miss=log_cdf,
        sample=functions["sample"],
        atoms=no_atoms,
        with_sample_axis=add_sample_axis,
    )


def masked(scores: ArrayLike, mask: ArrayLike | None) -> tuple[jax.Array, jax.Array]:
    """(scores as a float array, mask as a bool array of the same shape)."""
    scores = jnp.asarray(scores)
    scores = scores.astype(_float_dtype(scores))
    if mask is None:
        return scores, jnp.ones(scores.shape, bool)
    return scores, jnp.broadcast_to(jnp.asarray(mask, bool), scores.shape)


def add_sample_axis(params: Params) -> Params:
    """Parameters with a trailing axis of size 1 on every field (batch `[...]` -> `[..., 1]`)."""
    return jax.tree_util.tree_map(lambda p: jnp.asarray(p)[..., None], params)


def no_atoms(params: Params) -> tuple[jax.Array, jax.Array]:
    """(0, 0) of the parameters' batch shape and dtype: the `atoms` of a continuous law."""
    first = jnp.asarray(jax.tree_util.tree_leaves(params)[0])
    zero = jnp.zeros(first.shape, first.dtype)
    return zero, zero


def batch_shape(params: Params) -> tuple[int, ...]:
    """The broadcast shape of the parameters' fields."""
    return jnp.broadcast_shapes(*(jnp.shape(p) for p in jax.tree_util.tree_leaves(params)))


def nonzero_count(n: jax.Array) -> jax.Array:
    """n where n > 0, else 1: a count that is safe to divide by (its results are masked)."""
    return jnp.where(n > 0, n, 1.0)
