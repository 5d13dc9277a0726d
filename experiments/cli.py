"""The `optscale` command line.

Each subcommand lives in its own module, which exposes `configure(parser)` (adds its
arguments; imports nothing heavy) and `run(args) -> int` (does the work). This module
only dispatches, so `optscale --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("experiments.replay_cli", "replay a logged run with OptScale and every baseline"),
    "simulate": ("sim.cli", "Monte Carlo studies of the N* bound; synthetic logs"),
    "sample": ("live.cli", "sample live with vLLM + a verifier, stopping by OptScale"),
    "plot": ("figures.cli", "publication figures from replay / simulate outputs"),
    "prior": ("experiments.prior_cli", "train / predict / evaluate the OptScalet prior"),
    "bench": ("experiments.bench", "benchmarks that print their figures"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optscale",
        description="optscale-jax: adaptive Best-of-N sampling (OptScale) in JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = _import(module_name)
        if module is None:
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        # Bad input: the message names the argument or the file and line.
        print(f"optscale {args.command}: error: {error}", file=sys.stderr)
        return 2


def _import(module_name: str) -> types.ModuleType | None:
    """The subcommand's module, or None while that part is not built yet."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        return None


if __name__ == "__main__":
    sys.exit(main())
