"""Result tables as the figures read them: the file, its cells as numbers, the split to draw.

Rows are dicts of strings, as `optscale_jax.io.read_csv` returns them. A bad cell is
reported with its file, line and column.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optscale_jax.io import read_csv

Row = Mapping[str, str]


def resolve_input(path: str | os.PathLike, default_name: str) -> pathlib.Path:
    """`path` itself if it is a file, else `path/default_name`.

    Raises:
        FileNotFoundError: naming `in_path` and the file that is not there.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise FileNotFoundError(f"in_path: no such file: {path}")
    return path


def read_rows(
    in_path: str | os.PathLike, default_name: str, required: Sequence[str]
) -> tuple[list[dict[str, str]], pathlib.Path]:
    """The rows of a result file (or of `default_name` in a directory) and the file read.

    Raises:
        FileNotFoundError: the file is not there.
        ValueError: naming the file and a missing column, or saying it has no rows.
    """
    path = resolve_input(in_path, default_name)
    rows = read_csv(path, required=required)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows, path


def number(value: Any) -> float:
    """A CSV cell as float; empty, "None" or "nan" -> NaN."""
    if value is None:
        return math.nan
    text = str(value).strip()
    if text == "" or text.lower() in ("none", "nan", "null"):
        return math.nan
    return float(text)


def flag(value: Any) -> bool:
    """A CSV cell as a boolean ("True", "1", "yes", ... -> True)."""
    return str(value).strip().lower() in ("true", "1", "yes", "y", "t")


def numeric_column(rows: Sequence[Row], name: str, source: str) -> np.ndarray:
    """A numeric column, with a ValueError naming file, line and column on a bad cell."""
    values = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        try:
            values[i] = number(row.get(name))
        except ValueError:
            # Line 1 is the header.
            raise ValueError(
                f"{source}, line {i + 2}: column {name}: not a number: {row.get(name)!r}"
            ) from None
    return values


def flag_column(rows: Sequence[Row], name: str) -> np.ndarray:
    """A boolean column; a missing or empty cell is False."""
    return np.array([flag(row.get(name, "")) for row in rows], dtype=bool)


def text_column(rows: Sequence[Row], name: str) -> np.ndarray:
    """A text column as an object array (for elementwise comparison with a name)."""
    return np.array([row[name] for row in rows], dtype=object)


def choose_split(rows: Sequence[Row], split: str | None, source: str) -> str:
    """The split to plot: the one asked for, else the held-out "test", else "all"."""
    splits = list(dict.fromkeys(row["split"] for row in rows))
    if split is not None:
        if split not in splits:
            raise ValueError(f"split: {split!r} not in {source} (splits: {', '.join(splits)})")
        return split
    for preferred in ("test", "all"):
        if preferred in splits:
            return preferred
    if not splits:
        raise ValueError(f"{source}: no rows")
    return splits[0]


def in_split(rows: Sequence[Row], split: str) -> np.ndarray:
    """Boolean mask of the rows of `split`."""
    return np.array([row["split"] == split for row in rows], dtype=bool)
