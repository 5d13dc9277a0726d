"""Test configuration: float64 available everywhere; tests pass explicit dtypes.

The persistent compilation cache stays off in the test session (in-process CLI calls and
the subprocesses they start inherit this): the tests must not depend on what an earlier run
left in the user's cache folder, nor fill it.
"""

import os

import jax
import pytest

os.environ["OPTSCALE_COMPILE_CACHE"] = "0"
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
