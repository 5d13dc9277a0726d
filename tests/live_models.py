"""Tiny random-weight models and `vllm serve` processes for the live tests.

`build_model(dir, family=..., head=...)` (from `optscale_jax.live.tiny`) trains a byte-level
BPE tokenizer in-process, gives it a chat template and the `<extra_0>` step separator, and
saves it with a 2-layer model (hidden 64, 2 heads of dim 32, the smallest vLLM's CPU attention
takes) to `dir`.

`start_server` / `wait_healthy` / `kill_server` run `vllm serve` on 127.0.0.1 in a session of
its own; `LIVE_ENV` is the environment the live subprocesses (servers, `optscale`) get.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from optscale_jax.live.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, build_model, build_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "LIVE_ENV",
    "SPECIAL_TOKENS",
    "build_model",
    "build_tokenizer",
    "free_port",
    "kill_server",
    "start_server",
    "wait_healthy",
]

LIVE_ENV = {
    **os.environ,
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: pathlib.Path, log_path: pathlib.Path) -> tuple[subprocess.Popen, str]:
    """Starts `vllm serve` on `model` (served as "tiny") in its own session; (process, url).

    The server module itself: vllm-cpu's console script looks up the version of a
    distribution named "vllm" and exits; the module is the same server.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", "256", "--served-model-name", "tiny",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, env=LIVE_ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen, url: str, log_path: pathlib.Path, deadline: float):
    """Waits until the server answers /health (`deadline`: a `time.monotonic()` value)."""
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "vllm serve did not start in time"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)


def kill_server(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Sends `sig` to the server's whole session and waits for it (SIGKILL after 60 s).

    A server already waited for is left alone: its process group id may have been reused.
    """
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
