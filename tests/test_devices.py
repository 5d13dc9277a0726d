"""The question axis sharded over devices and processes gives one device's numbers, bitwise.

Forced host devices (`--xla_force_host_platform_device_count`) only take effect before
jax starts, so the sharded runs are subprocesses: one with 4 devices, and two processes
joined by `jax.distributed` on 127.0.0.1 with 2 devices each. Both fit the same 13
questions (not a multiple of the device count) as the reference fitted here.
"""

import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from optscale_jax import FitStatus, devices, fit_mle_stats, optimal_n

# 13 questions: an empty one (NO_DATA), a degenerate one (AT_BOUND), the rest fitted.
_QUESTIONS = """
import numpy as np
rng = np.random.default_rng(0)
scores = rng.uniform(size=(13, 6)).astype(np.float32)
scores[4] = 0.5
n = np.full(13, 6.0, np.float32)
n[2] = 0.0
s1 = np.where(n > 0, scores.sum(axis=1), 0.0).astype(np.float32)
s2 = np.where(n > 0, (scores**2).sum(axis=1), 0.0).astype(np.float32)
"""

_MESH = """
from optscale_jax import devices
mesh = devices.question_mesh("all")
assert mesh.devices.size == 4, mesh
"""

_SHARDED_RUNS = """
import functools, sys
from optscale_jax import devices, fit_mle_stats, optimal_n
nstar = functools.partial(optimal_n, max_n=256)
def fit_and_nstar(n, s1, s2, mesh):
    # Every process gets every fit back; each passes only its share on to N*.
    share = devices.process_share(13)
    fit = devices.run_sharded(fit_mle_stats, n[share], s1[share], s2[share], mesh=mesh)
    thresholds = (np.float32(0.9), np.float32(0.95))  # s_min, alpha
    n_star = devices.run_sharded(
        nstar, fit.mu[share], fit.sigma[share], mesh=mesh, replicated=thresholds
    )
    return {**fit._asdict(), "n_star": n_star}

# Questions on axis 1 of x (as replay's [R, Q, K] orders) and 0 of w, on axis 0 out.
def weighted_sums(x, w):
    return x.sum(axis=-1).T * w[:, None]
x = np.arange(2 * 13 * 3, dtype=np.float32).reshape(2, 13, 3)
w = np.arange(13, dtype=np.float32)
share = devices.process_share(13)
got = devices.run_sharded(
    weighted_sums, x[:, share], w[share], mesh=mesh, axis=(1, 0), out_axis=0
)
assert np.array_equal(got, x.sum(axis=-1).T * w[:, None]), got
"""

_FOUR_DEVICES = (
    _QUESTIONS
    + _MESH
    + _SHARDED_RUNS
    + """
np.savez(sys.argv[1], **fit_and_nstar(n, s1, s2, mesh))
"""
)

_TWO_PROCESSES = (
    """
import sys
import jax
from optscale_jax import devices
devices.initialize_distributed(f"127.0.0.1:{sys.argv[2]}", 2, int(sys.argv[3]))
"""
    + _QUESTIONS
    + _MESH
    + _SHARDED_RUNS
    + """
result = fit_and_nstar(n, s1, s2, mesh)
if jax.process_index() == 0:
    np.savez(sys.argv[1], **result)
"""
)


def _environment(device_count: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count}",
        JAX_PLATFORMS="cpu",
        JAX_ENABLE_X64="1",  # as this test session (conftest)
        OPTSCALE_COMPILE_CACHE="0",
    )
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """Fits and N* of the 13 questions on this process's one device, unsharded."""
    space: dict = {}
    exec(_QUESTIONS, space)
    fit = fit_mle_stats(space["n"], space["s1"], space["s2"])
    n_star = optimal_n(fit.mu, fit.sigma, 0.9, 0.95, 256)
    return {**{k: np.asarray(v) for k, v in fit._asdict().items()}, "n_star": np.asarray(n_star)}


def _assert_bitwise(result_file, reference):
    with np.load(result_file) as result:
        assert sorted(result.files) == sorted(reference)
        for name, expected in reference.items():
            assert result[name].dtype == expected.dtype, name
            assert result[name].tobytes() == expected.tobytes(), name
    wanted = {FitStatus.CONVERGED, FitStatus.AT_BOUND, FitStatus.NO_DATA}
    assert set(reference["status"].tolist()) >= wanted


def test_four_devices_match_one_device_bitwise(tmp_path, reference):
    out = tmp_path / "four.npz"
    subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES, str(out)],
        env=_environment(4),
        check=True,
        timeout=120,
    )
    _assert_bitwise(out, reference)


def test_two_processes_gather_on_process_zero_bitwise(tmp_path, reference):
    out, port = tmp_path / "two.npz", _free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_PROCESSES, str(out), str(port), str(process)],
            env=_environment(2),
            stderr=subprocess.PIPE,
            text=True,
        )
        for process in (0, 1)
    ]
    try:
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, error in zip(workers, errors, strict=True):
        assert worker.returncode == 0, error[-3000:]
    _assert_bitwise(out, reference)


def test_question_mesh_names_devices_in_errors():
    for bad in (0, -1, "two", 1.5, True, 10**6):
        with pytest.raises(ValueError, match=r"^devices must"):
            devices.question_mesh(bad)
    assert devices.question_mesh("1").devices.size == 1
    assert devices.question_mesh("all").axis_names == (devices.QUESTIONS,)
    assert devices.question_sharding(devices.question_mesh(1), 1).spec == P(None, "questions")


def test_initialize_distributed_names_its_arguments():
    with pytest.raises(ValueError, match=r"^coordinator must"):
        devices.initialize_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"^num_processes must"):
        devices.initialize_distributed("127.0.0.1:1", 0, 0)
    with pytest.raises(ValueError, match=r"^process_id must"):
        devices.initialize_distributed("127.0.0.1:1", 2, 2)


def test_pad_and_share_on_one_process():
    padded = devices.pad_questions({"a": np.arange(3), "b": np.zeros((0, 2))}, 4)
    assert padded["a"].tolist() == [0, 1, 2, 2]
    assert padded["b"].shape == (4, 2)
    assert devices.process_share(13) == slice(0, 13)
    doubled = devices.run_sharded(
        jnp.multiply, np.arange(5.0), np.full(5, 2.0), mesh=devices.question_mesh(1)
    )
    assert doubled.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    one = devices.question_mesh(1)
    with pytest.raises(ValueError, match=r"^arrays must share"):
        devices.run_sharded(jnp.add, np.zeros(2), np.zeros(3), mesh=one)
    with pytest.raises(ValueError, match=r"^out_axis must"):
        devices.run_sharded(jnp.add, np.zeros(2), np.zeros((1, 2)), mesh=one, axis=(0, 1))
    with pytest.raises(ValueError, match=r"^axis must"):
        devices.run_sharded(jnp.add, np.zeros(2), np.zeros(2), mesh=one, axis=(0,))


def test_bench_estimator_names_the_devices_flag(capsys):
    from optscale_jax.experiments.cli import main

    assert main(["bench", "estimator", "--questions", "2", "--devices", "0"]) == 2
    assert "error: --devices must be in [1, " in capsys.readouterr().err
