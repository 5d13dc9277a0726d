"""JSON text files as the readers see them: JSONL line by line, or one JSON array item by item.

Both yield (line number, value) and turn every decoding problem into a `ValueError` that
names the file and the line: invalid JSON, bytes that are not UTF-8, integers too long to
convert, nesting too deep for the decoder. A UTF-8 byte order mark and Windows line ends are
read as plain UTF-8 text.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator
from typing import Any

from optscale_jax import io as _io

__all__ = ["first_value", "is_json_array", "json_array_items", "json_lines"]

# JSON's own whitespace (str.isspace() also accepts characters JSON does not).
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def json_lines(
    path: pathlib.Path, records: slice | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSONL file (of those in `records`):
    `optscale_jax.io.iter_jsonl`."""
    return _io.iter_jsonl(path, records)


def json_array_items(path: pathlib.Path) -> Iterator[tuple[int, Any]]:
    """(line number where it starts, value) of each item of a file holding one JSON array.

    Raises:
        ValueError: `{path}:{line}: ...` where the text stops being a JSON array.
    """
    text = _read_text(path)
    decoder = json.JSONDecoder()
    line, line_at = 1, 0

    def line_of(position: int) -> int:
        nonlocal line, line_at
        line += text.count("\n", line_at, position)
        line_at = position
        return line

    position = _WHITESPACE.match(text, 0).end()
    if not text.startswith("[", position):
        raise ValueError(f"{path}:{line_of(position)}: expected a JSON array of records")
    position = _WHITESPACE.match(text, position + 1).end()
    closed = text.startswith("]", position)
    while not closed:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
        except (ValueError, RecursionError) as error:
            raise ValueError(f"{path}:{line_of(position)}: not JSON ({_reason(error)})") from None
        yield line_of(position), value
        position = _WHITESPACE.match(text, end).end()
        if text.startswith(",", position):
            position = _WHITESPACE.match(text, position + 1).end()
        elif text.startswith("]", position):
            closed = True
        else:
            raise ValueError(f"{path}:{line_of(position)}: not JSON (expected ',' or ']')")
    position = _WHITESPACE.match(text, position + 1).end()
    if position != len(text):
        raise ValueError(f"{path}:{line_of(position)}: not JSON (extra data after the array)")


def is_json_array(path: pathlib.Path) -> bool:
    """Whether the file's first non-blank character opens a JSON array (else: JSONL)."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        start = handle.read(4096)
        while start and not start.strip():
            start = handle.read(4096)
    return start.lstrip().startswith("[")


def first_value(path: pathlib.Path) -> Any:
    """The first record of a JSONL file or the first item of a JSON array (None if none or
    if it cannot be read)."""
    items = json_array_items(path) if is_json_array(path) else json_lines(path)
    try:
        return next(items, (0, None))[1]
    except ValueError:
        return None
    finally:
        items.close()


def _read_text(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None


def _not_utf8(path: pathlib.Path, error: UnicodeDecodeError) -> ValueError:
    """The error for bytes that are not UTF-8, naming the line of the first bad byte."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")  # a byte order mark is valid UTF-8: positions stay the file's
    except UnicodeDecodeError as whole:
        error = whole  # positions in the file, not in one buffered chunk
    line = data.count(b"\n", 0, error.start) + 1
    return ValueError(f"{path}:{line}: not UTF-8 text ({error.reason} at byte {error.start})")


def _reason(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(error):
        return "an integer of more than 4300 digits"
    return str(error)
