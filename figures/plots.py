"""The figures: pareto, nstar, calibration, samples, estimator.

Each figure has two functions: `<name>_figure(...)` builds a matplotlib `Figure` from rows
(dicts of strings as `optscale_jax.io.read_csv` returns them) or parameters, and
`plot_<name>(in_path, out_dir, formats)` reads the result file, checks its columns, renders
and saves every format with `optscale_jax.figures.style.save_figure`. The input files are those of
`optscale replay` (results.csv, per_question.csv), `optscale simulate coverage`
(coverage.csv) and `optscale_jax.sim.estimator_study` (estimator.csv); see docs/design.md.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from optscale_jax.figures.style import (
    DEFAULT_FORMATS,
    GREY,
    SERIES_COLORS,
    SERIES_MARKERS,
    is_best_of_n,
    is_oracle,
    method_order,
    method_style,
    new_figure,
    paper_style,
    save_figure,
)

from optscale_jax.io import read_csv

Row = Mapping[str, str]

PARETO_COLUMNS = ("method", "split", "accuracy", "ci_low", "ci_high", "mean_cost")
SAMPLES_COLUMNS = ("method", "split", "question", "samples")
CALIBRATION_COLUMNS = ("alpha", "coverage", "coverage_se")
ESTIMATOR_COLUMNS = ("estimator", "n", "param", "rmse", "bias")

# 95% normal quantile, for Monte Carlo error bars from standard errors.
_Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- parsing


def _number(value: Any) -> float:
    """A CSV cell as float; empty, "None" or "nan" -> NaN."""
    if value is None:
        return math.nan
    text = str(value).strip()
    if text == "" or text.lower() in ("none", "nan", "null"):
        return math.nan
    return float(text)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "y", "t")


def _numeric(rows: Sequence[Row], name: str, source: str) -> np.ndarray:
    """A numeric column, with a ValueError naming file, line and column on a bad cell."""
    values = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        try:
            values[i] = _number(row.get(name))
        except ValueError:
            # Line 1 is the header.
            raise ValueError(
                f"{source}, line {i + 2}: column {name}: not a number: {row.get(name)!r}"
            ) from None
    return values


def _choose_split(rows: Sequence[Row], split: str | None, source: str) -> str:
    """The split to plot: the one asked for, else the held-out "test", else "all"."""
    splits = list(dict.fromkeys(row["split"] for row in rows))
    if split is not None:
        if split not in splits:
            raise ValueError(f"--split: {split!r} not in {source} (splits: {', '.join(splits)})")
        return split
    for preferred in ("test", "all"):
        if preferred in splits:
            return preferred
    if not splits:
        raise ValueError(f"{source}: no rows")
    return splits[0]


def resolve_input(path: str | os.PathLike, default_name: str) -> pathlib.Path:
    """`path` itself if it is a file, else `path/default_name`.

    Raises:
        FileNotFoundError: naming the file that is not there.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise FileNotFoundError(f"--in: no such file: {path}")
    return path


# ----------------------------------------------------------------------------- helpers


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


def _log_axis_if_wide(axis_setter: Callable[..., None], values: np.ndarray, base: int = 2) -> bool:
    """Switches an axis to log scale when its positive values span more than 8x."""
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 8:
        axis_setter("log", base=base)
        return True
    return False


def _plain_number(value: float, _position: Any = None) -> str:
    """Tick text: 0.5, 8, 512, 2k, 16.4k (no powers-of-ten notation)."""
    if abs(value) >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:g}"


def _plain_log_ticks(axis) -> None:
    """Log-axis ticks written as plain numbers rather than as powers."""
    axis.set_major_formatter(FuncFormatter(_plain_number))
    axis.set_minor_formatter(NullFormatter())


def _minor_decade_label(value: float, _position: Any = None) -> str:
    """Labels 2x and 5x of a decade on a base-10 log axis (enough ticks to read a value)."""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return _plain_number(value) if round(mantissa, 6) in (2.0, 5.0) else ""


def _legend_height(entries: int, columns: int) -> float:
    return 0.16 * math.ceil(entries / columns) + 0.1


def _styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Builds the figure inside `paper_style()`, so callers from Python get the same look."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with paper_style():
            return build(*args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------- pareto


@_styled
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
    split = _choose_split(rows, split, source)
    # Parse every row (so a bad cell is reported with its file line), then keep the split.
    keep = np.array([row["split"] == split for row in rows], dtype=bool)
    accuracy = 100 * _numeric(rows, "accuracy", source)[keep]
    ci_low = 100 * _numeric(rows, "ci_low", source)[keep]
    ci_high = 100 * _numeric(rows, "ci_high", source)[keep]
    cost = _numeric(rows, "mean_cost", source)[keep]
    cost_low = _numeric(rows, "cost_ci_low", source)[keep]
    cost_high = _numeric(rows, "cost_ci_high", source)[keep]
    n_column = _numeric(rows, "n", source)[keep]
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    selected = np.array([_flag(row.get("selected", "")) for row in rows], dtype=bool)
    methods = np.array([row["method"] for row in rows], dtype=object)
    units = sorted({row.get("cost_unit", "") or "" for row in rows} - {""})
    unit = units[0] if len(units) == 1 else "cost"
    any_selected = bool(selected.any())

    ordered = method_order(list(methods))
    legend_entries = len(ordered) + 1
    figure = new_figure("single", 2.35 + _legend_height(legend_entries, 2))
    ax = figure.add_subplot()

    candidates = np.flatnonzero([not is_oracle(m) for m in methods])
    front = candidates[pareto_front(cost[candidates], accuracy[candidates])]
    if front.size:
        ax.step(
            cost[front],
            accuracy[front],
            where="post",
            color=GREY,
            linestyle=(0, (3, 2)),
            linewidth=0.9,
            zorder=1,
            label="Pareto front",
        )

    def bars(index: np.ndarray, style, size: float, zorder: int) -> None:
        xerr = None
        if np.isfinite(cost_low[index]).all() and np.isfinite(cost_high[index]).all():
            xerr = np.clip(
                np.vstack([cost[index] - cost_low[index], cost_high[index] - cost[index]]), 0, None
            )
        yerr = np.clip(
            np.vstack([accuracy[index] - ci_low[index], ci_high[index] - accuracy[index]]), 0, None
        )
        ax.errorbar(
            cost[index],
            accuracy[index],
            xerr=xerr,
            yerr=yerr,
            fmt="none",
            ecolor=style.color,
            elinewidth=0.8,
            capsize=1.5,
            zorder=zorder,
        )
        ax.plot(
            cost[index],
            accuracy[index],
            linestyle="none",
            marker=style.marker,
            markersize=size,
            color=style.color,
            markeredgecolor="black",
            markeredgewidth=0.5,
            zorder=zorder + 1,
        )

    for method in ordered:
        style = method_style(method)
        index = np.flatnonzero(methods == method)
        if is_oracle(method):
            # A reference, not a method: a dotted curve over n without highlight.
            index = index[np.argsort(cost[index], kind="stable")]
            ax.plot(
                cost[index],
                accuracy[index],
                color=style.color,
                linestyle=(0, (1, 1.5)),
                marker=style.marker,
                markersize=3.5,
                linewidth=1.0,
                zorder=3,
                label=style.label,
            )
            continue
        if is_best_of_n(method):
            # A curve over n: sort by n when the file has it, else by cost.
            key = n_column[index] if np.isfinite(n_column[index]).all() else cost[index]
            index = index[np.argsort(key, kind="stable")]
            ax.fill_between(
                cost[index],
                ci_low[index],
                ci_high[index],
                color=style.color,
                alpha=0.12,
                linewidth=0,
                zorder=2,
            )
            ax.plot(
                cost[index],
                accuracy[index],
                color=style.color,
                marker="o",
                markersize=2,
                linewidth=1.0,
                zorder=3,
                label=style.label,
            )
            chosen = index[selected[index]]
            if chosen.size:
                bars(chosen, style._replace(marker="o"), 5.5, 6)
            continue
        if np.isfinite(n_column[index]).all():
            # A fixed-N method (voting over n samples): a thin curve over n.
            by_n = index[np.argsort(n_column[index], kind="stable")]
            ax.plot(
                cost[by_n], accuracy[by_n], color=style.color, linewidth=0.7, alpha=0.6, zorder=4
            )
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
            chosen = index[selected[index]]
        else:
            chosen = index[pareto_front(cost[index], accuracy[index])]
            ax.plot(
                cost[chosen],
                accuracy[chosen],
                color=style.color,
                linewidth=0.7,
                alpha=0.8,
                zorder=4,
            )
        if chosen.size:
            bars(chosen, style, 5.5, 6)
        # Legend handle: the marker as drawn for the highlighted setting.
        ax.plot(
            [],
            [],
            linestyle="none",
            marker=style.marker,
            markersize=5,
            color=style.color,
            markeredgecolor="black",
            markeredgewidth=0.5,
            label=style.label,
        )

    # Tokens span decades (base-10 ticks); sample counts are powers of two (base 2).
    if _log_axis_if_wide(
        ax.set_xscale,
        np.concatenate([cost, cost_low, cost_high]),
        base=2 if unit == "samples" else 10,
    ):
        _plain_log_ticks(ax.xaxis)
        if unit != "samples":
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_decade_label))
    unit_text = {"tokens": "generated tokens", "samples": "samples"}.get(unit, unit)
    ax.set_xlabel(f"mean cost per question ({unit_text})")
    ax.set_ylabel("accuracy (%)")
    note = "large markers: setting chosen on dev" if any_selected else "lines: each method's front"
    ax.set_title(f"split: {split}; {note}", fontsize=7, loc="left")
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    return figure


def plot_pareto(
    in_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    split: str | None = None,
    name: str = "pareto",
) -> list[pathlib.Path]:
    """Reads results.csv (a file or the replay's --out directory) and saves the Pareto figure.

    Args:
        in_path: results.csv or a directory holding it.
        out_dir: where `name.<format>` is written.
        formats: output formats.
        split: split to draw (default "test", else "all").
        name: file stem.

    Returns:
        The files written.

    Raises:
        ValueError: naming the file and the missing column, or a bad cell.
    """
    return _plot_file(
        in_path, "results.csv", PARETO_COLUMNS, out_dir, name, formats, pareto_figure, split=split
    )


# ----------------------------------------------------------------------------- nstar


def optimal_n_numpy(
    mu: np.ndarray | float,
    sigma: np.ndarray | float,
    s_min: np.ndarray | float,
    alpha: np.ndarray | float,
    max_n: int,
) -> np.ndarray:
    """`optscale_jax.optimal_n` on broadcast numpy inputs, in float64, as an int64 array."""
    import jax
    import jax.numpy as jnp

    from optscale_jax import optimal_n

    arrays = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (mu, sigma, s_min, alpha))
    )
    # float64 whatever the process-wide x64 flag (other commands set it), so the figure is the
    # same whether it is drawn alone or after a replay.
    with jax.enable_x64(True):
        n_star = optimal_n(*(jnp.asarray(a, jnp.float64) for a in arrays), max_n=max_n)
        return np.asarray(n_star, dtype=np.int64)


@_styled
def nstar_figure(
    s_min: float = 0.8,
    alpha: float = 0.9,
    mu_range: tuple[float, float] = (0.0, 1.0),
    sigma_range: tuple[float, float] = (0.02, 0.5),
    curve_mu: float = 0.5,
    curve_sigma: float = 0.2,
    curve_s_mins: Sequence[float] = (0.6, 0.7, 0.8, 0.9),
    max_n: int = 4096,
    resolution: int = 161,
) -> Figure:
    """N* = ceil(log(1 - alpha) / log F(s_min)) over (mu, sigma), and against alpha.

    Left: N* on a grid of truncated-normal parameters for one (s_min, alpha), log colour
    scale, labelled contours at powers of two, capped at `max_n`. Right: N* against alpha
    (logit axis) for several s_min at one (mu, sigma).

    Args:
        s_min: score threshold of the heatmap.
        alpha: target confidence of the heatmap.
        mu_range: heatmap mu axis.
        sigma_range: heatmap sigma axis (log-spaced).
        curve_mu: mu of the right panel.
        curve_sigma: sigma of the right panel.
        curve_s_mins: one curve per s_min.
        max_n: cap on N* (values at the cap mean "at least max_n").
        resolution: grid points per heatmap axis.

    Returns:
        The figure (double column wide).
    """
    from matplotlib.colors import LogNorm

    mu = np.linspace(*mu_range, resolution)
    sigma = np.geomspace(*sigma_range, resolution)
    grid = optimal_n_numpy(mu[None, :], sigma[:, None], s_min, alpha, max_n)

    figure = new_figure("double", 2.55)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    mesh = left.pcolormesh(
        mu,
        sigma,
        grid,
        norm=LogNorm(vmin=1, vmax=max_n),
        cmap="viridis",
        shading="nearest",
        rasterized=True,
    )
    levels = [2**k for k in range(1, int(math.log2(max_n)) + 1) if 2**k < max_n]
    contours = left.contour(mu, sigma, grid, levels=levels, colors="white", linewidths=0.6)
    # Above 256 the contours crowd together: label every other one.
    labelled = [level for level in levels if level <= 256 or int(math.log2(level)) % 2 == 0]
    left.clabel(contours, labelled, fmt="%d", fontsize=7, inline=True, inline_spacing=2)
    left.axvline(s_min, color="white", linestyle=":", linewidth=0.8)
    left.set_yscale("log")
    left.set_yticks(
        [
            t
            for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)
            if sigma_range[0] <= t <= sigma_range[1]
        ]
    )
    _plain_log_ticks(left.yaxis)
    left.text(s_min, sigma[-1], r" $s_{\min}$", color="white", fontsize=7, ha="left", va="top")
    left.grid(False)
    left.set_xlabel(r"$\mu$")
    left.set_ylabel(r"$\sigma$")
    left.set_title(rf"$N^*$ at $s_{{\min}}={s_min:g}$, $\alpha={alpha:g}$", loc="left")
    colorbar = figure.colorbar(mesh, ax=left, pad=0.02, aspect=25)
    colorbar.set_label(rf"$N^*$ (capped at {max_n})")
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))

    alphas = 1 - np.geomspace(0.5, 1e-3, 200)
    for i, threshold in enumerate(curve_s_mins):
        n_star = optimal_n_numpy(curve_mu, curve_sigma, threshold, alphas, max_n)
        right.step(
            alphas,
            n_star,
            where="post",
            color=SERIES_COLORS[i % len(SERIES_COLORS)],
            label=rf"$s_{{\min}}={threshold:g}$",
        )
    right.set_xscale("logit")
    right.set_xlim(alphas[0], alphas[-1])
    right.set_yscale("log", base=2)
    _plain_log_ticks(right.yaxis)
    right.xaxis.set_minor_formatter(NullFormatter())
    right.set_xticks([0.5, 0.9, 0.99, 0.999])
    right.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    right.set_xlabel(r"target confidence $\alpha$")
    right.set_ylabel(r"$N^*$")
    right.set_title(rf"$\mu={curve_mu:g}$, $\sigma={curve_sigma:g}$", loc="left")
    right.legend(loc="upper left")
    return figure


def plot_nstar(
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    name: str = "nstar",
    **options: Any,
) -> list[pathlib.Path]:
    """Saves the N* figure (needs no input; options go to `nstar_figure`).

    Args:
        out_dir: where `name.<format>` is written.
        formats: output formats.
        name: file stem.
        **options: keyword arguments of `nstar_figure`.

    Returns:
        The files written.
    """
    with paper_style():
        figure = nstar_figure(**options)
    return save_figure(figure, out_dir, name, formats)


# ----------------------------------------------------------------------------- calibration


def _rho_label(rho: float) -> str:
    if not np.isfinite(rho) or rho == 0:
        return r"i.i.d. ($\rho=0$)"
    return rf"$\rho={rho:g}$"


@_styled
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
    alpha = _numeric(rows, "alpha", source)
    coverage = _numeric(rows, "coverage", source)
    coverage_se = _numeric(rows, "coverage_se", source)
    nominal = _numeric(rows, "nominal", source)
    rho = _numeric(rows, "rho", source)
    rho = np.where(np.isfinite(rho), rho, 0.0)
    capped = np.array([_flag(row.get("capped", "")) for row in rows], dtype=bool)
    families = np.array([row.get("family") or "truncnorm" for row in rows], dtype=object)
    family_names = list(dict.fromkeys(families[~capped]))
    if not family_names:
        raise ValueError(f"{source}: every cell has N* at the cap (column capped)")
    rho_values = sorted(set(rho[~capped].tolist()))
    has_nominal = bool(np.isfinite(nominal[~capped]).any())

    columns = 2 if has_nominal else 1
    figure = new_figure(
        "double" if has_nominal else "single",
        2.45 * len(family_names) + _legend_height(len(rho_values) + 1, 4 if has_nominal else 2),
    )
    axes = figure.subplots(len(family_names), columns, squeeze=False)
    alpha_values = np.unique(alpha[~capped])
    gaps = np.diff(alpha_values)
    dodge = 0.12 * (gaps.min() if gaps.size else 0.1) / max(len(rho_values) - 1, 1)
    for row_index, family in enumerate(family_names):
        in_family = (families == family) & ~capped
        left = axes[row_index, 0]
        low = float(np.nanmin(np.concatenate([alpha[in_family], coverage[in_family]])))
        low = max(0.0, math.floor(low * 10) / 10)
        left.plot(
            [low, 1],
            [low, 1],
            color=GREY,
            linestyle=(0, (3, 2)),
            linewidth=0.9,
            label=r"coverage $=$ target",
        )
        for i, value in enumerate(rho_values):
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            marker = SERIES_MARKERS[i % len(SERIES_MARKERS)]
            offset = (i - (len(rho_values) - 1) / 2) * dodge
            in_series = in_family & (rho == value)
            levels = [a for a in alpha_values if (in_series & (alpha == a)).any()]
            if not levels:
                continue
            stats = np.array(
                [np.percentile(coverage[in_series & (alpha == a)], [0, 50, 100]) for a in levels]
            )
            x = np.array(levels) + offset
            left.vlines(x, stats[:, 0], stats[:, 2], color=color, linewidth=0.8, alpha=0.8)
            left.plot(
                x,
                stats[:, 1],
                color=color,
                marker=marker,
                markersize=3.5,
                linewidth=0.9,
                label=_rho_label(value),
            )
        left.set_xlim(low - 0.01, 1.01)
        left.set_ylim(low - 0.01, 1.01)
        left.set_xlabel(r"target $\alpha$")
        left.set_ylabel("realised coverage")
        title = "median and range over cells"
        left.set_title(
            title if len(family_names) == 1 else f"{family}: {title}", loc="left", fontsize=7
        )
        if not has_nominal:
            continue
        right = axes[row_index, 1]
        low = float(np.nanmin(np.concatenate([nominal[in_family], coverage[in_family]])))
        low = max(0.0, math.floor(low * 10) / 10)
        right.plot([low, 1], [low, 1], color=GREY, linestyle=(0, (3, 2)), linewidth=0.9)
        for i, value in enumerate(rho_values):
            index = np.flatnonzero(in_family & (rho == value) & np.isfinite(nominal))
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            right.errorbar(
                nominal[index], coverage[index], yerr=_Z95 * coverage_se[index], fmt="none",
                ecolor=color, elinewidth=0.7, capsize=1.2, alpha=0.8,
            )  # fmt: skip
            right.plot(
                nominal[index], coverage[index], linestyle="none", color=color,
                marker=SERIES_MARKERS[i % len(SERIES_MARKERS)], markersize=3,
            )  # fmt: skip
        right.set_xlim(low - 0.01, 1.01)
        right.set_ylim(low - 0.01, 1.01)
        right.set_xlabel(r"model coverage $1 - F(s_{\min})^{N^*}$")
        right.set_ylabel("realised coverage")
        right.set_title("each cell, 95% Monte Carlo error bars", loc="left", fontsize=7)
    excluded = int(capped.sum())
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


def plot_calibration(
    in_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    name: str = "calibration",
) -> list[pathlib.Path]:
    """Reads coverage.csv (a file or the simulator's --out directory) and saves the figure.

    Args:
        in_path: coverage.csv or a directory holding it.
        out_dir: where `name.<format>` is written.
        formats: output formats.
        name: file stem.

    Returns:
        The files written.

    Raises:
        ValueError: naming the file and the missing column, or a bad cell.
    """
    return _plot_file(
        in_path, "coverage.csv", CALIBRATION_COLUMNS, out_dir, name, formats, calibration_figure
    )


# ----------------------------------------------------------------------------- samples


@_styled
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
    split = _choose_split(rows, split, source)
    keep = np.array([row["split"] == split for row in rows], dtype=bool)
    samples = _numeric(rows, "samples", source)[keep]
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    methods = np.array([row["method"] for row in rows], dtype=object)
    ordered = [m for m in method_order(list(methods)) if not is_oracle(m)]
    figure = new_figure("single", 2.45 + _legend_height(len(ordered), 2))
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
    if _log_axis_if_wide(ax.set_xscale, samples):
        _plain_log_ticks(ax.xaxis)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("samples drawn per question")
    ax.set_ylabel("fraction of questions")
    ax.set_title(f"split: {split}", fontsize=7, loc="left")
    figure.legend(loc="outside lower center", ncols=2, title="method: mean samples per question")
    return figure


def plot_samples(
    in_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    split: str | None = None,
    name: str = "samples",
) -> list[pathlib.Path]:
    """Reads per_question.csv (a file or the replay's --out directory) and saves the figure.

    Args:
        in_path: per_question.csv or a directory holding it.
        out_dir: where `name.<format>` is written.
        formats: output formats.
        split: split to draw (default "test", else "all").
        name: file stem.

    Returns:
        The files written.

    Raises:
        ValueError: naming the file and the missing column, or a bad cell.
    """
    return _plot_file(
        in_path,
        "per_question.csv",
        SAMPLES_COLUMNS,
        out_dir,
        name,
        formats,
        samples_figure,
        split=split,
    )


# ----------------------------------------------------------------------------- estimator


def _estimator_series(rows: Sequence[Row]) -> list[tuple[str, float]]:
    keys = {(row["estimator"], _number(row.get("prior_noise"))) for row in rows}
    # MLE first, then MAP by rising prior noise.
    return sorted(keys, key=lambda k: (k[0] != "mle", k[0], np.nan_to_num(k[1], nan=-1.0)))


@_styled
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
    n = _numeric(rows, "n", source)
    rmse = _numeric(rows, "rmse", source)
    bias = _numeric(rows, "bias", source)
    rmse_se = _numeric(rows, "rmse_se", source)
    bias_se = _numeric(rows, "bias_se", source)
    estimator = np.array([row["estimator"] for row in rows], dtype=object)
    noise = _numeric(rows, "prior_noise", source)
    param = np.array([row["param"] for row in rows], dtype=object)
    params = [p for p in ("mu", "sigma") if p in set(param)] + sorted(set(param) - {"mu", "sigma"})

    figure = new_figure("double", 3.1 + _legend_height(len(_estimator_series(rows)), 2))
    axes = figure.subplots(2, len(params), sharex=True, squeeze=False)
    mle_style = method_style("optscale0")
    map_style = method_style("optscalet")
    dashes = ["-", (0, (4, 1.5)), (0, (1.2, 1.2)), (0, (4, 1.5, 1.2, 1.5)), (0, (6, 2))]
    map_count = 0
    for kind, level in _estimator_series(rows):
        in_series = (estimator == kind) & ((noise == level) | (np.isnan(noise) & np.isnan(level)))
        if kind == "mle":
            color, marker, linestyle, label = (
                mle_style.color,
                mle_style.marker,
                "-",
                "MLE (OptScale$_0$)",
            )
        else:
            color, marker = map_style.color, map_style.marker
            linestyle = dashes[map_count % len(dashes)]
            map_count += 1
            noise_text = f", prior noise {level:g}" if np.isfinite(level) else ""
            label = f"{kind.upper()} (OptScale$_t$){noise_text}"
        for column, name in enumerate(params):
            index = np.flatnonzero(in_series & (param == name))
            index = index[np.argsort(n[index], kind="stable")]
            for row, (values, errors) in enumerate(((rmse, rmse_se), (bias, bias_se))):
                ax = axes[row, column]
                ax.plot(
                    n[index],
                    values[index],
                    color=color,
                    linestyle=linestyle,
                    marker=marker,
                    markersize=2.5,
                    linewidth=1.0,
                    label=label if (row, column) == (0, 0) else None,
                )
                if np.isfinite(errors[index]).all():
                    ax.fill_between(
                        n[index],
                        values[index] - _Z95 * errors[index],
                        values[index] + _Z95 * errors[index],
                        color=color,
                        alpha=0.15,
                        linewidth=0,
                    )
    symbols = {"mu": r"$\hat\mu$", "sigma": r"$\hat\sigma$"}
    for column, name in enumerate(params):
        symbol = symbols.get(name, name)
        axes[0, column].set_ylabel(f"RMSE of {symbol}")
        axes[1, column].set_ylabel(f"bias of {symbol}")
        axes[1, column].axhline(0, color=GREY, linewidth=0.6)
        axes[0, column].set_ylim(bottom=0)
        axes[1, column].set_xlabel("observed samples $n$")
        if _log_axis_if_wide(axes[1, column].set_xscale, n):
            _plain_log_ticks(axes[1, column].xaxis)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 2))
    return figure


def plot_estimator(
    in_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    name: str = "estimator",
) -> list[pathlib.Path]:
    """Reads estimator.csv (a file or the study's --out directory) and saves the figure.

    Args:
        in_path: estimator.csv or a directory holding it.
        out_dir: where `name.<format>` is written.
        formats: output formats.
        name: file stem.

    Returns:
        The files written.

    Raises:
        ValueError: naming the file and the missing column, or a bad cell.
    """
    return _plot_file(
        in_path, "estimator.csv", ESTIMATOR_COLUMNS, out_dir, name, formats, estimator_figure
    )


def _plot_file(in_path, file_name, required, out_dir, name, formats, make_figure, **options):
    """Reads a result file (or `file_name` in a directory), draws it and saves the figure."""
    path = resolve_input(in_path, file_name)
    rows = read_csv(path, required=required)
    if not rows:
        raise ValueError(f"{path}: no rows")
    with paper_style():
        figure = make_figure(rows, source=str(path), **options)
    return save_figure(figure, out_dir, name, formats)
