"""How well do the MLE (OptScale0) and the MAP (OptScalet) recover (mu, sigma) from n scores?

Simulated questions: true (mu, sigma) drawn uniformly from a box, scores drawn i.i.d. from the
truncated normal on [0, 1]. Every prefix of n = 1..max(ns) samples is fitted at once from
cumulative sufficient statistics (`prefix_stats` + `fit_mle_stats` / `fit_map_stats`). The MAP
prior is centred on the truth plus Gaussian noise of a given standard deviation (a predictor of
that quality) with the paper's prior scale (0.1, 0.1) unless told otherwise. Per estimator,
prior noise, n and parameter the study reports

    rmse = sqrt(mean_q (hat theta_q - theta_q)^2),   bias = mean_q (hat theta_q - theta_q)

with Monte Carlo standard errors (delta method for the RMSE) and the fraction of fits that
ended on the parameter box edge. `optscale simulate estimator --out DIR` runs it and writes
DIR/estimator.csv (plotted by `optscale plot estimator`) and DIR/estimator.json.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

COLUMNS = (
    "estimator", "prior_noise", "prior_scale_mu", "prior_scale_sigma", "n", "param", "rmse",
    "rmse_se", "bias", "bias_se", "at_bound", "questions",
)  # fmt: skip

DEFAULT_NS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
DEFAULT_PRIOR_NOISES = (0.05, 0.1, 0.2)


def _error_rows(
    estimator: str,
    prior_noise: float | None,
    prior_scale: tuple[float, float],
    ns: np.ndarray,
    fit_mu: np.ndarray,
    fit_sigma: np.ndarray,
    at_bound: np.ndarray,
    true_mu: np.ndarray,
    true_sigma: np.ndarray,
) -> list[dict[str, Any]]:
    """Rows of RMSE/bias per n for mu and sigma; fits are [Q, len(ns)], truths [Q]."""
    rows = []
    questions = true_mu.shape[0]
    for param, estimate, truth in (("mu", fit_mu, true_mu), ("sigma", fit_sigma, true_sigma)):
        error = estimate - truth[:, None]
        squared = error**2
        mse = squared.mean(axis=0)
        rmse = np.sqrt(mse)
        # Delta method: se(sqrt(M)) = se(M) / (2 sqrt(M)).
        mse_se = squared.std(axis=0, ddof=1) / np.sqrt(questions)
        rmse_se = np.where(rmse > 0, mse_se / (2 * np.where(rmse > 0, rmse, 1.0)), 0.0)
        bias = error.mean(axis=0)
        bias_se = error.std(axis=0, ddof=1) / np.sqrt(questions)
        for j, n in enumerate(ns.tolist()):
            rows.append(
                {
                    "estimator": estimator,
                    "prior_noise": prior_noise,
                    "prior_scale_mu": prior_scale[0] if prior_noise is not None else None,
                    "prior_scale_sigma": prior_scale[1] if prior_noise is not None else None,
                    "n": n,
                    "param": param,
                    "rmse": float(rmse[j]),
                    "rmse_se": float(rmse_se[j]),
                    "bias": float(bias[j]),
                    "bias_se": float(bias_se[j]),
                    "at_bound": float(at_bound[:, j].mean()),
                    "questions": questions,
                }
            )
    return rows


def estimator_study(
    questions: int = 2000,
    ns: Sequence[int] = DEFAULT_NS,
    prior_noises: Sequence[float] = DEFAULT_PRIOR_NOISES,
    prior_scale: tuple[float, float] = (0.1, 0.1),
    mu_range: tuple[float, float] = (0.3, 0.9),
    sigma_range: tuple[float, float] = (0.05, 0.4),
    seed: int = 0,
    mesh: Any = None,
) -> list[dict[str, Any]]:
    """Error of the MLE and MAP estimates of (mu, sigma) against the number of samples n.

    Args:
        questions: simulated questions Q.
        ns: sample counts at which the fits are scored (each >= 1).
        prior_noises: standard deviations of the MAP prior centres around the true
            (mu, sigma), one MAP series each.
        prior_scale: the MAP prior's standard deviations (mu, sigma), as in `fit_map`.
        mu_range: true mu drawn uniformly from this interval.
        sigma_range: true sigma drawn uniformly from this interval (> 0).
        seed: seeds every random draw (truths, scores, prior noise).
        mesh: a `devices.question_mesh` to spread the fits over, or None (one device);
            the rows are the same either way.

    Returns:
        Rows with the columns `COLUMNS` (MLE rows have empty prior fields).

    Raises:
        ValueError: naming the argument that is out of range.
    """
    import jax

    if int(questions) < 2:
        raise ValueError(f"questions: need at least 2, got {questions}")
    ns = np.unique(np.asarray(ns, dtype=np.int64))
    if ns.size == 0 or ns[0] < 1:
        raise ValueError(f"ns: need sample counts >= 1, got {ns.tolist()}")
    if any(not np.isfinite(x) or x < 0 for x in prior_noises):
        raise ValueError(f"prior_noises: need finite values >= 0, got {list(prior_noises)}")
    if any(not np.isfinite(x) or x <= 0 for x in prior_scale) or len(prior_scale) != 2:
        raise ValueError(f"prior_scale: need two positive values, got {prior_scale}")
    if not mu_range[0] <= mu_range[1]:
        raise ValueError(f"mu_range: need low <= high, got {mu_range}")
    if not 0 < sigma_range[0] <= sigma_range[1]:
        raise ValueError(f"sigma_range: need 0 < low <= high, got {sigma_range}")

    # float32 with x64 off whatever the process-wide flag (replay and simulate turn it on), so
    # the study gives the same numbers alone, after other commands, and under the tests.
    with jax.enable_x64(False):
        return _study(
            int(questions), ns, prior_noises, prior_scale, mu_range, sigma_range, seed, mesh
        )


@functools.lru_cache(maxsize=8)
def _map_fit(prior_scale: tuple[float, float]):
    """`fit_map_stats` at one prior scale: one object per scale, so a sharded run reuses
    its compiled program."""
    from optscale_jax import fit_map_stats

    return functools.partial(fit_map_stats, prior_scale=prior_scale)


def _study(q, ns, prior_noises, prior_scale, mu_range, sigma_range, seed, mesh):
    """The body of `estimator_study` (arguments validated), run with x64 off."""
    import jax
    import jax.numpy as jnp

    from optscale_jax import FitStatus, devices, fit_mle_stats, prefix_stats, truncnorm

    dtype = jnp.float32
    key_mu, key_sigma, key_scores, key_noise = jax.random.split(jax.random.key(seed), 4)
    true_mu = jax.random.uniform(key_mu, (q,), dtype, *mu_range)
    true_sigma = jax.random.uniform(key_sigma, (q,), dtype, *sigma_range)
    scores = truncnorm.sample(
        key_scores, true_mu[:, None], true_sigma[:, None], shape=(q, int(ns[-1])), dtype=dtype
    )
    count, s1, s2 = prefix_stats(scores)
    columns = jnp.asarray(ns - 1)
    count, s1, s2 = count[:, columns], s1[:, columns], s2[:, columns]

    truth = (np.asarray(true_mu, np.float64), np.asarray(true_sigma, np.float64))
    fit = devices.run_on_mesh(fit_mle_stats, count, s1, s2, mesh=mesh)
    rows = _error_rows(
        "mle", None, prior_scale, ns, np.asarray(fit.mu, np.float64),
        np.asarray(fit.sigma, np.float64), np.asarray(fit.status) == FitStatus.AT_BOUND, *truth,
    )  # fmt: skip
    # One noise draw shared by every noise level (common random numbers: the series differ
    # only by the prior's quality, not by luck).
    noise = jax.random.normal(key_noise, (2, q), dtype)
    for level in prior_noises:
        prior_mu = true_mu + level * noise[0]
        # A prior centre for sigma must stay a valid scale.
        prior_sigma = jnp.maximum(true_sigma + level * noise[1], 0.01)
        fit = devices.run_on_mesh(
            _map_fit(tuple(float(x) for x in prior_scale)),
            count, s1, s2, prior_mu[:, None], prior_sigma[:, None], mesh=mesh,
        )  # fmt: skip
        rows += _error_rows(
            "map", float(level), prior_scale, ns, np.asarray(fit.mu, np.float64),
            np.asarray(fit.sigma, np.float64), np.asarray(fit.status) == FitStatus.AT_BOUND,
            *truth,
        )  # fmt: skip
    return rows
