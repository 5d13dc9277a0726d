"""The budget methods in a replay: their checks against the log, and the summary at equal budget.

The budget methods (`BUDGET_METHODS`: the wave allocation `budget` and its baselines
`budget-uniform`, `budget-elimination`, `budget-optscale0`, and the ceiling `budget-oracle`)
spend a mean budget per question within each reported question set (`question_groups`), so
every row's mean samples (or tokens) stays within its budget. None of them reads a label to
choose what it draws, so they are compared on all the questions of the log: `budget_summary`
gives each one's accuracy per budget, and `vs_uniform` the accuracy of `budget` minus that of
fixed-N Best-of-N at the same budget, with a paired bootstrap CI over questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from optscale_jax.replay.config import ReplayConfig
from optscale_jax.replay.methods import METHOD_TABLE, BudgetOptions, Setting
from optscale_jax.replay.orders import Outcomes
from optscale_jax.replay.selection import bootstrap_ci
from optscale_jax.replay.splits import Split

CEILING_NOTE = "knows each sample's correctness: a ceiling, not a method"


def check_budget_log(log: Any, config: ReplayConfig, methods: Sequence[str], max_n: int) -> None:
    """What the budget methods need from the log: scores for the objective, tokens for a
    budget in tokens, and budgets in samples within [m0, max_n].

    Raises:
        ValueError: naming the argument (objective, budget_unit, budget).
    """
    spending = [m for m in methods if METHOD_TABLE[m].spends_budget]
    if not spending:
        return
    if "budget" in spending and log.scores is None:
        raise ValueError(
            f"objective: {config.objective} needs scores (the fitted score laws), and the log "
            "has none"
        )
    if config.budget_unit == "tokens":
        if log.tokens is None:
            raise ValueError("budget_unit: tokens needs token counts, and the log has none")
        samples_only = [m for m in spending if "tokens" not in METHOD_TABLE[m].budget_units]
        if samples_only:
            raise ValueError(
                f"budget_unit: {', '.join(samples_only)} count samples, not tokens "
                "(use budget_unit='samples', or leave them out)"
            )
        return
    m0 = BudgetOptions().m0
    for budget in config.budget:
        if budget < m0:
            raise ValueError(
                f"budget must be >= m0 ({m0}): every question starts with m0 samples, "
                f"got {budget:g}"
            )
        if budget > max_n:
            raise ValueError(f"budget must be <= max_n ({max_n}), got {budget:g}")


def with_compared(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods, followed by those they are compared with (`Method.compared_with`)."""
    compared = [METHOD_TABLE[m].compared_with for m in methods]
    extra = [m for m in dict.fromkeys(compared) if m is not None and m not in methods]
    return (*methods, *extra)


def question_groups(splits: Sequence[Split], questions: int) -> np.ndarray:
    """int `[Q]`: the question set each question is reported in (0: the selection questions
    of a dev-test split; i + 1: the questions split i reports)."""
    groups = np.zeros(questions, np.int64)
    for index, split in enumerate(splits):
        groups[split.report] = index + 1
    return groups


def budget_summary(
    settings: Sequence[Setting], out: Outcomes, config: ReplayConfig, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every budget method at every budget on all questions, and `budget` against uniform.

    Args:
        settings: the replay's settings (rows of `out`).
        out: the replay's outcomes, `[S, Q]`.
        config: the replay's configuration.
        seed: seed of the bootstrap (paired across the rows).

    Returns:
        (summary.json's `budget` block, its `vs_uniform` list: per budget the accuracy of
        `budget` minus that of `budget-uniform`, with a paired bootstrap CI over questions).
    """
    rows = [i for i, s in enumerate(settings) if METHOD_TABLE[s.method].spends_budget]
    accuracy = bootstrap_ci(out.correct[rows], config.bootstrap, seed)
    figures = [
        {
            "budget": settings[i].budget,
            "method": settings[i].method,
            "setting": settings[i].label,
            "accuracy": float(accuracy[0][j]),
            "ci": [float(accuracy[1][j]), float(accuracy[2][j])],
            "mean_samples": float(out.samples[i].mean()),
            "mean_cost": float(out.cost[i].mean()),
        }
        for j, i in enumerate(rows)
    ]
    block = {
        "questions": int(out.correct.shape[-1]),
        "unit": config.budget_unit,
        "objective": config.objective,
        "wave": config.wave,
        "m0": BudgetOptions().m0,
        "s_min": config.budget_s_min,
        "ceilings": {
            m: CEILING_NOTE
            for m in dict.fromkeys(f["method"] for f in figures)
            if METHOD_TABLE[m].ceiling
        },  # fmt: skip
        "figures": figures,
    }
    return block, _vs_uniform(settings, out, config, seed)


def _vs_uniform(
    settings: Sequence[Setting], out: Outcomes, config: ReplayConfig, seed: int
) -> list[dict[str, Any]]:
    """Per budget: accuracy of `budget` minus `budget-uniform`'s, paired bootstrap CI."""
    compared = METHOD_TABLE["budget"].compared_with
    row_of = {(s.method, s.budget): i for i, s in enumerate(settings)}
    budgets = [b for b in config.budget if ("budget", b) in row_of and (compared, b) in row_of]
    if not budgets:
        return []
    difference = np.stack(
        [out.correct[row_of["budget", b]] - out.correct[row_of[compared, b]] for b in budgets]
    )
    mean, low, high = bootstrap_ci(difference, config.bootstrap, seed)
    return [
        {
            "budget": budget,
            "difference": float(mean[j]),
            "ci_low": float(low[j]),
            "ci_high": float(high[j]),
        }
        for j, budget in enumerate(budgets)
    ]
