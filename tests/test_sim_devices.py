"""`optscale simulate ... --devices N` and over two processes writes one device's files.

Forced host devices (`--xla_force_host_platform_device_count`) only take effect before jax
starts, so the sharded runs are subprocesses: one with 4 devices (coverage, adaptive, calibration),
and two processes joined by `jax.distributed` on 127.0.0.1 with 2 devices each (coverage).
They start together and run while this process computes the one-device reference, so the
compilations overlap. Every run writes to the same relative `--out` from its own folder:
the files must be equal byte for byte except the `elapsed_seconds` field of the JSON.
The 7 questions are not a multiple of the device count.
"""

import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from live_models import free_port

from optscale_jax.experiments.cli import main

STUDIES = {
    "coverage": "--mu 0.3 0.5 0.7 0.9 --sigma 0.1 0.3 --s-min 0.9 --alpha 0.9 0.95 "
    "--rho 0 0.5 --trials 300 --seed 1",
    "adaptive": "--population grid --mu 0.3 0.5 0.6 0.7 0.8 0.9 0.95 --sigma 0.1 --s-min 0.9 "
    "--alpha 0.9 --paths 2 --max-n 4 --peek 2 --prior-noise 0.1 --seed 1",
    # Its pools are replayed by replay's methods, sharded through `replay.sharded_over`.
    "calibration": "--population grid --mu 0.5 0.7 0.9 --sigma 0.1 --rho 0 --families beta "
    "--n-cals 5 --trials 20 --paths 3 --max-n 8 --s-min 0.8 --alpha 0.9 --seed 1",
}
FILES = {study: [f"{study}/{study}.csv", f"{study}/{study}.json"] for study in STUDIES}
# The only field allowed to differ: wall time.
ELAPSED = re.compile(rb'"elapsed_seconds": [-+.0-9eE]+')

_RUN = """
import json, sys
from optscale_jax.experiments.cli import main
for argv in json.loads(sys.argv[1]):
    assert main(argv) == 0, argv
"""


def _argv(study: str, *extra: str) -> list[str]:
    return ["simulate", study, *STUDIES[study].split(), "--out", study, *extra]


def _start(argvs: list[list[str]], folder, device_count: int) -> subprocess.Popen:
    folder.mkdir()
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count}",
        JAX_PLATFORMS="cpu",
        OPTSCALE_COMPILE_CACHE="0",
    )
    # stderr to a file: a pipe nobody reads until the end could fill and block the run.
    with open(folder.parent / f"{folder.name}.stderr", "w") as errors:
        return subprocess.Popen(
            [sys.executable, "-c", _RUN, json.dumps(argvs)],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Folders of the one-device, 4-device and two-process (process 0, process 1) runs."""
    root = tmp_path_factory.mktemp("sim-devices")
    port = str(free_port())
    joined = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    workers = {
        "four": _start([_argv(study, "--devices", "4") for study in STUDIES], root / "four", 4),
        **{
            f"process{i}": _start([_argv("coverage", *joined, str(i))], root / f"process{i}", 2)
            for i in (0, 1)
        },
    }
    try:
        (root / "one").mkdir()
        with contextlib.chdir(root / "one"):
            for study in STUDIES:
                assert main(_argv(study)) == 0
        for worker in workers.values():
            worker.wait(timeout=300)
    finally:
        for worker in workers.values():
            worker.kill()
    for name, worker in workers.items():
        errors = (root / f"{name}.stderr").read_text()
        assert worker.returncode == 0, f"{name}: {errors[-3000:]}"
    return root


def _assert_same_files(result, reference, names):
    for folder in {pathlib.PurePath(name).parent for name in names}:
        listed = [sorted(p.name for p in (root / folder).iterdir()) for root in (result, reference)]
        assert listed[0] == listed[1], folder
    for name in names:
        got, expected = (
            ELAPSED.sub(b"", (folder / name).read_bytes()) for folder in (result, reference)
        )
        assert got == expected, name
    assert ELAPSED.search((reference / names[1]).read_bytes())


def test_four_devices_write_one_devices_files(runs):
    for study in STUDIES:
        _assert_same_files(runs / "four", runs / "one", FILES[study])


def test_two_processes_write_one_processs_files_on_process_zero(runs):
    _assert_same_files(runs / "process0", runs / "one", FILES["coverage"])
    assert list((runs / "process1").iterdir()) == []


def test_devices_flag_is_checked(tmp_path, capsys):
    argv = ["simulate", "coverage", "--trials", "1", "--out", str(tmp_path), "--devices", "0"]
    assert main(argv) == 2
    assert "error: --devices must be in [1, " in capsys.readouterr().err
