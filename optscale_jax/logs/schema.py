"""The `Log` schema: a logged Best-of-N run as padded arrays, and `assemble`, which pads the
validated questions of any reader into one.

Answers become `answer_text` = `optscale_jax.answers.normalise_answer` of the extracted string
(an empty one is no answer) and per-question integer codes: equal normalised strings share a
code (numbered by first appearance), -1 = no answer.

`correct` is taken from the file when present; else computed from the answers and the gold
answer with `optscale_jax.answers.is_correct` (math-verify, cached per distinct answer); else
None.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optscale_jax import answers as _answers
from optscale_jax.logs.records import ABSENT, LIST_FIELDS, QuestionData, fail, question_from_record

__all__ = ["COST_KINDS", "Log", "assemble"]

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
        selected = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                selected[field.name] = value[index]
            elif isinstance(value, list):
                selected[field.name] = [value[i] for i in index]
        return dataclasses.replace(self, **selected)

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
            question_from_record(record, f"{source}:{n}")
            for n, record in enumerate(records, start=1)
        ]
        return assemble(questions, source)


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


# --------------------------------------------------------------------------- assembly


def assemble(questions: Sequence[QuestionData], source: str) -> Log:
    """Pads the validated questions of a reader into a `Log`.

    Checks what no single record can: unique ids, the same list fields on every question,
    equal lengths of the list fields within a question, gold on all questions or none.

    Args:
        questions: the questions in file order.
        source: the file, for `Log.source` and errors.

    Returns:
        The `Log`.
    """
    if not questions:
        raise ValueError(f"{source}: no questions")
    _check_unique_ids(questions)
    present = _present_fields(questions)
    mask = _sample_mask(questions, present)

    def padded(name: str, dtype: type, pad: Any) -> np.ndarray | None:
        if not present[name]:
            return None
        return _scatter([getattr(q, name) for q in questions], mask, dtype, pad)

    answer_text = answers = None
    if present["answers"]:
        normalise = _answers.normalise_answer
        answer_text = [[normalise(a) for a in q.answers] for q in questions]
        codes = [_answers.answer_codes(texts) for texts in answer_text]
        answers = _scatter(codes, mask, np.int32, -1)
    gold = None
    if any(q.gold is not ABSENT for q in questions):
        gold = [None if q.gold is ABSENT else q.gold for q in questions]
    correct = padded("correct", np.bool_, False)
    if correct is None and answers is not None and gold is not None:
        correct = _correct_from_gold(questions, answers, answer_text, gold, mask)
    prior_mu, prior_sigma = _prior_centres(questions)
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


def _check_unique_ids(questions: Sequence[QuestionData]) -> None:
    seen: dict[str, str] = {}
    for question in questions:
        if question.id in seen:
            fail(
                question.where, "id", f"duplicate id {question.id!r} (first on {seen[question.id]})"
            )
        seen[question.id] = question.where


def _present_fields(questions: Sequence[QuestionData]) -> dict[str, bool]:
    """Which list fields the log has; a field on some questions but not all is an error."""
    present = {}
    for name in LIST_FIELDS:
        have = [getattr(q, name) is not None for q in questions]
        if any(have) and not all(have):
            with_it = questions[have.index(True)]
            without = questions[have.index(False)]
            fail(without.where, without.field(name), f"missing here but present on {with_it.where}")
        present[name] = have[0]
    return present


def _sample_mask(questions: Sequence[QuestionData], present: Mapping[str, bool]) -> np.ndarray:
    """[Q, K] prefix mask of the samples; the list fields of a question must agree in length."""
    lengths = []
    for question in questions:
        given = [(n, len(getattr(question, n))) for n in LIST_FIELDS if present[n]]
        (first, length), others = given[0], given[1:]
        for name, other in others:
            if other != length:
                fail(
                    question.where,
                    question.field(name),
                    f"has {other} entries but {question.field(first)!r} has {length}",
                )
        lengths.append(length)
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.arange(int(lengths.max()))[None, :] < lengths[:, None]


def _scatter(rows: Sequence, mask: np.ndarray, dtype: type, pad: Any) -> np.ndarray:
    """Ragged rows -> [Q, K] array padded with `pad` (row-major order matches the mask)."""
    array = np.full(mask.shape, pad, dtype=dtype)
    if mask.any():
        array[mask] = np.concatenate([np.asarray(row, dtype=dtype) for row in rows])
    return array


def _correct_from_gold(
    questions: Sequence[QuestionData],
    codes: np.ndarray,
    answer_text: list[list[str | None]],
    gold: list[str | None],
    mask: np.ndarray,
) -> np.ndarray | None:
    """[Q, K] correctness from the answers and the gold answers, one `is_correct` call per
    distinct answer of each question; None when no question has a gold answer."""
    from tqdm import tqdm

    known = [g is not None for g in gold]
    if not any(known):
        return None
    if not all(known):
        fail(
            questions[known.index(False)].where,
            "gold",
            "missing here while other questions have one, so "
            "correctness is undefined (give 'gold' or 'correct' everywhere)",
        )
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


def _prior_centres(
    questions: Sequence[QuestionData],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """[Q] prior mu and sigma (NaN where a question has none), or (None, None) if none has."""
    if all(q.prior is None for q in questions):
        return None, None
    priors = [q.prior if q.prior is not None else (math.nan, math.nan) for q in questions]
    return (
        np.array([p[0] for p in priors], dtype=np.float64),
        np.array([p[1] for p in priors], dtype=np.float64),
    )
