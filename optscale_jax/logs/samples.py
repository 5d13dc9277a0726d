"""The per-sample log: one JSON object per scored sample, as `optscale sample` writes it.

Each line holds `id`, `sample_index` (0, 1, ... within its question) and the sample's
`score`, `tokens`, `answer` and `correct`; `gold` and `prior` repeat on every line of a
question. `questions_from_samples` is the one parser of this layout: `read_log` and
`optscale sample --resume` (`optscale_jax.live.loop.load_log`) both call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from optscale_jax.logs.records import (
    ABSENT,
    QuestionData,
    checked_values,
    describe,
    fail,
    first_problem,
    optional_str,
    prior_field,
    record,
    required,
)

__all__ = ["SAMPLE_FIELDS", "questions_from_samples"]

# Per-sample field -> the per-question list field it makes.
SAMPLE_FIELDS = {"score": "scores", "tokens": "tokens", "answer": "answers", "correct": "correct"}
_FILE_NAMES = {name: key for key, name in SAMPLE_FIELDS.items()}

# A sample line as read: (line number, the record).
_Row = tuple[int, Mapping[str, Any]]


def questions_from_samples(lines: Iterable[tuple[int, Any]], source: str) -> list[QuestionData]:
    """Groups per-sample records by `id` (first-appearance order), sorted by `sample_index`.

    Args:
        lines: (line number, decoded JSON value) of each record.
        source: the file, for errors (`source:line: field 'score': ...`).

    Returns:
        One validated `QuestionData` per id; `where` is the line of its sample 0.

    Raises:
        ValueError: naming the file, the line and the field: a duplicate or missing sample
            index, a field on some samples of a question but not others, a bad value, or
            `gold` / `prior` differing between the samples of one question.
    """
    groups: dict[str, dict[int, _Row]] = {}
    for line_number, value in lines:
        where = f"{source}:{line_number}"
        fields = record(value, where)
        question_id = required(fields, "id", where)
        if not isinstance(question_id, str):
            fail(where, "id", f"expected a string, got {describe(question_id)}")
        index = required(fields, "sample_index", where)
        if type(index) is not int or index < 0:
            fail(where, "sample_index", f"expected an integer >= 0, got {describe(index)}")
        samples = groups.setdefault(question_id, {})
        if index in samples:
            fail(
                where,
                "sample_index",
                f"duplicate sample {index} of id {question_id!r} (first on line {samples[index][0]})",
            )
        samples[index] = (line_number, fields)
    return [
        _question(question_id, _in_order(question_id, samples, source), source)
        for question_id, samples in groups.items()
    ]


def _in_order(question_id: str, samples: dict[int, _Row], source: str) -> list[_Row]:
    """The samples of one question by index; the indices must be 0, 1, ..., k - 1."""
    order = sorted(samples)
    for expected, index in enumerate(order):
        if index != expected:
            fail(
                f"{source}:{samples[index][0]}",
                "sample_index",
                f"id {question_id!r} has sample {index} but no sample {expected}",
            )
    return [samples[i] for i in order]


def _question(question_id: str, rows: list[_Row], source: str) -> QuestionData:
    question = QuestionData(where=f"{source}:{rows[0][0]}", id=question_id, fields=_FILE_NAMES)
    for key, name in SAMPLE_FIELDS.items():
        values = _values(rows, key, source)
        if values is None:
            continue
        checked = checked_values(values, name)
        if checked is None:
            index, message = first_problem(values, name)
            fail(f"{source}:{rows[index][0]}", key, message)
        setattr(question, name, checked)
    if question.scores is None and question.answers is None:
        raise ValueError(f"{question.where}: needs a 'score' or an 'answer' field")
    gold = _shared(rows, "gold", question_id, source)
    if gold is not ABSENT:
        question.gold = optional_str(gold[1], f"{source}:{gold[0]}", "gold")
    shared_prior = _shared(rows, "prior", question_id, source)
    if shared_prior is not ABSENT:
        question.prior = prior_field(shared_prior[1], f"{source}:{shared_prior[0]}")
    return question


def _values(rows: list[_Row], key: str, source: str) -> list | None:
    """The field `key` of every sample, or None if no sample has it (null counts as absent,
    except for `answer`, where null is "no answer"); on some samples only, an error."""
    have = [
        fields.get(key, ABSENT) is not ABSENT and (key == "answer" or fields[key] is not None)
        for _, fields in rows
    ]
    if not any(have):
        return None
    if not all(have):
        fail(
            f"{source}:{rows[have.index(False)][0]}",
            key,
            f"missing here but present on line {rows[have.index(True)][0]}",
        )
    return [fields[key] for _, fields in rows]


def _shared(rows: list[_Row], key: str, question_id: str, source: str) -> tuple[int, Any] | Any:
    """(line, value) of a field every sample of a question repeats (`gold`, `prior`), or
    `ABSENT`; samples that carry it must agree."""
    carriers = [(line, fields[key]) for line, fields in rows if key in fields]
    if not carriers:
        return ABSENT
    line, value = carriers[0]
    for other_line, other in carriers[1:]:
        if other != value:
            fail(
                f"{source}:{other_line}",
                key,
                f"differs from line {line} for the same id {question_id!r}",
            )
    return line, value
