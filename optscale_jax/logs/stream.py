"""`iter_log_blocks`: a log too big for memory, read as `Log`s of at most B questions each.

JSONL logs of per-question records are read in chunks of lines, Parquet logs in record
batches (pyarrow), so only one block of questions is in memory at a time. Each block is
validated as `read_log` validates a whole file, with one exception: ids are checked unique
within a block, not across blocks (that would hold every id). Answer codes are numbered
within each question, so they mean the same in a block as in the whole log.

`questions=slice(a, b)` reads questions a..b-1 only (one process's share of a log replayed
over several hosts): JSONL lines before them are skipped unparsed, Parquet row groups
outside them unread; `count_log_questions` gives Q without reading the records.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Iterator

from optscale_jax.io import count_jsonl_records
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
    path: str | os.PathLike,
    block_questions: int,
    format: str = "auto",
    questions: slice | None = None,
) -> Iterator[Log]:
    """The log's questions in file order, as `Log`s of at most `block_questions` questions.

    Each block is padded to its own longest question (`Log.mask.shape[1]` may differ
    between blocks).

    Args:
        path: a JSONL log of per-question records, or a Parquet log.
        block_questions: B, questions per block (>= 1).
        format: "auto", "jsonl" or "parquet".
        questions: only these questions (a slice of file positions, step 1); None: all.

    Yields:
        `Log` per block, its `source` the file.

    Raises:
        ValueError: naming `format` for a format that cannot be streamed, `block_questions`
            below 1, or malformed input as `read_log` raises it.
        FileNotFoundError: a missing file.
    """
    if block_questions < 1:
        raise ValueError(f"block_questions must be >= 1, got {block_questions}")
    if questions is not None and questions.step not in (None, 1):
        raise ValueError(f"questions must be a slice of step 1, got {questions!r}")
    path, format = _stream_format(path, format)
    blocks = _parquet_blocks if format == "parquet" else _jsonl_blocks
    yield from blocks(path, block_questions, questions or slice(None))


def count_log_questions(path: str | os.PathLike, format: str = "auto") -> int:
    """The number of questions of a JSONL or Parquet log: its non-blank lines (unparsed) or
    its rows (from the Parquet metadata).

    Raises:
        ValueError, FileNotFoundError: as `iter_log_blocks`.
    """
    path, format = _stream_format(path, format)
    if format == "jsonl":
        return count_jsonl_records(path)
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None


def _stream_format(path: str | os.PathLike, format: str) -> tuple[pathlib.Path, str]:
    """The path, checked to exist, and its format, checked to stream."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file")
    if format == "auto":
        format = detect_format(path)
    if format not in STREAM_FORMATS:
        raise ValueError(
            f"format: {format!r} logs are read whole; streaming reads {' or '.join(STREAM_FORMATS)}"
        )
    return path, format


def _jsonl_blocks(path: pathlib.Path, block_questions: int, questions: slice) -> Iterator[Log]:
    lines = json_lines(path, questions)
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


def _parquet_blocks(path: pathlib.Path, block_questions: int, questions: slice) -> Iterator[Log]:
    import pyarrow.parquet as pq

    known = parquet_known_columns(path)
    # pyarrow raises several exception types for damaged files: each one means unreadable.
    try:
        file = pq.ParquetFile(path)
        start, stop, _ = questions.indices(file.metadata.num_rows)
        groups, first_row = _row_groups(file.metadata, start, stop)
        batches = file.iter_batches(batch_size=block_questions, row_groups=groups, columns=known)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    for batch in batches if groups else ():
        # Rows of the first and last groups outside the questions are dropped.
        low, high = max(start - first_row, 0), min(stop - first_row, batch.num_rows)
        if low < high:
            columns = parquet_lists(batch.slice(low, high - low), known, path)
            yield assemble(parquet_questions(columns, path, first_row + low), str(path))
        first_row += batch.num_rows


def _row_groups(metadata, start: int, stop: int) -> tuple[list[int], int]:
    """The row groups holding rows [start, stop), and the first row of the first of them."""
    groups, first_row, row = [], None, 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if row < stop and row + rows > start:
            groups.append(group)
            first_row = row if first_row is None else first_row
        row += rows
    return groups, row if first_row is None else first_row
