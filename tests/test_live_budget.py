"""`optscale sample --budget`: the live allocation across prompts, its logs and its resume.

A fake sampler and verifier stand in for vLLM (each sample's score is a seeded draw around a
per-prompt mean, written into its text), so the loop, the CLI and a SIGKILL + `--resume` run
in seconds. Run as a script, this file is `optscale` with those fakes (the killed process).
The sizes (24 prompts, waves of 5, max_n 12, float64) are those of test_allocation's waves,
so in one pytest process the allocation's programs are compiled once for both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from optscale_jax import allocation
from optscale_jax.experiments import cli, sample_cli
from optscale_jax.io import read_jsonl, write_jsonl_records
from optscale_jax.live import budget_loop, loop, verifiers
from optscale_jax.logs import read_log

PROMPTS = [{"id": f"q{i}", "question": f"Question {i}?", "answer": "7"} for i in range(24)]
QUESTIONS = [loop.Question(p["id"], p["question"], gold="7") for p in PROMPTS]
CONFIG = loop.LoopConfig(s_min=0.8, max_n=12, seed=3, prompt_template="Q: {question}")
WAVE = 5


class FakeSampler:
    """Seeded completions `score 0.xxxxxx, so \\boxed{7 or 5}`; optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests = []

    def generate(self, prompts, n, seed):
        time.sleep(self.delay)
        self.requests.append((list(prompts), list(n), list(seed)))
        return [self._completions(p, k, s) for p, k, s in zip(prompts, n, seed, strict=True)]

    @staticmethod
    def _completions(prompt: str, count: int, seed: int):
        key = zlib.crc32(prompt.encode())
        mean = 0.3 + 0.6 * (key % 997) / 996  # each prompt its own difficulty
        rng = np.random.default_rng([seed, key])
        scores = np.clip(rng.normal(mean, 0.15, size=count), 0.0, 1.0)
        return [(f"score {s:.6f}, so \\boxed{{{7 if s > 0.7 else 5}}}", 10) for s in scores]


class FakeVerifier:
    """Reads the score back from the text; counts its calls like a real verifier."""

    def __init__(self) -> None:
        self.calls = self.inputs = self.truncated = 0

    def score(self, questions, answers):
        self.calls += 1
        self.inputs += len(answers)
        return np.asarray([float(a.split()[1].rstrip(",")) for a in answers])


def _run(path, budget=3.0, resume=False, sampler=None, **changes):
    settings = budget_loop.BudgetConfig(budget, **({"wave": WAVE} | changes))
    return budget_loop.run_budget(
        QUESTIONS, sampler or FakeSampler(), FakeVerifier(), CONFIG, settings, path,
        resume=resume, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    path = tmp_path_factory.mktemp("straight") / "run.jsonl"
    return path, _run(path)


def test_spends_the_budget_in_logged_waves(straight):
    path, summary = straight
    records = read_jsonl(path)
    assert summary.samples == len(records) == summary.total_budget == 72  # floor(3 * 24)
    keys = [(r["id"], r["sample_index"]) for r in records]
    assert len(set(keys)) == len(keys)
    counts = summary.samples_per_question
    assert all(2 <= n <= CONFIG.max_n for n in counts.values()) and len(set(counts.values())) > 1
    plans = read_jsonl(budget_loop.allocation_log_path(path))
    assert plans[0]["settings"]["budget"] == 3.0 and plans[0]["settings"]["wave"] == WAVE
    waves = plans[1:]
    assert (
        [w["wave"] for w in waves]
        == list(range(summary.waves))
        == sorted({r["wave"] for r in records})
    )
    assert waves[0]["counts"] == {q.id: 2 for q in QUESTIONS}
    assert [sum(w["counts"].values()) for w in waves[1:]] == [5, 5, 5, 5, 4]  # 72 - 48 left
    for wave in waves:  # each record is the wave the sample log holds
        logged = [r["id"] for r in records if r["wave"] == wave["wave"]]
        assert {i: logged.count(i) for i in set(logged)} == wave["counts"]
    assert summary.verifier_calls == summary.waves and summary.stopped_by_nstar == 0


def test_replay_of_the_log_draws_what_the_run_drew(straight):
    path, summary = straight
    log = read_log(path)
    width = CONFIG.max_n - log.scores.shape[1]  # padded to test_allocation's [24, 12]
    replayed = allocation.replay_allocation(
        np.pad(log.scores, ((0, 0), (0, width))), np.pad(log.mask, ((0, 0), (0, width))),
        3.0, m0=2, wave=WAVE, s_min=CONFIG.s_min, max_n=CONFIG.max_n, seed=CONFIG.seed,
    )  # fmt: skip
    assert dict(zip(log.ids, replayed.tolist(), strict=True)) == summary.samples_per_question


def test_resume_after_a_kill_equals_the_uninterrupted_run(straight, tmp_path):
    path, summary = straight
    samples, plans = path.read_bytes(), budget_loop.allocation_log_path(path).read_bytes()
    plan_lines = plans.splitlines(keepends=True)
    wave_zero = sum(1 for r in read_jsonl(path) if r["wave"] == 0)
    cut = tmp_path / "cut.jsonl"
    # Killed while writing wave 1: its plan is logged, a record and a half of its samples too.
    sample_lines = samples.splitlines(keepends=True)
    cut.write_bytes(b"".join(sample_lines[: wave_zero + 1]) + sample_lines[wave_zero + 1][:9])
    budget_loop.allocation_log_path(cut).write_bytes(b"".join(plan_lines[:3]) + b'{"wa')
    resumed = _run(cut, resume=True)
    assert cut.read_bytes() == samples
    assert budget_loop.allocation_log_path(cut).read_bytes() == plans
    assert resumed.resumed_samples == wave_zero
    assert resumed.samples_per_question == summary.samples_per_question
    # Resuming a finished run draws nothing.
    sampler = FakeSampler()
    assert _run(cut, resume=True, sampler=sampler).samples == summary.samples
    assert sampler.requests == [] and cut.read_bytes() == samples


def test_resume_refuses_other_settings(straight, tmp_path):
    path, _ = straight
    with pytest.raises(loop.LogExistsError):
        _run(path)
    with pytest.raises(ValueError, match="^budget: .* was run with 3.0"):
        _run(path, budget=4.0, resume=True)
    with pytest.raises(ValueError, match="^objective: "):
        _run(path, resume=True, objective="best")
    other = tmp_path / "per_question.jsonl"  # samples without an allocation log
    other.write_bytes(path.read_bytes())
    with pytest.raises(
        ValueError, match="per_question.jsonl: no allocation log .*: not a run with a budget"
    ):
        _run(other, resume=True)


def _cli(tmp_path, out, *extra):
    """`optscale sample` arguments on the fakes (--endpoint: no model folder is looked up)."""
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        write_jsonl_records(PROMPTS, prompts)
    return [
        "sample", "--model", "fake", "--verifier", "judge:fake", "--endpoint", "http://fake",
        "--prompts", str(prompts), "--out", str(out), "--max-n", "12", "--seed", "3",
        "--prompt-template", "Q: {question}", *extra,
    ]  # fmt: skip


def _use_fakes(monkeypatch, delay: float = 0.0) -> None:
    monkeypatch.setattr(sample_cli, "build_sampler", lambda args, path: FakeSampler(delay))
    monkeypatch.setattr(verifiers, "build_verifier", lambda spec, **options: FakeVerifier())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "1"], "--budget must be >= m0 (2)"),
        (["--budget", "13"], "--budget must be <= max_n (12)"),
        (["--budget", "3", "--m0", "0"], "--m0 "),
        (["--budget", "3", "--wave", "0"], "--wave "),
        (["--wave", "2"], "--wave: only with --budget"),
    ],
)
def test_cli_errors_name_the_flag(tmp_path, monkeypatch, capsys, extra, message):
    _use_fakes(monkeypatch)
    assert cli.main(_cli(tmp_path, tmp_path / "x.jsonl", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def _kill_once_logged(process: subprocess.Popen, log, timeout: float = 120.0) -> bool:
    """SIGKILLs `process` as soon as `log` holds a complete line; whether it was killed so
    (a process still running at the timeout is killed too, but that is a failure)."""
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if log.exists() and b"\n" in log.read_bytes():
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                return True
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_knows_only_the_two_objectives(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(_cli(tmp_path, tmp_path / "x.jsonl", "--budget", "3", "--objective", "most"))
    assert "--objective: invalid choice: 'most'" in capsys.readouterr().err


def test_cli_resume_of_a_budget_run_needs_its_budget(straight, tmp_path, monkeypatch, capsys):
    path, _ = straight
    _use_fakes(monkeypatch)
    assert cli.main(_cli(tmp_path, path, "--resume")) == 2
    assert "--budget: " in capsys.readouterr().err


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    killed, straight = tmp_path / "killed.jsonl", tmp_path / "straight.jsonl"
    args = ["--budget", "3", "--wave", str(WAVE)]
    # The run in a process of its own, killed once its first wave is logged: during the first
    # refit, before any compiled program is needed (so it takes no compile time).
    command = [sys.executable, __file__, *_cli(tmp_path, killed, *args)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with process.stderr:
        _use_fakes(monkeypatch)
        assert cli.main(_cli(tmp_path, straight, *args)) == 0
        assert "budget: 3 per prompt (72 of 72 samples spent" in capsys.readouterr().out
        assert _kill_once_logged(process, killed), process.stderr.read().decode()[-3000:]
    logged = read_jsonl(killed)
    assert 0 < len(logged) < 72  # killed mid-run
    assert cli.main(_cli(tmp_path, killed, *args, "--resume")) == 0
    assert f"resumed_samples: {len(logged)}" in capsys.readouterr().out
    assert killed.read_bytes() == straight.read_bytes()
    assert (
        budget_loop.allocation_log_path(killed).read_bytes()
        == budget_loop.allocation_log_path(straight).read_bytes()
    )


if __name__ == "__main__":  # `optscale` on the fakes, slowly: the process the test kills
    sample_cli.build_sampler = lambda args, path: FakeSampler(delay=0.2)
    verifiers.build_verifier = lambda spec, **options: FakeVerifier()
    sys.exit(cli.main(sys.argv[1:]))
