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

Over several processes (`devices.initialize_distributed`, one per host) each process reads
and replays only its share of the questions (`devices.process_shares`); the outlines, each
block's outcomes and the diagnostics go to every process through jax's
`process_allgather`, in lockstep rounds of one block per process, and process 0 alone
writes the outcome files and evaluates. The result equals one process's.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from optscale_jax import devices
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


def scan(
    path: str | os.PathLike,
    block_questions: int,
    format: str = "auto",
    questions: slice | None = None,
) -> LogOutline:
    """Pass 1 over the log (over `questions` only, if given): its `LogOutline`.

    Raises:
        ValueError: a field present in some blocks and missing in others, or as
            `iter_log_blocks` raises it.
    """
    return _outline([_scan_share(path, block_questions, format, questions)], path)


def _scan_share(
    path: str | os.PathLike, block_questions: int, format: str, questions: slice | None
) -> dict[str, Any]:
    """The outline of some questions as JSON-able parts: ids, K, fields present, ties."""
    from optscale_jax.logs.stream import iter_log_blocks

    ids: list[str] = []
    num_samples, present, ties = 0, None, 0
    for block in iter_log_blocks(path, block_questions, format, questions):
        fields = [getattr(block, name) is not None for name in _OPTIONAL_FIELDS]
        if present is not None and fields != present:
            raise ValueError(f"{path}: a field is present on some questions and not on others")
        present = fields
        ids += block.ids
        num_samples = max(num_samples, block.mask.shape[1])
        block_ties = top_score_ties(block)
        ties = None if block_ties is None else ties + round(block_ties * len(block.ids))
    return {"ids": ids, "samples": num_samples, "present": present, "ties": ties}


def _outline(shares: list[dict[str, Any]], path: str | os.PathLike) -> LogOutline:
    """The `LogOutline` of the log from its shares' parts (`_scan_share`), in order."""
    if len({tuple(share["present"] or ()) for share in shares if share["ids"]}) > 1:
        raise ValueError(f"{path}: a field is present on some questions and not on others")
    ids = [question for share in shares for question in share["ids"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: question ids must be unique")
    present = next((share["present"] for share in shares if share["present"]), None)
    ties = [share["ties"] for share in shares]
    placeholder = np.zeros((0, max(share["samples"] for share in shares)))
    fields = {
        name: placeholder if has else None
        for name, has in zip(
            _OPTIONAL_FIELDS, present or [False] * len(_OPTIONAL_FIELDS), strict=True
        )
    }
    mask = np.zeros(placeholder.shape, bool)
    tied = None if None in ties else sum(ties)
    return LogOutline(ids, mask, **fields, source=str(path), tied_top_answers=tied)


def evaluate_stream(
    path: str | os.PathLike,
    config: ReplayConfig,
    outcomes_dir: str | os.PathLike,
    block_questions: int = DEFAULT_BLOCK_QUESTIONS,
    format: str = "auto",
    explicit_methods: bool = False,
    progress: bool = True,
) -> ReplayResult | None:
    """`evaluate` of a JSONL or Parquet log read `block_questions` questions at a time.

    Over several processes every process calls it with the same arguments; each reads and
    replays its share of the questions, and process 0 writes the outcome files and returns
    the result (the others return None).

    Args:
        path: the log file.
        config: the replay configuration; `select` must be "accuracy".
        outcomes_dir: folder of the per-question outcome files (`OUTCOME_FIELDS`).
        block_questions: B, questions per block.
        format: "auto", "jsonl" or "parquet".
        explicit_methods: the user named the methods: one that cannot stream is an error
            (else it is skipped).
        progress: a progress bar over the questions (process 0's).

    Returns:
        ReplayResult, equal to `evaluate`'s on the same log and config; None on processes
        other than 0.

    Raises:
        ValueError: naming `methods` or `select` for what does not stream, the log if it
            has fewer questions than processes, else as `evaluate` and `iter_log_blocks`
            raise.
    """
    import jax

    if config.select != "accuracy":
        raise ValueError("select: a streamed replay selects by accuracy (ltt is not streamed)")
    kept = tuple(method for method in config.methods if streams(method))
    lacking = [method for method in config.methods if not streams(method)]
    if lacking and explicit_methods:
        raise ValueError(f"methods: {', '.join(lacking)} cannot be streamed (not per question)")
    share = _process_questions(path, format)
    outline = _outline(
        devices.allgather_json(_scan_share(path, block_questions, format, share)), path
    )
    plan = prepare(outline, dataclasses.replace(config, methods=kept), explicit_methods)
    _, max_n, methods, skipped, reference, order_seed, boot_seed, splits = plan
    skipped |= {method: "not streamed: it does not decide per question" for method in lacking}
    settings, out, diagnostics = _replay_blocks(
        path, outline, config, (max_n, methods, order_seed),
        (outcomes_dir, block_questions, share), format, progress,
    )  # fmt: skip
    if jax.process_index() != 0:
        return None
    num = len(outline.ids)
    ties = outline.tied_top_answers
    diagnostics["questions_with_tied_top_answers"] = None if ties is None else ties / num
    run = evaluation_state(
        outline, config, reference, max_n, splits, settings, out, None, None, boot_seed
    )
    return evaluate_run(run, skipped, diagnostics)


def _process_questions(path: str | os.PathLike, format: str) -> slice | None:
    """This process's share of the log's questions (None with one process: all of them).

    Raises:
        ValueError: naming the log if some process would get no question.
    """
    import jax

    if jax.process_count() == 1:
        return None
    from optscale_jax.logs.stream import count_log_questions

    num_questions = count_log_questions(path, format)
    if num_questions < jax.process_count():
        raise ValueError(
            f"{path}: {num_questions} questions for {jax.process_count()} processes: "
            "every process needs at least one"
        )
    return devices.process_share(num_questions)


def _replay_blocks(
    path: str | os.PathLike,
    outline: LogOutline,
    config: ReplayConfig,
    plan: tuple[int, tuple[str, ...], int],
    where: tuple[str | os.PathLike, int, slice | None],
    format: str,
    progress: bool,
) -> tuple[list[Setting], Outcomes | None, dict[str, Any]]:
    """Pass 2: each block of this process's share replayed, the outcomes of every process's
    blocks written to the files (by process 0).

    Args:
        where: (outcomes folder, questions per block, this process's share or None).

    Returns:
        (settings, outcomes memory-mapped from the files (None on processes other than 0),
        diagnostics summed over blocks and processes).
    """
    import jax
    from tqdm import tqdm

    outcomes_dir, block_questions, share = where
    shape = (len(outline.ids), outline.mask.shape[1])
    writer = jax.process_index() == 0
    folder = pathlib.Path(outcomes_dir)
    bar = tqdm(total=shape[0], desc="replay", unit="question", disable=not (progress and writer))
    blocks = _replayed_blocks(path, config, plan, shape, (block_questions, share), format)
    files, settings, diagnostics = {}, None, {}
    for first, block_settings, part, block_diagnostics in _every_process(blocks):
        if settings is None:
            settings = block_settings
            if writer:
                folder.mkdir(parents=True, exist_ok=True)
                files = {
                    name: _outcome_file(folder, name, (len(settings), shape[0]))
                    for name in OUTCOME_FIELDS
                }
        # Written into a shared file mapping: the kernel keeps the pages if the process dies
        # (a flush per block would sync the whole file each time: quadratic in Q).
        for name, outcome_file in files.items():
            outcome_file[:, first : first + part.shape[-1]] = part[OUTCOME_FIELDS.index(name)]
        diagnostics = _add_counts(diagnostics, block_diagnostics)
        bar.update(part.shape[-1])
    bar.close()
    for outcome_file in files.values():
        outcome_file.flush()
    del files  # closes the writable maps; the evaluation reads them afresh
    if not writer:
        return settings, None, diagnostics
    out = Outcomes(*(np.load(folder / f"{name}.npy", mmap_mode="r") for name in OUTCOME_FIELDS))
    return settings, out, diagnostics


def _replayed_blocks(
    path: str | os.PathLike,
    config: ReplayConfig,
    plan: tuple[int, tuple[str, ...], int],
    shape: tuple[int, int],
    reading: tuple[int, slice | None],
    format: str,
) -> Iterator[tuple[int, list[Setting], np.ndarray, dict[str, Any]]]:
    """(index of its first question, settings, outcomes [fields, S, b], diagnostics) of each
    block of `reading` = (questions per block, the questions or None for all)."""
    from optscale_jax.logs.stream import iter_log_blocks

    max_n, methods, order_seed = plan
    block_questions, share = reading
    first = 0 if share is None else share.start
    for block in iter_log_blocks(path, block_questions, format, share):
        replayed = permute_block(
            block, config.permutations, order_seed, config.verifier_cost_factor, first, shape
        )
        settings, part, diagnostics = _run_methods(
            replayed, config, max_n, None, False, methods, ()
        )
        yield first, settings, np.stack([getattr(part, f) for f in OUTCOME_FIELDS]), diagnostics
        first += len(block.ids)


def _every_process(blocks: Iterator[tuple]) -> Iterator[tuple]:
    """The blocks of every process, on every process: `blocks` itself with one process,
    else lockstep rounds in which each process contributes its next block (or nothing once
    it has none left) to jax's `process_allgather`, until no process has one.

    Every process must have a first block (it fixes the number of settings S).
    """
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        yield from blocks
        return
    settings, num_settings = None, None
    while True:
        item = next(blocks, None)
        if item is not None:
            first, settings, part, diagnostics = item
            num_settings = part.shape[1]
        headers = devices.allgather_json(
            None if item is None else [first, part.shape[-1], diagnostics]
        )
        if all(header is None for header in headers):
            return
        width = max(header[1] for header in headers if header is not None)
        mine = part if item is not None else np.zeros((len(OUTCOME_FIELDS), num_settings, 0))
        padded = np.pad(mine, ((0, 0), (0, 0), (0, width - mine.shape[-1])))
        gathered = np.asarray(multihost_utils.process_allgather(padded))
        for header, parts in zip(headers, gathered, strict=True):
            if header is not None:
                first_of, count, diagnostics_of = header
                yield first_of, settings, parts[..., :count], diagnostics_of


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
