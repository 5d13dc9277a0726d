"""`optscale plot {pareto,nstar,calibration,samples,estimator} --in FILE_OR_DIR --out DIR`.

Reads the result files of `optscale replay` (results.csv, per_question.csv), `optscale
simulate coverage` (coverage.csv) and `python -m optscale_jax.sim.estimator_study` (estimator.csv)
and writes publication figures (PDF and 300-dpi PNG by default). `nstar` needs no input.
"""

from __future__ import annotations

import argparse
import sys

# kind -> (default file inside an --in directory, help)
KINDS: dict[str, tuple[str | None, str]] = {
    "pareto": ("results.csv", "accuracy vs mean cost per method, Pareto front, chosen settings"),
    "nstar": (None, "N* over (mu, sigma) and against alpha (no input)"),
    "calibration": ("coverage.csv", "target alpha vs realised coverage of N* (simulator)"),
    "samples": ("per_question.csv", "distribution of samples drawn per question, per method"),
    "estimator": ("estimator.csv", "error of the MLE / MAP estimates against n"),
}


def _add_common(parser: argparse.ArgumentParser, default_file: str | None) -> None:
    if default_file is not None:
        parser.add_argument(
            "--in",
            dest="input",
            required=True,
            metavar="FILE_OR_DIR",
            help=f"{default_file}, or the directory holding it",
        )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--format", default="pdf,png", help="comma-separated: pdf, png, svg (default pdf,png)"
    )
    parser.add_argument("--name", default=None, help="file stem (default: the plot's name)")


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds one subcommand per figure kind."""
    subparsers = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (default_file, help_text) in KINDS.items():
        sub = subparsers.add_parser(kind, help=help_text, description=help_text)
        _add_common(sub, default_file)
        if kind in ("pareto", "samples"):
            sub.add_argument(
                "--split", default=None, help='split to draw (default "test", else "all")'
            )
        if kind == "nstar":
            sub.add_argument("--s-min", type=float, default=0.8, help="heatmap s_min")
            sub.add_argument("--alpha", type=float, default=0.9, help="heatmap alpha")
            sub.add_argument("--mu", type=float, default=0.5, help="mu of the N*-vs-alpha panel")
            sub.add_argument("--sigma", type=float, default=0.2, help="sigma of that panel")
            sub.add_argument(
                "--s-mins", default="0.6,0.7,0.8,0.9", help="one N*-vs-alpha curve per s_min"
            )
            sub.add_argument("--max-n", type=int, default=4096, help="cap on N*")


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
    from optscale_jax.figures import plots
    from optscale_jax.figures.style import parse_formats

    formats = parse_formats(args.format)
    name = args.name or args.kind
    if args.kind == "nstar":
        from optscale_jax.validation import check_max_n, check_open_unit, check_unit

        s_mins = _floats(args.s_mins, "--s-mins")
        check_unit(args.s_min, "--s-min")
        check_open_unit(args.alpha, "--alpha")
        check_unit(s_mins, "--s-mins")
        check_max_n(args.max_n, "--max-n")
        if not args.sigma > 0:
            raise ValueError(f"--sigma: must be > 0, got {args.sigma}")
        paths = plots.plot_nstar(
            args.out,
            formats,
            name=name,
            s_min=args.s_min,
            alpha=args.alpha,
            curve_mu=args.mu,
            curve_sigma=args.sigma,
            curve_s_mins=s_mins,
            max_n=args.max_n,
        )
    elif args.kind == "pareto":
        paths = plots.plot_pareto(args.input, args.out, formats, split=args.split, name=name)
    elif args.kind == "samples":
        paths = plots.plot_samples(args.input, args.out, formats, split=args.split, name=name)
    elif args.kind == "calibration":
        paths = plots.plot_calibration(args.input, args.out, formats, name=name)
    else:
        paths = plots.plot_estimator(args.input, args.out, formats, name=name)
    for path in paths:
        print(path, file=sys.stdout)
    return 0
