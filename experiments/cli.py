"""The `optscale` command line.

Each subcommand lives in its own module, which exposes `configure(parser)` (adds its
arguments; imports nothing heavy) and `run(args) -> int` (does the work). This module
only dispatches, so `optscale --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from optscale_jax.experiments.subcommands import add_subcommands, name_flag

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": (
        "optscale_jax.experiments.replay_cli",
        "replay a logged run with OptScale and every baseline",
    ),
    "simulate": (
        "optscale_jax.experiments.simulate_cli",
        "Monte Carlo studies of the N* bound; synthetic logs",
    ),
    "sample": (
        "optscale_jax.experiments.sample_cli",
        "sample live with vLLM + a verifier, stopping by OptScale",
    ),
    "plot": (
        "optscale_jax.experiments.plot_cli",
        "publication figures from replay / simulate outputs",
    ),
    "prior": (
        "optscale_jax.experiments.prior_cli",
        "train / predict / evaluate the OptScalet prior",
    ),
    "diagnose": (
        "optscale_jax.experiments.diagnose_cli",
        "does each score law fit a log? per-question fits, AIC, bootstrap tests",
    ),
    "figures": ("optscale_jax.experiments.figure_set", "regenerate the README's figure set"),
    "bench": ("optscale_jax.experiments.bench", "benchmarks that print their figures"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optscale",
        description="optscale-jax: adaptive Best-of-N sampling (OptScale) in JAX.",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use the persistent JAX compilation cache "
        "($XDG_CACHE_HOME/optscale-jax or ~/.cache/optscale-jax); OPTSCALE_COMPILE_CACHE=0 "
        "does the same",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_subcommands(subparsers, COMMANDS, "_run")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.no_compile_cache and os.environ.get("OPTSCALE_COMPILE_CACHE", "1") != "0":
        from optscale_jax.compile_cache import enable_compile_cache

        enable_compile_cache()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        # Bad input: the message names the argument or the file and line.
        message = name_flag(str(error), getattr(args, "_flags", frozenset()))
        print(f"optscale {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
