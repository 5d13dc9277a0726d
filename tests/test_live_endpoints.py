"""Several OpenAI-compatible servers behind one `OpenAISampler` / `optscale sample --endpoint`.

The dispatch (a queue that every server takes from, a bound on requests in flight per
server, a failed request retried on the others, an error naming every server when all
fail) is checked against small stub servers that answer like vLLM's chat-completions
endpoint with texts made from the request's seed. Then two real `vllm serve` processes on
127.0.0.1 serve a tiny model to `optscale sample` with both endpoints, one is killed after
the first wave, and the log must still hold every (question, sample_index) exactly once,
with the samples the surviving server gives for the same seeds, and replay. Both servers
come from conftest.py, started together: the survivor is the session's shared one
(`vllm_server`), the killed one (`vllm_server_to_kill`) serves no other test.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import pathlib
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("openai")

from live_models import LIVE_ENV as ENV  # noqa: E402
from live_models import free_port as _free_port  # noqa: E402
from live_models import kill_server  # noqa: E402

from optscale_jax.io import read_jsonl, write_jsonl_records  # noqa: E402
from optscale_jax.live.samplers import EndpointsFailedError, OpenAISampler  # noqa: E402

OPTSCALE = [str(pathlib.Path(sys.executable).with_name("optscale"))]


# --------------------------------------------------------------------------- stub servers


class _Stub(http.server.ThreadingHTTPServer):
    """A chat-completions server: choice i of a request is `"{seed}:{i}:{prompt}"` with
    i + 1 tokens, after `delay` seconds; `mode` "ok", "late" (answers "late" instead, so a
    client that waited for it gets wrong texts) or "status" (answers `status` with an
    error). Counts requests and the most it had in flight at once."""

    daemon_threads = True

    def __init__(self, mode: str = "ok", delay: float = 0.0, status: int = 500) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.mode, self.delay, self.status = mode, delay, status
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(http.server.BaseHTTPRequestHandler):
    server: _Stub

    def log_message(self, *args) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

    def do_POST(self) -> None:
        stub = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with stub.lock:
            stub.requests += 1
            stub.in_flight += 1
            stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
        try:
            time.sleep(stub.delay)
            if stub.mode == "status":
                self._reply(stub.status, {"error": {"message": "stub error"}})
            else:
                self._reply(200, _completion(request, late=stub.mode == "late"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)
        finally:
            with stub.lock:
                stub.in_flight -= 1


def _completion(request: dict, late: bool = False) -> dict:
    prompt = request["messages"][-1]["content"]
    texts = ["late" if late else f"{request['seed']}:{i}:{prompt}" for i in range(request["n"])]
    choices = [
        {
            "index": i,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": texts[i]},
            "logprobs": {"content": [{"token": "t", "logprob": 0.0, "bytes": [116],
                                      "top_logprobs": []}] * (i + 1)},
        }
        for i in range(request["n"])
    ]  # fmt: skip
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
            "choices": choices}  # fmt: skip


def _expected(prompts, counts, seeds):
    return [
        [(f"{seed}:{i}:{prompt}", i + 1) for i in range(count)]
        for prompt, count, seed in zip(prompts, counts, seeds, strict=True)
    ]


@contextlib.contextmanager
def _stubs(*stubs: _Stub):
    threads = [threading.Thread(target=stub.serve_forever, daemon=True) for stub in stubs]
    for thread in threads:
        thread.start()
    try:
        yield stubs
    finally:
        for stub in stubs:
            stub.shutdown()
            stub.server_close()


PROMPTS = [f"question {i}" for i in range(30)]
COUNTS = [1 + i % 3 for i in range(30)]
SEEDS = [1000 + 7 * i for i in range(30)]


def test_requests_spread_over_servers_within_the_bound():
    with _stubs(_Stub(delay=0.05), _Stub(delay=0.05)) as (first, second):
        sampler = OpenAISampler([first.url, second.url + "/v1/"], max_in_flight=3)
        out = sampler.generate(PROMPTS, COUNTS, SEEDS)
    assert out == _expected(PROMPTS, COUNTS, SEEDS)
    assert sampler.model == "stub"
    assert first.requests + second.requests == len(PROMPTS)
    assert first.requests > 0 and second.requests > 0
    assert 1 <= first.most_in_flight <= 3 and 1 <= second.most_in_flight <= 3


def test_failed_servers_requests_go_to_the_others(capfd):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens: connection refused
    stubs = _Stub(), _Stub(mode="late", delay=3.0), _Stub(mode="status", status=503)
    with _stubs(*stubs) as (good, hung, failing):
        sampler = OpenAISampler(
            [dead, hung.url, failing.url, good.url], request_timeout=0.5, max_in_flight=2
        )
        out = sampler.generate(PROMPTS, COUNTS, SEEDS)
    # No "late" text: the requests that timed out on the hung server were answered elsewhere.
    assert out == _expected(PROMPTS, COUNTS, SEEDS)
    assert hung.requests <= 2 and failing.requests <= 2  # one try per worker at most
    err = capfd.readouterr().err
    for url in (dead, hung.url, failing.url):
        assert f"server {url}/v1 failed" in err
    assert good.url not in err


def test_every_server_failing_is_one_error_naming_them():
    dead = [f"http://127.0.0.1:{_free_port()}" for _ in range(2)]
    sampler = OpenAISampler(dead, model="m", retries=0)
    with pytest.raises(EndpointsFailedError, match="every server failed") as caught:
        sampler.generate(PROMPTS[:3], 1, 0)
    assert set(caught.value.failures) == {url + "/v1" for url in dead}
    assert all("APIConnectionError" in error for error in caught.value.failures.values())
    # One server: the failed request is tried again there, `retries` times.
    with _stubs(_Stub(mode="status", status=500)) as (failing,):
        with pytest.raises(EndpointsFailedError, match=failing.url):
            OpenAISampler(failing.url, retries=1).generate(["q"], 1, 0)
        assert failing.requests == 2


def test_a_bad_request_is_not_retried():
    import openai

    with _stubs(_Stub(mode="status", status=400), _Stub()) as (rejecting, _):
        sampler = OpenAISampler([rejecting.url], model="m")
        with pytest.raises(openai.BadRequestError):
            sampler.generate(["q"], 1, 0)
        assert rejecting.requests == 1


def test_sampler_arguments_are_checked():
    with pytest.raises(ValueError, match="max_in_flight"):
        OpenAISampler("http://127.0.0.1:1", max_in_flight=0)
    with pytest.raises(ValueError, match="request_timeout"):
        OpenAISampler("http://127.0.0.1:1", request_timeout=0)
    with pytest.raises(ValueError, match="retries"):
        OpenAISampler("http://127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError, match="base_url"):
        OpenAISampler([])


# --------------------------------------------------------------------------- vllm serve

SHORT_PROMPTS = [
    {"id": "a", "question": "What is 7 times 8?", "answer": "56"},
    {"id": "b", "question": "Janet has 16 eggs and eats 3. How many are left?", "answer": "13"},
    {"id": "c", "question": "What is 2 + 1?", "answer": "3"},
    {"id": "d", "question": "How many legs do 2 ducks have?", "answer": "4"},
]
MAX_N, WAVE = 6, 2
SAMPLING = ["--temperature", "1.0", "--top-p", "1.0", "--max-tokens", "8"]


@pytest.mark.live
def test_all_servers_down_stops_with_whole_waves_only(tiny, tmp_path):
    model = tiny
    prompts = write_jsonl_records(SHORT_PROMPTS[:2], tmp_path / "prompts.jsonl")
    log = tmp_path / "run.jsonl"
    dead = [f"http://127.0.0.1:{_free_port()}" for _ in range(2)]
    command = [
        *OPTSCALE, "sample", "--model", str(model), "--verifier", f"judge:{model}",
        "--prompts", str(prompts), "--out", str(log), "--endpoint", dead[0],
        "--endpoint", dead[1], "--retries", "0", *SAMPLING,
    ]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--endpoint: every server failed" in result.stderr
    assert all(f"{url}/v1" in result.stderr for url in dead)
    assert not log.exists() or log.read_bytes() == b""


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return tiny_llama


def _kill_after_first_wave(log: pathlib.Path, process: subprocess.Popen, killed: list):
    """Kills the server once the log holds its first (whole) wave."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if log.is_file() and b"\n" in log.read_bytes():
            kill_server(process)
            killed.append(time.monotonic())
            return
        time.sleep(0.02)


@pytest.mark.live
def test_a_killed_server_loses_no_sample(tiny, vllm_server, vllm_server_to_kill, tmp_path):
    model = tiny
    survivor_url, (victim, victim_url) = vllm_server, vllm_server_to_kill
    prompts = write_jsonl_records(SHORT_PROMPTS, tmp_path / "prompts.jsonl")
    log = tmp_path / "run.jsonl"
    killed: list[float] = []
    killer = threading.Thread(target=_kill_after_first_wave, args=(log, victim, killed))
    killer.start()
    command = [
        *OPTSCALE, "sample", "--model", str(model), "--verifier", f"judge:{model}",
        "--prompts", str(prompts), "--out", str(log),
        "--endpoint", victim_url, "--endpoint", survivor_url, "--max-in-flight", "2",
        "--request-timeout", "60", "--max-n", str(MAX_N), "--wave-size", str(WAVE),
        "--min-samples", str(MAX_N), "--prompt-template", "Q: {question}", *SAMPLING,
    ]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    killer.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert killed, "the run ended before its first wave was logged"
    assert f"server {victim_url}/v1 failed" in result.stderr

    records = read_jsonl(log)
    keys = [(r["id"], r["sample_index"]) for r in records]
    assert sorted(keys) == sorted((q["id"], k) for q in SHORT_PROMPTS for k in range(MAX_N))
    assert sorted({r["wave"] for r in records}) == list(range(MAX_N // WAVE))
    assert "samples: 24 of 24" in result.stdout

    # The samples do not depend on the server: the survivor gives the logged ones again.
    requests = {(r["id"], r["wave"]): r["seed"] for r in records}
    texts = {q["id"]: f"Q: {q['question']}" for q in SHORT_PROMPTS}
    sampler = OpenAISampler(survivor_url, temperature=1.0, top_p=1.0, max_tokens=8)
    again = sampler.generate(
        [texts[qid] for qid, _ in requests], WAVE, [seed for seed in requests.values()]
    )
    logged = {(r["id"], r["sample_index"]): (r["text"], r["tokens"]) for r in records}
    for (qid, wave), batch in zip(requests, again, strict=True):
        assert batch == [logged[(qid, wave * WAVE + j)] for j in range(WAVE)]

    replayed = subprocess.run(
        [*OPTSCALE, "replay", str(log), "--out", str(tmp_path / "replay"), "--methods", "bon",
         "optscale0", "--s-min", "0.5", "--alpha", "0.5", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert (tmp_path / "replay" / "results.csv").is_file()


def test_cli_endpoints_and_engine_parallelism():
    from optscale_jax.experiments import cli, sample_cli

    def parse(*extra):
        base = ["sample", "--model", "m", "--verifier", "judge:m", "--prompts", "p", "--out", "o"]
        return cli.build_parser().parse_args([*base, *extra])

    # --server (the old name) and --endpoint add to one list of servers.
    args = parse("--server", "http://a:1", "--endpoint", "http://b:2/v1", "--max-in-flight", "4")
    sampler = sample_cli.build_sampler(args, None)
    assert sampler.base_urls == ["http://a:1/v1", "http://b:2/v1"]
    assert (sampler.max_in_flight, sampler.request_timeout, sampler.retries) == (4, 600.0, 2)
    # vLLM's own parallelism goes to the in-process engine as given, and only when given.
    engine = sample_cli.build_sampler(parse("--tensor-parallel-size", "2"), "/model")
    assert engine.engine_kwargs["tensor_parallel_size"] == 2
    assert "data_parallel_size" not in engine.engine_kwargs
    with pytest.raises(ValueError, match="tensor_parallel_size: give it to the server"):
        sample_cli._check_parallelism(parse("--endpoint", "u", "--tensor-parallel-size", "2"))
    with pytest.raises(ValueError, match="data_parallel_size: must be >= 1"):
        sample_cli._check_parallelism(parse("--data-parallel-size", "0"))
