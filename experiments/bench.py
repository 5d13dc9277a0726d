"""`optscale bench {estimator,replay,sim,live}`: benchmarks that print their figures."""

from __future__ import annotations

import argparse

from experiments.cli import _import

BENCHMARKS: dict[str, tuple[str, str]] = {
    "estimator": ("experiments.bench_estimator", "batched MLE + N* vs the released scipy loop"),
    "replay": ("experiments.bench_replay", "prefix fits/s and the (s_min, alpha) grid cost"),
    "sim": ("sim.bench", "exact-maximum vs draw-N trials/s; coverage vs RNG floor"),
    "live": ("live.bench", "decision overhead per wave; adaptive vs fixed tokens"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = _import(module_name)
        if module is None:
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_bench=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
