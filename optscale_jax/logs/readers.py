"""`read_log`: any supported log file -> one `Log`; the format table and its detection.

Malformed input raises `ValueError` naming the file, the line (1-based; the row for Parquet)
and the field. Nothing is dropped or coerced: a score outside [0, 1] or NaN, a field present
on some records and missing on others, lists of different lengths, wrong types, duplicate ids
all stop the read. Blank lines in JSONL files are skipped; keys outside the schema are ignored.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

from optscale_jax.logs.formats import read_gpqa_genrm, read_optscale_pool, read_search_and_learn
from optscale_jax.logs.jsonfiles import first_value, json_lines
from optscale_jax.logs.records import fail, prior_pair, question_from_record
from optscale_jax.logs.samples import questions_from_samples
from optscale_jax.logs.schema import Log, assemble

__all__ = ["FORMATS", "FORMAT_READERS", "detect_format", "read_log"]


def _read_jsonl(path: pathlib.Path) -> Log:
    """Per-question records, or per-sample records (the first record has `sample_index`)."""
    lines = json_lines(path)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{path}: no records")
    lines = itertools.chain([first], lines)
    if "sample_index" in first[1]:
        return assemble(questions_from_samples(lines, str(path)), str(path))
    questions = []
    for line_number, value in lines:
        where = f"{path}:{line_number}"
        if "sample_index" in value:
            fail(where, "sample_index", "a per-sample record in a log of per-question records")
        questions.append(question_from_record(value, where))
    return assemble(questions, str(path))


# Parquet columns: the per-question record fields, and the prior as two columns.
_PARQUET_RECORD_COLUMNS = ("id", "scores", "tokens", "answers", "correct", "gold")
_PRIOR_COLUMNS = ("prior_mu", "prior_sigma")


def _read_parquet(path: pathlib.Path) -> Log:
    """One row per question: `id`, list columns `scores`/`tokens`/`answers`/`correct`,
    `gold`, and `prior_mu`/`prior_sigma` (both or neither)."""
    columns = _parquet_columns(path)
    return assemble(parquet_questions(columns, path), str(path))


def parquet_questions(columns: dict[str, list], path: pathlib.Path, first_row: int = 0) -> list:
    """The questions of Parquet rows given as Python lists per column (the columns of
    `parquet_known_columns`); `first_row` numbers the rows in errors.

    Returns:
        `records.QuestionData` per row, in order.
    """
    has_prior = all(name in columns for name in _PRIOR_COLUMNS)
    questions = []
    for row in range(len(columns["id"])):
        where = f"{path}: row {first_row + row + 1}"
        values = {name: column[row] for name, column in columns.items()}
        fields = {name: values[name] for name in _PARQUET_RECORD_COLUMNS if name in values}
        question = question_from_record(fields, where)
        if has_prior:
            question.prior = _parquet_prior(values["prior_mu"], values["prior_sigma"], where)
        questions.append(question)
    return questions


def _parquet_columns(path: pathlib.Path) -> dict[str, list]:
    """The known columns of a Parquet file as Python lists (other columns are not read)."""
    import pyarrow.parquet as pq

    known = parquet_known_columns(path)
    # pyarrow raises several exception types for damaged files: each one means unreadable.
    try:
        table = pq.read_table(path, columns=known)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    return parquet_lists(table, known, path)


def parquet_known_columns(path: pathlib.Path) -> list[str]:
    """The columns of a Parquet file that a log reads: each present once, `id` among them,
    the prior columns both or neither (else ValueError naming the file and field)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    known = [name for name in (*_PARQUET_RECORD_COLUMNS, *_PRIOR_COLUMNS) if name in names]
    for name in known:
        if names.count(name) > 1:
            raise ValueError(f"{path}: field {name!r}: {names.count(name)} columns of that name")
    if "id" not in known:
        raise ValueError(f"{path}: field 'id': missing column")
    has_prior = [name in known for name in _PRIOR_COLUMNS]
    if any(has_prior) and not all(has_prior):
        raise ValueError(f"{path}: field 'prior_mu'/'prior_sigma': give both columns or neither")
    return known


def parquet_lists(table: Any, known: list[str], path: pathlib.Path) -> dict[str, list]:
    """The columns `known` of a pyarrow table (or record batch) as Python lists."""
    columns = {}
    for name in known:
        try:
            columns[name] = table.column(name).to_pylist()
        except Exception as error:  # noqa: BLE001 - values Python cannot hold (dates...)
            raise ValueError(f"{path}: field {name!r}: unreadable column ({error})") from None
    return columns


def _parquet_prior(mu: Any, sigma: Any, where: str) -> tuple[float, float] | None:
    if mu is None and sigma is None:
        return None
    if mu is None or sigma is None:
        fail(where, "prior_mu/prior_sigma", "one is null and the other is not")
    return prior_pair(mu, sigma, where, _PRIOR_COLUMNS)


class _Format(NamedTuple):
    """A log format: the function that reads it and the `read_log` options it takes."""

    read: Callable[..., Log]
    options: tuple[str, ...] = ()


# name -> reader; adding a format is one entry (and its detection in `detect_format`).
FORMAT_READERS: dict[str, _Format] = {
    "jsonl": _Format(_read_jsonl),
    "parquet": _Format(_read_parquet),
    "optscale-pool": _Format(read_optscale_pool, ("prompts", "prompt_match", "score_key")),
    "search-and-learn": _Format(read_search_and_learn, ("step_aggregation",)),
    "gpqa-genrm": _Format(read_gpqa_genrm),
}
FORMATS = tuple(FORMAT_READERS)


def detect_format(path: str | os.PathLike) -> str:
    """The format of a log file, from its extension and its first record.

    `.parquet`/`.pq` -> parquet; a JSON array whose items have a `score` object ->
    optscale-pool; records with `verifications` -> gpqa-genrm; records with `completions` and
    per-step `scores` -> search-and-learn; anything else -> jsonl.

    Args:
        path: the log file.

    Returns:
        One of `FORMATS`.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    _check_file(path)
    first = first_value(path)
    if isinstance(first, dict):
        if isinstance(first.get("score"), dict) and "completions" in first["score"]:
            return "optscale-pool"
        if "verifications" in first and "problem_idx" in first:
            return "gpqa-genrm"
        scores = first.get("scores")
        if "completions" in first and isinstance(scores, list) and scores:
            if isinstance(scores[0], list):
                return "search-and-learn"
    return "jsonl"


def _check_file(path: pathlib.Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")


def read_log(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    prompts: str | os.PathLike | None = None,
    prompt_match: str | None = None,
    step_aggregation: str | None = None,
    score_key: str | None = None,
) -> Log:
    """Reads a log file of any supported format into a `Log`.

    Args:
        path: the log file.
        format: one of `FORMATS`, or "auto" (see `detect_format`).
        prompts: optscale-pool only: the prompts file (JSON array or JSONL, one record with an
            `answer` per question) giving the gold answers. GSM8K-style answers keep the part
            after "####".
        prompt_match: optscale-pool only: "position" (default: the i-th pool entry is the
            i-th prompt, as in the paper's code, whose pool ids are 1-based positions; the
            counts must be equal) or "id" (the pool `id` equals the prompt's `id` or
            `unique_id`, compared as strings).
        step_aggregation: search-and-learn only, required: how a completion's step scores
            become one score: "last", "min", "mean" or "prod".
        score_key: optscale-pool only: which per-completion scores to use, "scores" (default,
            the paper's mean step reward) or "last_scores".

    Returns:
        The `Log`.

    Raises:
        ValueError: malformed input, naming the file, line (row for Parquet) and field; or an
            option that does not apply to the format.
        FileNotFoundError: a missing file.
    """
    path = pathlib.Path(path)
    if format not in ("auto", *FORMATS):
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file")
    if format == "auto":
        format = detect_format(path)
    if format != "parquet":  # a Parquet "file" may be a folder of parts
        _check_file(path)
    reader = FORMAT_READERS[format]
    options = {"prompts": prompts, "prompt_match": prompt_match}
    options |= {"step_aggregation": step_aggregation, "score_key": score_key}
    for name, value in options.items():
        if value is not None and name not in reader.options:
            raise ValueError(f"option {name}= does not apply to format {format!r} ({path})")
    return reader.read(path, **{name: options[name] for name in reader.options})
