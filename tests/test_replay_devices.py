"""`optscale replay --devices`: the files of a sharded replay equal one device's, byte for byte."""

import os
import subprocess
import sys
import textwrap

# Run in a fresh process: the forced host devices must be set before jax starts. One
# process replays twice (one device, then 4), so the compilation is paid once. The methods
# are those with sharded parts (MLE and MAP prefix fits, the grid's m and k cells) and BoN,
# the reference of the selection.
_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from optscale_jax.experiments import cli
    from optscale_jax.logs import Log, write_jsonl

    work = sys.argv[1]
    rng = np.random.default_rng(3)
    Q, K = 7, 8  # 7 questions over 4 devices: the last block is padded
    counts = rng.integers(3, K + 1, Q)
    mask = np.arange(K) < counts[:, None]
    skill = rng.uniform(0.2, 0.9, Q)
    right = rng.random((Q, K)) < skill[:, None]
    answers = np.where(right, 0, rng.integers(1, 4, (Q, K)))
    scores = np.clip(np.where(right, 0.7, 0.4) + rng.normal(0, 0.15, (Q, K)), 0, 1)
    log = Log(
        ids=[f"q{i}" for i in range(Q)],
        mask=mask,
        scores=np.where(mask, np.round(scores * 64) / 64, 0.0),
        answers=np.where(mask, answers, -1).astype(np.int32),
        correct=mask & (answers == 0),
        prior_mu=skill,
        prior_sigma=np.full(Q, 0.2),
        source="tiny",
    )
    write_jsonl(log, f"{work}/log.jsonl")
    flags = [
        "replay", f"{work}/log.jsonl", "--s-min", "0.6", "0.8", "--alpha", "0.5", "0.9",
        "--min-samples", "1", "3", "--peek", "2", "--permutations", "3", "--bootstrap", "50",
        "--prior", "log", "--methods", "bon", "optscale0", "optscale0-peek", "optscalet",
        "--no-figures", "--no-progress",
    ]
    assert cli.main([*flags, "--out", f"{work}/one"]) == 0
    assert cli.main([*flags, "--out", f"{work}/four", "--devices", "4"]) == 0
    """
)


def test_replay_over_4_devices_writes_the_same_files(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "OPTSCALE_COMPILE_CACHE": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, four = tmp_path / "one", tmp_path / "four"
    names = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(four) for p in four.rglob("*") if p.is_file())
    assert {str(n) for n in names} >= {"results.csv", "summary.json", "per_question.csv"}
    differ = [str(n) for n in names if (one / n).read_bytes() != (four / n).read_bytes()]
    assert differ == []
