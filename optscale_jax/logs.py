"""Logged Best-of-N runs as arrays: the `Log` schema, its readers and writers.

Every reader returns one `Log`: Q questions padded to K = the longest question, with a mask.

| format | file | scores | answers | gold |
|---|---|---|---|---|
| `jsonl` | one record per question, or one per sample (`sample_index`) | `scores` / `score` | `answers` / `answer` | `gold` |
| `parquet` | the per-question schema, list columns | `scores` | `answers` | `gold` |
| `optscale-pool` | the OptScale paper's JSON array | `score.scores[0]` | last `\\boxed{}` | `prompts=` file |
| `search-and-learn` | HF search-and-learn best-of-n JSONL | step scores, `step_aggregation=` | last `\\boxed{}` | `answer` |
| `gpqa-genrm` | GPQA generative-verifier JSONL | mean of non-null verdicts | letter or none | `gt` |

Malformed input raises `ValueError` naming the file, the line (1-based; the row for Parquet)
and the field. Nothing is dropped or coerced: a score outside [0, 1] or NaN, a field present
on some records and missing on others, lists of different lengths, wrong types, duplicate ids
all stop the read. Blank lines in JSONL files are skipped; keys outside the schema are ignored.

Answers become `answer_text` = `optscale_jax.answers.normalise_answer` of the extracted string
(an empty one is no answer) and per-question integer codes: equal normalised strings share a
code (numbered by first appearance), -1 = no answer.

`correct` is taken from the file when present; else computed from the answers and the gold
answer with `optscale_jax.answers.is_correct` (math-verify, cached per distinct answer); else
None.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optscale_jax import answers as _answers
from optscale_jax import io as _io

__all__ = [
    "FORMATS",
    "STEP_AGGREGATIONS",
    "Log",
    "detect_format",
    "read_log",
    "write_jsonl",
    "write_parquet",
]

FORMATS = ("jsonl", "parquet", "optscale-pool", "search-and-learn", "gpqa-genrm")
STEP_AGGREGATIONS = ("last", "min", "mean", "prod")
PROMPT_MATCHES = ("position", "id")
COST_KINDS = ("auto", "tokens", "samples")


@dataclass(frozen=True, eq=False)
class Log:
    """A logged run: per question, the sampled answers with verifier scores, as padded arrays.

    Sample j of question q exists where `mask[q, j]`; samples are a prefix of each row (the
    order they were drawn in). Padding is 0 (scores, tokens), -1 (answers) and False (correct).

    Attributes:
        ids: [Q] question ids (unique).
        mask: [Q, K] bool, True where a sample exists.
        scores: [Q, K] float64 verifier scores in [0, 1], or None (a log for voting only).
        tokens: [Q, K] float64 generated tokens per sample, or None.
        answers: [Q, K] int32 answer code within its question (equal codes = equal answers,
            numbered by first appearance), -1 = no answer or masked; or None.
        answer_text: [Q][k_q] the answer strings behind the codes, or None.
        correct: [Q, K] bool, whether each sample's answer is right, or None.
        gold: [Q] gold answers (None where unknown), or None.
        prior_mu: [Q] float64 prior centre of mu per question, NaN where absent; or None.
        prior_sigma: [Q] float64 prior centre of sigma, NaN where absent; or None.
        source: the file the log was read from.
    """

    ids: list[str]
    mask: np.ndarray
    scores: np.ndarray | None = None
    tokens: np.ndarray | None = None
    answers: np.ndarray | None = None
    answer_text: list[list[str | None]] | None = None
    correct: np.ndarray | None = None
    gold: list[str | None] | None = None
    prior_mu: np.ndarray | None = None
    prior_sigma: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        _check_log(self)

    @property
    def num_questions(self) -> int:
        """Q, the number of questions."""
        return self.mask.shape[0]

    @property
    def max_samples(self) -> int:
        """K, the number of samples of the longest question."""
        return self.mask.shape[1]

    @property
    def counts(self) -> np.ndarray:
        """[Q] int64, the number of samples of each question."""
        return self.mask.sum(axis=1)

    def select(self, question_indices: Sequence[int] | np.ndarray) -> Log:
        """The log restricted to some questions (in the given order), e.g. a dev split.

        K stays the same, so arrays of a selection broadcast against the full log's.

        Args:
            question_indices: integer indices into the questions (or a [Q] bool mask).

        Returns:
            A new `Log` with the selected questions.
        """
        index = np.asarray(question_indices)
        if index.dtype == bool:
            if index.shape != (self.num_questions,):
                raise ValueError(
                    f"question_indices: bool mask of shape {index.shape}, "
                    f"expected ({self.num_questions},)"
                )
            index = np.flatnonzero(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise ValueError("question_indices must be a 1-D array of integers or a bool mask")
        if index.size and (index.min() < -self.num_questions or index.max() >= self.num_questions):
            raise ValueError(f"question_indices out of range for {self.num_questions} questions")
        index = index.astype(np.int64)

        def rows(array):
            return None if array is None else array[index]

        def items(values):
            return None if values is None else [values[i] for i in index]

        return Log(
            ids=[self.ids[i] for i in index],
            mask=self.mask[index],
            scores=rows(self.scores),
            tokens=rows(self.tokens),
            answers=rows(self.answers),
            answer_text=items(self.answer_text),
            correct=rows(self.correct),
            gold=items(self.gold),
            prior_mu=rows(self.prior_mu),
            prior_sigma=rows(self.prior_sigma),
            source=self.source,
        )

    def cost(self, kind: str = "auto") -> tuple[np.ndarray, str]:
        """Per-sample cost and its unit.

        Args:
            kind: "tokens" (generated tokens; the log must have them), "samples" (1 per
                sample) or "auto" (tokens when the log has them, else samples).

        Returns:
            ([Q, K] float64 cost, 0 where masked; the unit, "tokens" or "samples").
        """
        if kind not in COST_KINDS:
            raise ValueError(f"kind must be one of {COST_KINDS}, got {kind!r}")
        if kind == "tokens" and self.tokens is None:
            raise ValueError(f"kind='tokens' but the log {self.source!r} has no token counts")
        if kind == "samples" or self.tokens is None:
            return self.mask.astype(np.float64), "samples"
        return self.tokens, "tokens"

    def to_records(self) -> list[dict[str, Any]]:
        """One per-question record (the JSONL/Parquet schema) per question.

        Answers are written as `answer_text` when present, else as the codes' decimal strings.
        """
        records = []
        for q, question_id in enumerate(self.ids):
            k = int(self.mask[q].sum())
            record: dict[str, Any] = {"id": question_id}
            if self.scores is not None:
                record["scores"] = self.scores[q, :k].tolist()
            if self.tokens is not None:
                record["tokens"] = [_plain_number(t) for t in self.tokens[q, :k].tolist()]
            if self.answer_text is not None:
                record["answers"] = list(self.answer_text[q])
            elif self.answers is not None:
                record["answers"] = [None if c < 0 else str(c) for c in self.answers[q, :k]]
            if self.correct is not None:
                record["correct"] = self.correct[q, :k].tolist()
            if self.gold is not None:
                record["gold"] = self.gold[q]
            if self.prior_mu is not None and not math.isnan(self.prior_mu[q]):
                record["prior"] = {
                    "mu": float(self.prior_mu[q]),
                    "sigma": float(self.prior_sigma[q]),
                }
            records.append(record)
        return records

    def equals(self, other: Log) -> bool:
        """Same content (every field except `source`), scores compared exactly."""
        if not isinstance(other, Log):
            return False

        def same_array(a, b):
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")

        return (
            self.ids == other.ids
            and same_array(self.mask, other.mask)
            and same_array(self.scores, other.scores)
            and same_array(self.tokens, other.tokens)
            and same_array(self.answers, other.answers)
            and self.answer_text == other.answer_text
            and same_array(self.correct, other.correct)
            and self.gold == other.gold
            and same_array(self.prior_mu, other.prior_mu)
            and same_array(self.prior_sigma, other.prior_sigma)
        )

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], source: str = "<records>") -> Log:
        """A log from per-question records in the JSONL schema (validated like a file).

        Args:
            records: dicts with `id` and `scores` and/or `answers`, optionally `tokens`,
                `correct`, `gold`, `prior` ({"mu", "sigma"}).
            source: a name for error messages and `Log.source`.

        Returns:
            The `Log`; errors name the record as `source:N` (1-based).
        """
        questions = [
            _question_from_record(record, f"{source}:{n}")
            for n, record in enumerate(records, start=1)
        ]
        return _assemble(questions, source)


def _plain_number(value: float) -> int | float:
    """Integral floats as ints (token counts read back as the same float64)."""
    return int(value) if float(value).is_integer() else value


def _check_log(log: Log) -> None:
    """Shape/dtype/padding checks of a `Log` built in memory (readers already validated)."""
    ids = log.ids
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("Log.ids must be a list of str")
    if len(set(ids)) != len(ids):
        raise ValueError("Log.ids must be unique")
    mask = log.mask
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        raise ValueError("Log.mask must be a 2-D bool numpy array")
    if mask.shape[0] != len(ids):
        raise ValueError(f"Log.mask has {mask.shape[0]} rows for {len(ids)} ids")
    if np.any(mask[:, 1:] & ~mask[:, :-1]):
        raise ValueError("Log.mask: the samples of each question must be a prefix of its row")
    casts = {"scores": ("f", np.float64), "tokens": ("fiu", np.float64)}
    casts |= {"answers": ("iu", np.int32), "correct": ("b", np.bool_)}
    for name, (kinds, dtype) in casts.items():
        array = getattr(log, name)
        if array is None:
            continue
        if not isinstance(array, np.ndarray) or array.dtype.kind not in kinds:
            raise ValueError(f"Log.{name} must be a numpy array of dtype {np.dtype(dtype)}")
        if array.shape != mask.shape:
            raise ValueError(f"Log.{name} has shape {array.shape}, mask {mask.shape}")
        if array.dtype != dtype:
            object.__setattr__(log, name, array.astype(dtype))
    if log.scores is not None:
        inside = log.scores[mask]
        if not np.all((inside >= 0.0) & (inside <= 1.0)):
            raise ValueError("Log.scores must lie in [0, 1] (and not be NaN) where mask is True")
        if np.any(log.scores[~mask] != 0.0):
            raise ValueError("Log.scores must be 0 where mask is False")
    if log.tokens is not None:
        if not np.all(np.isfinite(log.tokens) & (log.tokens >= 0.0)):
            raise ValueError("Log.tokens must be finite and >= 0")
        if np.any(log.tokens[~mask] != 0.0):
            raise ValueError("Log.tokens must be 0 where mask is False")
    if log.answers is not None:
        if np.any(log.answers < -1) or np.any(log.answers[~mask] != -1):
            raise ValueError("Log.answers must be codes >= 0, or -1 (no answer / masked)")
    if log.correct is not None and np.any(log.correct[~mask]):
        raise ValueError("Log.correct must be False where mask is False")
    counts = mask.sum(axis=1)
    if log.answer_text is not None:
        if len(log.answer_text) != len(ids) or any(
            len(texts) != k for texts, k in zip(log.answer_text, counts, strict=True)
        ):
            raise ValueError("Log.answer_text must hold one list of k_q strings per question")
    if log.gold is not None and len(log.gold) != len(ids):
        raise ValueError(f"Log.gold has {len(log.gold)} entries for {len(ids)} ids")
    if (log.prior_mu is None) != (log.prior_sigma is None):
        raise ValueError("Log.prior_mu and Log.prior_sigma must be given together")
    for name in ("prior_mu", "prior_sigma"):
        array = getattr(log, name)
        if array is None:
            continue
        array = np.asarray(array, dtype=np.float64)
        if array.shape != (len(ids),):
            raise ValueError(f"Log.{name} must have shape ({len(ids)},), got {array.shape}")
        object.__setattr__(log, name, array)


# --------------------------------------------------------------------------- validation


class _Absent:
    """Marker of a field missing from a record (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _fail(where: str, field: str, problem: str) -> None:
    raise ValueError(f"{where}: field {field!r}: {problem}")


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else None
    if text is None:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # bool is not a number here


def _list(value: Any, where: str, field: str) -> list:
    if not isinstance(value, list):
        _fail(where, field, f"expected a list, got {_describe(value)}")
    return value


def _score_problem(x: Any) -> str | None:
    if not _is_number(x):
        return f"expected a number in [0, 1], got {_describe(x)}"
    if not 0.0 <= x <= 1.0:  # also rejects NaN
        return f"score {x!r} outside [0, 1]"
    return None


def _token_problem(x: Any) -> str | None:
    if not _is_number(x):
        return f"expected a token count, got {_describe(x)}"
    try:
        ok = math.isfinite(x) and x >= 0
    except OverflowError:  # an int beyond float range
        ok = False
    return None if ok else f"token count {x!r} is not a finite number >= 0"


def _answer_problem(x: Any) -> str | None:
    if x is None or isinstance(x, str):
        return None
    return f"expected a string or null, got {_describe(x)}"


def _bool_problem(x: Any) -> str | None:
    return None if isinstance(x, bool) else f"expected true or false, got {_describe(x)}"


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


_PROBLEMS = {
    "scores": _score_problem,
    "tokens": _token_problem,
    "answers": _answer_problem,
    "correct": _bool_problem,
}


def _first_problem(values: list, kind: str) -> tuple[int, str] | None:
    """(index, description) of the first invalid element of a list field, or None."""
    problem = _PROBLEMS[kind]
    for i, x in enumerate(values):
        message = problem(x)
        if message is not None:
            return i, message
    return None


def _checked(values: list, kind: str) -> np.ndarray | list | None:
    """Validated values of a list field (an array for numbers), or None if one is invalid."""
    if kind in ("scores", "tokens"):
        return _numbers(values, kind)
    types = set(map(type, values))
    if kind == "answers":
        return values if types <= {str, type(None)} else None
    return values if types <= {bool} else None


def _checked_list(value: Any, where: str, field: str, kind: str) -> np.ndarray | list:
    """A list field of a record, validated; errors name the element, e.g. `scores[3]`."""
    values = _list(value, where, field)
    checked = _checked(values, kind)
    if checked is None:
        index, message = _first_problem(values, kind)
        _fail(where, f"{field}[{index}]", message)
    return checked


def _score_list(value: Any, where: str, field: str) -> np.ndarray:
    return _checked_list(value, where, field, "scores")


def _token_list(value: Any, where: str, field: str) -> np.ndarray:
    return _checked_list(value, where, field, "tokens")


def _answer_list(value: Any, where: str, field: str) -> list[str | None]:
    return _checked_list(value, where, field, "answers")


def _bool_list(value: Any, where: str, field: str) -> list[bool]:
    return _checked_list(value, where, field, "correct")


def _check_score(x: Any, where: str, field: str) -> None:
    message = _score_problem(x)
    if message is not None:
        _fail(where, field, message)


def _optional_str(value: Any, where: str, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        _fail(where, field, f"expected a string or null, got {_describe(value)}")
    return value


def _prior(value: Any, where: str, field: str = "prior") -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail(where, field, f'expected {{"mu": float, "sigma": float}}, got {_describe(value)}')
    for key in ("mu", "sigma"):
        if key not in value:
            _fail(where, f"{field}.{key}", "missing")
        x = value[key]
        if not _is_number(x) or not math.isfinite(x):
            _fail(where, f"{field}.{key}", f"expected a finite number, got {_describe(x)}")
    if not value["sigma"] > 0:
        _fail(where, f"{field}.sigma", f"must be > 0, got {value['sigma']!r}")
    return float(value["mu"]), float(value["sigma"])


def _record(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {_describe(value)}")
    return value


def _required(record: dict, key: str, where: str) -> Any:
    if key not in record:
        _fail(where, key, "missing")
    return record[key]


# --------------------------------------------------------------------------- assembly


@dataclass
class _Question:
    """One question's validated, ragged data before padding."""

    where: str
    id: str
    scores: list | None = None
    tokens: list | None = None
    answers: list | None = None  # answer strings (codes are derived from them)
    correct: list | None = None
    gold: Any = _ABSENT  # str | None, or _ABSENT when the record has no gold field
    prior: tuple[float, float] | None = None


_LIST_FIELDS = ("scores", "tokens", "answers", "correct")


def _question_from_record(record: Any, where: str) -> _Question:
    """A per-question record of the JSONL/Parquet schema, validated."""
    record = _record(record, where)
    question_id = _required(record, "id", where)
    if not isinstance(question_id, str):
        _fail(where, "id", f"expected a string, got {_describe(question_id)}")
    question = _Question(where=where, id=question_id)
    checks = {"scores": _score_list, "tokens": _token_list}
    checks |= {"answers": _answer_list, "correct": _bool_list}
    for name, check in checks.items():
        if record.get(name) is not None:
            setattr(question, name, check(record[name], where, name))
    if question.scores is None and question.answers is None:
        raise ValueError(f"{where}: needs a 'scores' or an 'answers' field")
    if "gold" in record:
        question.gold = _optional_str(record["gold"], where, "gold")
    question.prior = _prior(record.get("prior"), where)
    return question


def _assemble(questions: list[_Question], source: str) -> Log:
    """Pads validated questions into a `Log`; checks presence and lengths across them."""
    if not questions:
        raise ValueError(f"{source}: no questions")
    seen: dict[str, str] = {}
    for question in questions:
        if question.id in seen:
            raise ValueError(
                f"{question.where}: field 'id': duplicate id {question.id!r} "
                f"(first on {seen[question.id]})"
            )
        seen[question.id] = question.where
    present = {}
    for name in _LIST_FIELDS:
        have = [getattr(q, name) is not None for q in questions]
        if any(have) and not all(have):
            first_with = questions[have.index(True)].where
            first_without = questions[have.index(False)].where
            _fail(first_without, name, f"missing here but present on {first_with}")
        present[name] = have[0]
    lengths = []
    for question in questions:
        given = [(n, len(getattr(question, n))) for n in _LIST_FIELDS if present[n]]
        for name, length in given[1:]:
            if length != given[0][1]:
                _fail(
                    question.where,
                    name,
                    f"has {length} entries but {given[0][0]!r} has {given[0][1]}",
                )
        lengths.append(given[0][1])
    lengths = np.asarray(lengths, dtype=np.int64)
    num_samples = int(lengths.max())
    mask = np.arange(num_samples)[None, :] < lengths[:, None]
    total = int(lengths.sum())

    def scatter(rows, dtype, pad):
        """Ragged rows -> [Q, K] array padded with `pad` (row-major order matches the mask)."""
        array = np.full(mask.shape, pad, dtype=dtype)
        if total:
            array[mask] = np.concatenate([np.asarray(row, dtype=dtype) for row in rows])
        return array

    def padded(name, dtype, pad):
        if not present[name]:
            return None
        return scatter((getattr(q, name) for q in questions), dtype, pad)

    answer_text = None
    if present["answers"]:
        normalise = _answers.normalise_answer
        answer_text = [[normalise(a) for a in q.answers] for q in questions]
    answers = None
    if answer_text is not None:
        codes = (_answers.answer_codes(texts) for texts in answer_text)
        answers = scatter(codes, np.int32, -1)

    gold = None
    if any(q.gold is not _ABSENT for q in questions):
        gold = [None if q.gold is _ABSENT else q.gold for q in questions]

    correct = padded("correct", np.bool_, False)
    if correct is None and answers is not None and gold is not None:
        known = [g is not None for g in gold]
        if any(known):
            if not all(known):
                where = questions[known.index(False)].where
                _fail(
                    where,
                    "gold",
                    "missing here while other questions have one, so "
                    "correctness is undefined (give 'gold' or 'correct' everywhere)",
                )
            correct = _correct_from_answers(answers, answer_text, gold, mask)

    prior_mu = prior_sigma = None
    if any(q.prior is not None for q in questions):
        priors = [q.prior if q.prior is not None else (math.nan, math.nan) for q in questions]
        prior_mu = np.array([p[0] for p in priors], dtype=np.float64)
        prior_sigma = np.array([p[1] for p in priors], dtype=np.float64)

    return Log(
        ids=[q.id for q in questions],
        mask=mask,
        scores=padded("scores", np.float64, 0.0),
        tokens=padded("tokens", np.float64, 0.0),
        answers=answers,
        answer_text=answer_text,
        correct=correct,
        gold=gold,
        prior_mu=prior_mu,
        prior_sigma=prior_sigma,
        source=source,
    )


def _correct_from_answers(
    codes: np.ndarray, answer_text: list[list[str | None]], gold: list[str], mask: np.ndarray
) -> np.ndarray:
    """[Q, K] correctness, one `is_correct` call per distinct answer of each question."""
    from tqdm import tqdm

    correct = np.zeros(mask.shape, dtype=bool)
    rows = tqdm(range(len(gold)), desc="checking answers", unit="q", leave=False, disable=None)
    for q in rows:
        verdict: dict[int, bool] = {}
        for j, text in enumerate(answer_text[q]):
            code = int(codes[q, j])
            if code >= 0:
                if code not in verdict:
                    verdict[code] = _answers.is_correct(text, gold[q])
                correct[q, j] = verdict[code]
    return correct


# --------------------------------------------------------------------------- file access


def _json_lines(path: pathlib.Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) of each non-blank line of a JSONL file."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{line_number}: invalid JSON: {error.msg} (column {error.colno})"
                ) from None
            yield line_number, value


_WHITESPACE = re.compile(r"\s*")


def _json_array_items(path: pathlib.Path) -> Iterator[tuple[int, Any]]:
    """(line number where it starts, value) of each item of a file holding one JSON array."""
    text = path.read_text(encoding="utf-8")
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
            raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
        yield line_of(position), value
        position = _WHITESPACE.match(text, end).end()
        if text.startswith(",", position):
            position = _WHITESPACE.match(text, position + 1).end()
        elif text.startswith("]", position):
            closed = True
        else:
            raise ValueError(f"{path}:{line_of(position)}: invalid JSON: expected ',' or ']'")
    position = _WHITESPACE.match(text, position + 1).end()
    if position != len(text):
        raise ValueError(f"{path}:{line_of(position)}: invalid JSON: extra data after the array")


def _first_value(path: pathlib.Path) -> Any:
    """The first JSON value of a JSONL file or the first item of a JSON array (None if none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                if line.lstrip().startswith("["):
                    break
                return json.loads(line)
            else:
                return None
        return next(_json_array_items(path), (0, None))[1]
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        return None


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
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file")
    first = _first_value(path)
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
    options = {"prompts": prompts, "prompt_match": prompt_match}
    options |= {"step_aggregation": step_aggregation, "score_key": score_key}
    accepted = {
        "optscale-pool": {"prompts", "prompt_match", "score_key"},
        "search-and-learn": {"step_aggregation"},
    }.get(format, set())
    for name, value in options.items():
        if value is not None and name not in accepted:
            raise ValueError(f"option {name}= does not apply to format {format!r} ({path})")
    if format == "jsonl":
        return _read_jsonl(path)
    if format == "parquet":
        return _read_parquet(path)
    if format == "optscale-pool":
        return _read_optscale_pool(path, prompts, prompt_match or "position", score_key)
    if format == "search-and-learn":
        return _read_search_and_learn(path, step_aggregation)
    return _read_gpqa_genrm(path)


# --------------------------------------------------------------------------- jsonl / parquet


def _read_jsonl(path: pathlib.Path) -> Log:
    lines = _json_lines(path)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{path}: no records")
    lines = itertools.chain([first], lines)
    if isinstance(first[1], dict) and "sample_index" in first[1]:
        return _assemble(_questions_from_samples(path, lines), str(path))
    questions = []
    for line_number, value in lines:
        where = f"{path}:{line_number}"
        if isinstance(value, dict) and "sample_index" in value:
            _fail(where, "sample_index", "a per-sample record in a log of per-question records")
        questions.append(_question_from_record(value, where))
    return _assemble(questions, str(path))


# Per-sample record field -> per-question list field.
_SAMPLE_FIELDS = {"score": "scores", "tokens": "tokens", "answer": "answers", "correct": "correct"}


def _questions_from_samples(
    path: pathlib.Path, lines: Iterable[tuple[int, Any]]
) -> list[_Question]:
    """Groups per-sample records by `id` (first-appearance order), sorted by `sample_index`."""
    groups: dict[str, dict[int, tuple[int, dict]]] = {}
    for line_number, value in lines:
        where = f"{path}:{line_number}"
        record = _record(value, where)
        question_id = _required(record, "id", where)
        if not isinstance(question_id, str):
            _fail(where, "id", f"expected a string, got {_describe(question_id)}")
        index = _required(record, "sample_index", where)
        if type(index) is not int or index < 0:
            _fail(where, "sample_index", f"expected an integer >= 0, got {_describe(index)}")
        samples = groups.setdefault(question_id, {})
        if index in samples:
            _fail(
                where,
                "sample_index",
                f"duplicate sample {index} of id {question_id!r} (first on line {samples[index][0]})",
            )
        samples[index] = (line_number, record)

    questions = []
    for question_id, samples in groups.items():
        order = sorted(samples)
        for expected, index in enumerate(order):
            if index != expected:
                line_number = samples[index][0]
                _fail(
                    f"{path}:{line_number}",
                    "sample_index",
                    f"id {question_id!r} has sample {index} but no sample {expected}",
                )
        rows = [samples[i] for i in order]
        first_line = rows[0][0]
        question = _Question(where=f"{path}:{first_line}", id=question_id)
        for key, name in _SAMPLE_FIELDS.items():
            have = [
                r.get(key, _ABSENT) is not _ABSENT and (key == "answer" or r[key] is not None)
                for _, r in rows
            ]
            if not any(have):
                continue
            if not all(have):
                line_number = rows[have.index(False)][0]
                _fail(
                    f"{path}:{line_number}",
                    key,
                    f"missing here but present on line {rows[have.index(True)][0]}",
                )
            values = [record[key] for _, record in rows]
            checked = _checked(values, name)
            if checked is None:
                index, message = _first_problem(values, name)
                _fail(f"{path}:{rows[index][0]}", key, message)
            setattr(question, name, checked)
        if question.scores is None and question.answers is None:
            raise ValueError(f"{path}:{first_line}: needs a 'score' or an 'answer' field")
        for key in ("gold", "prior"):
            carriers = [(n, r[key]) for n, r in rows if key in r]
            if not carriers:
                continue
            line_number, value = carriers[0]
            for other_line, other in carriers[1:]:
                if other != value:
                    _fail(
                        f"{path}:{other_line}",
                        key,
                        f"differs from line {line_number} for the same id {question_id!r}",
                    )
            where = f"{path}:{line_number}"
            if key == "gold":
                question.gold = _optional_str(value, where, key)
            else:
                question.prior = _prior(value, where)
        questions.append(question)
    return questions


_PARQUET_COLUMNS = (
    "id",
    "scores",
    "tokens",
    "answers",
    "correct",
    "gold",
    "prior_mu",
    "prior_sigma",
)


def _read_parquet(path: pathlib.Path) -> Log:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    if "id" not in table.column_names:
        raise ValueError(f"{path}: field 'id': missing column")
    if ("prior_mu" in table.column_names) != ("prior_sigma" in table.column_names):
        raise ValueError(f"{path}: field 'prior_mu'/'prior_sigma': give both columns or neither")
    columns = {
        name: table.column(name).to_pylist()
        for name in _PARQUET_COLUMNS
        if name in table.column_names
    }
    questions = []
    for row in range(table.num_rows):
        where = f"{path}: row {row + 1}"
        record = {
            name: values[row]
            for name, values in columns.items()
            if name not in ("prior_mu", "prior_sigma")
        }
        if "prior_mu" in columns:
            mu, sigma = columns["prior_mu"][row], columns["prior_sigma"][row]
            if (mu is None) != (sigma is None):
                _fail(where, "prior_mu/prior_sigma", "one is null and the other is not")
            if mu is not None:
                record["prior"] = {"mu": mu, "sigma": sigma}
        questions.append(_question_from_record(record, where))
    return _assemble(questions, str(path))


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


# --------------------------------------------------------------------------- optscale-pool


def _single_wrapped(entry: dict, key: str, where: str) -> list:
    """`score[key]` of a pool entry: one list per question wrapped in an outer list."""
    field = f"score.{key}"
    outer = _list(entry[key], where, field)
    if len(outer) != 1 or not isinstance(outer[0], list):
        _fail(
            where,
            field,
            f"expected [[...]] (one list wrapped in a list), got {len(outer)} items"
            if len(outer) != 1
            else f"expected [[...]], got [{_describe(outer[0])}]",
        )
    return outer[0]


def _read_optscale_pool(
    path: pathlib.Path, prompts: str | os.PathLike | None, prompt_match: str, score_key: str | None
) -> Log:
    if prompt_match not in PROMPT_MATCHES:
        raise ValueError(f"prompt_match must be one of {PROMPT_MATCHES}, got {prompt_match!r}")
    score_key = score_key or "scores"
    if score_key not in ("scores", "last_scores"):
        raise ValueError(f"score_key must be 'scores' or 'last_scores', got {score_key!r}")
    questions = []
    for line_number, value in _json_array_items(path):
        where = f"{path}:{line_number}: entry {len(questions) + 1}"
        entry = _record(value, where)
        question_id = _required(entry, "id", where)
        if isinstance(question_id, bool) or not isinstance(question_id, (int, str)):
            _fail(where, "id", f"expected an integer or a string, got {_describe(question_id)}")
        score = _required(entry, "score", where)
        if not isinstance(score, dict):
            _fail(where, "score", f"expected an object, got {_describe(score)}")
        for key in ("completions", score_key):
            if key not in score:
                _fail(where, f"score.{key}", "missing")
        completions = _single_wrapped(score, "completions", where)
        for i, text in enumerate(completions):
            if not isinstance(text, str):
                _fail(
                    where, f"score.completions[0][{i}]", f"expected a string, got {_describe(text)}"
                )
        scores = _score_list(
            _single_wrapped(score, score_key, where), where, f"score.{score_key}[0]"
        )
        question = _Question(where=where, id=str(question_id), scores=scores)
        if "completion_tokens" in score:
            field = "score.completion_tokens[0]"
            question.tokens = _token_list(
                _single_wrapped(score, "completion_tokens", where), where, field
            )
        question.answers = [_answers.extract_answer(text, "boxed") for text in completions]
        questions.append(question)
    if prompts is not None:
        golds = _pool_gold(pathlib.Path(prompts), questions, prompt_match, path)
        for question, gold in zip(questions, golds, strict=True):
            question.gold = gold
    return _assemble(questions, str(path))


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _gold_text(value: Any, where: str) -> str:
    """A prompt record's `answer` as a gold string (GSM8K: the part after '####')."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        _fail(where, "answer", f"expected a string or a number, got {_describe(value)}")
    text = str(value)
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
        if _THOUSANDS.fullmatch(text):
            text = text.replace(",", "")
    return text


def _read_prompts(path: pathlib.Path) -> list[tuple[str, dict]]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such prompts file")
    with open(path, encoding="utf-8") as handle:
        is_array = handle.read(4096).lstrip().startswith("[")
    items = _json_array_items(path) if is_array else _json_lines(path)
    return [(f"{path}:{n}", _record(value, f"{path}:{n}")) for n, value in items]


def _pool_gold(
    prompts_path: pathlib.Path, questions: list[_Question], prompt_match: str, pool: pathlib.Path
) -> list[str]:
    prompts = _read_prompts(prompts_path)
    if prompt_match == "position":
        if len(prompts) != len(questions):
            raise ValueError(
                f"{prompts_path}: {len(prompts)} prompts but {len(questions)} entries in {pool}; "
                "prompt_match='position' pairs them in order (use prompt_match='id' to match ids)"
            )
        return [_gold_text(_required(p, "answer", w), w) for w, p in prompts]
    by_id: dict[str, tuple[str, dict]] = {}
    for where, prompt in prompts:
        key = prompt.get("id", prompt.get("unique_id"))
        if key is None or isinstance(key, bool) or not isinstance(key, (int, str)):
            _fail(where, "id", "prompt_match='id' needs an 'id' or 'unique_id' on every prompt")
        if str(key) in by_id:
            _fail(where, "id", f"duplicate prompt id {key!r} (first on {by_id[str(key)][0]})")
        by_id[str(key)] = (where, prompt)
    golds = []
    for question in questions:
        if question.id not in by_id:
            _fail(question.where, "id", f"no prompt with id {question.id!r} in {prompts_path}")
        where, prompt = by_id[question.id]
        golds.append(_gold_text(_required(prompt, "answer", where), where))
    return golds


# --------------------------------------------------------------------------- search-and-learn


def _aggregate_steps(steps: list, how: str) -> float:
    if how == "last":
        return float(steps[-1])
    if how == "min":
        return float(min(steps))
    if how == "mean":
        return float(math.fsum(steps) / len(steps))
    return float(math.prod(steps))


def _read_search_and_learn(path: pathlib.Path, step_aggregation: str | None) -> Log:
    if step_aggregation is None:
        raise ValueError(
            f"{path}: search-and-learn logs need step_aggregation= one of {STEP_AGGREGATIONS} "
            "(how per-step PRM scores become one score per completion)"
        )
    if step_aggregation not in STEP_AGGREGATIONS:
        raise ValueError(
            f"step_aggregation must be one of {STEP_AGGREGATIONS}, got {step_aggregation!r}"
        )
    questions = []
    for line_number, value in _json_lines(path):
        where = f"{path}:{line_number}"
        record = _record(value, where)
        question_id = record.get("unique_id", record.get("id", str(line_number)))
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            _fail(where, "unique_id", f"expected a string, got {_describe(question_id)}")
        completions = _list(_required(record, "completions", where), where, "completions")
        for i, text in enumerate(completions):
            if not isinstance(text, str):
                _fail(where, f"completions[{i}]", f"expected a string, got {_describe(text)}")
        step_scores = _list(_required(record, "scores", where), where, "scores")
        scores = []
        for i, steps in enumerate(step_scores):
            _score_list(steps, where, f"scores[{i}]")
            if not steps:
                _fail(where, f"scores[{i}]", "no step scores to aggregate")
            scores.append(_aggregate_steps(steps, step_aggregation))
        question = _Question(where=where, id=str(question_id), scores=scores)
        if "completion_tokens" in record:
            question.tokens = _token_list(record["completion_tokens"], where, "completion_tokens")
        if len(completions) != len(scores):
            _fail(
                where,
                "scores",
                f"has {len(scores)} entries but 'completions' has {len(completions)}",
            )
        question.answers = [_answers.extract_answer(text, "boxed") for text in completions]
        if "answer" in record:
            question.gold = _gold_text(record["answer"], where)
        questions.append(question)
    if not questions:
        raise ValueError(f"{path}: no records")
    return _assemble(questions, str(path))


# --------------------------------------------------------------------------- gpqa-genrm


def _read_gpqa_genrm(path: pathlib.Path) -> Log:
    """GPQA generative-verifier log: the first len(verifications) answers, scored.

    Score of answer i = mean of the non-null verdicts `verifications[i]`; answers are reduced
    to a letter with `normalise_choice` (else no answer); correct = letter == `gt`. The
    answers beyond the verified ones are not read (they have no score).
    """
    questions = []
    for line_number, value in _json_lines(path):
        where = f"{path}:{line_number}"
        record = _record(value, where)
        index = _required(record, "problem_idx", where)
        if type(index) is not int:
            _fail(where, "problem_idx", f"expected an integer, got {_describe(index)}")
        gold = _required(record, "gt", where)
        if not isinstance(gold, str) or _answers.normalise_choice(gold) != gold:
            _fail(where, "gt", f"expected a letter A-D, got {_describe(gold)}")
        raw_answers = _answer_list(_required(record, "answers", where), where, "answers")
        verdicts = _list(_required(record, "verifications", where), where, "verifications")
        if len(raw_answers) < len(verdicts):
            _fail(
                where,
                "answers",
                f"has {len(raw_answers)} entries, fewer than the {len(verdicts)} verified answers",
            )
        scores = []
        for i, row in enumerate(verdicts):
            field = f"verifications[{i}]"
            known = [x for x in _list(row, where, field) if x is not None]
            for j, x in enumerate(row):
                if x is not None:
                    _check_score(x, where, f"{field}[{j}]")
            if not known:
                _fail(where, field, "no non-null verdict, so the answer has no score")
            scores.append(math.fsum(known) / len(known))
        letters = [_answers.normalise_choice(a) for a in raw_answers[: len(scores)]]
        questions.append(
            _Question(
                where=where,
                id=str(index),
                scores=scores,
                answers=letters,
                correct=[letter == gold for letter in letters],
                gold=gold,
            )
        )
    if not questions:
        raise ValueError(f"{path}: no records")
    return _assemble(questions, str(path))
