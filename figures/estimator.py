"""The estimator figure: RMSE and bias of the (mu, sigma) estimates against n."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from optscale_jax.figures._axes import Z95, legend_height, log_axis_if_wide, plain_log_ticks
from optscale_jax.figures._table import Row, number, numeric_column, text_column
from optscale_jax.figures.style import GREY, method_style, new_figure, styled

# Line styles of the MAP series, one per prior noise.
_MAP_DASHES = ["-", (0, (4, 1.5)), (0, (1.2, 1.2)), (0, (4, 1.5, 1.2, 1.5)), (0, (6, 2))]


class _Line(NamedTuple):
    """How one series (an estimator at one prior noise) is drawn."""

    color: str
    marker: str
    linestyle: str | tuple
    label: str


@styled
def estimator_figure(rows: Sequence[Row], source: str = "estimator.csv") -> Figure:
    """RMSE and bias of the (mu, sigma) estimates against the number of observed samples n.

    MLE (the OptScale0 estimator) in the OptScale0 colour; MAP (OptScalet) in the OptScalet
    colour, one line style per prior noise (the standard deviation of the prior centre
    around the truth). Shaded bands are 95% Monte Carlo intervals when the file has
    `rmse_se` / `bias_se`.

    Args:
        rows: rows of estimator.csv (columns at least `ESTIMATOR_COLUMNS`; `prior_noise`,
            `rmse_se`, `bias_se` used when present).
        source: file name for error messages.

    Returns:
        The figure (double column wide): RMSE and bias for mu and for sigma.
    """
    names = ("n", "rmse", "bias", "rmse_se", "bias_se")
    columns = {name: numeric_column(rows, name, source) for name in names}
    n = columns["n"]
    estimator = text_column(rows, "estimator")
    noise = numeric_column(rows, "prior_noise", source)
    param = text_column(rows, "param")
    params = [p for p in ("mu", "sigma") if p in set(param)] + sorted(set(param) - {"mu", "sigma"})
    series = _estimator_series(rows)
    figure = new_figure("double", 3.1 + legend_height(len(series), 2))
    axes = figure.subplots(2, len(params), sharex=True, squeeze=False)
    map_count = 0
    for kind, level in series:
        in_series = (estimator == kind) & ((noise == level) | (np.isnan(noise) & np.isnan(level)))
        line = _series_line(kind, level, map_count)
        map_count += kind != "mle"
        for column, name in enumerate(params):
            index = np.flatnonzero(in_series & (param == name))
            index = index[np.argsort(n[index], kind="stable")]
            for row, measure in enumerate(("rmse", "bias")):
                _draw_series(
                    axes[row, column],
                    n[index],
                    columns[measure][index],
                    columns[f"{measure}_se"][index],
                    line,
                    labelled=(row, column) == (0, 0),
                )
    _label_axes(axes, params, n)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 2))
    return figure


def _estimator_series(rows: Sequence[Row]) -> list[tuple[str, float]]:
    """(estimator, prior noise) pairs: MLE first, then MAP by rising prior noise."""
    keys = {(row["estimator"], number(row.get("prior_noise"))) for row in rows}
    return sorted(keys, key=lambda k: (k[0] != "mle", k[0], np.nan_to_num(k[1], nan=-1.0)))


def _series_line(kind: str, level: float, map_count: int) -> _Line:
    """The MLE in the OptScale0 look; the `map_count`-th MAP series in the OptScalet colour."""
    if kind == "mle":
        style = method_style("optscale0")
        return _Line(style.color, style.marker, "-", "MLE (OptScale$_0$)")
    style = method_style("optscalet")
    noise_text = f", prior noise {level:g}" if np.isfinite(level) else ""
    return _Line(
        style.color,
        style.marker,
        _MAP_DASHES[map_count % len(_MAP_DASHES)],
        f"{kind.upper()} (OptScale$_t$){noise_text}",
    )


def _draw_series(ax, n, values, errors, line: _Line, labelled: bool) -> None:
    """One series against n, with its 95% Monte Carlo band when every error is known."""
    ax.plot(
        n,
        values,
        color=line.color,
        linestyle=line.linestyle,
        marker=line.marker,
        markersize=2.5,
        linewidth=1.0,
        label=line.label if labelled else None,
    )
    if np.isfinite(errors).all():
        ax.fill_between(
            n,
            values - Z95 * errors,
            values + Z95 * errors,
            color=line.color,
            alpha=0.15,
            linewidth=0,
        )


def _label_axes(axes: np.ndarray, params: list[str], n: np.ndarray) -> None:
    """RMSE on the top row, bias (with its zero line) below; a log n axis when n is wide."""
    symbols = {"mu": r"$\hat\mu$", "sigma": r"$\hat\sigma$"}
    for column, name in enumerate(params):
        symbol = symbols.get(name, name)
        axes[0, column].set_ylabel(f"RMSE of {symbol}")
        axes[1, column].set_ylabel(f"bias of {symbol}")
        axes[1, column].axhline(0, color=GREY, linewidth=0.6)
        axes[0, column].set_ylim(bottom=0)
        axes[1, column].set_xlabel("observed samples $n$")
        if log_axis_if_wide(axes[1, column].set_xscale, n):
            plain_log_ticks(axes[1, column].xaxis)
