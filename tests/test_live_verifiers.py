"""Verifiers through real transformers on tiny random-weight models.

Each score is compared with a forward pass computed here, one unpadded input at a time,
from the model's own classes: the verifier's batching, padding, separator gathering and
aggregation must not change the numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch  # noqa: E402
import transformers  # noqa: E402
from live_models import build_model  # noqa: E402

from optscale_jax.live import verifiers  # noqa: E402

pytestmark = pytest.mark.live

QUESTIONS = [
    "What is 7 times 8?",
    "Janet has 16 eggs and eats 3. How many are left?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many in total?",
]
ANSWERS = [
    "Step 1: 7 * 8 = 56.\n\nThe answer is \\boxed{56}.",
    "16 - 3 = 13.\n\n\n\nSo 13 eggs are left.\n\nThe answer is 13.",
    "Half of 2 is 1, so 2 + 1 = 3 bolts. \\boxed{3}",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("verifier_models")
    return {
        "prm": build_model(root / "prm", family="qwen2", head="token", seed=1),
        "prm_causal": build_model(root / "prm_causal", family="llama", head="causal", seed=2),
        "judge": build_model(root / "judge", family="llama", head="causal", seed=3),
        "orm": build_model(root / "orm", family="qwen2", head="sequence", num_labels=1, seed=4),
        "orm2": build_model(root / "orm2", family="llama", head="sequence", num_labels=2, seed=5),
    }


def _render(tokenizer, messages, add_generation_prompt):
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids


def _prm_reference(path, question, answer, aggregation, causal=False):
    """Qwen2.5-Math-PRM recipe, written out: split, join with <extra_0>, softmax at separators."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    auto = (
        transformers.AutoModelForCausalLM
        if causal
        else transformers.AutoModelForTokenClassification
    )
    model = auto.from_pretrained(path, dtype=torch.float32).eval()
    steps = [s.strip() for s in answer.split("\n\n") if s.strip()]
    messages = [
        {"role": "system", "content": verifiers.PRM_SYSTEM_PROMPT},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    ids = _render(tokenizer, messages, False)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    at = ids[0] == tokenizer.convert_tokens_to_ids("<extra_0>")
    if causal:
        plus = tokenizer.encode("+", add_special_tokens=False)[0]
        minus = tokenizer.encode("-", add_special_tokens=False)[0]
        probs = torch.softmax(logits[at][:, [plus, minus]], -1)[:, 0].numpy()
    else:
        probs = torch.softmax(logits[at], -1)[:, 1].numpy()
    assert len(probs) == len(steps)
    return {
        "mean": probs.mean(),
        "min": probs.min(),
        "last": probs[-1],
        "prod": math.prod(probs.tolist()),
    }[aggregation]


@pytest.mark.parametrize("aggregation", verifiers.AGGREGATIONS)
def test_prm_token_head_matches_direct_forward(models, aggregation):
    verifier = verifiers.PRMVerifier(str(models["prm"]), aggregation=aggregation, batch_size=2)
    scores = verifier.score(QUESTIONS, ANSWERS)
    expected = [
        _prm_reference(models["prm"], q, a, aggregation)
        for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert verifier.head == "token"
    assert verifier.calls == 1 and verifier.inputs == 3 and verifier.truncated == 0


def test_prm_causal_head_matches_direct_forward(models):
    verifier = verifiers.PRMVerifier(str(models["prm_causal"]), aggregation="min")
    assert verifier.head == "causal"
    scores = verifier.score(QUESTIONS, ANSWERS)
    expected = [
        _prm_reference(models["prm_causal"], q, a, "min", causal=True)
        for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_judge_matches_direct_forward(models):
    path = models["judge"]
    prompt = "Q: {question}\nA: {answer}\nCorrect? Yes or No."
    verifier = verifiers.JudgeVerifier(str(path), prompt=prompt, batch_size=2)
    scores = verifier.score(QUESTIONS, ANSWERS)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    yes = tokenizer.encode("Yes", add_special_tokens=False)[0]
    no = tokenizer.encode("No", add_special_tokens=False)[0]
    expected = []
    for q, a in zip(QUESTIONS, ANSWERS, strict=True):
        content = f"Q: {q}\nA: {a}\nCorrect? Yes or No."
        ids = _render(tokenizer, [{"role": "user", "content": content}], True)
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1].double()
        log_p = torch.log_softmax(last, -1)
        expected.append(float(torch.exp(log_p[yes] - torch.logaddexp(log_p[yes], log_p[no]))))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert np.all((scores > 0) & (scores < 1))


@pytest.mark.parametrize("name", ["orm", "orm2"])
def test_orm_matches_direct_forward(models, name):
    path = models[name]
    verifier = verifiers.ORMVerifier(str(path), batch_size=3)
    scores = verifier.score(QUESTIONS, ANSWERS)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.float32
    ).eval()
    expected = []
    for q, a in zip(QUESTIONS, ANSWERS, strict=True):
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        ids = _render(tokenizer, messages, False)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        if logits.shape[0] == 1:
            expected.append(float(torch.sigmoid(logits[0])))
        else:
            expected.append(float(torch.softmax(logits, -1)[1]))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_truncation_keeps_the_tail_and_is_counted(models):
    path = models["orm"]
    long_answer = "The sum is 3. " * 200  # far beyond the 256-token limit of the tiny model
    verifier = verifiers.ORMVerifier(str(path), max_length=64)
    short_question, short_answer = "7*8?", "56"
    assert len(verifier.encode(short_question, short_answer)) < 64
    scores = verifier.score([QUESTIONS[0], short_question], [long_answer, short_answer])
    assert verifier.truncated == 1 and verifier.max_length == 64
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    messages = [
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": long_answer},
    ]
    ids = _render(tokenizer, messages, False)[:, -64:]
    with torch.no_grad():
        expected = float(torch.sigmoid(model(input_ids=ids).logits[0, 0].double()))
    assert scores[0] == pytest.approx(expected, rel=1e-5)
    # The model's own limit (256 positions) applies without max_length.
    default = verifiers.ORMVerifier(str(path))
    default.score([QUESTIONS[0]], [long_answer])
    assert default.max_length == 256 and default.truncated == 1


def test_split_steps_and_aggregation():
    assert verifiers.split_steps("a\n\nb\n \n\nc") == ["a", "b", "c"]
    assert verifiers.split_steps("one step only") == ["one step only"]
    assert verifiers.split_steps("") == [""]
    p = np.array([0.9, 0.5, 0.8])
    assert verifiers.aggregate_steps(p, "mean") == pytest.approx(p.mean())
    assert verifiers.aggregate_steps(p, "min") == pytest.approx(0.5)
    assert verifiers.aggregate_steps(p, "last") == pytest.approx(0.8)
    assert verifiers.aggregate_steps(p, "prod") == pytest.approx(0.36)
    with pytest.raises(ValueError, match="aggregation"):
        verifiers.aggregate_steps(p, "median")


def test_bad_specs_name_the_argument(models):
    with pytest.raises(ValueError, match="^verifier: "):
        verifiers.parse_verifier_spec("reward:/x")
    with pytest.raises(ValueError, match="^verifier: "):
        verifiers.parse_verifier_spec("judge")
    with pytest.raises(ValueError, match="aggregation"):
        verifiers.PRMVerifier(str(models["prm"]), aggregation="median")
    with pytest.raises(ValueError, match="prompt"):
        verifiers.JudgeVerifier(str(models["judge"]), prompt="no fields")
    with pytest.raises(FileNotFoundError, match="model"):
        verifiers.build_verifier("orm:/no/such/folder")
    built = verifiers.build_verifier(f"prm:{models['prm']}", aggregation="last", prompt=None)
    assert isinstance(built, verifiers.PRMVerifier) and built.aggregation == "last"
