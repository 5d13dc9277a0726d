"""The table of score laws, and the validated entry points that look a law up by name.

`LAWS` maps each name to its `ScoreLaw`; adding a law is one entry. The entry points here
check user input once (errors name the argument) and call the law's jit-compiled kernels.

Example:
    >>> import jax.numpy as jnp
    >>> from optscale_jax import laws
    >>> scores = jnp.array([[0.2, 1.0, 0.7, 1.0, 0.9]])
    >>> params, status = laws.fit("beta-atoms", scores)
    >>> n_star = laws.optimal_n("beta-atoms", params, s_min=1.0, alpha=0.9)  # 1 - 0.6^N >= 0.9
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax import nstar, validation
from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax.laws import atoms, base, beta, empirical, tn
from optscale_jax.nstar import _confidence_from_log_cdf

__all__ = ["LAWS", "PARAMETRIC_LAWS", "confidence", "fit", "get_law", "get_laws", "optimal_n"]

LAWS: dict[str, base.ScoreLaw] = {
    law.name: law for law in (tn.LAW, beta.LAW, atoms.TN_ATOMS, atoms.BETA_ATOMS, empirical.LAW)
}
"""Every score law by name: tn, beta, tn-atoms, beta-atoms, empirical."""

PARAMETRIC_LAWS = tuple(name for name, law in LAWS.items() if law.num_params is not None)
"""The laws with a likelihood on a common footing, an AIC and a goodness-of-fit test."""


def get_law(law: str | base.ScoreLaw, name: str = "law") -> base.ScoreLaw:
    """The `ScoreLaw` called `law` (a `ScoreLaw` is returned as is).

    Raises:
        ValueError: naming the argument `name` for an unknown law.
    """
    if isinstance(law, base.ScoreLaw):
        return law
    if law not in LAWS:
        raise ValueError(f"{name}: unknown law {law!r} (choose from {', '.join(LAWS)})")
    return LAWS[law]


def get_laws(laws: Iterable[str | base.ScoreLaw], name: str = "laws") -> tuple[base.ScoreLaw, ...]:
    """The `ScoreLaw`s of several names (a single name counts as one).

    Raises:
        ValueError: naming `name` for an unknown law, or if there is none.
    """
    if isinstance(laws, str | base.ScoreLaw):
        laws = (laws,)
    found = tuple(get_law(law, name) for law in laws)
    if not found:
        raise ValueError(f"{name} must name at least one law")
    return found


def fit(
    law: str | base.ScoreLaw,
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    prior=None,
) -> tuple[base.Params, jax.Array]:
    """Fits `law` to the scores of every question (samples on the last axis).

    Args:
        law: a name in `LAWS` (or a `ScoreLaw`).
        scores: `[..., k]` scores in [0, 1].
        mask: optional `[..., k]` bool, True where a score exists.
        prior: optional prior of the law (`tn.TNPrior`, `beta.BetaPrior`; the atom laws take
            their continuous part's), broadcasting with `[...]`; None for the MLE.

    Returns:
        (params, int32 `FitStatus`), batch `[...]`.
    """
    law = get_law(law)
    scores, mask = validation.check_scores(scores, mask)
    if prior is not None and law.name == "empirical":
        raise ValueError("prior: the empirical law takes no prior")
    return law.fit(law.stats(scores, mask), prior)


def _log_miss(law, params, s_min):
    validation.check_unit(s_min, "s_min")
    leaf = jax.tree_util.tree_leaves(params)[0]
    return law.log_miss(params, jnp.asarray(s_min, _float_dtype(leaf, s_min)))


def optimal_n(
    law: str | base.ScoreLaw,
    params,
    s_min: ArrayLike,
    alpha: ArrayLike,
    max_n: ArrayLike | None = None,
) -> jax.Array:
    """N*: the least N with P(best of N >= s_min) = 1 - P(X < s_min)^N >= alpha.

    log P(X < s_min) is the law's `log_miss` (for the empirical law its DKW upper bound);
    the rest is `optscale_jax.nstar.optimal_n_from_log_cdf`. For `tn` this is exactly
    `optscale_jax.optimal_n(mu, sigma, s_min, alpha, max_n)`.

    Args:
        law: a name in `LAWS` (or a `ScoreLaw`).
        params: the law's fitted parameters, batch `[...]`.
        s_min: score threshold in [0, 1], broadcasting with `[...]`.
        alpha: target probability in (0, 1).
        max_n: cap (integer >= 1), or None for `NSTAR_UNBOUNDED`.

    Returns:
        int32 N*, broadcast over the arguments, in [1, max_n].
    """
    law = get_law(law)
    return nstar.optimal_n_from_log_cdf(_log_miss(law, params, s_min), alpha, max_n)


def confidence(law: str | base.ScoreLaw, params, s_min: ArrayLike, n: ArrayLike) -> jax.Array:
    """P(best of n >= s_min) = 1 - P(X < s_min)^n under the fitted law.

    Args:
        law: a name in `LAWS` (or a `ScoreLaw`).
        params: the law's fitted parameters.
        s_min: score threshold in [0, 1].
        n: number of samples (>= 0).

    Returns:
        The confidence, broadcast over the arguments.
    """
    law = get_law(law)
    log_miss = _log_miss(law, params, s_min)
    return _confidence_from_log_cdf(log_miss, jnp.asarray(n, log_miss.dtype))
