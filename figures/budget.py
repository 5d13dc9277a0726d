"""The budget figure: reach rate against samples spent per question, one panel per population."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from optscale_jax.figures._axes import Z95, legend_height, plain_log_ticks
from optscale_jax.figures._table import Row, numeric_column, text_column
from optscale_jax.figures.style import SERIES_COLORS, SERIES_MARKERS, new_figure, styled

# Legend order of the methods of `optscale simulate budget` (others follow, by name).
_METHOD_ORDER = (
    "uniform", "elimination", "optscale0", "allocation", "allocation-map",
    "allocation-true-params",
)  # fmt: skip
# The allocation with true parameters is a reference (it knows each question's law): dashed.
_REFERENCE_METHODS = ("allocation-true-params",)


@styled
def budget_figure(rows: Sequence[Row], source: str = "budget.csv") -> Figure:
    """Fraction of questions whose best score reaches s_min against the samples spent.

    One panel per population, one line per method with 95% Monte Carlo bars
    (`reach_se`), one point per budget at the mean samples the method actually drew
    (elimination stops once every question has reached s_min; OptScale0 spends what its
    tuned alpha gives); the allocation with true parameters is dashed (a reference: it knows
    each question's score law).

    Args:
        rows: rows of budget.csv (`optscale simulate budget`).
        source: file name for error messages.

    Returns:
        The figure (double column wide).
    """
    budget = numeric_column(rows, "budget", source)
    spent = numeric_column(rows, "mean_samples", source)
    reach = numeric_column(rows, "reach_rate", source)
    reach_se = numeric_column(rows, "reach_se", source)
    population = text_column(rows, "population")
    method = text_column(rows, "method")
    found = list(dict.fromkeys(method))
    methods = [m for m in _METHOD_ORDER if m in found] + sorted(set(found) - set(_METHOD_ORDER))
    panels = list(dict.fromkeys(population))
    figure = new_figure("double", 2.4 + legend_height(len(methods), 3))
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, name in zip(axes, panels, strict=True):
        for i, kind in enumerate(methods):
            index = np.flatnonzero((population == name) & (method == kind))
            index = index[np.argsort(budget[index], kind="stable")]
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            ax.errorbar(
                spent[index], reach[index], yerr=Z95 * reach_se[index], color=color,
                marker=SERIES_MARKERS[i % len(SERIES_MARKERS)], markersize=3.0, linewidth=0.9,
                elinewidth=0.6, capsize=1.0,
                linestyle=(0, (4, 1.5)) if kind in _REFERENCE_METHODS else "-",
                label=kind if ax is axes[0] else None,
            )  # fmt: skip
        ax.set_xscale("log", base=2)
        plain_log_ticks(ax.xaxis)
        ax.set_title(name)
        ax.set_xlabel("samples per question (mean)")
    axes[0].set_ylabel(r"reach rate, $P(\max \geq s_{\min})$")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3)
    return figure
