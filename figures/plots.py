"""The figures: pareto, nstar, calibration, samples, estimator, and `plot_figure` to save one.

Each figure has a draw function, `<name>_figure(...)`, in its own module of this package:
it builds a matplotlib `Figure` from rows (dicts of strings as `optscale_jax.io.read_csv`
returns them) or from parameters. `plot_figure(kind, in_path, out_dir, formats)` reads the
figure's result file (`optscale_jax.figures.registry.FIGURES` says which, and which
columns it needs), draws it and saves every format with
`optscale_jax.figures.style.save_figure`. The input files are those of `optscale replay`
(results.csv, per_question.csv), `optscale simulate coverage` (coverage.csv) and
`optscale_jax.sim.estimator_study` (estimator.csv); see docs/design.md.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.figure import Figure

from optscale_jax.figures._table import read_rows, resolve_input
from optscale_jax.figures.calibration import calibration_figure
from optscale_jax.figures.estimator import estimator_figure
from optscale_jax.figures.nstar import nstar_figure, optimal_n_numpy
from optscale_jax.figures.pareto import pareto_figure, pareto_front
from optscale_jax.figures.registry import (
    CALIBRATION_COLUMNS,
    ESTIMATOR_COLUMNS,
    FIGURES,
    PARETO_COLUMNS,
    SAMPLES_COLUMNS,
    FigureKind,
)
from optscale_jax.figures.samples import samples_figure
from optscale_jax.figures.style import DEFAULT_FORMATS, save_figure

__all__ = [
    "CALIBRATION_COLUMNS",
    "ESTIMATOR_COLUMNS",
    "FIGURES",
    "PARETO_COLUMNS",
    "SAMPLES_COLUMNS",
    "FigureKind",
    "calibration_figure",
    "draw_function",
    "estimator_figure",
    "nstar_figure",
    "optimal_n_numpy",
    "pareto_figure",
    "pareto_front",
    "plot_figure",
    "resolve_input",
    "samples_figure",
]


def draw_function(kind: str) -> Callable[..., Figure]:
    """The function that draws figure `kind` (its `FIGURES` entry's `draw`)."""
    module, _, function = _figure_kind(kind).draw.rpartition(".")
    return getattr(importlib.import_module(module), function)


def plot_figure(
    kind: str,
    in_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    name: str | None = None,
    **options: Any,
) -> list[pathlib.Path]:
    """Reads the result file of figure `kind`, draws the figure and saves it in every format.

    Args:
        kind: a key of `FIGURES` ("pareto", "samples", "calibration", "estimator", "nstar").
        in_path: the result file, or a directory holding it under its usual name
            (`FIGURES[kind].input_file`); None for a figure that reads nothing ("nstar").
        out_dir: where `<name>.<format>` is written.
        formats: output formats (any of pdf, png, svg).
        name: file stem (default: `kind`).
        **options: keyword arguments of the draw function, e.g. `split` for pareto and
            samples, `s_min` or `max_n` for nstar.

    Returns:
        The files written.

    Raises:
        FileNotFoundError: naming the result file that is not there.
        ValueError: naming the file and the missing column, or a bad cell; or naming the
            argument (`kind`, `in_path`) that does not fit the figure.

    Example:
        >>> plot_figure("nstar", None, "fig", ("png",), s_min=0.9)  # doctest: +SKIP
        [PosixPath('fig/nstar.png')]
    """
    figure_kind = _figure_kind(kind)
    draw = draw_function(kind)
    if figure_kind.input_file is None:
        if in_path is not None:
            raise ValueError(f"in_path: the {kind} figure reads no file, got {in_path}")
        figure = draw(**options)
    else:
        if in_path is None:
            raise ValueError(
                f"in_path: the {kind} figure reads {figure_kind.input_file}; none given"
            )
        rows, path = read_rows(in_path, figure_kind.input_file, figure_kind.columns)
        figure = draw(rows, source=str(path), **options)
    return save_figure(figure, out_dir, name or kind, formats)


def _figure_kind(kind: str) -> FigureKind:
    if kind not in FIGURES:
        raise ValueError(f"kind: unknown figure {kind!r} (figures: {', '.join(FIGURES)})")
    return FIGURES[kind]
