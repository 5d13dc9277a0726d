"""The online OptScale loop: sample in waves, score, refit every question, stop, log.

Every question starts active. In each wave, every active question gets up to `wave_size`
more samples through ONE sampler call (one request per question with `n` = its share and a
seed derived from (run seed, question id, wave), so a resumed run draws the same samples),
all new answers are scored in ONE verifier call, and ONE batched core call refits
(mu, sigma) from each question's sufficient statistics (n, sum s, sum s^2) (MLE, or MAP
with a per-question prior) and recomputes N*. A question stops once
n >= max(min_samples, N*) or n >= max_n.

The log is JSONL, one line per scored sample, appended once per wave, flushed and fsync'd.
Each line carries `wave` and `wave_samples` (the wave's record count), so `resume` can tell
a complete wave from one cut short by a kill: a torn last line is dropped, an incomplete
last wave is removed (the file is truncated) and redrawn with the same seeds.
"""

from __future__ import annotations

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


@dataclasses.dataclass
class QuestionState:
    """Per-question bookkeeping, rebuilt from the log on resume."""

    scores: list[float] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)
    answers: list[str | None] = dataclasses.field(default_factory=list)
    correct: list[bool | None] = dataclasses.field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)


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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    """The final answer of a gold field: GSM8K's text after `####`, else the value itself."""
    if value is None:
        return None
    text = str(value).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    return text or None


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
        raise FileNotFoundError(f"--prompts: {path} does not exist")
    questions: list[Question] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            where = f"{path}:{number + 1}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object")
            text = record.get("problem", record.get("question"))
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: no 'problem' or 'question' string")
            qid = str(record["id"]) if record.get("id") is not None else str(number)
            if qid in seen:
                raise ValueError(f"{where}: duplicate id {qid!r}")
            seen.add(qid)
            gold = gold_answer(record.get("answer", record.get("gold")))
            prior = _record_prior(record, where)
            if priors is not None and qid in priors:
                prior = priors[qid]
            questions.append(Question(qid, text, gold, prior))
    if not questions:
        raise ValueError(f"--prompts: {path} holds no prompt")
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
        raise FileNotFoundError(f"--prior: {path} does not exist")
    priors = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            where = f"{path}:{number + 1}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or record.get("id") is None:
                raise ValueError(f"{where}: expected an object with an 'id'")
            if "prior" not in record and "mu" in record:
                record = {"prior": {"mu": record["mu"], "sigma": record.get("sigma")}}
            prior = _record_prior(record, where)
            if prior is None:
                raise ValueError(f"{where}: no prior mu/sigma")
            priors[str(record.get("id", number))] = prior
    return priors


def _parse_log_lines(path: pathlib.Path) -> tuple[list[dict], list[int], bool]:
    """Records of a log, the byte offset where each one ends, and whether a torn tail was cut.

    Each wave is written as whole lines in one write, so a kill can only leave an
    unterminated fragment at the very end; a terminated line that is not JSON is damage.
    """
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")
    records: list[dict] = []
    ends: list[int] = []
    offset = 0
    for number, raw in enumerate(complete):
        offset += len(raw) + 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path}:{number + 1}: not JSON (the log is damaged)") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number + 1}: expected a JSON object")
        records.append(record)
        ends.append(offset)
    return records, ends, tail != b""


def load_log(path: str | os.PathLike, questions: Sequence[Question]):
    """Reads a live log for `--resume`, repairing what a kill can leave behind.

    A torn last line is dropped, and so is an incomplete last wave (fewer records than its
    `wave_samples`); the file is truncated to the complete waves (both reported on stderr).

    Args:
        path: the log file.
        questions: the run's questions (every logged id must be one of them).

    Returns:
        (per-id `QuestionState`, number of the next wave, number of samples kept).

    Raises:
        ValueError: naming the file and line on a record that does not fit the run.
    """
    path = pathlib.Path(path)
    records, ends, torn = _parse_log_lines(path)
    if torn:
        print(f"{path}: dropped a torn last line (the run was killed mid-write)", file=sys.stderr)
    # Waves are appended in order: an incomplete one can only be the last.
    by_wave: dict[int, list[dict]] = {}
    for record in records:
        wave = record.get("wave")
        if not isinstance(wave, int):
            raise ValueError(f"{path}: record without an integer 'wave' (not a live log)")
        by_wave.setdefault(wave, []).append(record)
    keep = len(records)
    if by_wave:
        last = max(by_wave)
        expected = by_wave[last][0].get("wave_samples")
        if isinstance(expected, int) and len(by_wave[last]) < expected:
            dropped = len(by_wave[last])
            keep -= dropped
            print(
                f"{path}: dropped {dropped} of {expected} records of the incomplete wave {last}",
                file=sys.stderr,
            )
            del by_wave[last]
    states = {q.id: QuestionState() for q in questions}
    indexed: dict[str, dict[int, dict]] = {q.id: {} for q in questions}
    for number, record in enumerate(records[:keep]):
        qid = str(record.get("id"))
        if qid not in indexed:
            raise ValueError(f"{path}:{number + 1}: id {qid!r} is not in the prompts file")
        index = record.get("sample_index")
        if not isinstance(index, int) or index in indexed[qid]:
            raise ValueError(f"{path}:{number + 1}: bad or duplicate sample_index {index!r}")
        indexed[qid][index] = record
    for qid, samples in indexed.items():
        if sorted(samples) != list(range(len(samples))):
            raise ValueError(f"{path}: question {qid!r} has a gap in its sample indices")
        state = states[qid]
        for index in range(len(samples)):
            record = samples[index]
            state.scores.append(float(record["score"]))
            state.tokens.append(int(record.get("tokens", 0)))
            state.answers.append(record.get("answer"))
            state.correct.append(record.get("correct"))
    # Repair the file only once the kept records are known to fit this run.
    if torn or keep < len(records):
        with open(path, "r+b") as handle:
            handle.truncate(ends[keep - 1] if keep else 0)
            handle.flush()
            os.fsync(handle.fileno())
    next_wave = max(by_wave) + 1 if by_wave else 0
    return states, next_wave, keep


class _Decider:
    """The batched estimator: sufficient statistics -> (mu, sigma) -> N*, one jit per shape."""

    def __init__(self, questions: Sequence[Question], config: LoopConfig) -> None:
        import jax.numpy as jnp

        from optscale_jax import fit_map_stats, fit_mle_stats, optimal_n

        self.config = config
        priors = [q.prior for q in questions]
        if any(p is not None for p in priors) and not all(p is not None for p in priors):
            missing = [q.id for q in questions if q.prior is None][:3]
            raise ValueError(f"--prior: no prior for question(s) {', '.join(missing)}")
        self.use_prior = priors[0] is not None if priors else False
        self._jnp = jnp
        self._fit_mle = fit_mle_stats
        self._fit_map = fit_map_stats
        self._optimal_n = optimal_n
        if self.use_prior:
            self.prior_mu = jnp.asarray([p[0] for p in priors])
            self.prior_sigma = jnp.asarray([p[1] for p in priors])

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


def _stats(states: Sequence[QuestionState]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # fsum is exactly rounded, so the sums do not depend on how the samples were grouped
    # into waves: a resumed run computes the same N* as an uninterrupted one.
    n = np.asarray([s.n for s in states], dtype=np.float64)
    s1 = np.asarray([math.fsum(s.scores) for s in states], dtype=np.float64)
    s2 = np.asarray([math.fsum(x * x for x in s.scores) for s in states], dtype=np.float64)
    return n, s1, s2


def stopped(n: np.ndarray, nstar: np.ndarray, config: LoopConfig) -> np.ndarray:
    """The stopping rule: n >= max(min_samples, N*) or n >= max_n (elementwise)."""
    n = np.asarray(n)
    return (n >= np.maximum(config.min_samples, nstar)) | (n >= config.max_n)


def _validate(config: LoopConfig) -> None:
    from optscale_jax import validation

    validation.check_unit(config.s_min, "s_min")
    validation.check_open_unit(config.alpha, "alpha")
    validation.check_max_n(config.max_n, "max_n")
    if config.wave_size < 1:
        raise ValueError(f"wave_size: must be >= 1, got {config.wave_size}")
    if config.min_samples < 1:
        raise ValueError(f"min_samples: must be >= 1, got {config.min_samples}")
    if "{question}" not in config.prompt_template:
        raise ValueError("prompt_template: must contain {question}")


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
        ValueError: on bad settings, or an existing log without `resume`.
    """
    from tqdm import tqdm

    from optscale_jax.answers import extract_answer, is_correct

    _validate(config)
    log_path = pathlib.Path(log_path)
    start = time.perf_counter()
    if log_path.exists() and log_path.stat().st_size > 0 and not resume:
        raise ValueError(f"--out: {log_path} exists; pass --resume to continue it")
    if resume and log_path.exists():
        states_by_id, wave, resumed = load_log(log_path, questions)
    else:
        states_by_id, wave, resumed = {q.id: QuestionState() for q in questions}, 0, 0
    states = [states_by_id[q.id] for q in questions]
    decide = _Decider(questions, config)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    timings = {"sample": 0.0, "verify": 0.0, "answer": 0.0, "decision": 0.0}
    wave_seconds: list[float] = []
    wave_decision: list[float] = []
    calls_before = (verifier.calls, verifier.inputs, verifier.truncated)

    tick = time.perf_counter()
    mu, sigma, nstar, _ = decide(*_stats(states))
    timings["decision"] += time.perf_counter() - tick
    n = np.asarray([s.n for s in states])
    done = stopped(n, nstar, config)
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
            wave_start = time.perf_counter()
            active = np.flatnonzero(~done)
            counts = [min(config.wave_size, config.max_n - int(n[i])) for i in active]
            seeds = [wave_seed(config.seed, questions[i].id, wave) for i in active]
            prompts = [
                config.prompt_template.replace("{question}", questions[i].text) for i in active
            ]
            tick = time.perf_counter()
            completions = sampler.generate(prompts, counts, seeds)
            timings["sample"] += time.perf_counter() - tick

            owners = [i for i, batch in zip(active, completions, strict=True) for _ in batch]
            texts = [text for batch in completions for text, _ in batch]
            tick = time.perf_counter()
            scores = verifier.score([questions[i].text for i in owners], texts)
            timings["verify"] += time.perf_counter() - tick

            tick = time.perf_counter()
            answers = [extract_answer(t, kind=config.answer_kind) for t in texts]
            correct = [
                is_correct(a, questions[i].gold) if questions[i].gold is not None else None
                for a, i in zip(answers, owners, strict=True)
            ]
            timings["answer"] += time.perf_counter() - tick

            tick = time.perf_counter()
            lines = []
            flat = 0
            for i, seed, batch in zip(active, seeds, completions, strict=True):
                question, state = questions[i], states[i]
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
                    record.update(wave=wave, wave_samples=len(texts), seed=seed, text=text)
                    lines.append(json.dumps(record, ensure_ascii=False))
                    state.scores.append(float(scores[flat]))
                    state.tokens.append(int(tokens))
                    state.answers.append(answers[flat])
                    state.correct.append(correct[flat])
                    flat += 1
            log.write("\n".join(lines) + "\n")
            log.flush()
            os.fsync(log.fileno())
            mu, sigma, nstar, _ = decide(*_stats(states))
            n = np.asarray([s.n for s in states])
            done = stopped(n, nstar, config)
            decision = time.perf_counter() - tick
            timings["decision"] += decision
            wave_decision.append(decision)
            wave_seconds.append(time.perf_counter() - wave_start)
            wave += 1
            bar.update(1)
            bar.set_postfix(active=int((~done).sum()), samples=int(n.sum()))
    bar.close()
    return _summary(
        questions,
        states,
        nstar,
        config,
        verifier,
        calls_before,
        resumed,
        wave,
        timings,
        wave_seconds,
        wave_decision,
        time.perf_counter() - start,
    )


def best_of_n(state: QuestionState) -> int:
    """Index of the highest-scoring sample (ties to the first), -1 with no sample."""
    if not state.scores:
        return -1
    return int(np.argmax(np.asarray(state.scores)))


def _summary(
    questions,
    states,
    nstar,
    config,
    verifier,
    calls_before,
    resumed,
    waves,
    timings,
    wave_seconds,
    wave_decision,
    wall,
) -> RunSummary:
    graded = [i for i, q in enumerate(questions) if q.gold is not None and states[i].n > 0]
    hits = [bool(states[i].correct[best_of_n(states[i])]) for i in graded]
    n = np.asarray([s.n for s in states])
    by_nstar = (n >= np.maximum(config.min_samples, nstar)) & (n < config.max_n)
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
        sample_seconds=timings["sample"],
        verify_seconds=timings["verify"],
        answer_seconds=timings["answer"],
        decision_seconds=timings["decision"],
        samples_per_question={q.id: int(s.n) for q, s in zip(questions, states, strict=True)},
        nstar={q.id: int(v) for q, v in zip(questions, nstar, strict=True)},
        wave_seconds=wave_seconds,
        wave_decision_seconds=wave_decision,
    )
