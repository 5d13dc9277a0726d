"""Streamed replay (`optscale replay --stream`, `replay.stream`, `logs.stream`): the same
result files as the in-memory replay, block by block; and `optscale bench scale`."""

import json

import numpy as np
import pytest

from optscale_jax.experiments import cli
from optscale_jax.logs import read_log
from optscale_jax.logs.stream import iter_log_blocks

# test_replay's shapes (4 orders, blocks of 24 questions x 10 samples) compile once for both.
BLOCK, K = 24, 10
GRID_FLAGS = [
    "--methods", "bon", "optscale0", "--s-min", "0.6", "0.8", "--alpha", "0.5", "0.9",
    "--min-samples", "1", "3", "--permutations", "4", "--bootstrap", "200", "--no-progress",
    "--no-figures",
]  # fmt: skip
RESULT_FILES = ("results.csv", "summary.json", "per_question.csv")


def _records(questions=3 * BLOCK, seed=0):
    """Ragged questions with tokens; the second block's questions have at most 8 samples
    (a block narrower than the log: it is padded to K)."""
    rng = np.random.default_rng(seed)
    records = []
    for q in range(questions):
        count = int(rng.integers(4, 9 if BLOCK <= q < 2 * BLOCK else K + 1))
        skill = rng.uniform(0.2, 0.9)
        correct = (rng.random(count) < skill).tolist()
        scores = np.clip(np.where(correct, 0.7, 0.4) + rng.normal(0, 0.15, count), 0, 1)
        tokens = rng.integers(50, 400, count).tolist()
        records.append(
            {
                "id": f"q{q}",
                "scores": scores.round(4).tolist(),
                "tokens": tokens,
                "correct": correct,
            }
        )
    return records


@pytest.fixture(scope="module")
def jsonl_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "log.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in _records()))
    return path


def _replay(log, out, *flags):
    assert cli.main(["replay", str(log), *GRID_FLAGS, *flags, "--out", str(out)]) == 0


def test_streamed_replay_writes_the_in_memory_files(jsonl_log, tmp_path, capsys):
    _replay(jsonl_log, tmp_path / "memory")
    _replay(jsonl_log, tmp_path / "stream", "--stream", "--block-questions", str(BLOCK))
    for name in RESULT_FILES:
        assert (tmp_path / "stream" / name).read_bytes() == (
            tmp_path / "memory" / name
        ).read_bytes()
    outcomes = np.load(tmp_path / "stream" / "outcomes" / "samples.npy")
    assert outcomes.shape[1] == 3 * BLOCK


def test_parquet_streams_in_row_groups_like_jsonl(jsonl_log, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pylist(_records()), path, row_group_size=BLOCK)
    blocks = list(iter_log_blocks(path, BLOCK))
    assert [len(block.ids) for block in blocks] == [BLOCK] * 3
    assert sum((block.ids for block in blocks), []) == read_log(path).ids
    _replay(jsonl_log, tmp_path / "jsonl", "--stream", "--block-questions", str(BLOCK))
    _replay(path, tmp_path / "parquet", "--stream", "--block-questions", str(BLOCK))
    for name in ("results.csv", "per_question.csv"):
        assert (tmp_path / "parquet" / name).read_bytes() == (
            tmp_path / "jsonl" / name
        ).read_bytes()


def test_stream_refuses_what_is_not_per_question(jsonl_log, tmp_path, capsys):
    flags = ["--stream", "--out", str(tmp_path)]
    for extra, message in [
        (["--methods", "bon", "budget", "--budget", "4"], "--methods: budget cannot be streamed"),
        (["--select", "ltt", "--methods", "sc"], "--select: a streamed replay"),
        (["--demo"], "--stream reads LOG"),
    ]:
        log = [] if "--demo" in extra else [str(jsonl_log)]
        assert cli.main(["replay", *log, *flags, *extra]) == 2
        assert message in capsys.readouterr().err


def test_bench_scale_prints_its_figures(tmp_path, capsys):
    flags = ["--sizes", "24", "48", "--samples", str(K), "--block-questions", str(BLOCK)]
    flags += ["--permutations", "4", "--bootstrap", "20"]
    assert cli.main(["bench", "scale", *flags, "--in-process", "--work", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("time_ratio_48_vs_24: ")
    assert lines[-1].startswith("peak_rss_gb: ")
    assert float(lines[-1].split()[-1]) > 0
