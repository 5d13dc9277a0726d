"""`optscale bench replay`: prefix fits per second, the cost of an (s_min, alpha) grid, and
the speed of the Adaptive-Consistency stop against its authors' own loop.

A synthetic log (per question mu ~ U(0.3, 0.8), sigma ~ U(0.05, 0.3); truncated-normal
scores from the core sampler; seeded) is replayed over R sample orders with OptScale0
(sequential rule). The single cell and the whole grid run the same code
(`optscale_jax.replay.optscale_decisions`: one batched prefix fit, then per cell only
elementwise work), so `grid_cost_ratio` = grid time / single-cell time shows what the grid
adds on top of the fits. `prefix_vs_single_fit_rate` = prefix fits per second (every
prefix of every order, warm-started along the prefixes) over independent fits per second
(`fit_mle` of every order's full set of K scores, each from scratch), both measured here in
the same dtype. `asc_vs_peer_loop` = the time the authors' package (`adaptiveconsistency`,
one `BetaStoppingCriteria` per question, `should_stop` after every sample, as its README
runs it) needs for the Adaptive-Consistency stop of a synthetic vote log, over the time of
`policies.adaptive_consistency_stop` on all of it; the peer is timed on a subsample of
(order, question) rows and extrapolated per row, and its decisions are compared with ours
on that subsample. Compilation is excluded (warm-up runs on the same shapes). Ratios are
computed from process CPU time, which other jobs on a shared machine do not inflate; wall
times are printed too.
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
    vote = parser.add_argument_group("Adaptive-Consistency stop (vote log)")
    vote.add_argument("--vote-questions", type=int, default=500, help="questions of the vote log")
    vote.add_argument("--vote-samples", type=int, default=40, help="answers per question")
    vote.add_argument("--vote-orders", type=int, default=20, help="sample orders of the vote log")
    vote.add_argument("--threshold", type=float, default=0.95, help="ASC stopping threshold")
    vote.add_argument(
        "--peer-rows",
        type=int,
        default=500,
        help="(order, question) rows timed through the peer's loop (extrapolated per row)",
    )


def _timed(function, repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best process CPU seconds, result) over `repeats` runs."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def _synthetic_replay(args: argparse.Namespace):
    """The seeded synthetic log, in R sample orders, with scores in the benchmark's dtype."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from optscale_jax import replay, truncnorm
    from optscale_jax.logs import Log

    dtype = jnp.dtype(args.dtype)
    q, k = args.questions, args.samples
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
    replayed = replay.permute(log, args.permutations, seed=args.seed)
    return replayed._replace(scores=replayed.scores.astype(dtype))


def _vote_log(args: argparse.Namespace):
    """Seeded answer codes `[orders, questions, samples]` for the Adaptive-Consistency stop.

    Each question has 8 candidate answers with Dirichlet(0.3) probabilities (from near
    unanimous to split); 5% of the samples carry no answer (-1). Every order is a random
    permutation of the question's samples.
    """
    import numpy as np

    rng = np.random.default_rng(args.seed)
    q, k, r = args.vote_questions, args.vote_samples, args.vote_orders
    probabilities = rng.dirichlet(np.full(8, 0.3), size=q)
    # Inverse-CDF draws; the clip guards a cumulative sum that rounds below 1.
    drawn = (probabilities.cumsum(-1)[:, None, :] < rng.random((q, k, 1))).sum(-1)
    answers = np.where(rng.random((q, k)) < 0.05, -1, np.minimum(drawn, 7))
    orders = np.argsort(rng.random((r, q, k)), axis=-1)
    return np.take_along_axis(answers[None], orders, axis=-1).astype(np.int32)


def peer_asc_stops(answers, threshold: float) -> tuple[list[int], list[int | None]]:
    """The Adaptive-Consistency authors' stop, run as their README does, row by row.

    One `adaptive_consistency.BetaStoppingCriteria(threshold)` per row (an ordered
    question), `should_stop` on the answers drawn so far after every sample; samples
    without an answer (-1) are not passed on (they do not vote), and a row stops at the
    first sample after which `should_stop` says so, else after all its samples.

    Args:
        answers: rows of int answer codes (-1 = no answer), e.g. `[rows, K]`; rows may
            differ in length (the samples available).
        threshold: the criterion's `conf_thresh`.

    Returns:
        (samples drawn, the answer returned or None if no sample had one) per row.
    """
    from adaptive_consistency import BetaStoppingCriteria

    samples, chosen = [], []
    for row in answers:
        criterion = BetaStoppingCriteria(threshold)
        votes, result, drawn = [], None, len(row)
        for n, answer in enumerate(row.tolist(), 1):
            if answer >= 0:
                votes.append(answer)
            if votes:
                result = criterion.should_stop(votes)
                if result["stop"]:
                    drawn = n
                    break
        samples.append(drawn)
        chosen.append(None if result is None else result["most_common"])
    return samples, chosen


def _asc_vs_peer(args: argparse.Namespace) -> float | None:
    """Times the ASC stop on the vote log and the peer's loop on `--peer-rows` rows of it;
    prints both and the peer's agreement; returns asc_vs_peer_loop (CPU), None without peer."""
    import importlib.util

    import jax
    import numpy as np

    from optscale_jax import policies

    answers = _vote_log(args)
    mask = np.ones(answers.shape, bool)
    r, q, k = answers.shape

    def ours():
        return jax.block_until_ready(
            policies.adaptive_consistency_stop(answers, mask, args.threshold)
        )

    ours()
    wall, cpu, decision = _timed(ours, max(args.repeats, 5))
    print(
        f"adaptive-consistency stop (threshold {args.threshold}): {r} orders x {q} questions "
        f"x {k} answers in {wall * 1e3:.1f} ms wall ({cpu * 1e3:.1f} ms CPU); "
        f"mean samples {float(np.mean(decision.samples)):.2f}"
    )
    if importlib.util.find_spec("adaptive_consistency") is None:
        print("peer not installed: pip install adaptiveconsistency (the `test` extra)")
        return None
    rows = answers.reshape(-1, k)[: args.peer_rows]
    peer_wall, peer_cpu, (peer_samples, peer_chosen) = _timed(
        lambda: peer_asc_stops(rows, args.threshold), 1
    )
    samples = np.asarray(decision.samples).reshape(-1)[: len(rows)]
    picked = np.take_along_axis(rows, np.asarray(decision.chosen).reshape(-1, 1)[: len(rows)], 1)
    same = [
        n == peer_n and (peer_answer is None or peer_answer == answer)
        for n, peer_n, answer, peer_answer in zip(
            samples.tolist(), peer_samples, picked[:, 0].tolist(), peer_chosen, strict=True
        )
    ]
    per_row = peer_cpu / len(rows)
    print(
        f"peer loop (adaptiveconsistency BetaStoppingCriteria): {len(rows)} rows in "
        f"{peer_wall:.2f} s wall ({peer_cpu:.2f} s CPU) = {per_row * 1e3:.2f} ms per row, "
        f"{per_row * r * q:.1f} s CPU for all {r * q} rows; same decisions on "
        f"{sum(same)}/{len(same)} rows"
    )
    return per_row * r * q / cpu


def _fit_rates(replayed, repeats: int) -> float:
    """Times prefix fits (warm-started), the same prefixes each fitted from scratch, and one
    independent fit per ordered question; prints them; returns prefix over independent fits
    per second (CPU)."""
    import jax
    import numpy as np

    from optscale_jax import estimation, policies

    scores, mask = replayed.scores, replayed.mask
    runs = {
        "prefix fits": lambda: policies.prefix_fits(scores, mask),
        "prefix fits, each from scratch": lambda: estimation.fit_mle_stats(
            *estimation.prefix_stats(scores, mask)
        ),
        "independent fits (all K scores of each order)": lambda: estimation.fit_mle(scores, mask),
    }
    rates = {}
    for name, fit in runs.items():
        jax.block_until_ready(fit())  # compiles
        wall, cpu, result = _timed(lambda fit=fit: jax.block_until_ready(fit()), repeats)
        count = result.mu.size
        rates[name] = count / cpu
        status = np.bincount(np.asarray(result.status).ravel(), minlength=4).tolist()
        print(
            f"{name}: {count:,} in {wall:.2f} s wall ({cpu:.2f} s CPU) = "
            f"{count / wall:,.0f} fits/s wall, {count / cpu:,.0f} fits/s CPU, "
            f"mean steps {float(np.mean(result.steps)):.2f} (status counts {status})"
        )
    return rates["prefix fits"] / rates["independent fits (all K scores of each order)"]


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures; the last line is `grid_cost_ratio: X`."""
    for flag, value in (
        ("--questions", args.questions),
        ("--samples", args.samples),
        ("--permutations", args.permutations),
        ("--repeats", args.repeats),
        ("--vote-questions", args.vote_questions),
        ("--vote-samples", args.vote_samples),
        ("--vote-orders", args.vote_orders),
        ("--peer-rows", args.peer_rows),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    # --s-min and --alpha are checked once, by `replay.optscale_decisions`; --threshold by
    # `policies.adaptive_consistency_stop`.
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    from optscale_jax import replay

    replayed = _synthetic_replay(args)
    q, k, r = args.questions, args.samples, args.permutations
    cells = len(args.s_min) * len(args.alpha)
    print(
        f"synthetic log: {q} questions x {k} samples, {r} orders ({r * q * k:,} prefixes), "
        f"{args.dtype}, grid {len(args.s_min)} s_min x {len(args.alpha)} alpha = {cells} cells"
    )

    def one_cell():
        return replay.optscale_decisions(replayed, args.s_min[:1], args.alpha[:1], max_n=k)

    def grid():
        return replay.optscale_decisions(replayed, args.s_min, args.alpha, max_n=k)

    # Warm-up runs compile everything the timed runs use (the grid's shapes differ).
    one_cell()
    grid()
    fit_rate_ratio = _fit_rates(replayed, args.repeats)
    single_wall, single_cpu, _ = _timed(one_cell, args.repeats)
    print(f"single cell (fits + N* + stops): {single_wall:.2f} s wall ({single_cpu:.2f} s CPU)")
    grid_wall, grid_cpu, (grid_cells, samples, _, _) = _timed(grid, args.repeats)
    means = samples.mean(axis=(1, 2))
    print(
        f"grid of {len(grid_cells)} cells (same fits reused): {grid_wall:.2f} s wall "
        f"({grid_cpu:.2f} s CPU); mean samples per cell {means.min():.2f} to {means.max():.2f}"
    )
    asc_ratio = _asc_vs_peer(args)
    print(f"prefix_vs_single_fit_rate: {fit_rate_ratio:.3f}")
    print(f"asc_vs_peer_loop: {'peer not installed' if asc_ratio is None else f'{asc_ratio:,.0f}'}")
    print(f"grid_cost_ratio_wall: {grid_wall / single_wall:.3f}")
    # CPU time is the robust figure on a shared machine (other jobs inflate wall time).
    print(f"grid_cost_ratio: {grid_cpu / single_cpu:.3f}")
    return 0
