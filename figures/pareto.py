"""The pareto figure: accuracy against mean cost per question for every method of a replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from optscale_jax.figures._axes import (
    REFERENCE_DASHES,
    legend_height,
    log_axis_if_wide,
    minor_decade_label,
    plain_log_ticks,
)
from optscale_jax.figures._table import (
    Row,
    choose_split,
    flag_column,
    in_split,
    numeric_column,
    text_column,
)
from optscale_jax.figures.style import (
    GREY,
    MethodStyle,
    is_best_of_n,
    is_oracle,
    method_order,
    method_style,
    new_figure,
    styled,
)


class _Settings(NamedTuple):
    """One split of results.csv: a row per setting of a method; accuracies in percent."""

    split: str
    methods: np.ndarray  # object [P]
    accuracy: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    cost: np.ndarray
    cost_low: np.ndarray  # NaN when the file has no cost CI
    cost_high: np.ndarray
    n: np.ndarray  # NaN for methods without a fixed n
    selected: np.ndarray  # bool [P]: the setting chosen on dev
    unit: str  # "tokens", "samples", or "cost" when unknown or mixed


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (lower cost, higher accuracy), by rising cost.

    A point is on the front if no other point costs at most as much and is strictly more
    accurate, or costs strictly less and is at least as accurate.

    Args:
        cost: [P] mean cost per question.
        accuracy: [P] accuracy.

    Returns:
        int array of indices into the inputs, sorted by cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(cost) & np.isfinite(accuracy))
    # Sort by cost, ties by accuracy descending, so the first of a cost level is its best.
    order = valid[np.lexsort((-accuracy[valid], cost[valid]))]
    front = []
    best = -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.array(front, dtype=np.int64)


@styled
def pareto_figure(
    rows: Sequence[Row], split: str | None = None, source: str = "results.csv"
) -> Figure:
    """Accuracy against mean cost per question for every method of a replay.

    Fixed-N Best-of-N is a curve over n with its 95% CI as a band; every other setting of
    every method is a small dot; the setting chosen on the dev split (`selected`) is a large
    marker with 95% CI bars for accuracy and, when the file has them, for cost. Without a
    selection (`--split none` replays) each method's own non-dominated settings get CI bars.
    The dashed line is the Pareto front over all settings of all methods except the oracle.

    Args:
        rows: rows of results.csv (columns at least `PARETO_COLUMNS`).
        split: which split to draw (default: "test", else "all", else the first).
        source: file name for error messages.

    Returns:
        The figure (single column wide).
    """
    data = _read_settings(rows, split, source)
    ordered = method_order(list(data.methods))
    figure = new_figure("single", 2.35 + legend_height(len(ordered) + 1, 2))
    ax = figure.add_subplot()
    _draw_front(ax, data)
    any_selected = bool(data.selected.any())
    for method in ordered:
        index = np.flatnonzero(data.methods == method)
        if is_oracle(method):
            _draw_oracle(ax, data, index, method_style(method))
        elif is_best_of_n(method):
            _draw_best_of_n(ax, data, index, method_style(method))
        else:
            _draw_method(ax, data, index, method_style(method), any_selected)
    _label_axes(ax, data, any_selected)
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    return figure


def _read_settings(rows: Sequence[Row], split: str | None, source: str) -> _Settings:
    """The rows of the split to draw, as arrays."""
    split = choose_split(rows, split, source)
    # Parse every row (so a bad cell is reported with its file line), then keep the split.
    keep = in_split(rows, split)
    names = ("accuracy", "ci_low", "ci_high", "mean_cost", "cost_ci_low", "cost_ci_high", "n")
    columns = {name: numeric_column(rows, name, source)[keep] for name in names}
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    units = sorted({row.get("cost_unit", "") or "" for row in rows} - {""})
    return _Settings(
        split=split,
        methods=text_column(rows, "method"),
        accuracy=100 * columns["accuracy"],
        ci_low=100 * columns["ci_low"],
        ci_high=100 * columns["ci_high"],
        cost=columns["mean_cost"],
        cost_low=columns["cost_ci_low"],
        cost_high=columns["cost_ci_high"],
        n=columns["n"],
        selected=flag_column(rows, "selected"),
        unit=units[0] if len(units) == 1 else "cost",
    )


def _draw_front(ax: Axes, data: _Settings) -> None:
    """The dashed Pareto front over every setting of every method but the oracle."""
    candidates = np.flatnonzero([not is_oracle(m) for m in data.methods])
    front = candidates[pareto_front(data.cost[candidates], data.accuracy[candidates])]
    if front.size:
        ax.step(
            data.cost[front],
            data.accuracy[front],
            where="post",
            color=GREY,
            linestyle=REFERENCE_DASHES,
            linewidth=0.9,
            zorder=1,
            label="Pareto front",
        )


def _draw_oracle(ax: Axes, data: _Settings, index: np.ndarray, style: MethodStyle) -> None:
    """The pass@n oracle: a reference, not a method, so a dotted curve over n, no highlight."""
    index = index[np.argsort(data.cost[index], kind="stable")]
    ax.plot(
        data.cost[index],
        data.accuracy[index],
        color=style.color,
        linestyle=(0, (1, 1.5)),
        marker=style.marker,
        markersize=3.5,
        linewidth=1.0,
        zorder=3,
        label=style.label,
    )


def _draw_best_of_n(ax: Axes, data: _Settings, index: np.ndarray, style: MethodStyle) -> None:
    """Fixed-N Best-of-N: a curve over n with its CI band, the chosen n highlighted."""
    # Sort by n when the file has it, else by cost.
    key = data.n[index] if np.isfinite(data.n[index]).all() else data.cost[index]
    index = index[np.argsort(key, kind="stable")]
    ax.fill_between(
        data.cost[index],
        data.ci_low[index],
        data.ci_high[index],
        color=style.color,
        alpha=0.12,
        linewidth=0,
        zorder=2,
    )
    ax.plot(
        data.cost[index],
        data.accuracy[index],
        color=style.color,
        marker="o",
        markersize=2,
        linewidth=1.0,
        zorder=3,
        label=style.label,
    )
    chosen = index[data.selected[index]]
    if chosen.size:
        _draw_highlight(ax, data, chosen, style._replace(marker="o"))


def _draw_method(
    ax: Axes, data: _Settings, index: np.ndarray, style: MethodStyle, any_selected: bool
) -> None:
    """Any other method: every setting a small dot, the chosen (or non-dominated) ones large.

    Without a selection in the file, the method's own front is drawn and highlighted.
    """
    cost, accuracy = data.cost, data.accuracy
    if np.isfinite(data.n[index]).all():
        # A fixed-N method (voting over n samples): a thin curve over n.
        by_n = index[np.argsort(data.n[index], kind="stable")]
        ax.plot(cost[by_n], accuracy[by_n], color=style.color, linewidth=0.7, alpha=0.6, zorder=4)
    ax.plot(
        cost[index],
        accuracy[index],
        linestyle="none",
        marker=style.marker,
        markersize=2.5,
        color=style.color,
        alpha=0.35,
        markeredgewidth=0,
        zorder=4,
    )
    if any_selected:
        chosen = index[data.selected[index]]
    else:
        chosen = index[pareto_front(cost[index], accuracy[index])]
        ax.plot(
            cost[chosen], accuracy[chosen], color=style.color, linewidth=0.7, alpha=0.8, zorder=4
        )
    if chosen.size:
        _draw_highlight(ax, data, chosen, style)
    # Legend handle: the marker as drawn for the highlighted setting.
    ax.plot([], [], linestyle="none", label=style.label, **_highlight_marker(style, 5))


def _highlight_marker(style: MethodStyle, size: float) -> dict:
    """Marker keywords of a highlighted (chosen) setting."""
    return {
        "marker": style.marker,
        "markersize": size,
        "color": style.color,
        "markeredgecolor": "black",
        "markeredgewidth": 0.5,
    }


def _draw_highlight(ax: Axes, data: _Settings, index: np.ndarray, style: MethodStyle) -> None:
    """Large markers with 95% CI bars for accuracy and, when the file has them, for cost."""
    cost, accuracy = data.cost[index], data.accuracy[index]
    xerr = None
    if np.isfinite(data.cost_low[index]).all() and np.isfinite(data.cost_high[index]).all():
        xerr = np.clip(
            np.vstack([cost - data.cost_low[index], data.cost_high[index] - cost]), 0, None
        )
    yerr = np.clip(
        np.vstack([accuracy - data.ci_low[index], data.ci_high[index] - accuracy]), 0, None
    )
    ax.errorbar(
        cost,
        accuracy,
        xerr=xerr,
        yerr=yerr,
        fmt="none",
        ecolor=style.color,
        elinewidth=0.8,
        capsize=1.5,
        zorder=6,
    )
    ax.plot(cost, accuracy, linestyle="none", zorder=7, **_highlight_marker(style, 5.5))


def _label_axes(ax: Axes, data: _Settings, any_selected: bool) -> None:
    """Log cost axis when costs are wide apart, axis labels, and the title."""
    costs = np.concatenate([data.cost, data.cost_low, data.cost_high])
    # Tokens span decades (base-10 ticks); sample counts are powers of two (base 2).
    if log_axis_if_wide(ax.set_xscale, costs, base=2 if data.unit == "samples" else 10):
        plain_log_ticks(ax.xaxis)
        if data.unit != "samples":
            ax.xaxis.set_minor_formatter(FuncFormatter(minor_decade_label))
    unit_text = {"tokens": "generated tokens", "samples": "samples"}.get(data.unit, data.unit)
    ax.set_xlabel(f"mean cost per question ({unit_text})")
    ax.set_ylabel("accuracy (%)")
    note = "large markers: setting chosen on dev" if any_selected else "lines: each method's front"
    ax.set_title(f"split: {data.split}; {note}", fontsize=7, loc="left")
