"""Empirical-Bayes prior for OptScalet: a population law of (mu, log sigma) fitted from a log.

No question text is needed: the prior is learnt from the scores of questions already seen
(the dev questions of a replayed log, or the finished questions of a live run).

Model. Question q has parameters theta_q = (mu_q, log sigma_q) drawn from a population
N(m, diag(tau^2)), and its scores are i.i.d. TN(mu_q, sigma_q; [0, 1]). Each question is
summarised by its maximum-likelihood fit theta_hat_q and the inverse observed information
V_q (the Laplace approximation of its likelihood), so that, per coordinate,

    theta_hat_q ~ N(m, tau^2 + v_q),    v_q = diag(V_q) (the sampling variance).

(m, tau^2) are estimated as in random-effects meta-analysis (Paule-Mandel): tau^2 solves

    sum_q w_q (theta_hat_q - m)^2 = Q - 1,   w_q = 1 / (tau^2 + v_q),
    m = sum w_q theta_hat_q / sum w_q,

(tau^2 = 0 when the left side is already below Q - 1 at tau^2 = 0). The weights make a
poorly identified question (a nearly flat law, whose fit has a huge v_q) count for little.

Subtracting v_q deconvolves the estimation noise: with few samples per question the spread
of the raw fits overstates the population spread. The per-question fits use the unbiased
variance (factor n / (n - 1)) and log sigma_hat is shifted by 1 / (2 (n - 1)), the
small-sample bias of the log of a normal sample's standard deviation. Questions with fewer
than two samples, or all scores equal, carry no information on sigma and are left out.

`fit_map` takes Gaussian priors on mu and on sigma (not log sigma), so the returned
`PopulationPrior` converts: sigma = exp(m_log_sigma) (the population median of sigma),
sigma_scale = exp(m_log_sigma) * sinh(tau_log_sigma) (half the width of the population's
central 68% interval of sigma).

Example:
    >>> import numpy as np
    >>> from optscale_jax import fit_map
    >>> from optscale_jax.empirical_bayes import fit_population_prior
    >>> rng = np.random.default_rng(0)
    >>> scores = np.clip(rng.normal(0.7, 0.1, size=(50, 16)), 0, 1)
    >>> p = fit_population_prior(scores)
    >>> fit = fit_map(scores[:, :2], p.mu, p.sigma, prior_scale=(p.mu_scale, p.sigma_scale))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from optscale_jax import validation
from optscale_jax._numerics import float_dtype
from optscale_jax.estimation import (
    NO_DATA_MU,
    NO_DATA_SIGMA,
    SIGMA_BOUNDS,
    fit_mle_stats,
    mean_nll,
    sufficient_stats,
)

__all__ = [
    "MIN_SCALE",
    "PopulationFit",
    "PopulationPrior",
    "fit_population",
    "fit_population_prior",
    "fit_population_prior_stats",
    "prior_from_population",
]

# Floor of the returned prior scales: a population fitted as degenerate still lets the
# data move the MAP fit.
MIN_SCALE = 1e-3
_MIN_PADDED = 64
_BISECTION_STEPS = 60
# Fallback population when no question is informative: the no-data fit with wide scales.
_FALLBACK_SCALE = 0.5


class PopulationPrior(NamedTuple):
    """Prior centres and scales for `fit_map(..., prior_mu=mu, prior_sigma=sigma,
    prior_scale=(mu_scale, sigma_scale))`; scalars (0-d arrays).

    Attributes:
        mu: centre of the prior on mu.
        sigma: centre of the prior on sigma.
        mu_scale: standard deviation of the prior on mu.
        sigma_scale: standard deviation of the prior on sigma.
    """

    mu: jax.Array
    sigma: jax.Array
    mu_scale: jax.Array
    sigma_scale: jax.Array


class PopulationFit(NamedTuple):
    """The fitted population law of (mu, log sigma); scalars (0-d arrays).

    Attributes:
        mu_mean: population mean of mu.
        mu_sd: population standard deviation of mu (estimation noise removed).
        log_sigma_mean: population mean of log sigma.
        log_sigma_sd: population standard deviation of log sigma.
        questions: int32 number of informative questions used (0: fallback values).
    """

    mu_mean: jax.Array
    mu_sd: jax.Array
    log_sigma_mean: jax.Array
    log_sigma_sd: jax.Array
    questions: jax.Array


def _sampling_variances(fit_mu, fit_log_sigma, n, s1, s2):
    """Diagonal of the inverse observed information of each question's log-likelihood."""

    def total_nll(theta, n_q, s1_q, s2_q):
        return n_q * mean_nll(theta[0], jnp.exp(theta[1]), n_q, s1_q, s2_q)

    theta = jnp.stack([fit_mu, fit_log_sigma], axis=-1)
    hess = jax.vmap(jax.hessian(total_nll))(theta, n, s1, s2)
    h11, h12, h22 = hess[:, 0, 0], hess[:, 0, 1], hess[:, 1, 1]
    det = h11 * h22 - h12 * h12
    positive = (h11 > 0) & (h22 > 0) & (det > 0) & jnp.isfinite(det)
    safe_det = jnp.where(positive, det, 1.0)
    var_mu = jnp.where(positive, h22 / safe_det, jnp.inf)
    var_log_sigma = jnp.where(positive, h11 / safe_det, jnp.inf)
    return var_mu, var_log_sigma


def _random_effects(theta, var, use):
    """(m, tau^2) of theta_q ~ N(m, tau^2 + var_q) by the Paule-Mandel equation."""
    dtype = theta.dtype
    tiny = jnp.finfo(dtype).tiny
    # Masked-out or uninformative questions get weight 0 (double where: no inf * 0).
    ok = use & jnp.isfinite(var) & jnp.isfinite(theta)
    theta = jnp.where(ok, theta, 0.0)
    var = jnp.where(ok, var, 1.0)
    count = jnp.sum(ok)

    def weighted(tau2):
        w = jnp.where(ok, 1.0 / (tau2 + var + tiny), 0.0)
        m = jnp.sum(w * theta) / jnp.maximum(jnp.sum(w), tiny)
        return m, jnp.sum(w * (theta - m) ** 2)

    # Q(tau^2) = sum w (theta - m_w)^2 decreases in tau^2; solve Q = count - 1 by bisection
    # on [0, sample variance] (at the upper end Q <= count - 1 already).
    mean = jnp.sum(theta) / jnp.maximum(count, 1)
    high0 = jnp.sum(jnp.where(ok, (theta - mean) ** 2, 0.0)) / jnp.maximum(count - 1, 1)
    target = (count - 1).astype(dtype)

    def step(_, bounds):
        low, high = bounds
        middle = 0.5 * (low + high)
        above = weighted(middle)[1] > target
        return jnp.where(above, middle, low), jnp.where(above, high, middle)

    low, high = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (jnp.zeros_like(high0), high0))
    # No heterogeneity beyond the noise: Q(0) <= count - 1 gives tau^2 = 0.
    tau2 = jnp.where(weighted(jnp.zeros_like(high0))[1] <= target, 0.0, 0.5 * (low + high))
    return weighted(tau2)[0], tau2, count


@jax.jit
def _fit_population(n, s1, s2):
    # Small-sample bias of log sigma_hat: fit the unbiased variance (factor n / (n - 1)),
    # then remove the Jensen term E[log s] - log sigma ~ -1 / (2 (n - 1)) of normal data.
    many = n >= 2
    safe_n = jnp.where(many, n, 2.0)
    mean = s1 / safe_n
    var = jnp.maximum(s2 / safe_n - mean * mean, 0.0)
    s2 = jnp.where(many, s1 * mean + var * safe_n * safe_n / (safe_n - 1.0), s2)
    fit = fit_mle_stats(n, s1, s2)
    # All-equal scores put sigma on its lower bound: no information on the spread.
    informative = many & (fit.sigma > 1.5 * SIGMA_BOUNDS[0])
    var_mu, var_ls = _sampling_variances(
        fit.mu,
        jnp.log(fit.sigma),
        safe_n,
        jnp.where(informative, s1, 1.0),
        jnp.where(informative, s2, 1.0),
    )
    log_sigma = jnp.log(fit.sigma) + 0.5 / (safe_n - 1.0)
    m_mu, tau2_mu, count = _random_effects(fit.mu, var_mu, informative)
    m_ls, tau2_ls, _ = _random_effects(log_sigma, var_ls, informative)
    has = count > 0
    dtype = s1.dtype
    return PopulationFit(
        mu_mean=jnp.where(has, m_mu, jnp.asarray(NO_DATA_MU, dtype)),
        mu_sd=jnp.where(has, jnp.sqrt(tau2_mu), jnp.asarray(_FALLBACK_SCALE, dtype)),
        log_sigma_mean=jnp.where(has, m_ls, jnp.asarray(math.log(NO_DATA_SIGMA), dtype)),
        log_sigma_sd=jnp.where(has, jnp.sqrt(tau2_ls), jnp.asarray(_FALLBACK_SCALE, dtype)),
        questions=count.astype(jnp.int32),
    )


def fit_population(n: ArrayLike, s1: ArrayLike, s2: ArrayLike) -> PopulationFit:
    """Population law of (mu, log sigma) from per-question sufficient statistics.

    Args:
        n: [Q] sample counts.
        s1: [Q] sums of scores.
        s2: [Q] sums of squared scores.

    Returns:
        `PopulationFit` (scalars, in the float dtype of s1 / s2). With no informative
        question: mu_mean = 0.5, log_sigma_mean = log(1/sqrt(12)), both sds 0.5, questions 0.
    """
    shape = validation.check_stats(n, s1, s2)
    if len(shape) != 1:
        raise ValueError(f"n, s1, s2 must be 1-D (one entry per question), got shape {shape}")
    dtype = float_dtype(s1, s2)
    n, s1, s2 = (jnp.broadcast_to(jnp.asarray(x, dtype), shape) for x in (n, s1, s2))
    # Pad Q to a power of two with empty questions (they carry no weight), so logs of
    # similar size share one compilation.
    padded = max(_MIN_PADDED, 1 << max(shape[0] - 1, 0).bit_length())
    n, s1, s2 = (jnp.pad(x, (0, padded - shape[0])) for x in (n, s1, s2))
    return _fit_population(n, s1, s2)


def prior_from_population(
    population: PopulationFit, min_scale: float = MIN_SCALE
) -> PopulationPrior:
    """Converts a population law to `fit_map`'s priors on mu and sigma.

    sigma = exp(m), sigma_scale = exp(m) sinh(tau) for log sigma ~ N(m, tau^2): the median
    of sigma and half the width of its central 68% interval.

    Args:
        population: from `fit_population`.
        min_scale: floor of both scales (> 0).

    Returns:
        `PopulationPrior`.
    """
    sigma = jnp.exp(population.log_sigma_mean)
    return PopulationPrior(
        mu=population.mu_mean,
        sigma=sigma,
        mu_scale=jnp.maximum(population.mu_sd, min_scale),
        sigma_scale=jnp.maximum(sigma * jnp.sinh(population.log_sigma_sd), min_scale),
    )


def fit_population_prior_stats(n: ArrayLike, s1: ArrayLike, s2: ArrayLike) -> PopulationPrior:
    """Empirical-Bayes prior (see the module docstring) from the statistics `fit_population` takes.

    Returns:
        `PopulationPrior` for `fit_map` / `fit_map_stats`.
    """
    return prior_from_population(fit_population(n, s1, s2))


def fit_population_prior(scores: ArrayLike, mask: ArrayLike | None = None) -> PopulationPrior:
    """Empirical-Bayes prior from the questions of a log (see the module docstring).

    Args:
        scores: [Q, K] scores in [0, 1], one row per question.
        mask: optional [Q, K] bool, True where a sample exists.

    Returns:
        `PopulationPrior` (scalars) to pass to `fit_map(..., prior_mu=p.mu,
        prior_sigma=p.sigma, prior_scale=(p.mu_scale, p.sigma_scale))`.

    Raises:
        ValueError: naming `scores` or `mask` if they are not a valid [Q, K] score array.
    """
    scores, mask = validation.check_scores(scores, mask)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [Q, K] (one row per question), got shape {scores.shape}")
    return fit_population_prior_stats(*sufficient_stats(scores, mask))
