"""Question populations: per-question truncated-normal parameters (mu, sigma) to simulate.

Three sources: a grid, the 4,501 MATH training questions of the OptScale release (their PRM
score means and standard deviations, moment-matched to a truncated normal), and a user table
(CSV or JSONL with columns `mu`, `sigma`).
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from optscale_jax.estimation import moment_match, moment_match_status  # noqa: F401 (re-exported)
from optscale_jax.io import iter_jsonl, read_csv


class Population(NamedTuple):
    """Questions to simulate, one entry per question (numpy arrays, float64).

    Attributes:
        mu: truncated-normal location per question `[Q]`.
        sigma: truncated-normal scale per question `[Q]`.
        mean: score mean per question `[Q]` (the target of moment matching; else the law's).
        std: score standard deviation per question `[Q]`.
        ids: question identifiers `[Q]`.
        name: where the population came from.
    """

    mu: np.ndarray
    sigma: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    ids: list[str]
    name: str

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.mu.shape[0])

    def take(self, index: np.ndarray) -> Population:
        """The questions at `index` (e.g. a resample with replacement)."""
        index = np.asarray(index)
        return Population(
            self.mu[index],
            self.sigma[index],
            self.mean[index],
            self.std[index],
            [self.ids[i] for i in index.tolist()],
            self.name,
        )


def grid(mus, sigmas) -> Population:
    """Every (mu, sigma) pair of the two lists (mu varies slowest).

    Args:
        mus: locations.
        sigmas: scales (> 0).

    Returns:
        A population of len(mus) * len(sigmas) questions; `mean`/`std` are NaN (not needed).
    """
    mus = np.asarray(mus, np.float64).ravel()
    sigmas = np.asarray(sigmas, np.float64).ravel()
    if mus.size == 0 or np.any(~np.isfinite(mus)):
        raise ValueError("mu: give at least one finite value")
    if sigmas.size == 0 or np.any(~np.isfinite(sigmas)) or np.any(sigmas <= 0):
        raise ValueError("sigma: give at least one value, all positive and finite")
    mu, sigma = (a.ravel() for a in np.meshgrid(mus, sigmas, indexing="ij"))
    nan = np.full(mu.shape, np.nan)
    ids = [f"mu={m:g},sigma={s:g}" for m, s in zip(mu, sigma, strict=True)]
    return Population(mu, sigma, nan, nan.copy(), ids, "grid")


def math_train(path: str | os.PathLike | None = None) -> Population:
    """The 4,501 MATH training questions: PRM score mean/std per question, moment-matched.

    Args:
        path: a JSONL file with `prm_mean`, `prm_std` (and `unique_id`) per line; default the
            copy shipped with optscale_jax (`math_train_prm_stats.jsonl`, MIT, OptScale
            authors).

    Returns:
        The population; `mean`/`std` keep the observed PRM statistics.
    """
    if path is None:
        from optscale_jax import datasets

        path = datasets.data_path(datasets.MATH_TRAIN_PRM_STATS)
    means, stds, ids = [], [], []
    for number, record in iter_jsonl(path):
        try:
            mean, std = float(record["prm_mean"]), float(record["prm_std"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}:{number}: need numbers prm_mean, prm_std ({error})") from None
        if not (0 < mean < 1 and std > 0 and math.isfinite(std)):
            raise ValueError(f"{path}:{number}: prm_mean must be in (0, 1), prm_std > 0")
        means.append(mean)
        stds.append(std)
        ids.append(str(record.get("unique_id", number)))
    if not means:
        raise ValueError(f"{path}: no questions")
    mean, std = np.array(means), np.array(stds)
    mu, sigma = moment_match(mean, std)
    return Population(mu, sigma, mean, std, ids, "math")


def read_table(path: str | os.PathLike) -> Population:
    """A user table of questions: CSV (header row) or JSONL, with columns `mu`, `sigma`.

    An optional `id` column names the questions. `.jsonl`/`.json` files are JSON lines; any
    other suffix is read as CSV.

    Args:
        path: the table.

    Returns:
        The population; `mean`/`std` are NaN.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and line of a bad row.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"population table {path} does not exist")
    if path.suffix in (".jsonl", ".json"):
        rows = list(iter_jsonl(path))
    else:
        # Line 1 is the header.
        rows = list(enumerate(read_csv(path, required=("mu", "sigma")), 2))
    mus, sigmas, ids = [], [], []
    for number, row in rows:
        try:
            mu, sigma = float(row["mu"]), float(row["sigma"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}:{number}: need numbers mu and sigma") from None
        if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"{path}:{number}: mu must be finite and sigma positive")
        mus.append(mu)
        sigmas.append(sigma)
        ids.append(str(row.get("id") or f"{path.stem}-{len(ids)}"))
    if not mus:
        raise ValueError(f"{path}: no rows")
    nan = np.full(len(mus), np.nan)
    return Population(np.array(mus), np.array(sigmas), nan, nan.copy(), ids, str(path))


# Populations known by name (`load`); any other name is a path to a table.
NAMED: dict[str, Callable[[], Population]] = {"math": math_train}


def load(spec: str) -> Population:
    """A population by name (`math`: the shipped MATH train statistics) or a path to a table.

    Args:
        spec: a key of `NAMED`, or a CSV/JSONL path (see `read_table`).

    Returns:
        The population.
    """
    if spec in NAMED:
        return NAMED[spec]()
    return read_table(spec)


def resample(population: Population, size: int, seed: int) -> Population:
    """`size` questions drawn with replacement (numpy Generator seeded by `seed`)."""
    index = np.random.default_rng(seed).integers(0, len(population), size)
    return population.take(index)


def noisy_prior(
    mu: np.ndarray, sigma: np.ndarray, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Prior centres a predictor with error `noise` would give: true value + N(0, noise^2).

    The mu noise is drawn first, then the sigma noise; sigma's centre is kept at or above
    1e-3 (the core's lower bound).

    Args:
        mu: true locations `[Q]`.
        sigma: true scales `[Q]`.
        noise: standard deviation of the error (>= 0).
        rng: the generator the noise is drawn from.

    Returns:
        (prior_mu, prior_sigma), each `[Q]`.
    """
    prior_mu = mu + noise * rng.standard_normal(len(mu))
    prior_sigma = np.maximum(sigma + noise * rng.standard_normal(len(mu)), 1e-3)
    return prior_mu, prior_sigma
