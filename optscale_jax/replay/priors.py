"""The per-question prior of OptScalet: from the log, empirical Bayes, a file or one pair."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from optscale_jax.replay.methods import Prior


def resolve_prior(
    log: Any,
    spec: str | None,
    select: Sequence[np.ndarray],
    report: Sequence[np.ndarray],
    prior_scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], str]:
    """Per-question prior centres for OptScalet.

    Args:
        log: the Log.
        spec: "log", "eb", a JSONL path of {id, mu, sigma}, "mu,sigma", or None (auto).
        select: per split, the selection questions (the empirical-Bayes prior of a split's
            reported questions is fitted on its selection questions only).
        report: per split, the reported questions.
        prior_scale: prior standard deviations (replaced by the fitted ones for "eb").

    Returns:
        (mu [Q], sigma [Q], (mu_scale [Q], sigma_scale [Q]), description).
    """
    if spec is None:
        spec = "log" if _has_log_prior(log) else "eb"
    if spec == "log":
        return (*_log_prior(log, prior_scale), "log")
    if spec == "eb":
        return (*_empirical_bayes_prior(log, select, report), "eb")
    scales = _per_question(prior_scale, len(log.ids))
    if "," in spec and not pathlib.Path(spec).exists():
        mu, sigma = _parse_pair(spec)
        return np.full(len(log.ids), mu), np.full(len(log.ids), sigma), scales, spec
    return (*read_prior_file(spec, log.ids), scales, pathlib.Path(spec).name)


def _has_log_prior(log: Any) -> bool:
    return bool(
        log.prior_mu is not None
        and np.all(np.isfinite(log.prior_mu))
        and np.all(np.isfinite(log.prior_sigma))
    )


def _log_prior(log: Any, prior_scale: tuple[float, float]) -> Prior:
    if not _has_log_prior(log):
        missing = [
            log.ids[i]
            for i in range(len(log.ids))
            if log.prior_mu is None or not np.isfinite(log.prior_mu[i])
        ]
        raise ValueError(f"prior log: {log.source} has no prior for question(s) {missing[:5]}")
    return (
        np.asarray(log.prior_mu, float),
        np.asarray(log.prior_sigma, float),
        _per_question(prior_scale, len(log.ids)),
    )


def _empirical_bayes_prior(
    log: Any, select: Sequence[np.ndarray], report: Sequence[np.ndarray]
) -> Prior:
    """Each split's reported questions get the prior fitted on its selection questions;
    questions only ever selected on (dev) get the first split's."""
    from optscale_jax.empirical_bayes import fit_population_prior

    if log.scores is None:
        raise ValueError("prior eb needs scores in the log")
    centre = np.zeros((4, len(log.ids)))
    for fit_on, apply_to in reversed(list(zip(select, report, strict=True))):
        p = fit_population_prior(np.asarray(log.scores)[fit_on], np.asarray(log.mask)[fit_on])
        values = np.array([p.mu, p.sigma, p.mu_scale, p.sigma_scale], np.float64)[:, None]
        if apply_to is report[0]:
            centre[:] = values
        centre[:, apply_to] = values
    return centre[0], centre[1], (centre[2], centre[3])


def _parse_pair(spec: str) -> tuple[float, float]:
    """'mu,sigma' -> (mu, sigma)."""
    try:
        mu, sigma = (float(x) for x in spec.split(","))
    except ValueError:
        raise ValueError(
            f"prior: expected log, eb, a JSONL file or 'mu,sigma', got {spec!r}"
        ) from None
    if not sigma > 0:
        raise ValueError(f"prior: sigma must be > 0, got {sigma}")
    return mu, sigma


def _per_question(prior_scale: tuple[float, float], num: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(num, float(prior_scale[0])), np.full(num, float(prior_scale[1]))


def read_prior_file(path: str | pathlib.Path, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Priors from a JSONL file of {"id", "mu", "sigma"}, aligned to `ids`.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: naming file and line for malformed records or missing questions.
    """
    from optscale_jax.io import iter_jsonl

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prior: no such file {path}")
    table: dict[str, tuple[float, float]] = {}
    for line_number, record in iter_jsonl(path):
        try:
            key, mu, sigma = str(record["id"]), float(record["mu"]), float(record["sigma"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}:{line_number}: bad prior record ({error})") from None
        if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"{path}:{line_number}: mu must be finite and sigma > 0")
        table[key] = (mu, sigma)
    missing = [i for i in ids if i not in table]
    if missing:
        raise ValueError(f"{path}: no prior for question(s) {missing[:5]}")
    values = np.array([table[i] for i in ids], np.float64).reshape(len(ids), 2)
    return values[:, 0], values[:, 1]
