"""Test configuration: float64 available everywhere; tests pass explicit dtypes.

The session has a persistent compilation cache of its own, in a fresh temporary folder
(in-process CLI calls and the subprocesses they start inherit it through
OPTSCALE_COMPILE_CACHE_DIR; removed at exit): the tests do not depend on what an earlier run
left in the user's cache folder, nor fill it, and a program that a later test file compiles
again (compiled programs are dropped after each file, below) is read back from disk.

The live tests share what is slow to build: one tiny Llama (`tiny_llama`) and one
`vllm serve` of it (`vllm_server`, and `vllm_server_to_kill` for the test that kills one)
per session, each stopped after the last test that uses it.
"""

import atexit
import importlib.util
import os
import shutil
import signal
import tempfile
import time

import jax
import pytest

from optscale_jax.compile_cache import enable_compile_cache

os.environ["OPTSCALE_COMPILE_CACHE_DIR"] = tempfile.mkdtemp(prefix="optscale-test-jax-cache-")
atexit.register(shutil.rmtree, os.environ["OPTSCALE_COMPILE_CACHE_DIR"], ignore_errors=True)
enable_compile_cache()
jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops jax's compiled programs after each test file.

    Every compiled CPU program holds about 20 memory mappings; a whole session compiles
    thousands, and past the kernel's limit (vm.max_map_count, 65,530 by default) XLA's
    next allocation fails and the process aborts.
    """
    yield
    jax.clear_caches()


def pytest_collection_modifyitems(config, items):
    """Runs the tests that load vLLM's engine in this process last.

    `from vllm import LLM` installs tvm-ffi's SIGSEGV handler, which turns a crash inside
    the C++ unwinder (an XLA call failing, for instance) into a deadlock: a test failure
    would become a CI timeout. After these tests little else runs in the process.
    """
    items.sort(key=lambda item: item.path.name == "test_live_vllm.py")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """The tiny random-weight Llama of the live tests (seed 11), built once per session."""
    pytest.importorskip("transformers")
    from live_models import build_model

    return build_model(tmp_path_factory.mktemp("tiny") / "llama", family="llama", seed=11)


# The shared servers and the fixtures that hand them out; each server is started (all
# together) when the first test needing one runs, and stopped after the last test using it.
SERVER_FIXTURES = ("vllm_server", "vllm_server_to_kill")
_SERVERS = {}


@pytest.fixture(scope="session")
def _vllm_servers(request, tiny_llama, tmp_path_factory):
    """{fixture name: (process, url)}: one `vllm serve` of `tiny_llama` (served as "tiny")
    per fixture of SERVER_FIXTURES that some test of the session uses, started together
    so their start-ups overlap."""
    # find_spec, not import: importing vllm here would install its SIGSEGV handler early.
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    from live_models import kill_server, start_server, wait_healthy

    folder = tmp_path_factory.mktemp("serve")
    try:
        for name in SERVER_FIXTURES:
            if any(_uses(test, name) for test in request.session.items):
                _SERVERS[name] = start_server(tiny_llama, folder / f"{name}.log")
        deadline = time.monotonic() + 600
        for name, (process, url) in _SERVERS.items():
            wait_healthy(process, url, folder / f"{name}.log", deadline)
        yield dict(_SERVERS)
    finally:
        while _SERVERS:
            kill_server(_SERVERS.popitem()[1][0], signal.SIGTERM)


@pytest.fixture(scope="session")
def vllm_server(_vllm_servers):
    """The URL of a `vllm serve` of `tiny_llama` shared by the session: do not stop it."""
    return _vllm_servers["vllm_server"][1]


@pytest.fixture(scope="session")
def vllm_server_to_kill(_vllm_servers):
    """(process, url) of a second `vllm serve` of `tiny_llama`, for the one test that
    kills it (`kill_server` in live_models)."""
    return _vllm_servers["vllm_server_to_kill"]


def _uses(test, fixture: str) -> bool:
    return fixture in getattr(test, "fixturenames", ())


def pytest_runtest_teardown(item, nextitem):
    """Stops a shared server once no later test uses it: each holds ~2 GB of memory."""
    if not _SERVERS:
        return
    later = item.session.items[item.session.items.index(item) + 1 :]
    done = [name for name in _SERVERS if not any(_uses(test, name) for test in later)]
    if done:
        from live_models import kill_server

        for name in done:
            kill_server(_SERVERS.pop(name)[0], signal.SIGTERM)
