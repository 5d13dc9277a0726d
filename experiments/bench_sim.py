"""`optscale bench sim`: speed of the exact-maximum draw and of the coverage study.

Prints trials per second of
- the exact-maximum path (`laws.sample_max`: one exponential and one quantile per trial),
- draw-N-then-max (`laws.sample_max_full`: N draws per trial),
and the time of the default i.i.d. coverage study (after compilation) over the time of
generating its uniforms alone. The last line is `coverage_vs_rng_floor: X`.
"""

from __future__ import annotations

import argparse
import time


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's arguments."""
    parser.add_argument("--n", type=int, default=64, help="samples whose maximum is drawn")
    parser.add_argument("--trials", type=int, default=1 << 20, help="exact-maximum trials")
    parser.add_argument("--full-trials", type=int, default=1 << 14, help="draw-N-then-max trials")
    parser.add_argument(
        "--coverage-trials", type=int, default=100_000, help="coverage trials per cell"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")


def _best_time(function, repeats: int) -> float:
    """Best wall time of `function()` over `repeats` runs, after one untimed warm-up."""
    import jax

    jax.block_until_ready(function())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        best = min(best, time.perf_counter() - start)
    return best


def _default_coverage_grid() -> argparse.Namespace:
    """The defaults of `optscale simulate coverage` (its grid, thresholds and targets)."""
    from optscale_jax.experiments import simulate_cli

    parser = argparse.ArgumentParser()
    simulate_cli.configure(parser)
    return parser.parse_args(["coverage", "--out", "."])


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from optscale_jax.sim import laws, populations, studies

    for name in ("n", "trials", "full_trials", "coverage_trials", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be >= 1")
    key = jax.random.key(args.seed)
    law = laws.TruncNormal(jnp.float64(0.6), jnp.float64(0.2))
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, float64")

    exact = _best_time(lambda: laws.sample_max(law, key, args.n, (args.trials,)), args.repeats)
    print(f"exact_max_trials_per_s (N={args.n}): {args.trials / exact:.3e}")
    full = _best_time(
        lambda: laws.sample_max_full(law, key, args.n, (args.full_trials,)), args.repeats
    )
    print(f"draw_n_then_max_trials_per_s (N={args.n}): {args.full_trials / full:.3e}")
    print(f"exact_max_speedup: {(args.trials / exact) / (args.full_trials / full):.1f}")

    grid = _default_coverage_grid()
    population = populations.grid(grid.mu, grid.sigma)
    cells = len(population) * len(grid.s_min) * len(grid.alpha)
    draws = cells * args.coverage_trials

    def study():
        return studies.coverage_study(
            population.mu,
            population.sigma,
            grid.s_min,
            grid.alpha,
            [0.0],
            trials=args.coverage_trials,
            seed=args.seed,
        )

    study_time = _best_time(study, args.repeats)
    block = studies.coverage_block_trials(cells, args.coverage_trials)
    blocks = -(-args.coverage_trials // block)
    uniforms = jax.jit(lambda k: jax.random.uniform(k, (block, cells), jnp.float64))

    def floor():
        out = None
        for i in range(blocks):
            out = uniforms(jax.random.fold_in(key, i))
        return out

    floor_time = _best_time(floor, args.repeats)
    print(f"coverage_cells: {cells}, trials_per_cell: {args.coverage_trials}")
    print(f"coverage_study_s: {study_time:.3f} ({draws / study_time:.3e} trials/s)")
    print(f"rng_floor_s: {floor_time:.3f} ({draws / floor_time:.3e} uniforms/s)")
    print(f"coverage_vs_rng_floor: {study_time / floor_time:.2f}")
    return 0
