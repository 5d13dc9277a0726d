"""The calibration figure: realised coverage of N* in the simulator's cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optscale_jax.figures._axes import (
    Z95,
    diagonal_floor,
    draw_diagonal,
    legend_height,
    square_unit_limits,
)
from optscale_jax.figures._table import Row, flag_column, numeric_column
from optscale_jax.figures.style import SERIES_COLORS, SERIES_MARKERS, new_figure, styled


class _Cells(NamedTuple):
    """coverage.csv as arrays, a row per simulated cell."""

    alpha: np.ndarray
    coverage: np.ndarray
    coverage_se: np.ndarray
    nominal: np.ndarray  # the model's own coverage 1 - F(s_min)^N*; NaN when absent
    rho: np.ndarray  # copula correlation; 0 (i.i.d.) when absent
    capped: np.ndarray  # bool: N* at the simulator's cap, left out
    families: np.ndarray  # object: score family, "truncnorm" when absent


@styled
def calibration_figure(rows: Sequence[Row], source: str = "coverage.csv") -> Figure:
    """Realised coverage P(max of N* scores >= s_min) of the simulator's cells.

    Left: against the target alpha. Per copula correlation rho (rho = 0: i.i.d.) and alpha,
    the median over the cells (mu, sigma, s_min) with a bar from the lowest to the highest
    cell; series are dodged sideways. Right (when the file has `nominal`): every cell
    against the model's own coverage 1 - F(s_min)^N* with its 95% Monte Carlo error bar
    (1.96 x coverage_se); the i.i.d. cells must lie on the diagonal, and the distance below
    it is what dependence costs. Cells whose N* hit the simulator's cap (`capped`) are left
    out: their target is unreachable by construction. With several score families, one row
    of panels per family.

    Args:
        rows: rows of coverage.csv (columns at least `CALIBRATION_COLUMNS`; `family`, `rho`,
            `nominal`, `capped` used when present).
        source: file name for error messages.

    Returns:
        The figure (double column wide).
    """
    cells = _read_cells(rows, source)
    kept = ~cells.capped
    family_names = list(dict.fromkeys(cells.families[kept]))
    if not family_names:
        raise ValueError(f"{source}: every cell has N* at the cap (column capped)")
    rho_values = sorted(set(cells.rho[kept].tolist()))
    has_nominal = bool(np.isfinite(cells.nominal[kept]).any())
    figure = new_figure(
        "double" if has_nominal else "single",
        2.45 * len(family_names) + legend_height(len(rho_values) + 1, 4 if has_nominal else 2),
    )
    axes = figure.subplots(len(family_names), 2 if has_nominal else 1, squeeze=False)
    for row_index, family in enumerate(family_names):
        in_family = (cells.families == family) & kept
        title = "median and range over cells"
        _draw_against_target(
            axes[row_index, 0],
            cells,
            in_family,
            rho_values,
            title if len(family_names) == 1 else f"{family}: {title}",
        )
        if has_nominal:
            _draw_against_model(axes[row_index, 1], cells, in_family, rho_values)
    excluded = int(cells.capped.sum())
    if excluded:
        figure.suptitle(
            f"{excluded} cell(s) with N* at the simulator's cap left out",
            fontsize=7,
            x=0.99,
            ha="right",
        )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=4 if has_nominal else 2)
    return figure


def _read_cells(rows: Sequence[Row], source: str) -> _Cells:
    names = ("alpha", "coverage", "coverage_se", "nominal", "rho")
    columns = {name: numeric_column(rows, name, source) for name in names}
    rho = columns.pop("rho")
    return _Cells(
        **columns,
        rho=np.where(np.isfinite(rho), rho, 0.0),
        capped=flag_column(rows, "capped"),
        families=np.array([row.get("family") or "truncnorm" for row in rows], dtype=object),
    )


def _rho_label(rho: float) -> str:
    if not np.isfinite(rho) or rho == 0:
        return r"i.i.d. ($\rho=0$)"
    return rf"$\rho={rho:g}$"


def _series_look(i: int) -> tuple[str, str]:
    """Colour and marker of the i-th rho series."""
    return SERIES_COLORS[i % len(SERIES_COLORS)], SERIES_MARKERS[i % len(SERIES_MARKERS)]


def _draw_against_target(
    ax: Axes, cells: _Cells, in_family: np.ndarray, rho_values: list[float], title: str
) -> None:
    """Left panel: per rho and target alpha, median and range of the cells' coverage."""
    alpha, coverage = cells.alpha, cells.coverage
    # Every family shares the alpha levels and the sideways dodge of the series.
    alpha_values = np.unique(alpha[~cells.capped])
    gaps = np.diff(alpha_values)
    dodge = 0.12 * (gaps.min() if gaps.size else 0.1) / max(len(rho_values) - 1, 1)
    low = diagonal_floor(np.concatenate([alpha[in_family], coverage[in_family]]))
    draw_diagonal(ax, low, label=r"coverage $=$ target")
    for i, value in enumerate(rho_values):
        color, marker = _series_look(i)
        in_series = in_family & (cells.rho == value)
        levels = [a for a in alpha_values if (in_series & (alpha == a)).any()]
        if not levels:
            continue
        stats = np.array(
            [np.percentile(coverage[in_series & (alpha == a)], [0, 50, 100]) for a in levels]
        )
        x = np.array(levels) + (i - (len(rho_values) - 1) / 2) * dodge
        ax.vlines(x, stats[:, 0], stats[:, 2], color=color, linewidth=0.8, alpha=0.8)
        ax.plot(
            x,
            stats[:, 1],
            color=color,
            marker=marker,
            markersize=3.5,
            linewidth=0.9,
            label=_rho_label(value),
        )
    square_unit_limits(ax, low)
    ax.set_xlabel(r"target $\alpha$")
    ax.set_ylabel("realised coverage")
    ax.set_title(title, loc="left", fontsize=7)


def _draw_against_model(
    ax: Axes, cells: _Cells, in_family: np.ndarray, rho_values: list[float]
) -> None:
    """Right panel: each cell against the model's coverage, with 95% Monte Carlo bars."""
    nominal, coverage = cells.nominal, cells.coverage
    low = diagonal_floor(np.concatenate([nominal[in_family], coverage[in_family]]))
    draw_diagonal(ax, low)
    for i, value in enumerate(rho_values):
        index = np.flatnonzero(in_family & (cells.rho == value) & np.isfinite(nominal))
        color, marker = _series_look(i)
        ax.errorbar(
            nominal[index], coverage[index], yerr=Z95 * cells.coverage_se[index], fmt="none",
            ecolor=color, elinewidth=0.7, capsize=1.2, alpha=0.8,
        )  # fmt: skip
        ax.plot(
            nominal[index], coverage[index], linestyle="none", color=color, marker=marker,
            markersize=3,
        )  # fmt: skip
    square_unit_limits(ax, low)
    ax.set_xlabel(r"model coverage $1 - F(s_{\min})^{N^*}$")
    ax.set_ylabel("realised coverage")
    ax.set_title("each cell, 95% Monte Carlo error bars", loc="left", fontsize=7)
