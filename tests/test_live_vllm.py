"""The vLLM sampler and the online loop, in-process, on one shared tiny-model engine.

The engine (real vLLM on CPU) and the judge verifier (real transformers) are built once per
module; the loop's decisions are checked against the core's `fit_mle` / `fit_map` on the
logged scores, and its log against `optscale_jax.logs.read_log`.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from live_models import build_model  # noqa: E402

from optscale_jax import fit_map, fit_mle, optimal_n  # noqa: E402
from optscale_jax.experiments import bench_live as bench  # noqa: E402
from optscale_jax.io import read_jsonl  # noqa: E402
from optscale_jax.live import loop  # noqa: E402
from optscale_jax.live.samplers import Sampler, VLLMSampler  # noqa: E402
from optscale_jax.live.verifiers import JudgeVerifier  # noqa: E402
from optscale_jax.logs import read_log  # noqa: E402

pytestmark = pytest.mark.live

MAX_TOKENS = 12
QUESTIONS = [
    loop.Question("q0", "What is 7 times 8?", gold="56"),
    loop.Question("q1", "Janet has 16 eggs and eats 3. How many are left?", gold="13"),
    loop.Question("q2", "What is 2 + 1?", gold="3"),
    loop.Question("q3", "How many legs do 2 ducks have?", gold="4"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("tiny") / "qwen2", family="qwen2", seed=7)


@pytest.fixture(scope="module")
def sampler(tiny):
    engine = VLLMSampler(
        str(tiny), temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS, max_model_len=256
    )
    engine.llm  # noqa: B018 (start the engine once for the module)
    return engine


@pytest.fixture(scope="module")
def judge(tiny):
    return JudgeVerifier(str(tiny), batch_size=4)


def _config(**changes):
    base = dict(
        s_min=0.95,
        alpha=0.9,
        max_n=6,
        wave_size=2,
        min_samples=2,
        seed=3,
        prompt_template="Q: {question}",
    )
    base.update(changes)
    return loop.LoopConfig(**base)


def _records(path):
    return read_jsonl(path)


def test_sampler_counts_come_from_the_engine(sampler):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = ["What is 7 times 8?", "Count the eggs.", "What is 7 times 8?"]
    out = sampler.generate(prompts, [1, 3, 2], [11, 12, 13])
    assert isinstance(sampler, Sampler)
    assert [len(batch) for batch in out] == [1, 3, 2]
    # The same requests straight through the engine give the same texts and token ids.
    inputs = [TokensPrompt(prompt_token_ids=sampler.prompt_token_ids(p)) for p in prompts]
    params = [
        SamplingParams(n=k, seed=s, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS)
        for k, s in zip([1, 3, 2], [11, 12, 13], strict=True)
    ]
    raw = sampler.llm.generate(inputs, params, use_tqdm=False)
    for batch, output in zip(out, raw, strict=True):
        expected = [(c.text, len(c.token_ids)) for c in output.outputs]
        assert batch == expected
        assert all(1 <= tokens <= MAX_TOKENS for _, tokens in batch)
    # The chat template wraps the user message.
    text = sampler.llm.get_tokenizer().decode(sampler.prompt_token_ids("Count the eggs."))
    assert text == "<|im_start|>user\nCount the eggs.<|im_end|>\n<|im_start|>assistant\n"


def test_sampler_seeds_reproduce_and_differ(sampler):
    first = sampler.generate(["Count the eggs.", "Count the eggs."], 2, [5, 6])
    again = sampler.generate(["Count the eggs.", "Count the eggs."], 2, [5, 6])
    assert first == again
    assert first[0] != first[1]
    # Within one request the n samples differ from each other.
    assert first[0][0] != first[0][1]


def test_greedy_sampler_matches_transformers(sampler, tiny):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    ids = sampler.prompt_token_ids("What is 2 + 1?")
    with torch.no_grad():
        generated = model.generate(
            torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=0
        )[0, len(ids) :]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    old = sampler.temperature
    sampler.temperature = 0.0
    try:
        [[(text, tokens)]] = sampler.generate(["What is 2 + 1?"], 1, 0)
    finally:
        sampler.temperature = old
    eos = tokenizer.eos_token_id
    expected = generated.tolist()
    if eos in expected:
        expected = expected[: expected.index(eos) + 1]
    assert tokens == len(expected)
    assert text == tokenizer.decode(expected, skip_special_tokens=True)


@pytest.fixture(scope="module")
def full_run(sampler, judge, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "run.jsonl"
    summary = loop.run_online(QUESTIONS, sampler, judge, _config(), path, progress=False)
    return path, summary


def test_loop_log_structure_and_replay(full_run):
    path, summary = full_run
    records = _records(path)
    keys = {(r["id"], r["sample_index"]) for r in records}
    assert len(keys) == len(records) == summary.samples
    for record in records:
        assert {"id", "sample_index", "score", "tokens", "answer", "correct", "text"} <= set(record)
        assert 0.0 <= record["score"] <= 1.0 and 1 <= record["tokens"] <= MAX_TOKENS
    log = read_log(path)
    assert log.ids == [q.id for q in QUESTIONS]
    counts = log.mask.sum(axis=1)
    assert counts.tolist() == [summary.samples_per_question[q.id] for q in QUESTIONS]
    by_key = {(r["id"], r["sample_index"]): r for r in records}
    for q, qid in enumerate(log.ids):
        for k in range(counts[q]):
            assert log.scores[q, k] == by_key[(qid, k)]["score"]
            assert log.tokens[q, k] == by_key[(qid, k)]["tokens"]
    assert summary.tokens == sum(r["tokens"] for r in records)
    assert summary.verifier_calls == summary.waves  # one batched verifier call per wave
    assert summary.verifier_inputs == summary.samples


def _nstar(scores, config, prior=None):
    scores = np.asarray(scores, dtype=np.float64)
    if prior is None:
        fit = fit_mle(scores)
    else:
        fit = fit_map(scores, prior[0], prior[1], prior_scale=config.prior_scale)
    return int(optimal_n(fit.mu, fit.sigma, config.s_min, config.alpha, max_n=config.max_n))


def _check_stopping(records, questions, config):
    """Stops exactly at the first wave end where n >= max(min_samples, N*) or n = max_n."""
    for question in questions:
        rows = sorted(
            (r for r in records if r["id"] == question.id), key=lambda r: r["sample_index"]
        )
        assert [r["sample_index"] for r in rows] == list(range(len(rows)))
        scores = [r["score"] for r in rows]
        ends = np.cumsum(np.unique([r["wave"] for r in rows], return_counts=True)[1])
        n = len(rows)
        assert n >= config.min_samples
        final = _nstar(scores, config, question.prior)
        assert n >= final or n == config.max_n
        for end in ends[:-1]:
            assert end < config.max_n
            assert end < max(config.min_samples, _nstar(scores[:end], config, question.prior))


def test_loop_stopping_rule(full_run):
    path, summary = full_run
    config = _config()
    records = _records(path)
    _check_stopping(records, QUESTIONS, config)
    assert summary.stopped_by_nstar + summary.stopped_at_max_n == len(QUESTIONS)
    # Best-of-n accuracy is the argmax-score sample's correctness.
    hits = []
    for q in QUESTIONS:
        rows = [r for r in records if r["id"] == q.id]
        best = max(rows, key=lambda r: (r["score"], -r["sample_index"]))
        hits.append(best["correct"])
    assert summary.accuracy == pytest.approx(np.mean(hits))


def test_loop_with_prior_uses_map(sampler, judge, tmp_path):
    questions = [
        loop.Question(q.id, q.text, q.gold, prior=(0.3 + 0.1 * i, 0.2))
        for i, q in enumerate(QUESTIONS[:3])
    ]
    config = _config(max_n=4)
    path = tmp_path / "prior.jsonl"
    loop.run_online(questions, sampler, judge, config, path, progress=False)
    records = _records(path)
    _check_stopping(records, questions, config)
    log = read_log(path)
    np.testing.assert_allclose(log.prior_mu, [0.3, 0.4, 0.5])


def test_resume_after_a_cut_reproduces_the_run(full_run, sampler, judge, tmp_path):
    path, summary = full_run
    original = path.read_bytes()
    lines = original.split(b"\n")
    records = _records(path)
    last_wave = max(r["wave"] for r in records)
    assert last_wave >= 1, "the run should take more than one wave"
    # A kill during the write of the second wave: its first record and half of the next.
    first_wave_lines = sum(1 for r in records if r["wave"] == 0)
    cut = b"\n".join(lines[: first_wave_lines + 1]) + b"\n" + lines[first_wave_lines + 1][:10]
    resumed_path = tmp_path / "resumed.jsonl"
    resumed_path.write_bytes(cut)
    resumed = loop.run_online(
        QUESTIONS, sampler, judge, _config(), resumed_path, resume=True, progress=False
    )
    assert resumed.resumed_samples == first_wave_lines
    assert resumed_path.read_bytes() == original
    assert resumed.samples_per_question == summary.samples_per_question
    # A second resume of a finished run adds nothing.
    again = loop.run_online(
        QUESTIONS, sampler, judge, _config(), resumed_path, resume=True, progress=False
    )
    assert again.samples == summary.samples and resumed_path.read_bytes() == original


def test_existing_log_needs_resume(full_run, sampler, judge):
    path, _ = full_run
    with pytest.raises(loop.LogExistsError, match="log_path: .* exists"):
        loop.run_online(QUESTIONS, sampler, judge, _config(), path, progress=False)
    with pytest.raises(ValueError, match="alpha"):
        loop.run_online(QUESTIONS, sampler, judge, _config(alpha=1.0), path, progress=False)


def test_bench_measure_figures(sampler, judge, tmp_path):
    config = _config(max_n=4, min_samples=1)
    figures = bench.measure(QUESTIONS, sampler, judge, config, tmp_path)
    fixed = _records(tmp_path / "fixed.jsonl")
    adaptive = _records(tmp_path / "adaptive.jsonl")
    assert figures["fixed_samples"] == len(QUESTIONS) * config.max_n == len(fixed)
    assert figures["adaptive_samples"] == len(adaptive) <= figures["fixed_samples"]
    # Same seeds per (question, wave): the adaptive samples are a prefix of the fixed ones.
    fixed_by_key = {(r["id"], r["sample_index"]): r["text"] for r in fixed}
    assert all(fixed_by_key[(r["id"], r["sample_index"])] == r["text"] for r in adaptive)
    assert figures["adaptive_tokens"] == sum(r["tokens"] for r in adaptive)
    assert figures["fixed_tokens"] == sum(r["tokens"] for r in fixed)
    assert 0.0 < figures["decision_overhead_fraction"] < 1.0
