"""`optscale replay` over two processes joined by `jax.distributed`: each reads its share of
the log (`logs.stream.iter_log_blocks(questions=...)`), process 0 writes one process's files.

The two processes (2 forced devices each, so each also shards its share over a
process-local mesh) start first and run while this process makes the one-process reference.
9 questions in blocks of 2: the shares are 4 and 5 questions, so process 0 runs out of
blocks a round before process 1 and the lockstep gather sees a process with nothing left.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from live_models import free_port

from optscale_jax import io
from optscale_jax.experiments import cli
from optscale_jax.logs import read_log
from optscale_jax.logs.stream import count_log_questions, iter_log_blocks

QUESTIONS, K = 9, 6
FLAGS = [
    "--methods", "bon", "sc", "esc", "optscale0", "--s-min", "0.6", "0.8", "--alpha", "0.5",
    "0.9", "--min-samples", "1", "3", "--permutations", "3", "--bootstrap", "50",
    "--block-questions", "2", "--no-progress", "--no-figures",
]  # fmt: skip

_RUN = """
import json, sys
from optscale_jax.experiments.cli import main
sys.exit(main(json.loads(sys.argv[1])))
"""


def _records():
    rng = np.random.default_rng(5)
    records = []
    for q in range(QUESTIONS):
        count = int(rng.integers(3, K + 1))
        skill = rng.uniform(0.2, 0.9)
        correct = rng.random(count) < skill
        answers = np.where(correct, 0, rng.integers(1, 3, count))
        scores = np.clip(np.where(correct, 0.7, 0.4) + rng.normal(0, 0.15, count), 0, 1)
        records.append(
            {
                "id": f"q{q}",
                "scores": scores.round(4).tolist(),
                "answers": [f"a{a}" for a in answers],
                "correct": correct.tolist(),
            }
        )
    return records


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("processes") / "log.jsonl"
    # Blank lines do not count as questions in a share.
    path.write_text("\n".join(json.dumps(record) + "\n" for record in _records()))
    return path


def test_two_processes_write_one_processs_files(log_path, tmp_path):
    port = free_port()
    env = dict(os.environ)
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        OPTSCALE_COMPILE_CACHE="0",
    )
    workers = []
    for process in (0, 1):
        argv = ["replay", str(log_path), *FLAGS, "--out", str(tmp_path / f"process{process}")]
        argv += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
        argv += ["--process-id", str(process)]
        # stderr to a file: a pipe nobody reads until the end could fill and block the run.
        with open(tmp_path / f"process{process}.stderr", "w") as errors:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-c", _RUN, json.dumps(argv)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                )
            )
    try:
        one = tmp_path / "one"
        assert cli.main(["replay", str(log_path), *FLAGS, "--stream", "--out", str(one)]) == 0
        for worker in workers:
            worker.wait(timeout=300)
    finally:
        for worker in workers:
            worker.kill()
    for process, worker in enumerate(workers):
        errors = (tmp_path / f"process{process}.stderr").read_text()
        assert worker.returncode == 0, errors[-3000:]
    names = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    zero = tmp_path / "process0"
    assert names == sorted(p.relative_to(zero) for p in zero.rglob("*") if p.is_file())
    assert {str(n) for n in names} >= {"results.csv", "summary.json", "outcomes/samples.npy"}
    assert [str(n) for n in names if (one / n).read_bytes() != (zero / n).read_bytes()] == []
    assert not (tmp_path / "process1").exists()


def test_a_share_of_a_log_is_read_without_the_rest(log_path, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    whole = read_log(log_path)
    parquet = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pylist(_records()), parquet, row_group_size=4)
    for path in (log_path, parquet):
        assert count_log_questions(path) == QUESTIONS
        for share in (slice(0, 4), slice(3, 9), slice(5, 6), slice(9, 9)):
            blocks = list(iter_log_blocks(path, 2, questions=share))
            assert all(len(block.ids) <= 2 for block in blocks)
            assert sum((block.ids for block in blocks), []) == whole.ids[share]
            scores = [
                s[m] for block in blocks for s, m in zip(block.scores, block.mask, strict=True)
            ]
            expected = [s[m] for s, m in zip(whole.scores[share], whole.mask[share], strict=True)]
            assert all(np.array_equal(a, b) for a, b in zip(scores, expected, strict=True))
    # The lines before a share are not parsed: a broken one there does not stop the read.
    broken = tmp_path / "broken.jsonl"
    lines = log_path.read_text().splitlines(keepends=True)
    broken.write_text("{not json\n" + "".join(lines))
    assert [block.ids for block in iter_log_blocks(broken, 9, questions=slice(1, 3))] == [
        ["q0", "q1"]
    ]
    with pytest.raises(ValueError, match=r"broken.jsonl:1: not JSON"):
        list(io.iter_jsonl(broken, slice(0, 1)))


def test_a_log_with_fewer_questions_than_processes_is_refused(tmp_path, monkeypatch):
    import jax

    from optscale_jax.replay.stream import _process_questions

    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(_records()[0]) + "\n")
    assert _process_questions(one, "auto") is None  # one process: all, no count
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match=r"one.jsonl: 1 questions for 2 processes"):
        _process_questions(one, "auto")
