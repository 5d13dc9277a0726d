"""`optscale bench scale`: a streamed replay of logs of 10^5 and 10^6 questions.

Writes synthetic JSONL logs (per question: `samples` truncated-normal scores on [0, 1] with
a seeded (mu, sigma) per question, each sample correct with probability its score), written
block by block so that writing does not hold the log either. Replays each with
`optscale replay LOG --stream` (one sample order, OptScale0 on a 12-cell (s_min, alpha) grid
plus Best-of-N at N = 1, 2, 4, ..., samples) in a fresh process, whose wall time and peak
resident memory are measured. Prints the time of each run, then
`time_ratio_{largest}_vs_{smallest}: X` (linear scaling: the ratio of the sizes) and
`peak_rss_gb: Y` of the largest run.

With `--processes P` the largest log is also replayed by P local processes joined by
`jax.distributed` on 127.0.0.1 (one device each, each reading its share of the log), and
the line `processes_P_vs_1: X` gives their wall time over the one-process run's, after a
check that process 0 wrote the same result files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

S_MIN_GRID = ("0.6", "0.7", "0.8")
ALPHA_GRID = ("0.5", "0.8", "0.9", "0.95")
_WRITE_BLOCK = 10_000


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's arguments."""
    parser.add_argument(
        "--sizes",
        "--questions",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        metavar="Q",
        help="questions of each synthetic log (the ratio compares the largest with the smallest)",
    )
    parser.add_argument("--samples", type=int, default=64, help="samples per question")
    parser.add_argument(
        "--block-questions", type=int, default=10_000, help="questions per streamed block"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=200, help="bootstrap resamples of the replays' CIs"
    )
    parser.add_argument(
        "--work", help="folder for the logs and replay outputs (default: a temporary folder)"
    )
    parser.add_argument("--permutations", type=int, default=1, help="sample orders of each replay")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logs")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also replay the largest log over this many local processes (jax.distributed)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="replay in this process (a quick check: the peak RSS is then this process's)",
    )


def write_synthetic_log(path: pathlib.Path, questions: int, samples: int, seed: int) -> None:
    """A JSONL log of `questions` x `samples` truncated-normal scores, written in blocks.

    Args:
        path: the file to write.
        questions: Q.
        samples: K per question.
        seed: seeds (mu, sigma) per question, the scores and the labels.
    """
    import numpy as np
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(seed)
    with path.open("w") as file:
        for first in range(0, questions, _WRITE_BLOCK):
            size = min(_WRITE_BLOCK, questions - first)
            mu = rng.uniform(0.2, 0.8, (size, 1))
            sigma = rng.uniform(0.05, 0.25, (size, 1))
            low, high = ndtr(-mu / sigma), ndtr((1 - mu) / sigma)
            uniform = low + rng.random((size, samples)) * (high - low)
            scores = np.clip(np.round(mu + sigma * ndtri(uniform), 4), 0.0, 1.0)
            correct = rng.random((size, samples)) < scores
            file.writelines(
                json.dumps({"id": f"q{first + i}", "scores": s, "correct": c}) + "\n"
                for i, (s, c) in enumerate(zip(scores.tolist(), correct.tolist(), strict=True))
            )


def replay_arguments(log: pathlib.Path, out: pathlib.Path, args: argparse.Namespace) -> list[str]:
    """`optscale replay` arguments of one streamed run."""
    fixed_n = [str(2**i) for i in range(args.samples.bit_length()) if 2**i < args.samples]
    return [
        "replay", str(log), "--stream", "--block-questions", str(args.block_questions),
        "--methods", "bon", "optscale0", "--permutations", str(args.permutations), "--max-n", str(args.samples),
        "--fixed-n", *fixed_n, str(args.samples), "--s-min", *S_MIN_GRID,
        "--alpha", *ALPHA_GRID, "--min-samples", "1", "--bootstrap", str(args.bootstrap),
        "--no-progress", "--no-figures", "--out", str(out),
    ]  # fmt: skip


def _timed_replay(arguments: list[str], log_file: pathlib.Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of `optscale ARGUMENTS` in a fresh process."""
    command = [_optscale_command(), *arguments]
    start = time.perf_counter()
    with log_file.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"replay failed ({process.returncode}): see {log_file}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _warm_up(work: pathlib.Path, args: argparse.Namespace, measure) -> float:
    """An untimed replay of one block (the timed runs' block shape), so that neither timed
    run pays the compilation (kept in memory, or in the persistent compilation cache).

    Returns:
        Its wall seconds.
    """
    log = work / "warm_up.jsonl"
    write_synthetic_log(log, min(args.block_questions, *args.sizes), args.samples, args.seed + 1)
    return measure(replay_arguments(log, work / "replay_warm_up", args), work / "warm_up.out")[0]


def _optscale_command() -> str:
    """The `optscale` command of this Python (its environment's scripts), else on PATH."""
    beside = pathlib.Path(sys.executable).with_name("optscale")
    command = str(beside) if beside.exists() else shutil.which("optscale")
    if command is None:
        raise RuntimeError("the optscale command is not installed (pip install -e .)")
    return command


def _timed_in_process(arguments: list[str], log_file: pathlib.Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB of this process so far) of `optscale ARGUMENTS` run
    here (`replay_cli`), its terminal output dropped (`log_file` unused)."""
    import io
    import resource

    from optscale_jax.experiments import replay_cli

    parser = argparse.ArgumentParser()
    replay_cli.configure(parser)
    replay_args = parser.parse_args(arguments[1:])  # without "replay"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        replay_cli.run(replay_args)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _size_name(questions: int) -> str:
    """1e5 for 100000; the number itself when it is not a power of ten."""
    exponent = len(str(questions)) - 1
    return f"1e{exponent}" if questions == 10**exponent else str(questions)


def run(args: argparse.Namespace) -> int:
    """Writes the logs, replays each in a fresh process and prints the figures."""
    for name in ("samples", "block_questions", "bootstrap", "permutations", "processes"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be >= 1")
    if any(size < 2 for size in args.sizes):
        raise ValueError("sizes must be >= 2 (the replay splits dev and test)")
    sizes = sorted(set(args.sizes))
    with contextlib.ExitStack() as stack:
        work = args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-"))
        work = pathlib.Path(work)
        work.mkdir(parents=True, exist_ok=True)
        measure = _timed_in_process if args.in_process else _timed_replay
        print(
            f"warm-up (compilation, cached for the timed runs): {_warm_up(work, args, measure):.1f} s"
        )
        timings = {}
        for size in sizes:
            log = work / f"synthetic_{size}.jsonl"
            start = time.perf_counter()
            write_synthetic_log(log, size, args.samples, args.seed)
            written = time.perf_counter() - start
            out = work / f"replay_{size}"
            timings[size] = measure(replay_arguments(log, out, args), work / f"{size}.out")
            print(
                f"questions {size} x {args.samples}: wrote the log in {written:.1f} s, "
                f"replay {timings[size][0]:.1f} s, peak RSS {timings[size][1]:.2f} GB"
            )
            if args.processes > 1 and size == sizes[-1]:
                seconds = _timed_processes(log, out, args, work)
        small, large = sizes[0], sizes[-1]
        ratio = timings[large][0] / timings[small][0]
        print(f"time_ratio_{_size_name(large)}_vs_{_size_name(small)}: {ratio:.2f}")
        print(f"peak_rss_gb: {timings[large][1]:.2f}")
        if args.processes > 1:
            print(f"processes_{args.processes}_vs_1: {seconds / timings[large][0]:.2f}")
    return 0


def _timed_processes(
    log: pathlib.Path, out: pathlib.Path, args: argparse.Namespace, work: pathlib.Path
) -> float:
    """Wall seconds of the replay of `log` over `args.processes` local processes (one
    device each), whose result files are checked against the one-process run's in `out`."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = args.processes
    joined = out.with_name(out.name + "_processes")
    arguments = [*replay_arguments(log, joined, args), "--devices", "1"]
    arguments += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes)]
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        running = []
        for index in range(processes):
            output = stack.enter_context((work / f"process{index}.out").open("w"))
            command = [_optscale_command(), *arguments, "--process-id", str(index)]
            running.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))
        failed = [index for index, process in enumerate(running) if process.wait()]
    seconds = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"process {failed[0]} failed: see {work}/process{failed[0]}.out")
    for name in ("results.csv", "summary.json", "per_question.csv"):
        if (joined / name).read_bytes() != (out / name).read_bytes():
            raise RuntimeError(f"{joined / name} differs from the one-process run's")
    print(f"{processes} processes: replay {seconds:.1f} s, result files identical")
    return seconds
