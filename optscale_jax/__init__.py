"""optscale-jax: the maths of OptScale (arXiv 2506.22376) as a batched JAX library.

Scores of one question are modelled i.i.d. truncated normal on [0, 1]; `fit_mle` /
`fit_map` estimate (mu, sigma) for any number of questions at once, and `optimal_n` turns
a fit into N* = ceil(log(1 - alpha) / log F(s_min)), the number of samples whose best
reaches s_min with probability alpha.
"""

from optscale_jax import (
    allocation,
    calibration,
    datasets,
    devices,
    empirical_bayes,
    io,
    policies,
    truncnorm,
    validation,
)
from optscale_jax.compile_cache import enable_compile_cache
from optscale_jax.estimation import (
    MU_BOUNDS,
    SIGMA_BOUNDS,
    Fit,
    FitStatus,
    fit_map,
    fit_map_stats,
    fit_mle,
    fit_mle_stats,
    mean_nll,
    moment_match,
    prefix_stats,
    sufficient_stats,
)
from optscale_jax.nstar import NSTAR_UNBOUNDED, confidence, optimal_n, optimal_n_from_log_cdf

__all__ = [
    "MU_BOUNDS",
    "NSTAR_UNBOUNDED",
    "SIGMA_BOUNDS",
    "Fit",
    "FitStatus",
    "allocation",
    "calibration",
    "confidence",
    "datasets",
    "devices",
    "empirical_bayes",
    "enable_compile_cache",
    "fit_map",
    "fit_map_stats",
    "fit_mle",
    "fit_mle_stats",
    "io",
    "mean_nll",
    "moment_match",
    "optimal_n",
    "optimal_n_from_log_cdf",
    "policies",
    "prefix_stats",
    "sufficient_stats",
    "truncnorm",
    "validation",
]
