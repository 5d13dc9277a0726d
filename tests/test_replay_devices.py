"""`optscale replay --devices`: the files of a sharded replay equal one device's, byte for byte."""

import csv
import json
import os
import subprocess
import sys
import textwrap

# Run in a fresh process: the forced host devices must be set before jax starts. One
# process replays twice (one device, then 4), so the compilation is paid once.
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from optscale_jax.experiments import cli
    from optscale_jax.logs import Log, write_jsonl

    work, seed, noise, flags = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(seed)
    Q, K = 7, 8  # 7 questions over 4 devices: the last block is padded
    counts = rng.integers(3, K + 1, Q)
    mask = np.arange(K) < counts[:, None]
    skill = rng.uniform(0.2, 0.9, Q)
    right = rng.random((Q, K)) < skill[:, None]
    answers = np.where(right, 0, rng.integers(1, 4, (Q, K)))
    scores = np.clip(np.where(right, 0.7, 0.4) + rng.normal(0, noise, (Q, K)), 0, 1)
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
    flags = ["replay", f"{work}/log.jsonl", *json.loads(flags), "--no-figures", "--no-progress"]
    assert cli.main([*flags, "--out", f"{work}/one"]) == 0
    assert cli.main([*flags, "--out", f"{work}/four", "--devices", "4"]) == 0
    """
)
GRID = ["--s-min", "0.6", "0.8", "--alpha", "0.5", "0.9", "--min-samples", "1", "3"]
GRID += ["--permutations", "3", "--bootstrap", "50"]


def _replay_on_one_and_four_devices(tmp_path, seed: int, noise: float, flags: list[str]):
    """The one-device and 4-device output folders, checked to hold the same files."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "OPTSCALE_COMPILE_CACHE": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), str(seed), str(noise), json.dumps(flags)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, four = tmp_path / "one", tmp_path / "four"
    names = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(four) for p in four.rglob("*") if p.is_file())
    assert {str(n) for n in names} >= {"results.csv", "summary.json", "per_question.csv"}
    differ = [str(n) for n in names if (one / n).read_bytes() != (four / n).read_bytes()]
    assert differ == []
    return one


def test_replay_over_4_devices_writes_the_same_files(tmp_path):
    # OptScale's tn prefix fits (MLE and MAP), the grid's m and k cells, and BoN, the
    # reference of the selection.
    methods = ["bon", "optscale0", "optscale0-peek", "optscalet"]
    flags = [*GRID, "--peek", "2", "--prior", "log", "--methods", *methods]
    _replay_on_one_and_four_devices(tmp_path, 3, 0.15, flags)


def test_votes_and_laws_over_4_devices_write_the_same_files(tmp_path):
    # The votes (sc, wmv, esc, asc), the oracle, and OptScale0 under auto (the prefix fits
    # of every parametric law, their AIC, the grid from log P(X < s_min)) and the empirical
    # law. Scores at exactly 0 and 1 make auto choose the atom laws on some prefixes.
    methods = ["bon", "sc", "wmv", "esc", "asc", "optscale0", "oracle"]
    flags = [*GRID, "--window", "2", "3", "--threshold", "0.8", "0.95"]
    flags += ["--law", "auto", "empirical", "--methods", *methods]
    one = _replay_on_one_and_four_devices(tmp_path, 5, 0.3, flags)
    # Every method and law ran (the files would also agree if one were missing from both).
    with open(one / "results.csv", newline="") as results:
        ran = {row["method"] for row in csv.DictReader(results)}
    assert ran >= {"sc", "wmv", "esc", "asc", "oracle", "optscale0[auto]", "optscale0[empirical]"}
