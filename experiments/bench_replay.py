"""`optscale bench replay`: prefix fits per second and the cost of an (s_min, alpha) grid.

A synthetic log (per question mu ~ U(0.3, 0.8), sigma ~ U(0.05, 0.3); truncated-normal
scores from the core sampler; seeded) is replayed over R sample orders with OptScale0
(sequential rule). The single cell and the whole grid run the same code
(`optscale_jax.replay.optscale_decisions`: one batched prefix fit, then per cell only
elementwise work), so `grid_cost_ratio` = grid time / single-cell time shows what the grid
adds on top of the fits. Compilation is excluded (warm-up runs on the same shapes). The
ratio is computed from process CPU time, which other jobs on a shared machine do not
inflate; wall times are printed too.
"""

from __future__ import annotations

import argparse
import time

from optscale_jax.experiments.replay_cli import add_grid_argument


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's arguments."""
    parser.add_argument("--questions", type=int, default=10_000, help="questions Q")
    parser.add_argument("--samples", type=int, default=64, help="samples per question K")
    parser.add_argument("--permutations", type=int, default=10, help="sample orders R")
    add_grid_argument(parser, "--s-min", float, "S", "grid of s_min (default 6 values)")
    add_grid_argument(parser, "--alpha", float, "A", "grid of alpha (default 8 values)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="float dtype (replay runs in float64)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0)


def _timed(function, repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best process CPU seconds, result) over `repeats` runs."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures; the last line is `grid_cost_ratio: X`."""
    for flag, value in (
        ("--questions", args.questions),
        ("--samples", args.samples),
        ("--permutations", args.permutations),
        ("--repeats", args.repeats),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    from optscale_jax import validation

    validation.check_unit(args.s_min, "--s-min")
    validation.check_open_unit(args.alpha, "--alpha")

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from optscale_jax import policies, replay, truncnorm
    from optscale_jax.logs import Log

    dtype = jnp.dtype(args.dtype)
    q, k, r = args.questions, args.samples, args.permutations
    key_mu, key_sigma, key_scores = jax.random.split(jax.random.key(args.seed), 3)
    mu = jax.random.uniform(key_mu, (q, 1), dtype, 0.3, 0.8)
    sigma = jax.random.uniform(key_sigma, (q, 1), dtype, 0.05, 0.3)
    scores = np.asarray(truncnorm.sample(key_scores, mu, sigma, shape=(q, k), dtype=dtype))
    log = Log(
        ids=[str(i) for i in range(q)],
        mask=np.ones((q, k), bool),
        scores=scores.astype(np.float64),
        correct=np.zeros((q, k), bool),
        source="synthetic",
    )
    replayed = replay.permute(log, r, seed=args.seed)
    replayed = replayed._replace(scores=replayed.scores.astype(dtype))
    cells = len(args.s_min) * len(args.alpha)
    print(
        f"synthetic log: {q} questions x {k} samples, {r} orders ({r * q * k:,} prefixes), "
        f"{args.dtype}, grid {len(args.s_min)} s_min x {len(args.alpha)} alpha = {cells} cells"
    )

    def fits():
        fit = policies.prefix_fits(replayed.scores, replayed.mask)
        return jax.block_until_ready(fit)

    def one_cell():
        return replay.optscale_decisions(replayed, args.s_min[:1], args.alpha[:1], max_n=k)

    def grid():
        return replay.optscale_decisions(replayed, args.s_min, args.alpha, max_n=k)

    # Warm-up runs compile everything the timed runs use (the grid's shapes differ).
    one_cell()
    grid()
    fit_wall, fit_cpu, fit = _timed(fits, args.repeats)
    prefixes = r * q * k
    status = np.bincount(np.asarray(fit.status).ravel(), minlength=4).tolist()
    print(
        f"prefix fits: {prefixes:,} in {fit_wall:.2f} s wall ({fit_cpu:.2f} s CPU) = "
        f"{prefixes / fit_wall:,.0f} fits/s (status counts {status})"
    )
    single_wall, single_cpu, _ = _timed(one_cell, args.repeats)
    print(f"single cell (fits + N* + stops): {single_wall:.2f} s wall ({single_cpu:.2f} s CPU)")
    grid_wall, grid_cpu, (grid_cells, samples, _, _) = _timed(grid, args.repeats)
    means = samples.mean(axis=(1, 2))
    print(
        f"grid of {len(grid_cells)} cells (same fits reused): {grid_wall:.2f} s wall "
        f"({grid_cpu:.2f} s CPU); mean samples per cell {means.min():.2f} to {means.max():.2f}"
    )
    print(f"grid_cost_ratio_wall: {grid_wall / single_wall:.3f}")
    # CPU time is the robust figure on a shared machine (other jobs inflate wall time).
    print(f"grid_cost_ratio: {grid_cpu / single_cpu:.3f}")
    return 0
