"""The Learn-then-Test figure: violation rate against delta, cost against epsilon."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optscale_jax.figures._axes import REFERENCE_DASHES, Z95, legend_height, plain_log_ticks
from optscale_jax.figures._table import Row, numeric_column, text_column
from optscale_jax.figures.style import GREY, SERIES_COLORS, SERIES_MARKERS, new_figure, styled

# Line style of each LTT method in the cost panel (others: solid).
_METHOD_DASHES = {"ltt-optscale0": "-", "ltt-bon": (0, (4, 1.5))}
# The delta of the cost panel: the one closest to this.
_COST_DELTA = 0.1


class _Cells(NamedTuple):
    """calibration.csv as arrays, a row per (population, rho, n_cal, method, risk, eps, delta)."""

    population: np.ndarray  # object
    rho: np.ndarray
    method: np.ndarray  # object
    risk: np.ndarray  # object
    epsilon: np.ndarray
    delta: np.ndarray
    n_cal: np.ndarray
    violation_rate: np.ndarray
    violation_se: np.ndarray
    mean_cost: np.ndarray

    @property
    def ltt(self) -> np.ndarray:
        return np.array([str(m).startswith("ltt-") for m in self.method], dtype=bool)


@styled
def calibration_ltt_figure(
    rows: Sequence[Row], source: str = "calibration.csv", risk: str | None = None
) -> Figure:
    """How often Learn-then-Test's guarantee fails, and what it costs, per population.

    Left: per population (and copula rho) and delta, the largest violation rate over every
    LTT cell (method, risk, epsilon, n_cal) with its 95% Monte Carlo bar; the guarantee is
    violation rate <= delta (dashed diagonal). Hollow markers at delta = 0: OptScale0's
    nominal promise (made with certainty), the largest share of its settings that miss
    their alpha. Right: mean samples of the LTT-chosen setting against epsilon, at the
    largest n_cal and the delta closest to 0.1, one line style per method.

    Args:
        rows: rows of calibration.csv (`optscale simulate calibration`).
        source: file name for error messages.
        risk: the risk of the cost panel (default: the file's first LTT risk).

    Returns:
        The figure (double column wide).
    """
    cells = _read_cells(rows, source)
    ltt = cells.ltt
    if not ltt.any():
        raise ValueError(f"{source}: no Learn-then-Test rows (method ltt-...)")
    risks = list(dict.fromkeys(cells.risk[ltt]))
    risk = risks[0] if risk is None else risk
    if risk not in risks:
        raise ValueError(f"risk: {risk!r} not in {source} (risks: {', '.join(risks)})")
    series = list(dict.fromkeys(zip(cells.population, cells.rho, strict=True)))
    methods = list(dict.fromkeys(cells.method[ltt]))
    figure = new_figure("double", 2.5 + legend_height(len(series) + len(methods) + 2, 4))
    left, right = figure.subplots(1, 2)
    for i, (population, rho) in enumerate(series):
        in_series = (cells.population == population) & (cells.rho == rho)
        look = {"color": SERIES_COLORS[i % len(SERIES_COLORS)],
                "marker": SERIES_MARKERS[i % len(SERIES_MARKERS)]}  # fmt: skip
        label = population if rho == 0 else f"{population}, $\\rho={rho:g}$"
        _draw_violations(left, cells, in_series, look, label, i - (len(series) - 1) / 2)
        _draw_costs(right, cells, in_series & ltt & (cells.risk == risk), look, methods)
    _finish_violations(left, cells)
    _finish_costs(right, cells, risk, methods)
    handles, labels = left.get_legend_handles_labels()
    more_handles, more_labels = right.get_legend_handles_labels()
    figure.legend(handles + more_handles, labels + more_labels, loc="outside lower center", ncols=4)
    return figure


def _read_cells(rows: Sequence[Row], source: str) -> _Cells:
    names = ("rho", "epsilon", "delta", "n_cal", "violation_rate", "violation_se", "mean_cost")
    numbers = {name: numeric_column(rows, name, source) for name in names}
    text = {name: text_column(rows, name) for name in ("population", "method", "risk")}
    return _Cells(**text, **numbers)


def _draw_violations(
    ax: Axes, cells: _Cells, in_series: np.ndarray, look: dict, label: str, dodge: float
) -> None:
    """Per delta, the worst LTT cell of the series; OptScale0's nominal at delta = 0."""
    ltt = in_series & cells.ltt
    deltas = np.unique(cells.delta[ltt])
    worst = [np.flatnonzero(ltt & (cells.delta == d)) for d in deltas]
    worst = np.array([index[np.argmax(cells.violation_rate[index])] for index in worst])
    x = cells.delta[worst] + 0.002 * dodge
    y = cells.violation_rate[worst]
    ax.errorbar(
        x, y, yerr=Z95 * cells.violation_se[worst], fmt="none", ecolor=look["color"],
        elinewidth=0.7, capsize=1.2,
    )  # fmt: skip
    ax.plot(x, y, color=look["color"], marker=look["marker"], markersize=3.5, linewidth=0.9,
            label=label)  # fmt: skip
    nominal = np.flatnonzero(in_series & ~cells.ltt)
    if nominal.size:
        ax.plot(
            [0.002 * dodge], [cells.violation_rate[nominal].max()], linestyle="none",
            marker=look["marker"], markersize=4, markerfacecolor="none",
            markeredgecolor=look["color"],
        )  # fmt: skip


def _finish_violations(ax: Axes, cells: _Cells) -> None:
    top = float(cells.delta.max())
    ax.plot([0, top], [0, top], color=GREY, linestyle=REFERENCE_DASHES, linewidth=0.9,
            label=r"violation rate $=\delta$")  # fmt: skip
    if (~cells.ltt).any():
        ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none",
                markeredgecolor=GREY, label=r"OptScale0 nominal ($\delta = 0$)")  # fmt: skip
    ax.set_xlim(-0.01, top * 1.08)
    ax.set_ylim(-0.02, max(1.0, float(np.nanmax(cells.violation_rate))) + 0.03)
    ax.set_xlabel(r"error level $\delta$")
    ax.set_ylabel("violation rate")
    ax.set_title("worst cell per population (LTT); share of settings failing (nominal)",
                 loc="left", fontsize=7)  # fmt: skip


def _cost_cells(cells: _Cells, index: np.ndarray) -> np.ndarray:
    """The cells of the cost panel among `index`: largest n_cal, delta closest to 0.1."""
    if not index.size:
        return index
    index = index[cells.n_cal[index] == cells.n_cal[index].max()]
    deltas = np.unique(cells.delta[index])
    delta = deltas[np.argmin(np.abs(deltas - _COST_DELTA))]
    return index[cells.delta[index] == delta]


def _draw_costs(
    ax: Axes, cells: _Cells, in_panel: np.ndarray, look: dict, methods: list[str]
) -> None:
    for method in methods:
        index = _cost_cells(cells, np.flatnonzero(in_panel & (cells.method == method)))
        index = index[np.argsort(cells.epsilon[index])]
        ax.plot(
            cells.epsilon[index], cells.mean_cost[index], color=look["color"],
            marker=look["marker"], markersize=3, linewidth=0.9,
            linestyle=_METHOD_DASHES.get(method, "-"),
        )  # fmt: skip


def _finish_costs(ax: Axes, cells: _Cells, risk: str, methods: list[str]) -> None:
    for method in methods:
        ax.plot([], [], color=GREY, linewidth=0.9, linestyle=_METHOD_DASHES.get(method, "-"),
                label=method)  # fmt: skip
    panel = _cost_cells(cells, np.flatnonzero(cells.ltt & (cells.risk == risk)))
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xticks(np.unique(cells.epsilon[panel]))
    ax.set_xlabel(r"target risk $\epsilon$")
    ax.set_ylabel("mean samples per question")
    n_cal, delta = cells.n_cal[panel][0], cells.delta[panel][0]
    ax.set_title(f"{risk}, $n_{{cal}}={n_cal:g}$, $\\delta={delta:g}$", loc="left", fontsize=7)
