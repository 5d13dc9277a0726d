"""Readers of other projects' logs: the OptScale paper's pool, HF search-and-learn, GPQA GenRM.

| format | file | scores | answers | gold |
|---|---|---|---|---|
| `optscale-pool` | JSON array | `score.scores[0]` | last `\\boxed{}` | `prompts=` file |
| `search-and-learn` | JSONL | step scores, `step_aggregation=` | last `\\boxed{}` | `answer` |
| `gpqa-genrm` | JSONL | mean of non-null verdicts | letter or none | `gt` |
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from optscale_jax import answers as _answers
from optscale_jax.logs.jsonfiles import is_json_array, json_array_items, json_lines
from optscale_jax.logs.records import (
    QuestionData,
    answer_list,
    check_score,
    describe,
    fail,
    record,
    required,
    score_list,
    token_list,
    value_list,
)
from optscale_jax.logs.schema import Log, assemble

__all__ = [
    "PROMPT_MATCHES",
    "STEP_AGGREGATIONS",
    "read_gpqa_genrm",
    "read_optscale_pool",
    "read_search_and_learn",
]

STEP_AGGREGATIONS = ("last", "min", "mean", "prod")
PROMPT_MATCHES = ("position", "id")
SCORE_KEYS = ("scores", "last_scores")


def _strings(value: Any, where: str, field: str) -> list[str]:
    """A list of strings (completions)."""
    for i, text in enumerate(value_list(value, where, field)):
        if not isinstance(text, str):
            fail(where, f"{field}[{i}]", f"expected a string, got {describe(text)}")
    return value


def _id_text(value: Any, where: str, field: str) -> str:
    """An id given as a string or an integer, as a string."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        fail(where, field, f"expected an integer or a string, got {describe(value)}")
    return str(value)


# --------------------------------------------------------------------------- optscale-pool


def read_optscale_pool(
    path: pathlib.Path,
    prompts: str | os.PathLike | None = None,
    prompt_match: str | None = None,
    score_key: str | None = None,
) -> Log:
    """The OptScale paper's pool: a JSON array of `{"id", "score": {"completions": [[...]],
    "scores": [[...]], "last_scores": [[...]], "completion_tokens": [[...]]}}` entries.

    Args:
        path: the pool file.
        prompts: the prompts file giving the gold answers (see `read_log`), or None.
        prompt_match: "position" (default) or "id".
        score_key: "scores" (default) or "last_scores".
    """
    prompt_match = prompt_match or "position"
    if prompt_match not in PROMPT_MATCHES:
        raise ValueError(f"prompt_match must be one of {PROMPT_MATCHES}, got {prompt_match!r}")
    score_key = score_key or "scores"
    if score_key not in SCORE_KEYS:
        raise ValueError(f"score_key must be 'scores' or 'last_scores', got {score_key!r}")
    questions = [
        _pool_question(value, f"{path}:{line}: entry {n}", score_key)
        for n, (line, value) in enumerate(json_array_items(path), start=1)
    ]
    if prompts is not None:
        golds = _pool_gold(pathlib.Path(prompts), questions, prompt_match, path)
        for question, gold in zip(questions, golds, strict=True):
            question.gold = gold
    return assemble(questions, str(path))


def _pool_question(value: Any, where: str, score_key: str) -> QuestionData:
    entry = record(value, where)
    question_id = _id_text(required(entry, "id", where), where, "id")
    score = required(entry, "score", where)
    if not isinstance(score, dict):
        fail(where, "score", f"expected an object, got {describe(score)}")
    for key in ("completions", score_key):
        if key not in score:
            fail(where, f"score.{key}", "missing")
    fields = {"scores": f"score.{score_key}[0]", "answers": "score.completions[0]"}
    fields["tokens"] = "score.completion_tokens[0]"
    completions = _strings(_single_wrapped(score, "completions", where), where, fields["answers"])
    question = QuestionData(where=where, id=question_id, fields=fields)
    question.scores = score_list(_single_wrapped(score, score_key, where), where, fields["scores"])
    if "completion_tokens" in score:
        tokens = _single_wrapped(score, "completion_tokens", where)
        question.tokens = token_list(tokens, where, fields["tokens"])
    question.answers = [_answers.extract_answer(text, "boxed") for text in completions]
    return question


def _single_wrapped(score: dict, key: str, where: str) -> list:
    """`score[key]` of a pool entry: one list per question wrapped in an outer list."""
    field = f"score.{key}"
    outer = value_list(score[key], where, field)
    if len(outer) != 1:
        fail(where, field, f"expected [[...]] (one list wrapped in a list), got {len(outer)} items")
    if not isinstance(outer[0], list):
        fail(where, field, f"expected [[...]], got [{describe(outer[0])}]")
    return outer[0]


def _gold_text(value: Any, where: str) -> str:
    """A prompt record's `answer` as a gold string (GSM8K: the part after '####')."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(where, "answer", f"expected a string or a number, got {describe(value)}")
    return _answers.gsm8k_final_answer(str(value))


def _read_prompts(path: pathlib.Path) -> list[tuple[str, Mapping]]:
    """(where, record) of each prompt of a JSON array or JSONL prompts file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompts file")
    items = json_array_items(path) if is_json_array(path) else json_lines(path)
    return [(f"{path}:{n}", record(value, f"{path}:{n}")) for n, value in items]


def _pool_gold(
    prompts_path: pathlib.Path, questions: list[QuestionData], prompt_match: str, pool: pathlib.Path
) -> list[str]:
    prompts = _read_prompts(prompts_path)
    if prompt_match == "position":
        if len(prompts) != len(questions):
            raise ValueError(
                f"{prompts_path}: {len(prompts)} prompts but {len(questions)} entries in {pool}; "
                "prompt_match='position' pairs them in order (use prompt_match='id' to match ids)"
            )
        return [_gold_text(required(p, "answer", w), w) for w, p in prompts]
    by_id: dict[str, tuple[str, Mapping]] = {}
    for where, prompt in prompts:
        key = prompt.get("id", prompt.get("unique_id"))
        if key is None or isinstance(key, bool) or not isinstance(key, (int, str)):
            fail(where, "id", "prompt_match='id' needs an 'id' or 'unique_id' on every prompt")
        if str(key) in by_id:
            fail(where, "id", f"duplicate prompt id {key!r} (first on {by_id[str(key)][0]})")
        by_id[str(key)] = (where, prompt)
    golds = []
    for question in questions:
        if question.id not in by_id:
            fail(question.where, "id", f"no prompt with id {question.id!r} in {prompts_path}")
        where, prompt = by_id[question.id]
        golds.append(_gold_text(required(prompt, "answer", where), where))
    return golds


# --------------------------------------------------------------------------- search-and-learn


def _aggregate_steps(steps: Any, how: str) -> float:
    if how == "last":
        return float(steps[-1])
    if how == "min":
        return float(min(steps))
    if how == "mean":
        return float(math.fsum(steps) / len(steps))
    return float(math.prod(steps))


def read_search_and_learn(path: pathlib.Path, step_aggregation: str | None = None) -> Log:
    """HF search-and-learn best-of-n JSONL: `completions`, per-step PRM `scores`,
    `completion_tokens`, `answer`; `step_aggregation` (required) makes one score of the steps.
    """
    if step_aggregation is None:
        raise ValueError(
            f"{path}: search-and-learn logs need step_aggregation= one of {STEP_AGGREGATIONS} "
            "(how per-step PRM scores become one score per completion)"
        )
    if step_aggregation not in STEP_AGGREGATIONS:
        raise ValueError(
            f"step_aggregation must be one of {STEP_AGGREGATIONS}, got {step_aggregation!r}"
        )
    questions = [
        _search_and_learn_question(value, f"{path}:{line}", line, step_aggregation)
        for line, value in json_lines(path)
    ]
    if not questions:
        raise ValueError(f"{path}: no records")
    return assemble(questions, str(path))


def _search_and_learn_question(
    fields: Mapping, where: str, line: int, step_aggregation: str
) -> QuestionData:
    key = "unique_id" if "unique_id" in fields else "id"
    question_id = _id_text(fields.get(key, str(line)), where, key)
    completions = _strings(required(fields, "completions", where), where, "completions")
    scores = []
    for i, steps in enumerate(value_list(required(fields, "scores", where), where, "scores")):
        steps = score_list(steps, where, f"scores[{i}]")
        if not steps.size:
            fail(where, f"scores[{i}]", "no step scores to aggregate")
        scores.append(_aggregate_steps(steps.tolist(), step_aggregation))
    if len(completions) != len(scores):
        fail(where, "scores", f"has {len(scores)} entries but 'completions' has {len(completions)}")
    question = QuestionData(
        where=where,
        id=question_id,
        scores=scores,
        fields={"answers": "completions", "tokens": "completion_tokens"},
    )
    if "completion_tokens" in fields:
        question.tokens = token_list(fields["completion_tokens"], where, "completion_tokens")
    question.answers = [_answers.extract_answer(text, "boxed") for text in completions]
    if "answer" in fields:
        question.gold = _gold_text(fields["answer"], where)
    return question


# --------------------------------------------------------------------------- gpqa-genrm


def read_gpqa_genrm(path: pathlib.Path) -> Log:
    """GPQA generative-verifier log: the first len(verifications) answers, scored.

    Score of answer i = mean of the non-null verdicts `verifications[i]`; answers are reduced
    to a letter with `normalise_choice` (else no answer); correct = letter == `gt`. The
    answers beyond the verified ones are not read (they have no score).
    """
    questions = [_gpqa_question(value, f"{path}:{line}") for line, value in json_lines(path)]
    if not questions:
        raise ValueError(f"{path}: no records")
    return assemble(questions, str(path))


def _gpqa_question(fields: Mapping, where: str) -> QuestionData:
    index = required(fields, "problem_idx", where)
    if type(index) is not int:
        fail(where, "problem_idx", f"expected an integer, got {describe(index)}")
    gold = required(fields, "gt", where)
    if not isinstance(gold, str) or _answers.normalise_choice(gold) != gold:
        fail(where, "gt", f"expected a letter A-D, got {describe(gold)}")
    raw_answers = answer_list(required(fields, "answers", where), where, "answers")
    verdicts = value_list(required(fields, "verifications", where), where, "verifications")
    if len(raw_answers) < len(verdicts):
        fail(
            where,
            "answers",
            f"has {len(raw_answers)} entries, fewer than the {len(verdicts)} verified answers",
        )
    scores = []
    for i, row in enumerate(verdicts):
        field = f"verifications[{i}]"
        for j, x in enumerate(value_list(row, where, field)):
            if x is not None:
                check_score(x, where, f"{field}[{j}]")
        known = [x for x in row if x is not None]
        if not known:
            fail(where, field, "no non-null verdict, so the answer has no score")
        scores.append(math.fsum(known) / len(known))
    letters = [_answers.normalise_choice(a) for a in raw_answers[: len(scores)]]
    return QuestionData(
        where=where,
        id=str(index),
        scores=scores,
        answers=letters,
        correct=[letter == gold for letter in letters],
        gold=gold,
    )
