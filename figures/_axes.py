"""Axis and layout helpers shared by the figures: log axes with plain ticks, legend room."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

from optscale_jax.figures.style import GREY

# 95% normal quantile, for Monte Carlo error bars from standard errors.
Z95 = 1.959963984540054

# Dash pattern of reference lines: the Pareto front, the coverage = target diagonal.
REFERENCE_DASHES = (0, (3, 2))


def log_axis_if_wide(axis_setter: Callable[..., None], values: np.ndarray, base: int = 2) -> bool:
    """Switches an axis to log scale when its positive values span more than 8x."""
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 8:
        axis_setter("log", base=base)
        return True
    return False


def plain_number(value: float, _position: Any = None) -> str:
    """Tick text: 0.5, 8, 512, 2k, 16.4k (no powers-of-ten notation)."""
    if abs(value) >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:g}"


def plain_log_ticks(axis) -> None:
    """Log-axis ticks written as plain numbers rather than as powers."""
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def minor_decade_label(value: float, _position: Any = None) -> str:
    """Labels 2x and 5x of a decade on a base-10 log axis (enough ticks to read a value)."""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return plain_number(value) if round(mantissa, 6) in (2.0, 5.0) else ""


def legend_height(entries: int, columns: int) -> float:
    """Inches to add below the axes for a legend of `entries` in `columns` columns."""
    return 0.16 * math.ceil(entries / columns) + 0.1


def diagonal_floor(values: np.ndarray) -> float:
    """Lower end of a y = x panel: the smallest value rounded down to a tenth, at least 0."""
    low = float(np.nanmin(values))
    return max(0.0, math.floor(low * 10) / 10)


def draw_diagonal(ax: Axes, low: float, label: str | None = None) -> None:
    """The dashed y = x line from (low, low) to (1, 1)."""
    ax.plot([low, 1], [low, 1], color=GREY, linestyle=REFERENCE_DASHES, linewidth=0.9, label=label)


def square_unit_limits(ax: Axes, low: float) -> None:
    """Both axes from just below `low` to just above 1."""
    ax.set_xlim(low - 0.01, 1.01)
    ax.set_ylim(low - 0.01, 1.01)
