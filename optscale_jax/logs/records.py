"""Field-level validation of log records, and one question's validated data (`QuestionData`).

Every check raises `ValueError("{where}: field '{field}': {problem}")`, where `where` names the
file and the line (`path:12`), the Parquet row (`path: row 3`) or the entry of a JSON array
(`path:7: entry 2`), and `field` is the field as the file spells it (`scores[3]`,
`score.completions[0][1]`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "ABSENT",
    "LIST_FIELDS",
    "QuestionData",
    "answer_list",
    "check_score",
    "checked_list",
    "checked_values",
    "describe",
    "fail",
    "first_problem",
    "optional_str",
    "prior_field",
    "prior_pair",
    "question_from_record",
    "record",
    "required",
    "score_list",
    "token_list",
    "value_list",
]


class _Absent:
    """Marker of a field missing from a record (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()

# The per-question list fields of a log, in the order their lengths are compared.
LIST_FIELDS = ("scores", "tokens", "answers", "correct")


def fail(where: str, field: str, problem: str) -> None:
    """Raises the reader's `ValueError`: `{where}: field '{field}': {problem}`."""
    raise ValueError(f"{where}: field {field!r}: {problem}")


def describe(value: Any) -> str:
    """A short description of a bad value for an error message (JSON text or type name)."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else None
    if text is None:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # bool is not a number here


def value_list(value: Any, where: str, field: str) -> list:
    """`value` if it is a list, else the reader's error."""
    if not isinstance(value, list):
        fail(where, field, f"expected a list, got {describe(value)}")
    return value


def _score_problem(x: Any) -> str | None:
    if not _is_number(x):
        return f"expected a number in [0, 1], got {describe(x)}"
    if not 0.0 <= x <= 1.0:  # also rejects NaN
        return f"score {x!r} outside [0, 1]"
    return None


def _token_problem(x: Any) -> str | None:
    if not _is_number(x):
        return f"expected a token count, got {describe(x)}"
    try:
        ok = math.isfinite(x) and x >= 0
    except OverflowError:  # an int beyond float range
        ok = False
    return None if ok else f"token count {x!r} is not a finite number >= 0"


def _answer_problem(x: Any) -> str | None:
    if x is None or isinstance(x, str):
        return None
    return f"expected a string or null, got {describe(x)}"


def _bool_problem(x: Any) -> str | None:
    return None if isinstance(x, bool) else f"expected true or false, got {describe(x)}"


_PROBLEMS = {
    "scores": _score_problem,
    "tokens": _token_problem,
    "answers": _answer_problem,
    "correct": _bool_problem,
}
_NUMBER_TYPES = {float, int}


def _numbers(values: list, kind: str) -> np.ndarray | None:
    """`values` as float64 if all are valid scores / token counts, else None (fast path)."""
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    if kind == "scores":
        ok = np.all((array >= 0.0) & (array <= 1.0))
    else:
        ok = np.all(np.isfinite(array) & (array >= 0.0))
    return array if ok else None


def first_problem(values: list, kind: str) -> tuple[int, str]:
    """(index, description) of the first invalid element of a list that `checked_values` refused."""
    problem = _PROBLEMS[kind]
    for i, x in enumerate(values):
        message = problem(x)
        if message is not None:
            return i, message
    raise AssertionError(f"no invalid element in a refused {kind} list")  # pragma: no cover


def checked_values(values: list, kind: str) -> np.ndarray | list | None:
    """Validated values of a list field (an array for numbers), or None if one is invalid.

    Args:
        values: the list's elements.
        kind: one of `LIST_FIELDS`: "scores" (numbers in [0, 1]), "tokens" (finite numbers
            >= 0), "answers" (strings or null) or "correct" (booleans).
    """
    if kind in ("scores", "tokens"):
        return _numbers(values, kind)
    types = set(map(type, values))
    if kind == "answers":
        return values if types <= {str, type(None)} else None
    return values if types <= {bool} else None


def checked_list(value: Any, where: str, field: str, kind: str) -> np.ndarray | list:
    """A list field of a record, validated; errors name the element, e.g. `scores[3]`."""
    values = value_list(value, where, field)
    checked = checked_values(values, kind)
    if checked is None:
        index, message = first_problem(values, kind)
        fail(where, f"{field}[{index}]", message)
    return checked


def score_list(value: Any, where: str, field: str) -> np.ndarray:
    """A list of scores in [0, 1] as float64."""
    return checked_list(value, where, field, "scores")


def token_list(value: Any, where: str, field: str) -> np.ndarray:
    """A list of token counts (finite, >= 0) as float64."""
    return checked_list(value, where, field, "tokens")


def answer_list(value: Any, where: str, field: str) -> list[str | None]:
    """A list of answers (strings or null)."""
    return checked_list(value, where, field, "answers")


def check_score(x: Any, where: str, field: str) -> None:
    """Raises the reader's error unless `x` is a number in [0, 1]."""
    message = _score_problem(x)
    if message is not None:
        fail(where, field, message)


def optional_str(value: Any, where: str, field: str) -> str | None:
    """`value` if it is a string or null."""
    if value is not None and not isinstance(value, str):
        fail(where, field, f"expected a string or null, got {describe(value)}")
    return value


def prior_pair(mu: Any, sigma: Any, where: str, fields: tuple[str, str]) -> tuple[float, float]:
    """A prior centre (mu, sigma): finite numbers, sigma > 0; `fields` name them in errors."""
    for field, x in zip(fields, (mu, sigma), strict=True):
        if not _is_number(x) or not math.isfinite(x):
            fail(where, field, f"expected a finite number, got {describe(x)}")
    if not sigma > 0:
        fail(where, fields[1], f"must be > 0, got {sigma!r}")
    return float(mu), float(sigma)


def prior_field(value: Any, where: str, field: str = "prior") -> tuple[float, float] | None:
    """A `{"mu": float, "sigma": float}` field (or null) as (mu, sigma)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(where, field, f'expected {{"mu": float, "sigma": float}}, got {describe(value)}')
    for key in ("mu", "sigma"):
        if key not in value:
            fail(where, f"{field}.{key}", "missing")
    return prior_pair(value["mu"], value["sigma"], where, (f"{field}.mu", f"{field}.sigma"))


def record(value: Any, where: str) -> Mapping:
    """`value` if it is a JSON object."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {describe(value)}")
    return value


def required(fields: Mapping, key: str, where: str) -> Any:
    """`fields[key]`, or the reader's error naming the missing field."""
    if key not in fields:
        fail(where, key, "missing")
    return fields[key]


@dataclasses.dataclass
class QuestionData:
    """One question's validated, ragged data, as read from a file (before padding).

    Attributes:
        where: the file and line (or row, or entry) the question starts on.
        id: the question id.
        scores: the samples' scores (float64), or None.
        tokens: the samples' generated tokens (float64), or None.
        answers: the samples' answer strings (None = no answer), or None.
        correct: the samples' correctness, or None.
        gold: the gold answer (str or None), or `ABSENT` when the file has no gold field.
        prior: (mu, sigma) prior centre, or None.
        fields: list field -> its name in the file, for errors (default: the same name).
    """

    where: str
    id: str
    scores: np.ndarray | None = None
    tokens: np.ndarray | None = None
    answers: list | None = None
    correct: list | None = None
    gold: Any = ABSENT
    prior: tuple[float, float] | None = None
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def field(self, name: str) -> str:
        """The file's name of the list field `name` (e.g. tokens -> completion_tokens)."""
        return self.fields.get(name, name)


def question_from_record(value: Any, where: str) -> QuestionData:
    """A per-question record of the JSONL/Parquet schema, validated."""
    fields = record(value, where)
    question_id = required(fields, "id", where)
    if not isinstance(question_id, str):
        fail(where, "id", f"expected a string, got {describe(question_id)}")
    question = QuestionData(where=where, id=question_id)
    for name in LIST_FIELDS:
        if fields.get(name) is not None:
            setattr(question, name, checked_list(fields[name], where, name, name))
    if question.scores is None and question.answers is None:
        raise ValueError(f"{where}: needs a 'scores' or an 'answers' field")
    if "gold" in fields:
        question.gold = optional_str(fields["gold"], where, "gold")
    question.prior = prior_field(fields.get("prior"), where)
    return question
