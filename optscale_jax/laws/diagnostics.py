"""Does a law fit a log? Every law fitted to every question, AIC, and a bootstrap GOF test.

`fit_all` fits each law to all questions in one batched call per law and reports, per
question, the log-likelihood of its scores at the fit (the sum of `log_pdf_or_pmf`), AIC = 2 k - 2 loglik (k = `num_params`; +inf for
the empirical law, which has no AIC), the status, and the atoms (masses at 0 and 1).

`goodness_of_fit` tests one fitted law per question with the Cramer-von Mises statistic

    W^2 = 1 / (12 m) + sum_i (G(x_(i)) - (2 i - 1) / (2 m))^2

over the m scores x_(1) <= ... <= x_(m) that are not at an atom of the fitted law, with G
the fitted law given that X is not at an atom: G(s) = (F(s) - p0) / (1 - p0 - p1) (F the
fitted CDF, p0 and p1 its masses at 0 and 1; G = F for a continuous law, which sees every
score). The atoms carry no goodness-of-fit information: their masses are fitted exactly by
the counts; and W^2 on all scores would be dominated by a function of the count at 1 whose
bootstrap law centres on the observed count (p-values near 1/2 whatever the data). The
p-value is a parametric bootstrap: B samples of the question's size n are drawn from its
fitted law, the law is refitted to each and W^2 recomputed, and
p = (1 + #{W_b^2 >= W^2}) / (1 + B). Refitting makes the test account for the parameters
being estimated (W^2's law depends on them, so no table applies). All questions and all B
replicates are one batched, jit-compiled call: draws `[B, ..., k]`, statistics, fits and
W^2 at once (memory ~ B x questions x k floats).

`pit` gives the probability integral transform of every score, randomised over the atoms
(u = F(x^-) + V (F(x) - F(x^-)), V uniform), which is exactly uniform under the true law.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from optscale_jax import laws
    >>> scores = jax.random.uniform(jax.random.key(0), (20, 16))
    >>> fits = laws.fit_all(scores)
    >>> test = laws.goodness_of_fit("beta", fits["beta"].params, scores, key=jax.random.key(1))
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax import validation
from optscale_jax.laws import base, registry

__all__ = ["GofResult", "LawFit", "cvm_statistic", "fit_all", "goodness_of_fit", "pit"]


class LawFit(NamedTuple):
    """One law fitted to every question; fields other than `params` have the batch shape.

    Attributes:
        params: the law's parameters.
        status: int32 `FitStatus`.
        n: number of scores.
        loglik: total log-likelihood of the question's scores at the fitted parameters.
        aic: 2 num_params - 2 loglik (+inf for a law without AIC).
        mass0: the fitted point mass at 0 (0 for a continuous law).
        mass1: the fitted point mass at 1.
    """

    params: Any
    status: jax.Array
    n: jax.Array
    loglik: jax.Array
    aic: jax.Array
    mass0: jax.Array
    mass1: jax.Array


class GofResult(NamedTuple):
    """Cramer-von Mises statistic and its parametric-bootstrap p-value, per question."""

    statistic: jax.Array
    p_value: jax.Array


def _fit_one(law: base.ScoreLaw, scores, mask, prior) -> LawFit:
    params, status = law.fit(law.stats(scores, mask), prior)
    loglik, n = _loglik_of_data(law, params, scores, mask)
    if law.num_params is None:
        aic = jnp.full_like(loglik, jnp.inf)
    else:
        aic = 2.0 * law.num_params - 2.0 * loglik
    return LawFit(params, status, n, loglik, aic, *law.atoms(params))


@functools.partial(jax.jit, static_argnames="law")
def _loglik_of_data(law: base.ScoreLaw, params, scores, mask):
    """(sum of log_pdf_or_pmf over the question's scores, n).

    Summed per score rather than taken from the statistics (`ScoreLaw.loglik`): a Beta fit
    with a + b near its bound (degenerate data) loses 0.1 nat per score to cancellation in
    float32 when its loglik is formed from the sums.
    """
    scores, mask = base.masked(scores, mask)
    log_mass = law.log_pdf_or_pmf(law.with_sample_axis(params), jnp.where(mask, scores, 0.5))
    return jnp.where(mask, log_mass, 0.0).sum(-1), mask.sum(-1).astype(scores.dtype)


def fit_all(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    laws: Iterable[str] = registry.PARAMETRIC_LAWS,
    priors: Mapping[str, Any] | None = None,
) -> dict[str, LawFit]:
    """Fits every law in `laws` to every question: one batched call per law.

    Args:
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists.
        laws: names in `LAWS` (default: the parametric ones).
        priors: optional law name -> prior (MAP for that law); laws not in it get the MLE.

    Returns:
        Law name -> `LawFit` of batch `[...]`.
    """
    resolved = registry.get_laws(laws)
    scores, mask = validation.check_scores(scores, mask)
    priors = dict(priors or {})
    unknown = set(priors) - {law.name for law in resolved}
    if unknown:
        raise ValueError(f"priors: no law {sorted(unknown)[0]!r} among laws")
    return {law.name: _fit_one(law, scores, mask, priors.get(law.name)) for law in resolved}


def _sorted_sample(scores, mask):
    """(sorted scores with 1.0 after the n present ones, n, rank 1..k, valid)."""
    scores, mask = base.masked(scores, mask)
    n = mask.sum(-1).astype(scores.dtype)
    ordered = jnp.sort(jnp.where(mask, scores, jnp.inf), axis=-1)
    rank = jnp.arange(1, scores.shape[-1] + 1, dtype=scores.dtype)
    valid = rank <= n[..., None]
    return jnp.where(valid, ordered, 1.0), n, rank, valid


@functools.partial(jax.jit, static_argnames="law")
def _cvm(law: base.ScoreLaw, params, scores, mask) -> jax.Array:
    """W^2 of every question's scores off the fitted atoms, under G (module docstring)."""
    scores, mask = base.masked(scores, mask)
    mass0, mass1 = (m[..., None] for m in law.atoms(params))
    off_atoms = mask & ~((scores == 0.0) & (mass0 > 0)) & ~((scores == 1.0) & (mass1 > 0))
    ordered, n, rank, valid = _sorted_sample(scores, off_atoms)
    cdf = jnp.exp(law.log_cdf(law.with_sample_axis(params), ordered))
    weight = jnp.maximum(1.0 - mass0 - mass1, jnp.finfo(cdf.dtype).tiny)
    u = jnp.clip((cdf - mass0) / weight, 0.0, 1.0)
    safe_n = base.nonzero_count(n)
    term = (u - (2.0 * rank - 1.0) / (2.0 * safe_n[..., None])) ** 2
    statistic = 1.0 / (12.0 * safe_n) + jnp.where(valid, term, 0.0).sum(-1)
    return jnp.where(n > 0, statistic, 0.0)


@functools.partial(jax.jit, static_argnames=("law", "num_boot"))
def _gof(law: base.ScoreLaw, key, params, scores, mask, num_boot: int, prior) -> GofResult:
    """W^2 and its bootstrap p-value for all questions: draws [B, ..., k], refits, W_b^2."""
    scores, mask = base.masked(scores, mask)
    shape = (num_boot,) + scores.shape
    draws = law.sample(key, law.with_sample_axis(params), shape)
    boot_mask = jnp.broadcast_to(mask, shape)
    boot_params, _ = law.fit(law.stats(draws, boot_mask), prior)
    # The observed sample is replicate 0 of one W^2 evaluation (one compiled CDF, not two).
    both = jax.tree_util.tree_map(
        lambda fitted, refit: jnp.concatenate(
            [jnp.broadcast_to(fitted, refit.shape[1:])[None].astype(refit.dtype), refit]
        ),
        params,
        boot_params,
    )
    statistics = _cvm(
        law, both, jnp.concatenate([scores[None], draws]), jnp.concatenate([mask[None], boot_mask])
    )
    statistic, boot = statistics[0], statistics[1:]
    exceed = (boot >= statistic).sum(0)
    return GofResult(statistic, (1.0 + exceed) / (1.0 + num_boot))


def _parametric(law, name="law") -> base.ScoreLaw:
    law = registry.get_law(law, name)
    if law.num_params is None:
        raise ValueError(f"{name}: the {law.name} law has no goodness-of-fit test")
    return law


def cvm_statistic(law: str, params, scores: ArrayLike, mask: ArrayLike | None = None):
    """The Cramer-von Mises statistic W^2 of every question under its fitted law (the scores
    off the law's atoms, under the law given no atom; see the module docstring).

    Args:
        law: a parametric law's name.
        params: its fitted parameters, batch `[...]`.
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists.

    Returns:
        W^2, batch `[...]` (0 where n = 0).
    """
    law = _parametric(law)
    scores, mask = validation.check_scores(scores, mask)
    return _cvm(law, params, scores, mask)


def goodness_of_fit(
    law: str,
    params,
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    key: jax.Array,
    num_boot: int = 99,
    prior=None,
) -> GofResult:
    """Cramer-von Mises test of the fitted law on every question, parametric-bootstrap p-value.

    Args:
        law: a parametric law's name.
        params: its fitted parameters (`fit_all(...)[law].params`), batch `[...]`.
        scores: `[..., k]` scores in [0, 1], the data the law was fitted to.
        mask: optional `[..., k]` bool, True where a score exists.
        key: a `jax.random` key.
        num_boot: bootstrap replicates B (>= 1); p-values are multiples of 1 / (B + 1).
        prior: the prior the law was fitted with (None: MLE), used for the refits.

    Returns:
        `GofResult` (statistic, p_value), batch `[...]`; n = 0 gives (0, 1).
    """
    law = _parametric(law)
    scores, mask = validation.check_scores(scores, mask)
    if isinstance(num_boot, bool) or not isinstance(num_boot, int) or num_boot < 1:
        raise ValueError(f"num_boot must be an integer >= 1, got {num_boot!r}")
    return _gof(law, key, params, scores, mask, num_boot, prior)


@functools.partial(jax.jit, static_argnames="law")
def _pit(law: base.ScoreLaw, key, params, scores, mask):
    scores, mask = base.masked(scores, mask)
    params = law.with_sample_axis(params)
    upper = jnp.exp(law.log_cdf(params, scores))
    lower = jnp.exp(law.log_miss(params, scores))
    v = jax.random.uniform(key, scores.shape, scores.dtype)
    return jnp.where(mask, lower + v * (upper - lower), jnp.nan)


def pit(law: str, params, scores: ArrayLike, mask: ArrayLike | None = None, *, key: jax.Array):
    """Randomised probability integral transform of every score under its question's fit.

    Args:
        law: a parametric law's name.
        params: its fitted parameters, batch `[...]`.
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists.
        key: a `jax.random` key (the uniform V that spreads an atom over its jump).

    Returns:
        `[..., k]` values in [0, 1]; NaN where `mask` is False (no score).
    """
    law = _parametric(law)
    scores, mask = validation.check_scores(scores, mask)
    return _pit(law, key, params, scores, mask)
