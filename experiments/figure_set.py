"""`optscale figures`: regenerate the README's figure set from the bundled data.

Runs, with small settings so it finishes in about two minutes on two CPU cores:

1. `optscale replay --demo` (the GPQA-Diamond generative-verifier log shipped with the
   package; 10 sample orders, dev/test split) -> pareto, samples;
2. `optscale simulate coverage` (grid population, 20,000 trials per cell, rho in
   {0, 0.2, 0.5}) -> calibration;
3. `optscale_jax.sim.estimator_study` (2,000 simulated questions) -> estimator;
4. the N* figure (no input).

Every step is seeded by `--seed`, so a rerun writes byte-identical files.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import tempfile
import types
from collections.abc import Iterator, Sequence

from optscale_jax.experiments.plot_cli import add_format_option


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="figures", help="output directory (default: figures/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every study (default 0)")
    add_format_option(parser)
    parser.add_argument(
        "--results",
        default=None,
        help="keep the studies' result files here (default: a temporary directory)",
    )


@contextlib.contextmanager
def _results_dir(path: str | None) -> Iterator[pathlib.Path]:
    if path is not None:
        yield pathlib.Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="optscale-figures-") as tmp:
        yield pathlib.Path(tmp)


def _optscale(command: types.ModuleType, argv: list[str]) -> None:
    """Runs one subcommand module in-process; a non-zero exit stops the figure set."""
    parser = argparse.ArgumentParser(prog=f"optscale {argv[0]}")
    command.configure(parser)
    print(f"[figures] optscale {' '.join(argv)}", file=sys.stderr)
    code = command.run(parser.parse_args(argv[1:]))
    if code:
        raise SystemExit(f"optscale figures: `optscale {' '.join(argv)}` exited with {code}")


def make_figures(
    out: str | pathlib.Path, seed: int, formats: Sequence[str], results: pathlib.Path
) -> list[pathlib.Path]:
    """Runs the studies into `results` and writes the figure set into `out`.

    Args:
        out: output directory of the figures.
        seed: seed of every study.
        formats: figure formats.
        results: directory for the studies' result files.

    Returns:
        The figure files written.
    """
    from optscale_jax.experiments import replay_cli, simulate_cli
    from optscale_jax.figures.plots import plot_figure
    from optscale_jax.io import write_csv
    from optscale_jax.sim.estimator_study import COLUMNS, estimator_study

    replay_dir, sim_dir, estimator_dir = (results / name for name in ("replay", "sim", "estimator"))
    seed_text = str(seed)
    _optscale(replay_cli, ["replay", "--demo", "--seed", seed_text, "--out", str(replay_dir)])
    _optscale(
        simulate_cli,
        ["simulate", "coverage", "--seed", seed_text, "--trials", "20000",
         "--alpha", "0.5", "0.8", "0.9", "0.95", "0.99", "--rho", "0", "0.2", "0.5",
         "--out", str(sim_dir)]
    )  # fmt: skip
    print("[figures] estimator study", file=sys.stderr)
    write_csv(estimator_study(seed=seed), estimator_dir / "estimator.csv", columns=COLUMNS)

    # Figure -> the study directory it reads (None: drawn from its default parameters).
    inputs = {
        "pareto": replay_dir,
        "samples": replay_dir,
        "calibration": sim_dir,
        "estimator": estimator_dir,
        "nstar": None,
    }
    return [
        path for kind, in_dir in inputs.items() for path in plot_figure(kind, in_dir, out, formats)
    ]


def run(args: argparse.Namespace) -> int:
    """Entry point of `optscale figures`."""
    from optscale_jax.figures.style import parse_formats

    formats = parse_formats(args.format)
    with _results_dir(args.results) as results:
        paths = make_figures(args.out, args.seed, formats, results)
    for path in paths:
        print(path)
    return 0
