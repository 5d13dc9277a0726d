"""`optscale bench {estimator,replay,sim,live}`: benchmarks that print their figures."""

from __future__ import annotations

import argparse

from optscale_jax.experiments.subcommands import add_subcommands

BENCHMARKS: dict[str, tuple[str, str]] = {
    "estimator": (
        "optscale_jax.experiments.bench_estimator",
        "batched MLE + N* vs the released scipy loop",
    ),
    "replay": (
        "optscale_jax.experiments.bench_replay",
        "prefix fits/s and the (s_min, alpha) grid cost",
    ),
    "sim": (
        "optscale_jax.experiments.bench_sim",
        "exact-maximum vs draw-N trials/s; coverage vs RNG floor",
    ),
    "live": (
        "optscale_jax.experiments.bench_live",
        "decision overhead per wave; adaptive vs fixed tokens",
    ),
    "scale": (
        "optscale_jax.experiments.bench_scale",
        "streamed replay of 10^5 and 10^6 questions: time ratio and peak memory",
    ),
}


def configure(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    add_subcommands(subparsers, BENCHMARKS, "_bench")


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
