"""`optscale plot {pareto,nstar,calibration,samples,estimator,calibration-ltt} --in ... --out DIR`.

Reads the result files of `optscale replay` (results.csv, per_question.csv), `optscale
simulate coverage` (coverage.csv), `optscale simulate calibration` (calibration.csv) and
`python -m optscale_jax.sim.estimator_study` (estimator.csv)
and writes publication figures (PDF and 300-dpi PNG by default). `nstar` needs no input.
One subcommand per entry of `optscale_jax.figures.registry.FIGURES`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from optscale_jax.figures.registry import FIGURES


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """`--format`, as `optscale plot` and `optscale figures` take it."""
    parser.add_argument(
        "--format", default="pdf,png", help="comma-separated: pdf, png, svg (default pdf,png)"
    )


def _add_common(parser: argparse.ArgumentParser, input_file: str | None) -> None:
    if input_file is not None:
        parser.add_argument(
            "--in",
            dest="input",
            required=True,
            metavar="FILE_OR_DIR",
            help=f"{input_file}, or the directory holding it",
        )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_format_option(parser)
    parser.add_argument("--name", default=None, help="file stem (default: the plot's name)")


def _add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default=None, help='split to draw (default "test", else "all")')


def _split_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"split": args.split}


def _add_nstar(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s-min", type=float, default=0.8, help="heatmap s_min")
    parser.add_argument("--alpha", type=float, default=0.9, help="heatmap alpha")
    parser.add_argument("--mu", type=float, default=0.5, help="mu of the N*-vs-alpha panel")
    parser.add_argument("--sigma", type=float, default=0.2, help="sigma of that panel")
    parser.add_argument(
        "--s-mins", default="0.6,0.7,0.8,0.9", help="one N*-vs-alpha curve per s_min"
    )
    parser.add_argument("--max-n", type=int, default=4096, help="cap on N*")


def _nstar_options(args: argparse.Namespace) -> dict[str, Any]:
    """The nstar options, validated; errors name the argument (the dispatcher adds the dashes)."""
    from optscale_jax.validation import check_max_n, check_open_unit, check_unit

    s_mins = _floats(args.s_mins, "s_mins")
    check_unit(args.s_min, "s_min")
    check_open_unit(args.alpha, "alpha")
    check_unit(s_mins, "s_mins")
    check_max_n(args.max_n, "max_n")
    if not args.sigma > 0:
        raise ValueError(f"sigma: must be > 0, got {args.sigma}")
    return {
        "s_min": args.s_min,
        "alpha": args.alpha,
        "curve_mu": args.mu,
        "curve_sigma": args.sigma,
        "curve_s_mins": s_mins,
        "max_n": args.max_n,
    }


class _FigureOptions(NamedTuple):
    """A figure's own options: `add` puts them on its parser, `read` gives the draw keywords."""

    add: Callable[[argparse.ArgumentParser], None]
    read: Callable[[argparse.Namespace], dict[str, Any]]


_SPLIT_OPTIONS = _FigureOptions(_add_split, _split_options)
_NO_OPTIONS = _FigureOptions(lambda parser: None, lambda args: {})
# Figures with options of their own; a figure not listed takes only the common options.
_FIGURE_OPTIONS: dict[str, _FigureOptions] = {
    "pareto": _SPLIT_OPTIONS,
    "samples": _SPLIT_OPTIONS,
    "nstar": _FigureOptions(_add_nstar, _nstar_options),
    "calibration-ltt": _FigureOptions(
        lambda parser: parser.add_argument(
            "--risk", default=None, help="risk of the cost panel (default: the file's first)"
        ),
        lambda args: {"risk": args.risk},
    ),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds one subcommand per figure."""
    subparsers = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, figure in FIGURES.items():
        sub = subparsers.add_parser(kind, help=figure.description, description=figure.description)
        _add_common(sub, figure.input_file)
        _FIGURE_OPTIONS.get(kind, _NO_OPTIONS).add(sub)


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{name}: expected at least one number")
    return values


def run(args: argparse.Namespace) -> int:
    """Renders the figure and prints the files written."""
    from optscale_jax.figures.plots import plot_figure
    from optscale_jax.figures.style import parse_formats

    formats = parse_formats(args.format)
    options = _FIGURE_OPTIONS.get(args.kind, _NO_OPTIONS).read(args)
    try:
        paths = plot_figure(
            args.kind, getattr(args, "input", None), args.out, formats, name=args.name, **options
        )
    except FileNotFoundError as error:
        # The library names its argument, in_path; here it is --in, which the dispatcher
        # cannot guess from the name.
        raise FileNotFoundError(str(error).replace("in_path", "--in", 1)) from None
    for path in paths:
        print(path, file=sys.stdout)
    return 0
