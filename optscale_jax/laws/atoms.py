"""`tn-atoms` and `beta-atoms`: point masses at 0 and at 1 plus a continuous law in between.

    P(X = 0) = p0,   P(X = 1) = p1,   X | 0 < X < 1 ~ the continuous law C (density c, CDF G),

w = 1 - p0 - p1 the weight of C. A verifier that saturates (the shipped GPQA log has 46% of
its scores at exactly 1.0) is such a law; no continuous law has these atoms.

Fit (the likelihood factorises): p0 = n0 / n and p1 = n1 / n from the counts of exact 0s and
1s (their maximum likelihood estimate, also under a prior: the prior is C's), and C is fitted
to the interior scores alone by its own law's `fit`. Conventions: n = 0 gives p0 = p1 = 0,
C's no-data fit, status NO_DATA; no interior score (every score exactly 0 or 1) gives
w = 0, C's no-data fit (which then carries no mass and does not matter), status AT_BOUND
(p0 + p1 = 1 is the edge of the parameter space); otherwise the status is C's.

The likelihood is with respect to Lebesgue measure on (0, 1) plus unit masses at 0 and 1:
log p0 per exact 0, log p1 per exact 1, log w + log c(s) per interior score.

Best of N: the best of N samples reaches s_min unless all N fall below it, so

    P(best of N >= s_min) = 1 - P(X < s_min)^N,   P(X < s_min) = p0 [s_min > 0] + w G(s_min),

and N* = ceil(log(1 - alpha) / log P(X < s_min)): at s_min = 1, P(X < 1) = 1 - p1 (the atom
counts: some sample equals 1 with probability 1 - (1 - p1)^N), at s_min = 0 every sample
reaches it (N* = 1). `log_miss` computes log P(X < s) as log(1 - P(X >= s)) with
P(X >= s) = p1 + w (1 - G(s)) formed in log space, and log F as -softplus(log R - log L)
with L, R the masses either side (as in `truncnorm`), so both tails keep their precision.
Draws: 0 with probability p0, 1 with probability p1, else a draw of C clipped into the open
interval (0, 1) (a draw of C that rounds to exactly 0 or 1 would count as an atom on a refit).

The functions are not jitted as a whole: they call C's compiled kernels (shared with C's
own law, so e.g. the Beta continued fraction is compiled once for both) and a few
elementwise operations; inside a caller's jit they trace into one computation.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax.estimation import FitStatus
from optscale_jax.laws import base, beta, tn

__all__ = ["BETA_ATOMS", "TN_ATOMS", "AtomParams", "AtomStats", "with_atoms"]


class AtomParams(NamedTuple):
    """Point masses at 0 and 1 and the continuous part's parameters.

    Attributes:
        mass0: p0 = P(X = 0).
        mass1: p1 = P(X = 1).
        inner: the continuous law's parameters (a NamedTuple of the same batch shape).
    """

    mass0: jax.Array
    mass1: jax.Array
    inner: Any


class AtomStats(NamedTuple):
    """Counts of all scores, of exact 0s and of exact 1s, and the interior scores' statistics."""

    n: jax.Array
    n0: jax.Array
    n1: jax.Array
    inner: Any


def _split(scores, mask):
    """Per-sample indicators (present, exact 0, exact 1) and the interior mask."""
    scores, mask = base.masked(scores, mask)
    zero = mask & (scores == 0.0)
    one = mask & (scores == 1.0)
    dtype = scores.dtype
    indicators = tuple(x.astype(dtype) for x in (mask, zero, one))
    return scores, indicators, mask & ~zero & ~one


def _stats(inner: base.ScoreLaw, scores, mask) -> AtomStats:
    scores, indicators, interior = _split(scores, mask)
    return AtomStats(*(x.sum(-1) for x in indicators), inner.stats(scores, interior))


def _prefix_stats(inner: base.ScoreLaw, scores, mask) -> AtomStats:
    scores, indicators, interior = _split(scores, mask)
    return AtomStats(*(x.cumsum(-1) for x in indicators), inner.prefix_stats(scores, interior))


@jax.jit
def _masses(stats: AtomStats, inner_status: jax.Array):
    """(p0, p1, status) from the counts and the continuous part's status."""
    n = stats.n
    safe_n = base.nonzero_count(n)
    mass0 = jnp.where(n > 0, stats.n0 / safe_n, 0.0)
    mass1 = jnp.where(n > 0, stats.n1 / safe_n, 0.0)
    only_atoms = (n > 0) & (stats.n0 + stats.n1 >= n)
    status = jnp.where(only_atoms, FitStatus.AT_BOUND, inner_status)
    status = jnp.where(n > 0, status, FitStatus.NO_DATA).astype(jnp.int32)
    return mass0, mass1, status


def _fit(inner: base.ScoreLaw, stats: AtomStats, prior=None):
    """Masses from the counts, the continuous part from the interior scores (module docstring)."""
    inner_params, inner_status = inner.fit(stats.inner, prior)
    mass0, mass1, status = _masses(stats, inner_status)
    return AtomParams(mass0, mass1, inner_params), status


def _log_masses(params: AtomParams):
    """(log p0, log p1, log w), w = 1 - p0 - p1 (log 0 = -inf)."""
    log_p0 = jnp.log(params.mass0)
    log_p1 = jnp.log(params.mass1)
    log_w = jnp.log(jnp.maximum(1.0 - params.mass0 - params.mass1, 0.0))
    return log_p0, log_p1, log_w


def _loglik(inner: base.ScoreLaw, params: AtomParams, stats: AtomStats) -> jax.Array:
    """n0 log p0 + n1 log p1 + n_interior log w + the interior scores' loglik (0 log 0 = 0)."""
    log_p0, log_p1, log_w = _log_masses(params)
    n_inner = stats.n - stats.n0 - stats.n1

    def term(count, log_mass):
        return jnp.where(count > 0, count * jnp.where(count > 0, log_mass, 0.0), 0.0)

    atoms = term(stats.n0, log_p0) + term(stats.n1, log_p1) + term(n_inner, log_w)
    inner_loglik = jnp.where(n_inner > 0, inner.loglik(params.inner, stats.inner), 0.0)
    return atoms + inner_loglik


def _in_dtype(params: AtomParams, s):
    dtype = _float_dtype(params.mass0, s)
    return jnp.asarray(s, dtype)


def _log_pdf_or_pmf(inner: base.ScoreLaw, params: AtomParams, s) -> jax.Array:
    s = _in_dtype(params, s)
    log_p0, log_p1, log_w = _log_masses(params)
    interior = (s > 0.0) & (s < 1.0)
    continuous = log_w + inner.log_pdf_or_pmf(params.inner, jnp.where(interior, s, 0.5))
    return jnp.where(s <= 0.0, log_p0, jnp.where(s >= 1.0, log_p1, continuous))


def _log_sides(inner: base.ScoreLaw, params: AtomParams, s, closed: bool):
    """(log L, log R): L = P(X < s) (`closed`: P(X <= s)) and R = 1 - L, each a log-sum of
    the atoms' masses and w times C's CDF or survival function."""
    s = _in_dtype(params, s)
    log_p0, log_p1, log_w = _log_masses(params)
    interior = jnp.clip(s, 0.0, 1.0)
    log_cdf, log_sf = inner.log_cdf_sf(params.inner, interior)
    below, above = log_w + log_cdf, log_w + log_sf
    zero_left = (s >= 0.0) if closed else (s > 0.0)
    one_left = (s >= 1.0) if closed else (s > 1.0)
    log_left = jnp.logaddexp(
        jnp.where(zero_left, log_p0, -jnp.inf),
        jnp.logaddexp(below, jnp.where(one_left, log_p1, -jnp.inf)),
    )
    log_right = jnp.logaddexp(
        jnp.where(zero_left, -jnp.inf, log_p0),
        jnp.logaddexp(above, jnp.where(one_left, -jnp.inf, log_p1)),
    )
    return log_left, log_right


def _log_cdf_sf(inner: base.ScoreLaw, params: AtomParams, s) -> tuple[jax.Array, jax.Array]:
    """(log P(X <= s), log P(X > s)) = (-softplus(log R - log L), -softplus(log L - log R))."""
    log_left, log_right = _log_sides(inner, params, s, closed=True)
    return -jax.nn.softplus(log_right - log_left), -jax.nn.softplus(log_left - log_right)


def _log_cdf(inner: base.ScoreLaw, params: AtomParams, s) -> jax.Array:
    """log P(X <= s) (`_log_cdf_sf`)."""
    return _log_cdf_sf(inner, params, s)[0]


def _log_sf(inner: base.ScoreLaw, params: AtomParams, s) -> jax.Array:
    """log P(X > s) (`_log_cdf_sf`)."""
    return _log_cdf_sf(inner, params, s)[1]


def _log_miss(inner: base.ScoreLaw, params: AtomParams, s) -> jax.Array:
    """log P(X < s): the probability that one sample stays below s_min (N*)."""
    log_left, log_right = _log_sides(inner, params, s, closed=False)
    return -jax.nn.softplus(log_right - log_left)


def _sample(inner: base.ScoreLaw, key: jax.Array, params: AtomParams, shape) -> jax.Array:
    pick_key, inner_key = jax.random.split(key)
    draws = inner.sample(inner_key, params.inner, shape)
    dtype = draws.dtype
    finfo = jnp.finfo(dtype)
    draws = jnp.clip(draws, finfo.tiny, 1.0 - finfo.epsneg)
    u = jax.random.uniform(pick_key, shape, dtype)
    mass0 = jnp.asarray(params.mass0, dtype)
    mass1 = jnp.asarray(params.mass1, dtype)
    return jnp.where(u < mass0, 0.0, jnp.where(u >= 1.0 - mass1, 1.0, draws)).astype(dtype)


def _atoms(params: AtomParams) -> tuple[jax.Array, jax.Array]:
    return params.mass0, params.mass1


def with_atoms(inner: base.ScoreLaw, name: str) -> base.ScoreLaw:
    """The law with point masses at 0 and 1 added to the continuous law `inner`.

    Args:
        inner: a continuous `ScoreLaw` (its `num_params` must be an int).
        name: the new law's name.

    Returns:
        A `ScoreLaw` whose parameters are `AtomParams` and statistics `AtomStats`.
    """

    def bind(function):
        return functools.partial(function, inner)

    return base.ScoreLaw(
        name=name,
        num_params=2 + inner.num_params,
        stats=bind(_stats),
        prefix_stats=bind(_prefix_stats),
        fit=bind(_fit),
        loglik=bind(_loglik),
        log_pdf_or_pmf=bind(_log_pdf_or_pmf),
        log_cdf=bind(_log_cdf),
        log_sf=bind(_log_sf),
        log_cdf_sf=bind(_log_cdf_sf),
        log_miss=bind(_log_miss),
        sample=jax.jit(bind(_sample), static_argnames="shape"),
        atoms=_atoms,
        with_sample_axis=base.add_sample_axis,
    )


TN_ATOMS = with_atoms(tn.LAW, "tn-atoms")
BETA_ATOMS = with_atoms(beta.LAW, "beta-atoms")
