"""The online OptScale loop: sample in waves, score, refit every question, stop, log.

Every question starts active. In each wave, every active question gets up to `wave_size`
more samples through ONE sampler call (one request per question with `n` = its share and a
seed derived from (run seed, question id, wave), so a resumed run draws the same samples),
all new answers are scored in ONE verifier call, and ONE batched core call refits
(mu, sigma) from each question's sufficient statistics (n, sum s, sum s^2) (MLE, or MAP
with a per-question prior) and recomputes N*. A question stops once
n >= max(min_samples, N*) or n >= max_n.

`LoopConfig.law` picks the score law N* comes from (`optscale_jax.laws.LAWS`): `tn` (the
default, the path above), `beta`, `tn-atoms`, `beta-atoms`, `empirical` (each fitted to the
question's scores so far, padded to `[questions, max_n]` so one program serves every wave,
N* from its log CDF: `laws.optimal_n`), or `auto` (per question, the parametric law with the
least AIC on the scores so far; ties to the first of `laws.PARAMETRIC_LAWS`). With a law
other than `tn` every log line also carries `law`: the law whose N* had the question drawn
in that wave (the law of the decision before the wave).

The log is JSONL, one line per scored sample, appended once per wave, flushed and fsync'd.
Each line carries `wave` and `wave_samples` (the wave's record count), so `resume` can tell
a complete wave from one cut short by a kill: a torn last line is dropped, an incomplete
last wave is removed (the file is truncated) and redrawn with the same seeds.

`optscale_jax.live.budget_loop` (`optscale sample --budget`) draws its waves with the same
`draw_wave`, into a log of the same format, but plans them across questions instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import sys
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from optscale_jax import io as _io
from optscale_jax.answers import extract_answer, gsm8k_final_answer, is_correct
from optscale_jax.logs import questions_from_samples
from optscale_jax.logs.jsonfiles import json_lines
from optscale_jax.policies import nstar_reached

DEFAULT_PROMPT_TEMPLATE = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
)


@dataclasses.dataclass(frozen=True)
class Question:
    """One prompt of a run.

    Attributes:
        id: unique question id (the prompts file's `id`, else its line number).
        text: the question.
        gold: the reference answer (already reduced to the final answer), or None.
        prior: (mu, sigma) centre of the OptScalet prior, or None.
    """

    id: str
    text: str
    gold: str | None = None
    prior: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Settings of the online loop (see `run_online`)."""

    s_min: float = 0.8
    alpha: float = 0.9
    max_n: int = 16
    wave_size: int = 4
    min_samples: int = 1
    seed: int = 0
    answer_kind: str = "auto"
    prior_scale: tuple[float, float] = (0.1, 0.1)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    law: str = "tn"


AUTO_LAW = "auto"  # `LoopConfig.law`: per question, the parametric law with the least AIC


@dataclasses.dataclass
class QuestionState:
    """Per-question bookkeeping, rebuilt from the log on resume."""

    scores: list[float] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)
    answers: list[str | None] = dataclasses.field(default_factory=list)
    correct: list[bool | None] = dataclasses.field(default_factory=list)

    @property
    def n(self) -> int:
        """The number of samples drawn so far."""
        return len(self.scores)

    def add(self, score: float, tokens: int, answer: str | None, correct: bool | None) -> None:
        """Appends one scored sample."""
        self.scores.append(score)
        self.tokens.append(tokens)
        self.answers.append(answer)
        self.correct.append(correct)


@dataclasses.dataclass
class RunSummary:
    """What a run did; `as_dict` is what `optscale sample` prints."""

    questions: int
    max_n: int
    samples: int
    tokens: int
    waves: int
    verifier_calls: int
    verifier_inputs: int
    truncated: int
    accuracy: float | None
    graded: int
    resumed_samples: int
    stopped_by_nstar: int
    stopped_at_max_n: int
    wall_seconds: float
    sample_seconds: float
    verify_seconds: float
    answer_seconds: float
    decision_seconds: float
    samples_per_question: dict[str, int]
    nstar: dict[str, int]
    wave_seconds: list[float]
    wave_decision_seconds: list[float]
    # The certificate of the stopping setting (`optscale sample --setting`), or None.
    setting: dict[str, Any] | None = None
    # The law N* came from (`LoopConfig.law`) and, per question, the law of its last decision;
    # left out of `as_dict` for the default `tn` (the summary as before).
    law: str = "tn"
    question_laws: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if self.law == "tn":
            del values["law"], values["question_laws"]
        return values


def wave_seed(seed: int, question_id: str, wave: int) -> int:
    """The sampling seed of one question in one wave (31-bit, stable across runs).

    Args:
        seed: the run's `--seed`.
        question_id: the question's id (hashed with CRC-32, independent of file order).
        wave: the wave number (0-based).

    Returns:
        A non-negative int below 2**31.
    """
    entropy = [int(seed) & 0xFFFFFFFF, zlib.crc32(question_id.encode("utf-8")), int(wave)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def gold_answer(value: Any) -> str | None:
    """The final answer of a gold field: GSM8K's text after `####`
    (`optscale_jax.answers.gsm8k_final_answer`), else the value itself; None if empty."""
    if value is None:
        return None
    return gsm8k_final_answer(str(value).strip()) or None


def read_prompts(path: str | os.PathLike, priors: dict[str, tuple[float, float]] | None = None):
    """Reads a prompts JSONL file.

    Each line is an object with the question in `problem` or `question`, an optional gold
    answer in `answer` or `gold` (GSM8K solutions are cut to the text after `####`), an
    optional `id` (else the 0-based line number) and an optional prior
    (`{"prior": {"mu": .., "sigma": ..}}` or `prior_mu`/`prior_sigma`).

    Args:
        path: the JSONL file.
        priors: per-id prior centres that override those in the file.

    Returns:
        The list of `Question`s.

    Raises:
        ValueError: naming the file and line on malformed input or a duplicate id.
        FileNotFoundError: if the file does not exist.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts: {path} does not exist")
    questions: list[Question] = []
    seen: set[str] = set()
    for number, record in _io.iter_jsonl(path):
        where = f"{path}:{number}"
        text = record.get("problem", record.get("question"))
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: no 'problem' or 'question' string")
        qid = str(record["id"]) if record.get("id") is not None else str(number - 1)
        if qid in seen:
            raise ValueError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        gold = gold_answer(record.get("answer", record.get("gold")))
        prior = _record_prior(record, where)
        if priors is not None and qid in priors:
            prior = priors[qid]
        questions.append(Question(qid, text, gold, prior))
    if not questions:
        raise ValueError(f"prompts: {path} holds no prompt")
    return questions


def _record_prior(record: dict, where: str) -> tuple[float, float] | None:
    prior = record.get("prior")
    if isinstance(prior, dict):
        mu, sigma = prior.get("mu"), prior.get("sigma")
    else:
        mu, sigma = record.get("prior_mu"), record.get("prior_sigma")
    if mu is None and sigma is None:
        return None
    try:
        mu, sigma = float(mu), float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: prior needs numbers mu and sigma") from None
    if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{where}: prior needs finite mu and sigma > 0")
    return mu, sigma


def read_priors(path: str | os.PathLike) -> dict[str, tuple[float, float]]:
    """Per-question prior centres from JSONL lines `{"id", "mu", "sigma"}` (or `prior: {}`).

    Raises:
        ValueError: naming the file and line on malformed input.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior: {path} does not exist")
    priors = {}
    for number, record in _io.iter_jsonl(path):
        where = f"{path}:{number}"
        if record.get("id") is None:
            raise ValueError(f"{where}: expected an object with an 'id'")
        fields = record
        if "prior" not in record and "mu" in record:
            fields = {"prior": {"mu": record["mu"], "sigma": record.get("sigma")}}
        prior = _record_prior(fields, where)
        if prior is None:
            raise ValueError(f"{where}: no prior mu/sigma")
        priors[str(record["id"])] = prior
    return priors


# --------------------------------------------------------------------------- resume


def load_log(path: str | os.PathLike, questions: Sequence[Question]):
    """Reads a live log for `--resume`, repairing what a kill can leave behind.

    A torn last line is dropped, and so is an incomplete last wave (fewer records than its
    `wave_samples`); the file is truncated to the complete waves (both reported on stderr).
    The samples are parsed by `optscale_jax.logs.questions_from_samples`, as `read_log` does.

    Args:
        path: the log file.
        questions: the run's questions (every logged id must be one of them).

    Returns:
        (per-id `QuestionState`, number of the next wave, number of samples kept).

    Raises:
        ValueError: naming the file and line on a record that does not fit the run.
    """
    path = pathlib.Path(path)
    data = path.read_bytes()
    # Each wave is written as whole lines in one write, so a kill can only leave an
    # unterminated fragment at the very end; a terminated line that is not JSON is damage.
    complete = data[: data.rfind(b"\n") + 1]
    torn = len(complete) < len(data)
    if torn:
        print(f"{path}: dropped a torn last line (the run was killed mid-write)", file=sys.stderr)
    lines = _complete_lines(path, complete)
    keep = _complete_waves(path, lines)
    kept = lines[:keep]
    states = _states_from_samples(path, kept, questions)
    # Repair the file only once the kept records are known to fit this run.
    if torn or keep < len(lines):
        truncate_file(path, _line_end(complete, kept[-1][0]) if kept else 0)
    next_wave = max(record["wave"] for _, record in kept) + 1 if kept else 0
    return states, next_wave, keep


def truncate_file(path: pathlib.Path, size: int) -> None:
    """Cuts a log to its first `size` bytes, durably (flushed and fsync'd)."""
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())


def _complete_lines(path: pathlib.Path, complete: bytes) -> list[tuple[int, dict]]:
    """(line number, record) of the newline-terminated lines (`complete`, the file's head)."""
    texts = complete.decode("utf-8", errors="replace").split("\n")[:-1]
    last = max((number for number, text in enumerate(texts, 1) if text.strip()), default=0)
    lines = []
    if last:
        # Stop at the last complete line: the torn fragment after it is never parsed.
        for number, record in json_lines(path):
            lines.append((number, record))
            if number == last:
                break
    return lines


def _complete_waves(path: pathlib.Path, lines: list[tuple[int, dict]]) -> int:
    """How many records to keep: all but an incomplete last wave (waves are appended in
    order, so an incomplete one can only be the last)."""
    by_wave: dict[int, list[dict]] = {}
    for number, record in lines:
        wave = record.get("wave")
        if not isinstance(wave, int):
            raise ValueError(f"{path}:{number}: field 'wave': expected an integer (not a live log)")
        by_wave.setdefault(wave, []).append(record)
    if not by_wave:
        return 0
    last = max(by_wave)
    expected = by_wave[last][0].get("wave_samples")
    if isinstance(expected, int) and len(by_wave[last]) < expected:
        dropped = len(by_wave[last])
        print(
            f"{path}: dropped {dropped} of {expected} records of the incomplete wave {last}",
            file=sys.stderr,
        )
        return len(lines) - dropped
    return len(lines)


def _states_from_samples(
    path: pathlib.Path, lines: list[tuple[int, dict]], questions: Sequence[Question]
) -> dict[str, QuestionState]:
    """Per-id states of the logged samples (the per-sample log parser, shared with read_log)."""
    states = {q.id: QuestionState() for q in questions}
    for logged in questions_from_samples(lines, str(path)):
        if logged.id not in states:
            raise ValueError(
                f"{logged.where}: field 'id': {logged.id!r} is not in the prompts file"
            )
        if logged.scores is None:
            raise ValueError(f"{logged.where}: field 'score': missing (not a live log)")
        n = len(logged.scores)
        tokens = [0] * n if logged.tokens is None else logged.tokens
        answers = [None] * n if logged.answers is None else logged.answers
        correct = [None] * n if logged.correct is None else logged.correct
        state = states[logged.id]
        for sample in zip(logged.scores, tokens, answers, correct, strict=True):
            state.add(float(sample[0]), int(sample[1]), sample[2], sample[3])
    return states


def _line_end(data: bytes, line: int) -> int:
    """The byte offset just after line `line` (1-based) of `data`."""
    end = 0
    for _ in range(line):
        end = data.index(b"\n", end) + 1
    return end


# --------------------------------------------------------------------------- the loop


def question_priors(questions: Sequence[Question]) -> tuple[list[float], list[float]] | None:
    """(prior mu per question, prior sigma per question), or None when no question has one.

    Raises:
        ValueError: naming `prior` when only some questions have a prior.
    """
    priors = [q.prior for q in questions]
    if not any(p is not None for p in priors):
        return None
    if not all(p is not None for p in priors):
        missing = [q.id for q in questions if q.prior is None][:3]
        raise ValueError(f"prior: no prior for question(s) {', '.join(missing)}")
    return [p[0] for p in priors], [p[1] for p in priors]


class _Decider:
    """The batched estimator of `tn`: sufficient statistics -> (mu, sigma) -> N*, one jit per
    shape."""

    def __init__(self, questions: Sequence[Question], config: LoopConfig) -> None:
        import jax.numpy as jnp

        from optscale_jax import fit_map_stats, fit_mle_stats, optimal_n

        self.config = config
        priors = question_priors(questions)
        self.use_prior = priors is not None
        self._jnp = jnp
        self._fit_mle = fit_mle_stats
        self._fit_map = fit_map_stats
        self._optimal_n = optimal_n
        if self.use_prior:
            self.prior_mu = jnp.asarray(priors[0])
            self.prior_sigma = jnp.asarray(priors[1])

    def decide(self, states: Sequence[QuestionState]) -> tuple[np.ndarray, list[str]]:
        """(N* per question, the law each came from)."""
        nstar = self(*_stats(states))[2]
        return nstar, ["tn"] * len(states)

    def __call__(self, n: np.ndarray, s1: np.ndarray, s2: np.ndarray):
        """Returns (mu, sigma, nstar, status) as numpy arrays `[Q]`."""
        jnp = self._jnp
        n, s1, s2 = jnp.asarray(n), jnp.asarray(s1), jnp.asarray(s2)
        if self.use_prior:
            fit = self._fit_map(
                n, s1, s2, self.prior_mu, self.prior_sigma, prior_scale=self.config.prior_scale
            )
        else:
            fit = self._fit_mle(n, s1, s2)
        nstar = self._optimal_n(
            fit.mu, fit.sigma, self.config.s_min, self.config.alpha, max_n=self.config.max_n
        )
        return (
            np.asarray(fit.mu, dtype=np.float64),
            np.asarray(fit.sigma, dtype=np.float64),
            np.asarray(nstar, dtype=np.int64),
            np.asarray(fit.status),
        )


class _LawDecider:
    """N* from another score law (`LoopConfig.law`), or per question the least-AIC law."""

    def __init__(self, config: LoopConfig) -> None:
        from optscale_jax import laws

        self.config = config
        self._laws = laws
        self.names = laws.PARAMETRIC_LAWS if config.law == AUTO_LAW else (config.law,)

    def decide(self, states: Sequence[QuestionState]) -> tuple[np.ndarray, list[str]]:
        """(N* per question, the law each came from): each law fitted to the padded scores
        `[Q, max_n]` (one compiled program for every wave), `auto` picking by AIC."""
        laws, config = self._laws, self.config
        scores = np.full((len(states), config.max_n), 0.5)
        mask = np.zeros(scores.shape, bool)
        for row, state in enumerate(states):
            scores[row, : state.n] = state.scores[: config.max_n]
            mask[row, : state.n] = True
        fits = laws.fit_all(scores, mask, laws=self.names)
        nstars = np.stack([
            np.asarray(laws.optimal_n(name, fits[name].params, config.s_min, config.alpha,
                                      config.max_n), np.int64)
            for name in self.names
        ])  # fmt: skip
        # AIC is +inf where a law cannot have produced the scores (an exact 0 or 1 for tn or
        # beta); argmin keeps the first law listed on ties (all laws tie with no scores).
        aic = np.stack([np.asarray(fits[name].aic, np.float64) for name in self.names])
        best = np.argmin(np.where(np.isnan(aic), np.inf, aic), axis=0)
        rows = np.arange(len(states))
        return nstars[best, rows], [self.names[i] for i in best]


def _decider(questions: Sequence[Question], config: LoopConfig):
    """The estimator of `config.law`: `_Decider` for `tn` (priors too), else `_LawDecider`."""
    if config.law == "tn":
        return _Decider(questions, config)
    if question_priors(questions) is not None:
        raise ValueError(
            f"law: the (mu, sigma) priors are the tn law's; {config.law!r} takes none (use "
            "law tn, or drop the priors)"
        )
    return _LawDecider(config)


def _stats(states: Sequence[QuestionState]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # fsum is exactly rounded, so the sums do not depend on how the samples were grouped
    # into waves: a resumed run computes the same N* as an uninterrupted one.
    n = np.asarray([s.n for s in states], dtype=np.float64)
    s1 = np.asarray([math.fsum(s.scores) for s in states], dtype=np.float64)
    s2 = np.asarray([math.fsum(x * x for x in s.scores) for s in states], dtype=np.float64)
    return n, s1, s2


def stopped(n: np.ndarray, nstar: np.ndarray, config: LoopConfig) -> np.ndarray:
    """The stopping rule: `nstar_reached` (n >= max(min_samples, N*)) or n >= max_n."""
    n = np.asarray(n)
    return nstar_reached(n, nstar, config.min_samples) | (n >= config.max_n)


def _validate(config: LoopConfig) -> None:
    from optscale_jax import validation

    validation.check_unit(config.s_min, "s_min")
    validation.check_open_unit(config.alpha, "alpha")
    validation.check_max_n(config.max_n, "max_n")
    from optscale_jax.laws import LAWS

    if config.law not in (*LAWS, AUTO_LAW):
        choices = ", ".join((*LAWS, AUTO_LAW))
        raise ValueError(f"law: unknown law {config.law!r} (choose from {choices})")
    if config.wave_size < 1:
        raise ValueError(f"wave_size: must be >= 1, got {config.wave_size}")
    if config.min_samples < 1:
        raise ValueError(f"min_samples: must be >= 1, got {config.min_samples}")
    if "{question}" not in config.prompt_template:
        raise ValueError("prompt_template: must contain {question}")


class LogExistsError(ValueError):
    """`run_online` refuses to overwrite a non-empty log unless asked to resume it."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(f"log_path: {path} exists; pass resume=True to continue it")
        self.path = path


@dataclasses.dataclass
class _Timings:
    """Seconds spent in each stage over the run, and per wave."""

    sample: float = 0.0
    verify: float = 0.0
    answer: float = 0.0
    decision: float = 0.0
    waves: list[float] = dataclasses.field(default_factory=list)
    wave_decisions: list[float] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Adds the time the block takes to the stage `name`."""
        tick = time.perf_counter()
        yield
        setattr(self, name, getattr(self, name) + time.perf_counter() - tick)


@dataclasses.dataclass
class _Run:
    """What every wave works with: the questions and their states, the models, the estimator
    (None in the budget mode, `optscale_jax.live.budget_loop`, which plans its own waves)."""

    questions: Sequence[Question]
    states: list[QuestionState]
    sampler: Any
    verifier: Any
    decide: _Decider | _LawDecider | None
    config: LoopConfig
    timings: _Timings = dataclasses.field(default_factory=_Timings)
    # Per question, the law of the last decision (`LoopConfig.law`; `tn` by default).
    laws: list[str] = dataclasses.field(default_factory=list)

    def decisions(self) -> tuple[np.ndarray, np.ndarray]:
        """(N*, whether each question has stopped) after a refit of every question."""
        nstar, self.laws = self.decide.decide(self.states)
        return nstar, stopped([s.n for s in self.states], nstar, self.config)


def run_online(
    questions: Sequence[Question],
    sampler,
    verifier,
    config: LoopConfig,
    log_path: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Runs OptScale online over `questions`, appending every scored sample to `log_path`.

    Args:
        questions: the prompts (see `read_prompts`).
        sampler: a `optscale_jax.live.samplers.Sampler`.
        verifier: a `optscale_jax.live.verifiers.Verifier`.
        config: the loop settings.
        log_path: the JSONL log (created; with `resume`, continued).
        resume: continue from an existing log instead of refusing to overwrite it.
        progress: show a tqdm bar per wave on stderr.

    Returns:
        The `RunSummary`.

    Raises:
        LogExistsError: a non-empty log without `resume` (a `ValueError`).
        ValueError: on bad settings.
    """
    from tqdm import tqdm

    _validate(config)
    log_path = pathlib.Path(log_path)
    start = time.perf_counter()
    states, wave, resumed = _initial_states(questions, log_path, resume)
    run = _Run(questions, states, sampler, verifier, _decider(questions, config), config)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    calls_before = (verifier.calls, verifier.inputs, verifier.truncated)
    with run.timings.stage("decision"):
        nstar, done = run.decisions()
    max_waves = wave + math.ceil(config.max_n / config.wave_size)
    bar = tqdm(
        total=max_waves,
        initial=wave,
        desc="waves",
        unit="wave",
        disable=not progress,
        file=sys.stderr,
    )
    with open(log_path, "a", encoding="utf-8") as log:
        while not done.all():
            nstar, done = _run_wave(run, wave, np.flatnonzero(~done), log)
            wave += 1
            bar.update(1)
            bar.set_postfix(active=int((~done).sum()), samples=sum(s.n for s in states))
    bar.close()
    return _summary(run, nstar, calls_before, resumed, wave, time.perf_counter() - start)


def _initial_states(
    questions: Sequence[Question], log_path: pathlib.Path, resume: bool
) -> tuple[list[QuestionState], int, int]:
    """(state per question, first wave, samples resumed): empty, or read back from the log."""
    if log_path.exists() and log_path.stat().st_size > 0 and not resume:
        raise LogExistsError(log_path)
    if resume and log_path.exists():
        by_id, wave, resumed = load_log(log_path, questions)
        return [by_id[q.id] for q in questions], wave, resumed
    return [QuestionState() for _ in questions], 0, 0


def _run_wave(run: _Run, wave: int, active: np.ndarray, log) -> tuple[np.ndarray, np.ndarray]:
    """One wave: sample the active questions, score, grade, log and refit; (N*, done)."""
    wave_start = time.perf_counter()
    counts = [min(run.config.wave_size, run.config.max_n - run.states[i].n) for i in active]
    draw_wave(run, wave, active, counts, log)
    tick = time.perf_counter()
    nstar, done = run.decisions()
    decision = time.perf_counter() - tick
    run.timings.decision += decision
    run.timings.wave_decisions.append(decision)
    run.timings.waves.append(time.perf_counter() - wave_start)
    return nstar, done


def draw_wave(run: _Run, wave: int, active: Sequence[int], counts: Sequence[int], log) -> None:
    """Draws `counts[j]` samples of question `active[j]` in ONE sampler call (seeds of
    `wave_seed`), scores them in ONE verifier call, grades them, appends the wave's lines to
    `log` in one write (flushed and fsync'd) and adds them to the questions' states."""
    config, questions, timings = run.config, run.questions, run.timings
    seeds = [wave_seed(config.seed, questions[i].id, wave) for i in active]
    prompts = [config.prompt_template.replace("{question}", questions[i].text) for i in active]
    with timings.stage("sample"):
        completions = run.sampler.generate(prompts, counts, seeds)
    owners = [i for i, batch in zip(active, completions, strict=True) for _ in batch]
    texts = [text for batch in completions for text, _ in batch]
    with timings.stage("verify"):
        scores = run.verifier.score([questions[i].text for i in owners], texts)
    with timings.stage("answer"):
        answers, correct = _grade(run, owners, texts)
    batches = zip(active, seeds, completions, strict=True)
    lines = _record_wave(run, wave, batches, scores, answers, correct)
    log.write("\n".join(lines) + "\n")
    log.flush()
    os.fsync(log.fileno())


def _grade(
    run: _Run, owners: Sequence[int], texts: Sequence[str]
) -> tuple[list[str | None], list[bool | None]]:
    """The answer of each text, and whether it is right (None for a question without gold)."""
    answers = [extract_answer(t, kind=run.config.answer_kind) for t in texts]
    golds = [run.questions[i].gold for i in owners]
    correct = [None if g is None else is_correct(a, g) for a, g in zip(answers, golds, strict=True)]
    return answers, correct


def _record_wave(run: _Run, wave: int, batches, scores, answers, correct) -> list[str]:
    """The wave's log lines, one per sample; each sample joins its question's state.

    Args:
        run: the run.
        wave: the wave number.
        batches: (question index, seed, [(text, tokens), ...]) per active question.
        scores: the verifier's score of each sample, flat in batch order.
        answers: the extracted answer of each sample.
        correct: whether each answer is right (None without gold).
    """
    lines = []
    flat = 0
    for i, seed, batch in batches:
        question, state = run.questions[i], run.states[i]
        for text, tokens in batch:
            record = {
                "id": question.id,
                "sample_index": state.n,
                "score": float(scores[flat]),
                "tokens": int(tokens),
                "answer": answers[flat],
            }
            if question.gold is not None:
                record["correct"] = bool(correct[flat])
                record["gold"] = question.gold
            if question.prior is not None:
                record["prior"] = {"mu": question.prior[0], "sigma": question.prior[1]}
            if run.config.law != "tn" and run.laws:
                record["law"] = run.laws[i]
            record.update(wave=wave, wave_samples=len(answers), seed=seed, text=text)
            lines.append(json.dumps(record, ensure_ascii=False))
            state.add(float(scores[flat]), int(tokens), answers[flat], correct[flat])
            flat += 1
    return lines


def best_of_n(state: QuestionState) -> int:
    """Index of the highest-scoring sample (ties to the first), -1 with no sample."""
    if not state.scores:
        return -1
    return int(np.argmax(np.asarray(state.scores)))


def _summary(
    run: _Run,
    nstar: np.ndarray | None,
    calls_before: tuple[int, int, int],
    resumed: int,
    waves: int,
    wall: float,
) -> RunSummary:
    """The run's `RunSummary`; without `nstar` (the budget mode) no question stopped by N*."""
    questions, states, config, verifier = run.questions, run.states, run.config, run.verifier
    graded = [i for i, q in enumerate(questions) if q.gold is not None and states[i].n > 0]
    hits = [bool(states[i].correct[best_of_n(states[i])]) for i in graded]
    n = np.asarray([s.n for s in states])
    by_nstar, per_question_nstar = np.zeros(n.shape, bool), {}
    if nstar is not None:
        by_nstar = nstar_reached(n, nstar, config.min_samples) & (n < config.max_n)
        per_question_nstar = {q.id: int(v) for q, v in zip(questions, nstar, strict=True)}
    return RunSummary(
        questions=len(questions),
        max_n=config.max_n,
        samples=int(n.sum()),
        tokens=int(sum(sum(s.tokens) for s in states)),
        waves=waves,
        verifier_calls=verifier.calls - calls_before[0],
        verifier_inputs=verifier.inputs - calls_before[1],
        truncated=verifier.truncated - calls_before[2],
        accuracy=float(np.mean(hits)) if hits else None,
        graded=len(graded),
        resumed_samples=resumed,
        stopped_by_nstar=int(by_nstar.sum()),
        stopped_at_max_n=int((n >= config.max_n).sum()),
        wall_seconds=wall,
        sample_seconds=run.timings.sample,
        verify_seconds=run.timings.verify,
        answer_seconds=run.timings.answer,
        decision_seconds=run.timings.decision,
        samples_per_question={q.id: int(s.n) for q, s in zip(questions, states, strict=True)},
        nstar=per_question_nstar,
        wave_seconds=run.timings.waves,
        wave_decision_seconds=run.timings.wave_decisions,
        law=config.law,
        question_laws=dict(zip((q.id for q in questions), run.laws, strict=True))
        if run.laws
        else None,
    )
