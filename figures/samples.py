"""The samples figure: how many samples each method drew per question, as empirical CDFs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from optscale_jax.figures._axes import legend_height, log_axis_if_wide, plain_log_ticks
from optscale_jax.figures._table import (
    Row,
    choose_split,
    in_split,
    numeric_column,
    text_column,
)
from optscale_jax.figures.style import is_oracle, method_order, method_style, new_figure, styled


@styled
def samples_figure(
    rows: Sequence[Row], split: str | None = None, source: str = "per_question.csv"
) -> Figure:
    """Distribution of the samples drawn per question, per method, as empirical CDFs.

    Args:
        rows: rows of per_question.csv (columns at least `SAMPLES_COLUMNS`).
        split: split to draw (default "test", else "all").
        source: file name for error messages.

    Returns:
        The figure (single column wide); legend labels carry each method's mean.
        Fixed-N methods (one value for every question) are dashed so that several of
        them on the same n stay visible.
    """
    split = choose_split(rows, split, source)
    keep = in_split(rows, split)
    samples = numeric_column(rows, "samples", source)[keep]
    methods = text_column([row for row, kept in zip(rows, keep, strict=True) if kept], "method")
    ordered = [m for m in method_order(list(methods)) if not is_oracle(m)]
    figure = new_figure("single", 2.45 + legend_height(len(ordered), 2))
    ax = figure.add_subplot()
    constant = 0
    for method in ordered:
        style = method_style(method)
        values = np.sort(samples[(methods == method) & np.isfinite(samples)])
        if not values.size:
            continue
        fraction = np.arange(1, values.size + 1) / values.size
        linestyle = "-"
        if values[0] == values[-1]:
            # Fixed-N methods share one vertical line: interleaved dashes keep each visible.
            linestyle = (2.0 * constant, (2.0, 4.0))
            constant = (constant + 1) % 3
        # Start the step at the smallest value at height 0 so a constant shows as a jump.
        ax.step(
            np.concatenate([values[:1], values]),
            np.concatenate([[0.0], fraction]),
            where="post",
            color=style.color,
            linestyle=linestyle,
            linewidth=1.1,
            label=f"{style.label}: {values.mean():.3g}",
        )
    if log_axis_if_wide(ax.set_xscale, samples):
        plain_log_ticks(ax.xaxis)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("samples drawn per question")
    ax.set_ylabel("fraction of questions")
    ax.set_title(f"split: {split}", fontsize=7, loc="left")
    figure.legend(loc="outside lower center", ncols=2, title="method: mean samples per question")
    return figure
