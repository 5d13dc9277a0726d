"""Question splits: which questions choose a setting and which report it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """One evaluation split: settings are chosen on `select`, reported on `report`."""

    name: str
    select: np.ndarray
    report: np.ndarray


def parse_split(split: str) -> tuple[str, int]:
    """'dev-test' | 'none' | 'kfold:K' -> (kind, K); ValueError naming `split` otherwise."""
    if split in ("dev-test", "none"):
        return split, 0
    if split.startswith("kfold:"):
        try:
            folds = int(split.split(":", 1)[1])
        except ValueError:
            folds = 0
        if folds >= 2:
            return "kfold", folds
    raise ValueError(f"split: expected dev-test, none or kfold:K with K >= 2, got {split!r}")


def make_splits(num_questions: int, split: str, seed: int) -> list[Split]:
    """Question index sets for selection and reporting.

    Args:
        num_questions: Q.
        split: "dev-test" (seeded 50/50: select on dev, report on test), "kfold:K" (each fold
            reported with settings chosen on the other folds) or "none" (one split "all",
            selection in-sample).
        seed: seed of the shuffle.

    Returns:
        Splits; for "dev-test" one Split("test", dev, test).
    """
    kind, folds = parse_split(split)
    everything = np.arange(num_questions)
    if kind == "none":
        return [Split("all", everything, everything)]
    shuffled = np.random.default_rng(seed).permutation(num_questions)
    if kind == "dev-test":
        if num_questions < 2:
            raise ValueError("split dev-test needs at least 2 questions")
        half = num_questions // 2
        return [Split("test", np.sort(shuffled[:half]), np.sort(shuffled[half:]))]
    if num_questions < folds:
        raise ValueError(f"split kfold:{folds} needs at least {folds} questions")
    parts = np.array_split(shuffled, folds)
    return [
        Split(f"fold{i + 1}", np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(part))
        for i, part in enumerate(parts)
    ]
