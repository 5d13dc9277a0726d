"""The live budget mode: B samples per prompt on average, spent in waves where they help most.

`optscale sample --budget B` runs this loop instead of per-question OptScale stopping
(`optscale_jax.live.loop`). Wave 0 draws m0 samples of every prompt. Every later wave refits
all prompts in ONE batched call (`allocation.plan_wave` on the `AllocationState` of the
samples drawn so far) and draws the `wave` samples of largest marginal gain of the objective
(`reach` or `best`, see `optscale_jax.allocation`), no prompt beyond max_n, until
floor(B * Q) samples are drawn or no prompt may draw more. The sampling (one sampler call and
one verifier call per wave, seeds from (run seed, question id, wave)) is the per-question
mode's `draw_wave`. A plan is a function of the samples drawn so far and (seed, wave) only,
so it is also the one `allocation.replay_allocation` makes on the run's own log (same prior
and dtype; `optscale sample --budget` computes in float64, as `optscale replay` does).

Files. The per-sample log (`log_path`) has the per-question mode's format: one JSON line per
scored sample with `wave` and `wave_samples`, one write and fsync per wave; `optscale replay`
reads it. Beside it, `allocation_log_path(log_path)` (`run.jsonl` -> `run.allocation.jsonl`)
holds one line of the run's settings, then one line per wave, written and fsync'd BEFORE the
wave's samples are drawn::

    {"settings": {"budget": 4.0, "objective": "reach", "wave": 10, "m0": 2, ...}}
    {"wave": 0, "counts": {"q1": 2, ...}, "drawn_before": 0, "budget_left": 40}
    {"wave": 1, "counts": {"q7": 3, ...}, "drawn_before": 20, "budget_left": 20}

`counts` gives the samples each prompt draws in that wave (prompts drawing none are left out).

Resume. The sample log is repaired as in the per-question mode (a torn last line and an
incomplete last wave are dropped). The allocation log must hold the same settings; the
record of a wave whose samples did not reach the sample log (a kill between the two writes)
is dropped; the others must account for every kept sample. The allocation state is rebuilt
by the same `init` / `update` calls on the same wave groups, so the following plans, and with
them both files, end identical to those of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from optscale_jax import allocation
from optscale_jax.live import loop

ALLOCATION_SUFFIX = ".allocation.jsonl"


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
    """Settings of the budget mode (the sampling settings are the `LoopConfig`'s).

    Attributes:
        budget: mean samples per prompt, in [m0, max_n]; the run draws floor(budget * Q).
        objective: "reach" (prompts whose best score reaches s_min) or "best" (sum of the
            expected best scores).
        wave: samples per wave after the first (>= 1); None for Q, one per prompt on average.
        m0: samples every prompt draws first (>= 1).
    """

    budget: float
    objective: str = "reach"
    wave: int | None = None
    m0: int = 2


@dataclasses.dataclass
class BudgetRunSummary(loop.RunSummary):
    """A `RunSummary` with the budget's figures (no question stops by N* in this mode)."""

    budget: float = 0.0
    total_budget: int = 0
    objective: str = "reach"
    wave: int = 0
    m0: int = 0
    allocation_log: str = ""


def allocation_log_path(log_path: str | os.PathLike) -> pathlib.Path:
    """The allocation log beside a per-sample log: `run.jsonl` -> `run.allocation.jsonl`."""
    path = pathlib.Path(log_path)
    return path.with_name(path.name.removesuffix(".jsonl") + ALLOCATION_SUFFIX)


def _settings(questions, config: loop.LoopConfig, budget: BudgetConfig, wave: int) -> dict:
    """What fixes the plans; a resumed run must have the same (named after the arguments)."""
    settings = {
        "budget": float(budget.budget),
        "objective": budget.objective,
        "wave": int(wave),
        "m0": int(budget.m0),
        "max_n": int(config.max_n),
        "s_min": float(config.s_min),
        "seed": int(config.seed),
        "posterior": allocation.DEFAULT_POSTERIOR,
        "questions": [q.id for q in questions],
    }
    if loop.question_priors(questions) is not None:
        settings["prior"] = [list(q.prior) for q in questions]
        settings["prior_scale"] = [float(x) for x in config.prior_scale]
    return settings


def _check(config: loop.LoopConfig, budget: BudgetConfig, questions: int) -> int:
    """Checks the settings (errors name the argument); returns the wave size."""
    loop._validate(config)
    wave = questions if budget.wave is None else budget.wave
    allocation._check_wave_arguments(
        budget.budget, budget.m0, wave, budget.objective, config.s_min, config.max_n, False
    )
    return wave


# --------------------------------------------------------------------------- resume


def _read_allocation_log(path: pathlib.Path) -> list[tuple[int, dict]]:
    """(byte offset of the line's end, record) of each complete line (a torn last line, cut
    by a kill, is left out)."""
    data = path.read_bytes() if path.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]
    lines, end = [], 0
    for number, text in enumerate(complete.split(b"\n")[:-1], 1):
        end += len(text) + 1
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{number}: not a JSON line (not an allocation log)") from None
        lines.append((end, record))
    return lines


def _check_settings(path: pathlib.Path, logged: Any, settings: dict) -> None:
    """The logged settings must be this run's (the first that differs is named)."""
    if not isinstance(logged, dict):
        raise ValueError(f"{path}:1: expected the run's settings (not an allocation log)")
    for name in [*settings, *(name for name in logged if name not in settings)]:
        if logged.get(name) != settings.get(name):
            shown = "the prompts" if name in ("questions", "prior") else repr(logged.get(name))
            raise ValueError(
                f"{name}: {path} was run with {shown}, not this run's; resume with the "
                "same settings or start a new log"
            )


def _resumed_waves(
    path: pathlib.Path, settings: dict, questions, states, next_wave: int, log_path
) -> list[np.ndarray]:
    """The sample counts of each wave the sample log holds, from the allocation log at
    `path` (checked against the settings and the samples); the file is cut after them."""
    lines = _read_allocation_log(path)
    if not lines:
        if next_wave:
            raise ValueError(f"{log_path}: no allocation log {path}: not a run with a budget")
        _truncate(path, 0)  # at most a torn settings line
        return []
    _check_settings(path, lines[0][1].get("settings"), settings)
    kept = [(end, record) for end, record in lines[1:] if record.get("wave", -1) < next_wave]
    if [record.get("wave") for _, record in kept] != list(range(next_wave)):
        raise ValueError(f"{path}: its waves do not match the {next_wave} waves of the log")
    index = {q.id: i for i, q in enumerate(questions)}
    waves = []
    for _, record in kept:
        counts = np.zeros(len(questions), np.int64)
        for qid, count in record["counts"].items():
            counts[index[qid]] = count
        waves.append(counts)
    drawn = np.sum(waves, axis=0) if waves else np.zeros(len(questions), np.int64)
    if drawn.tolist() != [s.n for s in states]:
        raise ValueError(f"{path}: its counts do not match the samples of the log")
    _truncate(path, kept[-1][0] if kept else lines[0][0])
    return waves


def _truncate(path: pathlib.Path, size: int) -> None:
    """Cuts the file to its first `size` bytes when it is longer (a kill's leftovers)."""
    if path.exists() and path.stat().st_size > size:
        loop.truncate_file(path, size)


# --------------------------------------------------------------------------- the loop


def _absorb_wave(state, states, before: np.ndarray, counts: np.ndarray, prior, width: int):
    """The allocation state after one more wave: samples before[q] .. before[q] + counts[q] - 1
    of each question (`allocation.init` for the first wave, `update` after), as `[Q, width]`
    arrays (width max_n: one shape, so one compilation, for every wave)."""
    scores = np.zeros((len(states), width))
    mask = np.zeros((len(states), width), bool)
    for q, (state_q, start, count) in enumerate(zip(states, before, counts, strict=True)):
        scores[q, :count] = state_q.scores[start : start + count]
        mask[q, :count] = True
    if state is None:
        return allocation.init(scores, mask, prior=prior)
    return allocation.update(state, scores, mask)


def _prior(questions, config: loop.LoopConfig):
    """The MAP prior of the fits: the questions' own, else None (empirical Bayes on wave 0)."""
    priors = loop.question_priors(questions)
    if priors is None:
        return None
    return (np.asarray(priors[0]), np.asarray(priors[1]), tuple(config.prior_scale))


def _write_line(handle, record: dict) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


@dataclasses.dataclass
class _Allocation:
    """The allocation's side of a run: its settings, state and samples drawn per question."""

    budget: BudgetConfig
    config: loop.LoopConfig
    wave: int
    total: int
    prior: Any
    drawn: np.ndarray
    state: Any = None

    def plan(self, index: int) -> np.ndarray:
        """Samples per question of wave `index` (all zero when the run is over)."""
        if index == 0:
            return np.full_like(self.drawn, self.budget.m0)
        left = self.total - int(self.drawn.sum())
        if left <= 0:
            return np.zeros_like(self.drawn)
        counts = allocation.plan_wave(
            self.state, self.wave, left, self.budget.objective, self.config.s_min,
            capacity=self.config.max_n - self.drawn, seed=self.config.seed,
            wave_index=index - 1,
        )  # fmt: skip
        return np.asarray(counts, np.int64)

    def absorb(self, states: Sequence[loop.QuestionState], counts: np.ndarray) -> None:
        """Adds the wave just drawn (`counts` per question) to the state."""
        self.state = _absorb_wave(
            self.state, states, self.drawn, counts, self.prior, self.config.max_n
        )
        self.drawn = self.drawn + counts


def run_budget(
    questions: Sequence[loop.Question],
    sampler,
    verifier,
    config: loop.LoopConfig,
    budget: BudgetConfig,
    log_path: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
) -> BudgetRunSummary:
    """Spends `budget.budget` samples per question on average over `questions`, in waves.

    Args:
        questions: the prompts (see `loop.read_prompts`).
        sampler: a `optscale_jax.live.samplers.Sampler`.
        verifier: a `optscale_jax.live.verifiers.Verifier`.
        config: the sampling settings (`max_n` caps each question, `s_min` is `reach`'s
            threshold, `seed` fixes samples and ties; the stopping fields are unused).
        budget: the budget settings.
        log_path: the per-sample JSONL log; the allocation log goes beside it
            (`allocation_log_path`).
        resume: continue a killed run from both logs instead of refusing to overwrite them.
        progress: show a tqdm bar of the samples drawn on stderr.

    Returns:
        The `BudgetRunSummary`.

    Raises:
        LogExistsError: a non-empty log without `resume` (a `ValueError`).
        ValueError: on bad settings (naming the argument) or logs of another run.
    """
    from tqdm import tqdm

    wave_size = _check(config, budget, len(questions))
    log_path = pathlib.Path(log_path)
    plans_path = allocation_log_path(log_path)
    start = time.perf_counter()
    settings = _settings(questions, config, budget, wave_size)
    if not resume and plans_path.exists() and plans_path.stat().st_size > 0:
        raise loop.LogExistsError(plans_path)
    states, index, resumed = loop._initial_states(questions, log_path, resume)
    history = []
    if resume:
        history = _resumed_waves(plans_path, settings, questions, states, index, log_path)
    run = loop._Run(questions, states, sampler, verifier, None, config)
    total = allocation._total(budget.budget, len(questions))
    drawn = np.zeros(len(questions), np.int64)
    plan = _Allocation(budget, config, wave_size, total, _prior(questions, config), drawn)
    with run.timings.stage("decision"):
        for counts in history:
            plan.absorb(states, counts)
    fresh = not plans_path.exists() or plans_path.stat().st_size == 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    calls_before = (verifier.calls, verifier.inputs, verifier.truncated)
    bar = tqdm(total=total, initial=int(plan.drawn.sum()), desc="samples", unit="sample",
               disable=not progress, file=sys.stderr)  # fmt: skip
    with open(plans_path, "a", encoding="utf-8") as plans, open(log_path, "a") as log:
        if fresh:
            _write_line(plans, {"settings": settings})
        while _run_wave(run, plan, index, plans, log):
            index += 1
            bar.update(int(plan.drawn.sum()) - bar.n)
    bar.close()
    summary = loop._summary(run, None, calls_before, resumed, index, time.perf_counter() - start)
    return BudgetRunSummary(
        **dataclasses.asdict(summary), budget=float(budget.budget), total_budget=total,
        objective=budget.objective, wave=wave_size, m0=budget.m0,
        allocation_log=str(plans_path),
    )  # fmt: skip


def _run_wave(run, plan: _Allocation, index: int, plans, log) -> bool:
    """Plans wave `index`, logs the plan, draws it and absorbs it; False if nothing to draw."""
    wave_start = time.perf_counter()
    counts = plan.plan(index)
    decision = time.perf_counter() - wave_start
    if not counts.any():
        run.timings.decision += decision
        return False
    active = np.flatnonzero(counts)
    drawn = int(plan.drawn.sum())
    record = {
        "wave": index,
        "counts": {run.questions[q].id: int(counts[q]) for q in active},
        "drawn_before": drawn,
        "budget_left": plan.total - drawn,
    }
    _write_line(plans, record)  # before the samples: a resume knows the wave was planned
    loop.draw_wave(run, index, active.tolist(), counts[active].tolist(), log)
    tick = time.perf_counter()
    plan.absorb(run.states, counts)
    decision += time.perf_counter() - tick
    run.timings.decision += decision
    run.timings.wave_decisions.append(decision)
    run.timings.waves.append(time.perf_counter() - wave_start)
    return True
