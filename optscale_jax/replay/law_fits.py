"""Score laws in the replay (`ReplayConfig.law`): OptScale's prefix fits under any law of
`optscale_jax.laws`, or the best law by AIC on the samples seen so far (`auto`).

OptScale stops a question at the first n >= max(m, N*_n), N*_n computed from the fit of the
chosen law to the first n samples. For a law L every prefix of every ordered question is
fitted in one batched call, `L.fit(L.prefix_stats(scores, mask))` (fields `[R, Q, K]`), and
N* comes from log P(X < s_min) under each fit (`L.log_miss`) by the path of
`optscale_jax.laws.optimal_n` (`policies._optscale_grid_of_log_miss`; for `empirical`,
the upper end of its DKW band, so its N* is conservative). `tn` keeps the core's
warm-started prefix fits and grid (`policies._prefix_fits`, `policies._optscale_grid`): its
results are those of a replay without a law.

`auto`: at every prefix, the parametric law (`laws.PARAMETRIC_LAWS`: tn, beta, tn-atoms,
beta-atoms) of least AIC = 2 k - 2 loglik on the samples seen so far (loglik from the
prefix's statistics, `ScoreLaw.loglik`; a NaN AIC counts as +inf; a tie goes to the law
listed first), and that law's log P(X < s_min). A continuous law has AIC +inf on a prefix
with a score at exactly 0 or 1 (it gives them no mass), so such prefixes go to an atom law.

Priors: OptScalet's priors (`replay.priors`) are truncated-normal (mu, sigma) priors; they
are priors of `tn` and of the continuous part of `tn-atoms` (`PRIOR_LAWS`). The other laws
have none in the replay: OptScalet does not run with them.

Devices: given a `devices.question_mesh` (`mesh=`), the prefix fits, the AIC and
log P(X < s_min) run with the questions (axis 1) sharded over it (`policies._on_mesh`),
bitwise the same as on one device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optscale_jax import devices

DEFAULT_LAW = "tn"
AUTO = "auto"
PRIOR_LAWS = ("tn", "tn-atoms")
"""The laws OptScalet's truncated-normal (mu, sigma) prior is a prior of (tn-atoms: its
continuous part)."""


def law_choices() -> tuple[str, ...]:
    """Every value `ReplayConfig.law` accepts: the laws of `optscale_jax.laws.LAWS`, and auto."""
    from optscale_jax.laws import LAWS

    return (*LAWS, AUTO)


def check_laws(values: Sequence[str], name: str = "law") -> None:
    """At least one law, each known, none twice.

    Raises:
        ValueError: naming `name`.
    """
    choices = law_choices()
    if isinstance(values, str) or not len(values):
        raise ValueError(f"{name} must name at least one law (choose from {', '.join(choices)})")
    for value in values:
        if value not in choices:
            raise ValueError(f"{name}: unknown law {value!r} (choose from {', '.join(choices)})")
    repeated = sorted({value for value in values if list(values).count(value) > 1})
    if repeated:
        raise ValueError(f"{name}: {repeated[0]} is given twice")


class PrefixFits(NamedTuple):
    """Fits of every prefix of every ordered question under one law (or `auto`).

    Attributes:
        laws: the `ScoreLaw`s fitted (one; auto: the parametric laws).
        params: each law's parameters, fields `[R, Q, K]` (entry j: the first j + 1 samples).
        status: int32 `FitStatus` `[R, Q, K]` of the law used at each prefix.
        choice: auto: int `[R, Q, K]`, the index in `laws` of the least-AIC law; else None.
    """

    laws: tuple[Any, ...]
    params: tuple[Any, ...]
    status: Any
    choice: Any = None

    def log_miss(self, s_min: float, mesh: Any = None) -> Any:
        """log P(X < s_min) under the fit of every prefix (of its chosen law, with auto); the
        question axis (1) sharded over `mesh` unless it is None (bitwise the same)."""
        return devices.run_on_mesh(
            devices.bound(_log_miss, self.laws), self.params, self.choice, mesh=mesh,
            axis=1, replicated=(s_min,),
        )  # fmt: skip


@functools.partial(jax.jit, static_argnames="laws")
def _log_miss(laws, params, choice, s_min):
    dtype = jax.tree_util.tree_leaves(params[0])[0].dtype
    s_min = jnp.asarray(s_min, dtype)
    values = [law.log_miss(p, s_min) for law, p in zip(laws, params, strict=True)]
    if choice is None:
        return values[0]
    return jnp.take_along_axis(jnp.stack(values), choice[None], 0)[0]


def tn_prior(prior: Any, shape: tuple[int, ...]) -> Any:
    """The replay's prior (mu [Q], sigma [Q], (mu_scale, sigma_scale)) as a `laws.tn.TNPrior`
    that broadcasts with prefix fits of batch `shape + (K,)`."""
    from optscale_jax.laws.tn import TNPrior

    prior_mu, prior_sigma, (mu_scale, sigma_scale) = prior
    return TNPrior(
        *(
            np.broadcast_to(x, shape)[..., None]
            for x in (prior_mu, prior_sigma, mu_scale, sigma_scale)
        )
    )


def law_prefix_fits(
    law_name: str, scores: Any, mask: Any, prior: Any = None, mesh: Any = None
) -> PrefixFits:
    """Every prefix fitted by `law_name` (not auto) in one batched call.

    Args:
        law_name: a name in `optscale_jax.laws.LAWS`.
        scores: `[R, Q, K]` scores.
        mask: `[R, Q, K]` bool prefix mask.
        prior: the replay's prior (only for `PRIOR_LAWS`), or None for the MLE.
        mesh: a `devices.question_mesh` to shard the questions (axis 1) over (bitwise the
            same fits), or None.

    Returns:
        PrefixFits of the one law.
    """
    from optscale_jax import laws

    law = laws.get_law(law_name)
    # The prior broadcast to [R, Q, 1]: it has the question axis of the scores.
    law_prior = () if prior is None else (tn_prior(prior, np.shape(mask)[:-1]),)
    fit = devices.bound(_fit_prefixes, law)
    params, status = devices.run_on_mesh(fit, scores, mask, *law_prior, mesh=mesh, axis=1)
    return PrefixFits((law,), (params,), status)


def _fit_prefixes(law: Any, scores: Any, mask: Any, prior: Any = None) -> tuple[Any, Any]:
    """`law`'s (params, status) of every prefix."""
    return law.fit(law.prefix_stats(scores, mask), prior)


def tn_prefix_fits(fit: Any) -> PrefixFits:
    """The core's truncated-normal prefix fits (`policies.prefix_fits`) as PrefixFits."""
    from optscale_jax import laws

    return PrefixFits((laws.get_law("tn"),), (laws.tn.TNParams(fit.mu, fit.sigma),), fit.status)


def auto_prefix_fits(
    fits: Sequence[PrefixFits], scores: Any, mask: Any, mesh: Any = None
) -> PrefixFits:
    """At every prefix, the law of least AIC among `fits` (module docstring).

    Args:
        fits: PrefixFits of one law each, in the order ties go.
        scores: `[R, Q, K]` scores.
        mask: `[R, Q, K]` bool prefix mask.
        mesh: a `devices.question_mesh` to shard the questions (axis 1) over, or None.

    Returns:
        PrefixFits of all the laws, with the choice.
    """
    resolved = tuple(fit.laws[0] for fit in fits)
    params = tuple(fit.params[0] for fit in fits)
    aic = devices.run_on_mesh(
        devices.bound(prefix_aic, resolved), params, scores, mask, mesh=mesh, axis=1, out_axis=2
    )
    choice = jnp.asarray(aic).argmin(0)
    statuses = jnp.stack([fit.status for fit in fits])
    status = jnp.take_along_axis(statuses, choice[None], 0)[0]
    return PrefixFits(resolved, params, status, choice)


@functools.partial(jax.jit, static_argnames="laws")
def prefix_aic(laws: tuple[Any, ...], params: tuple[Any, ...], scores: Any, mask: Any) -> Any:
    """AIC = 2 k - 2 loglik of every law at every prefix: `[L, R, Q, K]` (NaN -> +inf).

    Args:
        laws: parametric `ScoreLaw`s.
        params: their prefix fits.
        scores: `[..., K]` scores.
        mask: `[..., K]` bool prefix mask.
    """
    aics = []
    for law, law_params in zip(laws, params, strict=True):
        loglik = law.loglik(law_params, law.prefix_stats(scores, mask))
        aic = 2.0 * law.num_params - 2.0 * loglik
        aics.append(jnp.where(jnp.isnan(aic), jnp.inf, aic))
    return jnp.stack(aics)


def chosen_counts(fits: PrefixFits, mask: np.ndarray) -> dict[str, int]:
    """Auto: the number of drawn prefixes at which each law was chosen (counts, so that a
    streamed replay adds them up block by block)."""
    choice = np.asarray(fits.choice)[mask]
    return {law.name: int((choice == i).sum()) for i, law in enumerate(fits.laws)}
