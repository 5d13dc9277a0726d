"""The table of figures: name -> the result file it reads, the columns it needs, what draws it.

Adding a figure is one entry here plus its draw function (a module of this package with a
`<name>_figure(rows, source=..., **options) -> Figure`, or `(**options)` for a figure that
reads nothing). `optscale_jax.figures.plots.plot_figure` and the `optscale plot` and
`optscale figures` commands all go through this table. It imports nothing heavy (the draw
function is named, and imported only when the figure is drawn), so the command line can
list the figures without loading matplotlib.
"""

from __future__ import annotations

from typing import NamedTuple

PARETO_COLUMNS = ("method", "split", "accuracy", "ci_low", "ci_high", "mean_cost")
SAMPLES_COLUMNS = ("method", "split", "question", "samples")
CALIBRATION_COLUMNS = ("alpha", "coverage", "coverage_se")
ESTIMATOR_COLUMNS = ("estimator", "n", "param", "rmse", "bias")
BUDGET_COLUMNS = ("population", "budget", "method", "mean_samples", "reach_rate", "reach_se")
DIAGNOSE_PIT_COLUMNS = ("id", "law", "sample", "score", "pit")
CALIBRATION_LTT_COLUMNS = (
    "population", "rho", "n_cal", "method", "risk", "epsilon", "delta", "mean_cost",
    "violation_rate", "violation_se",
)  # fmt: skip


class FigureKind(NamedTuple):
    """One figure of the set.

    Attributes:
        input_file: the result file it reads (the name looked for inside a directory), or
            None for a figure drawn from parameters alone.
        columns: the columns that file must have.
        draw: dotted path of the function that builds the `Figure`.
        description: one line on what it shows (the command's help).
    """

    input_file: str | None
    columns: tuple[str, ...]
    draw: str
    description: str


FIGURES: dict[str, FigureKind] = {
    "pareto": FigureKind(
        "results.csv",
        PARETO_COLUMNS,
        "optscale_jax.figures.pareto.pareto_figure",
        "accuracy vs mean cost per method, Pareto front, chosen settings",
    ),
    "nstar": FigureKind(
        None,
        (),
        "optscale_jax.figures.nstar.nstar_figure",
        "N* over (mu, sigma) and against alpha (no input)",
    ),
    "calibration": FigureKind(
        "coverage.csv",
        CALIBRATION_COLUMNS,
        "optscale_jax.figures.calibration.calibration_figure",
        "target alpha vs realised coverage of N* (simulator)",
    ),
    "samples": FigureKind(
        "per_question.csv",
        SAMPLES_COLUMNS,
        "optscale_jax.figures.samples.samples_figure",
        "distribution of samples drawn per question, per method",
    ),
    "estimator": FigureKind(
        "estimator.csv",
        ESTIMATOR_COLUMNS,
        "optscale_jax.figures.estimator.estimator_figure",
        "error of the MLE / MAP estimates against n",
    ),
    "calibration-ltt": FigureKind(
        "calibration.csv",
        CALIBRATION_LTT_COLUMNS,
        "optscale_jax.figures.calibration_ltt.calibration_ltt_figure",
        "Learn-then-Test: violation rate vs delta, cost vs epsilon (simulator)",
    ),
    "budget": FigureKind(
        "budget.csv",
        BUDGET_COLUMNS,
        "optscale_jax.figures.budget.budget_figure",
        "reach rate against samples per question, per method and budget (simulator)",
    ),
    "diagnose": FigureKind(
        "pit.csv",
        DIAGNOSE_PIT_COLUMNS,
        "optscale_jax.figures.diagnose.diagnose_figure",
        "PIT histogram per score law and PP panels of a few questions (optscale diagnose)",
    ),
}
