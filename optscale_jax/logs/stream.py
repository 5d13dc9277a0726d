"""`iter_log_blocks`: a log too big for memory, read as `Log`s of at most B questions each.

JSONL logs of per-question records are read in chunks of lines, Parquet logs in record
batches (pyarrow), so only one block of questions is in memory at a time. Each block is
validated as `read_log` validates a whole file, with one exception: ids are checked unique
within a block, not across blocks (that would hold every id). Answer codes are numbered
within each question, so they mean the same in a block as in the whole log.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Iterator

from optscale_jax.logs.jsonfiles import json_lines
from optscale_jax.logs.readers import (
    detect_format,
    parquet_known_columns,
    parquet_lists,
    parquet_questions,
)
from optscale_jax.logs.records import fail, question_from_record
from optscale_jax.logs.schema import Log, assemble

STREAM_FORMATS = ("jsonl", "parquet")
"""The formats `iter_log_blocks` reads (the others are single JSON documents)."""


def iter_log_blocks(
    path: str | os.PathLike, block_questions: int, format: str = "auto"
) -> Iterator[Log]:
    """The log's questions in file order, as `Log`s of at most `block_questions` questions.

    Each block is padded to its own longest question (`Log.mask.shape[1]` may differ
    between blocks).

    Args:
        path: a JSONL log of per-question records, or a Parquet log.
        block_questions: B, questions per block (>= 1).
        format: "auto", "jsonl" or "parquet".

    Yields:
        `Log` per block, its `source` the file.

    Raises:
        ValueError: naming `format` for a format that cannot be streamed, `block_questions`
            below 1, or malformed input as `read_log` raises it.
        FileNotFoundError: a missing file.
    """
    path = pathlib.Path(path)
    if block_questions < 1:
        raise ValueError(f"block_questions must be >= 1, got {block_questions}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file")
    if format == "auto":
        format = detect_format(path)
    if format not in STREAM_FORMATS:
        raise ValueError(
            f"format: {format!r} logs are read whole; streaming reads {' or '.join(STREAM_FORMATS)}"
        )
    blocks = _parquet_blocks if format == "parquet" else _jsonl_blocks
    yield from blocks(path, block_questions)


def _jsonl_blocks(path: pathlib.Path, block_questions: int) -> Iterator[Log]:
    lines = json_lines(path)
    while chunk := list(itertools.islice(lines, block_questions)):
        questions = []
        for line_number, value in chunk:
            where = f"{path}:{line_number}"
            if "sample_index" in value:
                fail(
                    where, "sample_index", "a per-sample record: streaming reads per-question logs"
                )
            questions.append(question_from_record(value, where))
        yield assemble(questions, str(path))


def _parquet_blocks(path: pathlib.Path, block_questions: int) -> Iterator[Log]:
    import pyarrow.parquet as pq

    known = parquet_known_columns(path)
    first_row = 0
    # pyarrow raises several exception types for damaged files: each one means unreadable.
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=block_questions, columns=known)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    for batch in batches:
        columns = parquet_lists(batch, known, path)
        yield assemble(parquet_questions(columns, path, first_row), str(path))
        first_row += batch.num_rows
