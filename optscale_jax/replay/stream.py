"""`evaluate_stream`: replay a log bigger than memory, block of questions by block.

Data flow:

    log file -> `scan` (pass 1: ids, K, which fields exist: a `LogOutline`)
        -> per block of B questions (`logs.iter_log_blocks`, pass 2): `permute_block` (the
           orders the questions get in the whole log's `permute`) -> the engine's methods ->
           the block's outcomes written to `outcomes/{correct,samples,cost}.npy` ([S, Q]
           float64 files on disk, filled column block by column block) -> the block is freed
        -> `evaluate_run` on the outcome files (memory-mapped): the same selection, figures
           and summary as `evaluate`.

Only methods that decide each question from its own samples stream (`streams`): not the
budget methods (they share a budget across questions), not OptScalet (its prior may be fitted
on all the selection questions); Learn-then-Test selection is not streamed either. The
results equal `evaluate`'s on the same log: the orders, splits and bootstrap resamples are
drawn from the same seeds. The evaluation reads per-setting question vectors (8 bytes per
setting and question) and draws its bootstrap in bounded chunks; the replay arrays
([R, B, K] samples and fits) never exceed one block. A run that dies leaves partial outcome
files: a new run starts over and overwrites them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

from optscale_jax.replay.config import ReplayConfig
from optscale_jax.replay.engine import _run_methods
from optscale_jax.replay.evaluation import (
    ReplayResult,
    evaluate_run,
    evaluation_state,
    prepare,
    top_score_ties,
)
from optscale_jax.replay.methods import METHOD_TABLE, Setting
from optscale_jax.replay.orders import Outcomes, permute_block

DEFAULT_BLOCK_QUESTIONS = 10_000
OUTCOME_FIELDS = ("correct", "samples", "cost")
"""The outcome files of a streamed replay, `{field}.npy` [S, Q] float64 each."""
_OPTIONAL_FIELDS = ("scores", "tokens", "answers", "correct", "prior_mu")


@dataclasses.dataclass(frozen=True)
class LogOutline:
    """What the checks and the evaluation read of a log without its samples: the ids, the
    number of samples K of the longest question, and which fields exist (`[0, K]`
    placeholder arrays where the `Log` has the field, None where it has not)."""

    ids: list[str]
    mask: np.ndarray
    scores: np.ndarray | None
    tokens: np.ndarray | None
    answers: np.ndarray | None
    correct: np.ndarray | None
    prior_mu: np.ndarray | None
    source: str
    tied_top_answers: int | None
    """Questions where different answers share the top score (None without both fields)."""


def streams(method: str) -> bool:
    """The method decides each question from its own samples alone, so it can run block by
    block: not a budget method, not one with a prior."""
    entry = METHOD_TABLE[method]
    return not (entry.spends_budget or entry.uses_prior)


def scan(path: str | os.PathLike, block_questions: int, format: str = "auto") -> LogOutline:
    """Pass 1 over the log: its `LogOutline`.

    Raises:
        ValueError: a field present in some blocks and missing in others, or as
            `iter_log_blocks` raises it.
    """
    from optscale_jax.logs.stream import iter_log_blocks

    ids: list[str] = []
    num_samples, present, ties = 0, None, 0
    for block in iter_log_blocks(path, block_questions, format):
        fields = tuple(getattr(block, name) is not None for name in _OPTIONAL_FIELDS)
        if present is not None and fields != present:
            raise ValueError(f"{path}: a field is present on some questions and not on others")
        present = fields
        ids += block.ids
        num_samples = max(num_samples, block.mask.shape[1])
        block_ties = top_score_ties(block)
        ties = None if block_ties is None else ties + round(block_ties * len(block.ids))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: question ids must be unique")
    placeholder = np.zeros((0, num_samples))
    fields = {
        name: placeholder if has else None
        for name, has in zip(_OPTIONAL_FIELDS, present, strict=True)
    }
    mask = np.zeros((0, num_samples), bool)
    return LogOutline(ids, mask, **fields, source=str(path), tied_top_answers=ties)


def evaluate_stream(
    path: str | os.PathLike,
    config: ReplayConfig,
    outcomes_dir: str | os.PathLike,
    block_questions: int = DEFAULT_BLOCK_QUESTIONS,
    format: str = "auto",
    explicit_methods: bool = False,
    progress: bool = True,
) -> ReplayResult:
    """`evaluate` of a JSONL or Parquet log read `block_questions` questions at a time.

    Args:
        path: the log file.
        config: the replay configuration; `select` must be "accuracy".
        outcomes_dir: folder of the per-question outcome files (`OUTCOME_FIELDS`).
        block_questions: B, questions per block.
        format: "auto", "jsonl" or "parquet".
        explicit_methods: the user named the methods: one that cannot stream is an error
            (else it is skipped).
        progress: a progress bar over the questions.

    Returns:
        ReplayResult, equal to `evaluate`'s on the same log and config.

    Raises:
        ValueError: naming `methods` or `select` for what does not stream, else as
            `evaluate` and `iter_log_blocks` raise.
    """
    if config.select != "accuracy":
        raise ValueError("select: a streamed replay selects by accuracy (ltt is not streamed)")
    kept = tuple(method for method in config.methods if streams(method))
    lacking = [method for method in config.methods if not streams(method)]
    if lacking and explicit_methods:
        raise ValueError(f"methods: {', '.join(lacking)} cannot be streamed (not per question)")
    outline = scan(path, block_questions, format)
    plan = prepare(outline, dataclasses.replace(config, methods=kept), explicit_methods)
    _, max_n, methods, skipped, reference, order_seed, boot_seed, splits = plan
    skipped |= {method: "not streamed: it does not decide per question" for method in lacking}
    settings, out, diagnostics = _replay_blocks(
        path, outline, config, (max_n, methods, order_seed), outcomes_dir, block_questions,
        format, progress,
    )  # fmt: skip
    num = len(outline.ids)
    ties = outline.tied_top_answers
    diagnostics["questions_with_tied_top_answers"] = None if ties is None else ties / num
    run = evaluation_state(
        outline, config, reference, max_n, splits, settings, out, None, None, boot_seed
    )
    return evaluate_run(run, skipped, diagnostics)


def _replay_blocks(
    path: str | os.PathLike,
    outline: LogOutline,
    config: ReplayConfig,
    plan: tuple[int, tuple[str, ...], int],
    outcomes_dir: str | os.PathLike,
    block_questions: int,
    format: str,
    progress: bool,
) -> tuple[list[Setting], Outcomes, dict[str, Any]]:
    """Pass 2: each block replayed and its outcomes written to the files.

    Returns:
        (settings, outcomes memory-mapped from the files, diagnostics summed over blocks).
    """
    from tqdm import tqdm

    from optscale_jax.logs.stream import iter_log_blocks

    max_n, methods, order_seed = plan
    shape = (len(outline.ids), outline.mask.shape[1])
    folder = pathlib.Path(outcomes_dir)
    folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=shape[0], desc="replay", unit="question", disable=not progress)
    files, settings, diagnostics, first = {}, None, {}, 0
    for block in iter_log_blocks(path, block_questions, format):
        replayed = permute_block(
            block, config.permutations, order_seed, config.verifier_cost_factor, first, shape
        )
        block_settings, part, block_diagnostics = _run_methods(
            replayed, config, max_n, None, False, methods, ()
        )
        if settings is None:
            settings = block_settings
            files = {
                name: _outcome_file(folder, name, (len(settings), shape[0]))
                for name in OUTCOME_FIELDS
            }
        # Written into a shared file mapping: the kernel keeps the pages if the process dies
        # (a flush per block would sync the whole file each time: quadratic in Q).
        for name in OUTCOME_FIELDS:
            files[name][:, first : first + len(block.ids)] = getattr(part, name)
        diagnostics = _add_counts(diagnostics, block_diagnostics)
        first += len(block.ids)
        bar.update(len(block.ids))
    bar.close()
    for outcome_file in files.values():
        outcome_file.flush()
    del files  # closes the writable maps; the evaluation reads them afresh
    out = Outcomes(*(np.load(folder / f"{name}.npy", mmap_mode="r") for name in OUTCOME_FIELDS))
    return settings, out, diagnostics


def _outcome_file(folder: pathlib.Path, name: str, shape: tuple[int, int]) -> np.memmap:
    return np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float64, shape)


def _add_counts(total: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """Diagnostics summed over blocks: counts (dicts of ints) add up key by key."""
    merged = dict(total)
    for key, value in block.items():
        if isinstance(value, dict):
            counts = total.get(key, {})
            merged[key] = {name: counts.get(name, 0) + count for name, count in value.items()}
        else:
            merged[key] = value
    return merged
