"""Writers: a `Log` as per-question JSONL or as Parquet, both read back exactly by `read_log`."""

from __future__ import annotations

import os
import pathlib

from optscale_jax import io as _io
from optscale_jax.logs.schema import Log

__all__ = ["write_jsonl", "write_parquet"]


def write_jsonl(log: Log, path: str | os.PathLike) -> pathlib.Path:
    """Writes a log as per-question JSONL records (atomically); `read_log` reads it back exactly.

    Args:
        log: the log.
        path: the output file.

    Returns:
        The path written.
    """
    return _io.write_jsonl_records(log.to_records(), path)


def write_parquet(log: Log, path: str | os.PathLike) -> pathlib.Path:
    """Writes a log as a Parquet table (atomically): one row per question, list columns.

    Columns: `id` (string), `scores`/`tokens` (list<double>), `answers` (list<string>),
    `correct` (list<bool>), `gold` (string), `prior_mu`/`prior_sigma` (double, null where
    absent); columns of fields the log does not have are left out.

    Args:
        log: the log.
        path: the output file.

    Returns:
        The path written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = log.to_records()
    data: dict[str, pa.Array] = {"id": pa.array(log.ids, type=pa.string())}
    list_types = {"scores": pa.float64(), "tokens": pa.float64()}
    list_types |= {"answers": pa.string(), "correct": pa.bool_()}
    for name, value_type in list_types.items():
        if name in records[0]:
            values = [r[name] for r in records]
            if name == "tokens":
                values = [[float(t) for t in v] for v in values]
            data[name] = pa.array(values, type=pa.list_(value_type))
    if log.gold is not None:
        data["gold"] = pa.array(log.gold, type=pa.string())
    if log.prior_mu is not None:
        data["prior_mu"] = pa.array(log.prior_mu, type=pa.float64(), from_pandas=True)
        data["prior_sigma"] = pa.array(log.prior_sigma, type=pa.float64(), from_pandas=True)
    table = pa.table(data)
    with _io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return pathlib.Path(path)
