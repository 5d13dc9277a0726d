"""Sample orders: R seeded permutations of a log, and the outcomes of decisions on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np


class Replayed(NamedTuple):
    """A log with R sample orders per question; arrays [R, Q, K], drawn order on the last axis.

    Attributes:
        mask: bool, True where a sample exists (a prefix).
        scores: float scores (None if the log has none).
        answers: int32 answer codes, -1 = none (None if the log has none).
        correct: bool correctness of each sample (None if the log has no labels).
        cumulative_cost: float, cost of the first j + 1 samples.
        order: int, index of each drawn sample in the log.
    """

    mask: np.ndarray
    scores: np.ndarray | None
    answers: np.ndarray | None
    correct: np.ndarray | None
    cumulative_cost: np.ndarray
    order: np.ndarray


class Outcomes(NamedTuple):
    """Per setting and question, means over the R sample orders: arrays [S, Q].

    Attributes:
        correct: accuracy of the returned answer (NaN on a log without labels).
        samples: samples drawn.
        cost: cost of the samples drawn.
        losses: risk name (`optscale_jax.calibration.RISKS`) -> its loss [S, Q]; None
            unless `run_methods` was asked for risks.
    """

    correct: np.ndarray
    samples: np.ndarray
    cost: np.ndarray
    losses: Mapping[str, np.ndarray] | None = None


def permute(log: Any, permutations: int, seed: int, verifier_cost_factor: float = 0.0) -> Replayed:
    """R seeded random orders of each question's samples (valid samples first).

    Args:
        log: an `optscale_jax.logs.Log`.
        permutations: R.
        seed: seed of the orders.
        verifier_cost_factor: the cost of a sample is tokens x (1 + factor) (samples x
            (1 + factor) when the log has no tokens).

    Returns:
        Replayed.
    """
    mask = np.asarray(log.mask, bool)
    rng = np.random.default_rng(seed)
    return _ordered(log, rng.random((permutations, *mask.shape)), verifier_cost_factor)


def permute_block(
    log: Any,
    permutations: int,
    seed: int,
    verifier_cost_factor: float,
    first_question: int,
    shape: tuple[int, int],
) -> Replayed:
    """`permute` of a block of questions of a bigger log: the orders its questions get in
    `permute` of the whole log (the random keys are drawn from the same stream, skipped to
    the block's positions), so replaying a log block by block orders it identically.

    Args:
        log: the block, `[Qb, Kb]` arrays (Kb <= K: it is padded to K samples).
        permutations: R.
        seed: seed of the orders of the whole log.
        verifier_cost_factor: as in `permute`.
        first_question: index in the whole log of the block's first question.
        shape: (Q, K) of the whole log.

    Returns:
        Replayed with `[R, Qb, K]` arrays.
    """
    num_questions, num_samples = shape
    block = len(log.ids)
    keys = np.empty((permutations, block, num_samples))
    for r in range(permutations):
        rng = np.random.default_rng(seed)
        # One uint64 per double: skip the keys of earlier orders and earlier questions.
        rng.bit_generator.advance((r * num_questions + first_question) * num_samples)
        keys[r] = rng.random((block, num_samples))
    return _ordered(_padded(log, num_samples), keys, verifier_cost_factor)


def _padded(log: Any, num_samples: int) -> Any:
    """The log with its sample axis padded to `num_samples` (the `Log` padding values)."""
    import dataclasses

    extra = num_samples - np.asarray(log.mask).shape[1]
    if extra == 0:
        return log
    pads = {"mask": False, "scores": 0.0, "tokens": 0.0, "answers": -1, "correct": False}
    return dataclasses.replace(
        log,
        **{
            name: np.pad(getattr(log, name), ((0, 0), (0, extra)), constant_values=pad)
            for name, pad in pads.items()
            if getattr(log, name) is not None
        },
    )


def _ordered(log: Any, keys: np.ndarray, verifier_cost_factor: float) -> Replayed:
    """The log ordered by random keys `[R, Q, K]` (sorted ascending, missing samples last)."""
    mask = np.asarray(log.mask, bool)
    keys[:, ~mask] = np.inf  # missing samples sort last
    order = np.argsort(keys, axis=-1, kind="stable")

    def take(values):
        if values is None:
            return None
        return np.take_along_axis(np.broadcast_to(values, order.shape), order, axis=-1)

    drawn_mask = take(mask)
    if log.tokens is not None:
        unit_cost = take(np.asarray(log.tokens, np.float64))
    else:
        unit_cost = drawn_mask.astype(np.float64)
    cumulative_cost = np.cumsum(np.where(drawn_mask, unit_cost, 0.0), axis=-1)
    cumulative_cost *= 1.0 + verifier_cost_factor
    answers = take(np.asarray(log.answers, np.int32)) if log.answers is not None else None
    correct = take(np.asarray(log.correct, bool)) & drawn_mask if log.correct is not None else None
    return Replayed(
        mask=drawn_mask,
        scores=take(np.asarray(log.scores)) if log.scores is not None else None,
        answers=answers,
        correct=correct,
        cumulative_cost=cumulative_cost,
        order=order,
    )


def outcomes(replayed: Replayed, samples: np.ndarray, chosen: np.ndarray) -> Outcomes:
    """Per question accuracy, samples and cost of decisions, averaged over the orders.

    Args:
        replayed: the ordered log.
        samples: int `[..., R, Q]` samples drawn.
        chosen: int `[..., R, Q]` chosen sample index (into the drawn order).

    Returns:
        Outcomes with arrays `[..., Q]`; accuracy is NaN when the log has no labels.
    """
    samples = np.asarray(samples)
    chosen = np.asarray(chosen)
    cost = _take(replayed.cumulative_cost, np.maximum(samples - 1, 0))
    cost = np.where(samples > 0, cost, 0.0)
    if replayed.correct is None:
        # Without labels accuracy is unknown, not 0.
        accuracy = np.full(samples.shape[:-2] + samples.shape[-1:], np.nan)
    else:
        accuracy = (_take(replayed.correct, chosen) & (samples > 0)).mean(-2)
    return Outcomes(accuracy, samples.mean(-2), cost.mean(-2))


def outcome_at(
    replayed: Replayed, field: str, samples: np.ndarray, chosen: np.ndarray
) -> np.ndarray:
    """What a risk compares, per decision: the returned sample's answer or correctness, or
    the best score seen.

    Args:
        replayed: the ordered log.
        field: "answers" (code of the returned answer, -1 for none), "correct" (the returned
            answer is right) or "scores" (the best score among the samples drawn, 0 with none).
        samples: int `[..., R, Q]` samples drawn.
        chosen: int `[..., R, Q]` chosen sample index (into the drawn order).

    Returns:
        `[..., R, Q]` int32 codes, bools or float64 scores.
    """
    samples = np.asarray(samples)
    drawn = samples > 0
    if field == "scores":
        seen = np.where(replayed.mask, replayed.scores, -np.inf)
        best = np.maximum.accumulate(seen, axis=-1)
        return np.where(drawn, _take(best, np.maximum(samples - 1, 0)), 0.0)
    values = replayed.answers if field == "answers" else replayed.correct
    at_chosen = _take(values, np.asarray(chosen))
    return np.where(drawn, at_chosen, -1 if field == "answers" else False)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`values[..., index]` along the sample axis, `index` with extra leading axes."""
    shape = (*index.shape, values.shape[-1])
    return np.take_along_axis(np.broadcast_to(values, shape), index[..., None], axis=-1)[..., 0]
