"""Score laws on [0, 1]: one interface, fitted per question, batched and jit-compiled.

The paper's construction assumes a question's scores are i.i.d. truncated normal; this
package offers that law and others behind one interface (`ScoreLaw`, `base`), registered
in one table, `LAWS`:

| name | law | parameters |
|---|---|---|
| `tn` | normal truncated to [0, 1] (the core's code, unchanged) | `tn.TNParams(mu, sigma)` |
| `beta` | Beta(a, b) | `beta.BetaParams(a, b)` |
| `tn-atoms` | masses at 0 and 1 + `tn` in between | `atoms.AtomParams(mass0, mass1, inner)` |
| `beta-atoms` | masses at 0 and 1 + `beta` in between | `atoms.AtomParams(mass0, mass1, inner)` |
| `empirical` | the scores seen; N* from a DKW band | `empirical.EmpiricalParams(sorted, n, margin)` |

Entry points (validated; the `ScoreLaw` functions themselves are unvalidated kernels):
`fit`, `optimal_n`, `confidence`, `fit_all`, `goodness_of_fit`, `cvm_statistic`, `pit`.

Example:
    >>> import jax.numpy as jnp
    >>> from optscale_jax import laws
    >>> scores = jnp.array([[0.2, 1.0, 0.7, 1.0, 0.9], [0.1, 0.3, 0.2, 0.0, 0.25]])
    >>> fits = laws.fit_all(scores)                       # every parametric law, every question
    >>> best = min(fits, key=lambda name: float(fits[name].aic[0]))
    >>> n_star = laws.optimal_n(best, fits[best].params, s_min=0.9, alpha=0.9, max_n=64)
"""

from optscale_jax.laws import atoms, base, beta, empirical, tn
from optscale_jax.laws.base import FitStatus, ScoreLaw
from optscale_jax.laws.diagnostics import (
    GofResult,
    LawFit,
    cvm_statistic,
    fit_all,
    goodness_of_fit,
    pit,
)
from optscale_jax.laws.registry import (
    LAWS,
    PARAMETRIC_LAWS,
    confidence,
    fit,
    get_law,
    get_laws,
    optimal_n,
)

__all__ = [
    "LAWS",
    "PARAMETRIC_LAWS",
    "FitStatus",
    "GofResult",
    "LawFit",
    "ScoreLaw",
    "atoms",
    "base",
    "beta",
    "confidence",
    "cvm_statistic",
    "empirical",
    "fit",
    "fit_all",
    "get_law",
    "get_laws",
    "goodness_of_fit",
    "optimal_n",
    "pit",
    "tn",
]
