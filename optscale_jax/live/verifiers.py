"""Verifiers: one score in [0, 1] per (question, answer), batched through transformers.

- `PRMVerifier`: a process reward model in the Qwen2.5-Math-PRM convention. The answer is
  split into steps on blank lines; the steps are joined (and ended) with the separator
  `<extra_0>`; the model's probability of the positive label at each separator is the step
  score, aggregated by an explicit rule: mean (the paper's), min, last or prod.
- `JudgeVerifier`: any causal LM asked a Yes/No question about the answer; the score is
  P(Yes) / (P(Yes) + P(No)) of the next token.
- `ORMVerifier`: a sequence-classification outcome reward model (sigmoid of a single logit,
  or the softmax probability of the positive label).

Inputs longer than the model's limit keep their last `max_length` tokens (where the final
answer, the last separator and the judge's question are) and are counted in `truncated`.
Padding is on the right with an attention mask, so each score equals the model's forward
pass on that input alone. Models are loaded from local folders, `trust_remote_code=False`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from optscale_jax.live.samplers import chat_messages

AGGREGATIONS = ("mean", "min", "last", "prod")
STEP_SEPARATOR = "<extra_0>"
PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
JUDGE_PROMPT = (
    "Question:\n{question}\n\nProposed answer:\n{answer}\n\n"
    "Is the proposed answer correct? Reply with Yes or No."
)
_BLANK_LINE = re.compile(r"\n\s*\n")


@runtime_checkable
class Verifier(Protocol):
    """Scores answers; `calls`, `inputs` and `truncated` count the work done so far."""

    calls: int
    inputs: int
    truncated: int

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Scores a batch.

        Args:
            questions: the question of each answer.
            answers: the answers (same length).

        Returns:
            float64 array `[len(answers)]` in [0, 1].
        """
        ...


def split_steps(answer: str) -> list[str]:
    """Steps of an answer: the non-empty blocks between blank lines (at least one)."""
    steps = [s.strip() for s in _BLANK_LINE.split(answer)]
    steps = [s for s in steps if s]
    return steps or [answer.strip()]


def aggregate_steps(step_probs: np.ndarray, aggregation: str) -> float:
    """Aggregates per-step probabilities of one answer into one score.

    Args:
        step_probs: `[steps]` probabilities of the positive label.
        aggregation: "mean", "min", "last" or "prod" (the product, summed in log space).

    Returns:
        The score in [0, 1].
    """
    p = np.asarray(step_probs, dtype=np.float64)
    if aggregation == "mean":
        return float(p.mean())
    if aggregation == "min":
        return float(p.min())
    if aggregation == "last":
        return float(p[-1])
    if aggregation == "prod":
        return float(np.exp(np.sum(np.log(np.clip(p, 1e-300, 1.0)))))
    raise ValueError(f"aggregation: {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")


def _model_limit(tokenizer, config) -> int:
    """The model's context length: the smaller of tokenizer and position-embedding limits."""
    limits = [getattr(config, "max_position_embeddings", None)]
    model_max = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    if model_max is not None and model_max < 10**7:
        limits.append(model_max)
    limits = [int(v) for v in limits if v]
    return min(limits) if limits else 4096


class _TransformersVerifier:
    """Shared machinery: lazy loading, chat rendering, truncation, padded batches."""

    auto_class = "AutoModelForCausalLM"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> None:
        self.model_path = str(model)
        self.batch_size = int(batch_size)
        self.requested_max_length = max_length
        self.dtype = dtype
        self.device = device
        self.calls = 0
        self.inputs = 0
        self.truncated = 0
        self._model = None
        self._tokenizer = None
        self.max_length = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from optscale_jax.live.models import offline_environment

        offline_environment()
        import torch
        import transformers

        self._tokenizer = transformers.AutoTokenizer.from_pretrained(
            self.model_path, trust_remote_code=False
        )
        auto = getattr(transformers, self.auto_class)
        self._model = auto.from_pretrained(
            self.model_path, dtype=getattr(torch, self.dtype), trust_remote_code=False
        )
        self._model.to(self.device).eval()
        limit = _model_limit(self._tokenizer, self._model.config)
        if self.requested_max_length is not None:
            limit = min(limit, int(self.requested_max_length))
        self.max_length = limit
        self._setup()

    def _setup(self) -> None:
        """Subclass hook run once after loading."""

    @property
    def tokenizer(self):
        """The transformers tokenizer (loaded on first use)."""
        self._load()
        return self._tokenizer

    @property
    def model(self):
        """The transformers model (loaded on first use)."""
        self._load()
        return self._model

    def _chat_ids(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        """Token ids of a conversation rendered with the chat template (plain text without)."""
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False
            )
            return tokenizer.encode(text, add_special_tokens=False)
        text = "\n\n".join(m["content"] for m in messages)
        return tokenizer.encode(text)

    def _truncate(self, ids: list[int]) -> list[int]:
        if len(ids) > self.max_length:
            self.truncated += 1
            return ids[-self.max_length :]
        return ids

    def _batches(self, sequences: list[list[int]]):
        """Yields (row indices, input_ids, attention_mask) right-padded, similar lengths together."""
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(sequences[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
                mask[r, : len(sequences[i])] = 1
            yield rows, ids.to(self.device), mask.to(self.device)

    def _encode(self, question: str, answer: str) -> list[int]:
        raise NotImplementedError

    def _score_batch(self, ids, mask, sequences) -> list[float]:
        raise NotImplementedError

    def encode(self, question: str, answer: str) -> list[int]:
        """The (untruncated) model input for one answer, as token ids."""
        return self._encode(question, answer)

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Scores a batch of answers (see `Verifier.score`)."""
        import torch

        if len(questions) != len(answers):
            raise ValueError(f"questions: {len(questions)} for {len(answers)} answers")
        self._load()
        self.calls += 1
        self.inputs += len(answers)
        sequences = [
            self._truncate(self._encode(q, a)) for q, a in zip(questions, answers, strict=True)
        ]
        scores = np.zeros(len(sequences), dtype=np.float64)
        with torch.inference_mode():
            for rows, ids, mask in self._batches(sequences):
                values = self._score_batch(ids, mask, [sequences[i] for i in rows])
                scores[rows] = values
        return np.clip(scores, 0.0, 1.0)


class PRMVerifier(_TransformersVerifier):
    """Process reward model, Qwen2.5-Math-PRM convention (see module docstring).

    Args:
        model: local folder of the PRM.
        aggregation: "mean" (the paper's), "min", "last" or "prod" over the step scores.
        head: "token" (token classification, 2 labels: positive label index
            `positive_label`), "causal" (an LM whose next-token logits at the separator
            compare `positive_token` with `negative_token`, Math-Shepherd style) or "auto"
            (causal when the checkpoint's architecture is `...ForCausalLM`).
        positive_label: index of the "correct step" label of a token-classification head.
        positive_token: the "good step" token of a causal head.
        negative_token: the "bad step" token of a causal head.
        separator: the step separator token.
        system_prompt: system message of the rendered conversation.
        batch_size: inputs per forward pass.
        max_length: truncation limit (default: the model's).
        dtype: torch dtype name.
        device: torch device.
    """

    def __init__(
        self,
        model: str,
        *,
        aggregation: str = "mean",
        head: str = "auto",
        positive_label: int = 1,
        positive_token: str = "+",
        negative_token: str = "-",
        separator: str = STEP_SEPARATOR,
        system_prompt: str = PRM_SYSTEM_PROMPT,
        **kwargs,
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"aggregation: {aggregation!r} is not one of {', '.join(AGGREGATIONS)}"
            )
        if head not in ("auto", "token", "causal"):
            raise ValueError(f"head: {head!r} is not one of auto, token, causal")
        super().__init__(model, **kwargs)
        self.aggregation = aggregation
        self.head = head
        self.positive_label = int(positive_label)
        self.positive_token = positive_token
        self.negative_token = negative_token
        self.separator = separator
        self.system_prompt = system_prompt
        if head == "auto":
            self.head = "causal" if _is_causal(self.model_path) else "token"
        self.auto_class = (
            "AutoModelForCausalLM" if self.head == "causal" else "AutoModelForTokenClassification"
        )

    def _setup(self) -> None:
        ids = self._tokenizer.convert_tokens_to_ids(self.separator)
        if ids is None or ids == self._tokenizer.unk_token_id:
            raise ValueError(f"separator: {self.separator!r} is not a token of {self.model_path}")
        self.separator_id = int(ids)
        if self.head == "causal":
            self.label_ids = [
                _single_token_id(self._tokenizer, self.positive_token, "positive_token"),
                _single_token_id(self._tokenizer, self.negative_token, "negative_token"),
            ]

    def _encode(self, question: str, answer: str) -> list[int]:
        body = self.separator.join(split_steps(answer)) + self.separator
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": question},
            {"role": "assistant", "content": body},
        ]
        return self._chat_ids(messages, add_generation_prompt=False)

    def step_probabilities(self, logits, ids) -> list[np.ndarray]:
        """Per row, the positive-label probability at each separator position.

        Args:
            logits: `[B, T, labels or vocab]` model outputs.
            ids: `[B, T]` input ids (padding is never a separator).

        Returns:
            One `[steps]` float64 array per row.
        """
        import torch

        if self.head == "causal":
            pair = logits[..., self.label_ids].double()
        else:
            pair = logits.double()
        probs = torch.softmax(pair, dim=-1)
        positive = probs[..., 0] if self.head == "causal" else probs[..., self.positive_label]
        out = []
        for r in range(ids.shape[0]):
            where = ids[r] == self.separator_id
            out.append(positive[r][where].cpu().numpy())
        return out

    def _score_batch(self, ids, mask, sequences) -> list[float]:
        logits = self._model(input_ids=ids, attention_mask=mask).logits
        per_row = self.step_probabilities(logits, ids)
        return [aggregate_steps(p, self.aggregation) for p in per_row]


class JudgeVerifier(_TransformersVerifier):
    """A causal LM as a Yes/No judge: score = P(Yes) / (P(Yes) + P(No)) of the next token.

    Args:
        model: local folder of any causal LM.
        prompt: the user message, a format string with `{question}` and `{answer}`.
        yes_token: text of the "Yes" token (its first token is used).
        no_token: text of the "No" token.
        system_prompt: optional system message.
        batch_size: inputs per forward pass.
        max_length: truncation limit (default: the model's).
        dtype: torch dtype name.
        device: torch device.
    """

    auto_class = "AutoModelForCausalLM"

    def __init__(
        self,
        model: str,
        *,
        prompt: str = JUDGE_PROMPT,
        yes_token: str = "Yes",
        no_token: str = "No",
        system_prompt: str | None = None,
        **kwargs,
    ) -> None:
        for field in ("{question}", "{answer}"):
            if field not in prompt:
                raise ValueError(f"prompt: the judge prompt must contain {field}")
        super().__init__(model, **kwargs)
        self.prompt = prompt
        self.yes_token = yes_token
        self.no_token = no_token
        self.system_prompt = system_prompt

    def _setup(self) -> None:
        self.label_ids = [
            _first_token_id(self._tokenizer, self.yes_token, "yes_token"),
            _first_token_id(self._tokenizer, self.no_token, "no_token"),
        ]

    def _encode(self, question: str, answer: str) -> list[int]:
        content = self.prompt.replace("{question}", question).replace("{answer}", answer)
        messages = chat_messages(content, self.system_prompt)
        return self._chat_ids(messages, add_generation_prompt=True)

    def _score_batch(self, ids, mask, sequences) -> list[float]:
        import torch

        logits = self._model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(s) - 1 for s in sequences], device=logits.device)
        final = logits[torch.arange(len(sequences), device=logits.device), last]
        pair = final[:, self.label_ids].double()
        return torch.softmax(pair, dim=-1)[:, 0].cpu().tolist()


class ORMVerifier(_TransformersVerifier):
    """A sequence-classification outcome reward model.

    One label: the score is the sigmoid of its logit; two or more: the softmax probability
    of `positive_label`. The conversation (user question, assistant answer) is rendered with
    the chat template when the tokenizer has one.

    Args:
        model: local folder of the reward model.
        positive_label: the "correct" label of a multi-label head.
        batch_size: inputs per forward pass.
        max_length: truncation limit (default: the model's).
        dtype: torch dtype name.
        device: torch device.
    """

    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, model: str, *, positive_label: int = 1, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.positive_label = int(positive_label)

    def _encode(self, question: str, answer: str) -> list[int]:
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        return self._chat_ids(messages, add_generation_prompt=False)

    def _pooled_logits(self, ids, mask, sequences):
        import torch

        model = self._model
        backbone = getattr(model, model.base_model_prefix, None)
        head = getattr(model, "score", None)
        if backbone is None or head is None:
            # Unknown head layout: one unpadded input at a time is always exact.
            rows = [
                model(input_ids=ids[r : r + 1, : len(s)]).logits[0] for r, s in enumerate(sequences)
            ]
            return torch.stack(rows)
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in sequences], device=hidden.device)
        return head(hidden[torch.arange(len(sequences), device=hidden.device), last])

    def _score_batch(self, ids, mask, sequences) -> list[float]:
        import torch

        logits = self._pooled_logits(ids, mask, sequences).double()
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[:, 0]).cpu().tolist()
        return torch.softmax(logits, dim=-1)[:, self.positive_label].cpu().tolist()


def _is_causal(model_path: str) -> bool:
    import json
    import pathlib

    config = pathlib.Path(model_path) / "config.json"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(a.endswith("ForCausalLM") for a in architectures)


def _first_token_id(tokenizer, text: str, name: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"{name}: {text!r} encodes to no token")
    return int(ids[0])


def _single_token_id(tokenizer, text: str, name: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{name}: {text!r} is {len(ids)} tokens, expected one")
    return int(ids[0])


VERIFIER_KINDS = {"prm": PRMVerifier, "judge": JudgeVerifier, "orm": ORMVerifier}


def parse_verifier_spec(spec: str) -> tuple[str, str]:
    """Splits `KIND:PATH` (KIND in prm, judge, orm).

    Raises:
        ValueError: naming `verifier` if the kind is unknown or the path missing.
    """
    kind, sep, path = spec.partition(":")
    if not sep or not path or kind not in VERIFIER_KINDS:
        raise ValueError(
            f"verifier: {spec!r} is not KIND:PATH with KIND in {', '.join(VERIFIER_KINDS)}"
        )
    return kind, path


def build_verifier(spec: str, **options) -> _TransformersVerifier:
    """A verifier from `KIND:PATH`; PATH is resolved like `--model` (`smollm2` works).

    Args:
        spec: e.g. `judge:smollm2`, `prm:/models/Qwen2.5-Math-PRM-7B`, `orm:./rm`.
        **options: keyword arguments of the verifier class (options of other kinds are
            dropped, so one CLI namespace can feed any kind).

    Returns:
        The verifier (model loaded on first use).
    """
    import inspect

    from optscale_jax.live.models import resolve_model

    kind, path = parse_verifier_spec(spec)
    cls = VERIFIER_KINDS[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) | set(
        inspect.signature(_TransformersVerifier.__init__).parameters
    )
    kept = {k: v for k, v in options.items() if k in accepted and v is not None}
    return cls(str(resolve_model(path)), **kept)
