"""Files: atomic writes (a killed run never leaves half a file), CSV, JSON and JSONL.

Every writer goes through `atomic_path`: the content is written to a temporary file beside
the target, flushed to disk, and renamed over it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A temporary path beside `path` that is renamed over it when the block succeeds.

    The parent folders are created; on an exception the temporary file is removed and
    `path` keeps its old content. The file is made readable by others (0644).

    Args:
        path: the final path.

    Yields:
        The temporary path to write to.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; result files are for sharing
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, write: Callable[[IO[str]], None]) -> pathlib.Path:
    """Calls `write(handle)` on a UTF-8 text handle, atomically replacing `path`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        write(handle)
    return pathlib.Path(path)


def to_plain(value: Any) -> Any:
    """numpy / jax scalars and arrays -> Python values; NaN and infinities -> None (valid JSON)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def write_json(obj: Any, path: str | os.PathLike) -> pathlib.Path:
    """Writes `obj` as indented JSON, atomically."""
    return atomic_write_text(path, lambda h: json.dump(to_plain(obj), h, indent=2))


def write_jsonl_records(
    records: Iterable[Mapping[str, Any]], path: str | os.PathLike
) -> pathlib.Path:
    """Writes JSON objects one per line, atomically (numpy scalars converted, NaN refused)."""

    def write(handle: IO[str]) -> None:
        for record in records:
            handle.write(json.dumps(to_plain(record), ensure_ascii=False, allow_nan=False))
            handle.write("\n")

    return atomic_write_text(path, write)


def iter_jsonl(
    path: str | os.PathLike, records: slice | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, object) for each non-blank line of a JSONL file.

    A UTF-8 byte order mark and Windows line ends are read as plain UTF-8 text.

    Args:
        path: the file.
        records: only the records (non-blank lines, counted from 0) in this slice (step 1)
            are parsed and yielded; the others are skipped unparsed. None: every record.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and line, for a line that is not a JSON object: invalid
            JSON, bytes that are not UTF-8, an integer too long to convert, nesting too deep.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    start = 0 if records is None else records.start or 0
    stop = math.inf if records is None or records.stop is None else records.stop
    index = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
            if index >= stop:
                return
            if index < start:
                index += not _blank(raw)
                continue
            record = _json_line(raw)
            if isinstance(record, str):
                raise ValueError(f"{path}:{number}: {record}")
            if record is not None:
                index += 1
                yield number, record


def count_jsonl_records(path: str | os.PathLike) -> int:
    """The number of records (non-blank lines) of a JSONL file, without parsing them."""
    with open(path, "rb") as handle:
        return sum(
            not _blank(raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw)
            for number, raw in enumerate(handle, start=1)
        )


def _blank(raw: bytes) -> bool:
    """The line holds only whitespace (bytes that are not UTF-8 are not blank)."""
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def _json_line(raw: bytes) -> dict[str, Any] | str | None:
    """One JSONL line -> its object, None if blank, or the reason it is not a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 text ({error.reason} at column {error.start + 1})"
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg})"
    except RecursionError:
        return "not JSON (nested too deeply)"
    except ValueError as error:  # an integer of more than 4300 digits
        return f"not JSON ({error})"
    return record if isinstance(record, dict) else "expected a JSON object"


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in a file; invalid JSON raises ValueError naming the file."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All objects of a JSONL file; a bad line raises ValueError naming the file and line."""
    return [record for _, record in iter_jsonl(path)]


def write_csv(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
) -> pathlib.Path:
    """Writes dict rows atomically; `columns` fixes the order (default: first-seen keys)."""
    rows = [dict(r) for r in rows]
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(handle: IO[str]) -> None:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: to_plain(row.get(k)) for k in columns})

    return atomic_write_text(path, write)


def read_csv(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Reads a results CSV; a missing required column raises ValueError naming it and the file."""
    path = pathlib.Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)
