"""What the predictor learns and what its outputs become: PRM score moments and priors.

Targets are the sample mean (`prm_mean`) and standard deviation (`prm_std`) of each training
question's PRM scores: the same quantities the shipped anchors (the constant training median
and the predictor released with the paper) predict, so mean absolute errors are comparable.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optscale_jax.estimation import moment_match
from optscale_jax.io import write_jsonl_records


def prm_targets(
    records: Sequence[Mapping[str, Any]], source: str = "records"
) -> tuple[np.ndarray, np.ndarray]:
    """(prm_mean, prm_std) arrays of PRM-statistics records, validated.

    Args:
        records: records with `prm_mean` and `prm_std`.
        source: file name for error messages.

    Returns:
        (mu, sigma) float64 arrays [Q].
    """
    mu, sigma = [], []
    for number, record in enumerate(records, start=1):
        try:
            m, s = float(record["prm_mean"]), float(record["prm_std"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}:{number}: needs numeric prm_mean and prm_std") from None
        if not (0.0 <= m <= 1.0 and math.isfinite(s) and s >= 0):
            raise ValueError(f"{source}:{number}: prm_mean must be in [0, 1] and prm_std >= 0")
        mu.append(m)
        sigma.append(s)
    return np.asarray(mu), np.asarray(sigma)


def moments_to_truncnorm(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truncated-normal (mu, sigma) on [0, 1] whose mean and standard deviation are given.

    The truncated normal is an exponential family in (s, s^2), so its maximum-likelihood fit
    to one pseudo-sample with moments (mean, mean^2 + std^2) matches those moments
    (`optscale_jax.estimation.moment_match`). Moments no truncated normal reaches (a left
    tail heavier than the exponential's, common for PRM scores) land on the core's parameter
    box edge. The predictor's outputs are score moments; OptScalet's prior is on
    (mu, sigma), so predictions are converted with this before they are used as priors.

    Args:
        mean: score means; clipped into [1e-4, 1 - 1e-4].
        std: score standard deviations; floored at 1e-4.

    Returns:
        (mu, sigma) float64 arrays of the broadcast shape.
    """
    mean = np.clip(np.asarray(mean, np.float64), 1e-4, 1 - 1e-4)
    return moment_match(mean, np.maximum(np.asarray(std, np.float64), 1e-4))


def write_prior_file(
    ids: Sequence[str], mu: np.ndarray, sigma: np.ndarray, path: str | os.PathLike
) -> pathlib.Path:
    """Writes per-question priors as JSONL of {id, mu, sigma} (what `optscale replay --prior` reads).

    Args:
        ids: question ids.
        mu: [Q] prior centres of mu.
        sigma: [Q] prior centres of sigma.
        path: the file to write (atomically).

    Returns:
        The path written.
    """
    return write_jsonl_records(
        (
            {"id": i, "mu": float(m), "sigma": float(s)}
            for i, m, s in zip(ids, mu, sigma, strict=True)
        ),
        path,
    )
