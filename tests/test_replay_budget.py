"""Replay of the budget methods: the allocation and its baselines at equal total budget.

Small and fast: the allocation replays arrays of the shape test_allocation compiles ([1 order,
24 questions, 12 samples], waves of 5), and budget-optscale0 the prefix fits test_replay
compiles (its small log, 4 orders); the demo log runs the baselines, which compile in a second.
"""

import csv
import json

import numpy as np
import pytest

from optscale_jax import replay
from optscale_jax.experiments import cli
from optscale_jax.logs import Log, write_jsonl

Q, K = 24, 12
ALLOCATION = ["budget", "budget-uniform", "budget-elimination", "budget-oracle"]
FAST = ["--bootstrap", "200", "--s-min", "0.6", "0.8", "--alpha", "0.5", "0.9",
        "--min-samples", "1", "3", "--no-progress", "--no-figures"]  # fmt: skip
ONE_SET = ["--split", "none", "--permutations", "1", "--wave", "5"]


def tiny_log(scores=True):
    """Seeded: better answers score higher; questions differ in difficulty; tokens."""
    rng = np.random.default_rng(3)
    skill = rng.uniform(0.05, 0.8, Q)
    right = rng.random((Q, K)) < skill[:, None]
    noisy = np.where(right, 0.75, 0.45) + rng.normal(0, 0.15, (Q, K))
    answers = np.where(right, 0, rng.integers(1, 4, (Q, K))).astype(np.int32)
    return Log(
        ids=[f"q{i}" for i in range(Q)],
        mask=np.ones((Q, K), bool),
        scores=np.clip(noisy, 0, 1) if scores else None,
        tokens=rng.integers(50, 150, (Q, K)).astype(float),
        answers=answers,
        correct=right,
        source="tiny",
    )


def run_replay(tmp_path, *flags, log=None):
    """`optscale replay` in process; returns (exit code, out dir)."""
    out = tmp_path / "out"
    source = []
    if log is not None:
        source = [str(tmp_path / "log.jsonl")]
        write_jsonl(log, source[0])
    code = cli.main(["replay", *source, "--out", str(out), *FAST, *flags])
    return code, out


def budget_rows(out):
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, [row for row in rows if row["budget"]]


def test_budget_methods_spend_within_the_budget_and_compare_with_uniform(tmp_path):
    code, out = run_replay(
        tmp_path, *ONE_SET, "--methods", "bon", *ALLOCATION, "--budget", "2", "4", log=tiny_log()
    )
    assert code == 0
    rows, spending = budget_rows(out)
    assert tuple(rows[0]) == replay.BUDGET_RESULT_COLUMNS
    assert {row["method"] for row in spending} == set(ALLOCATION)
    assert all(not row["budget"] for row in rows if row["method"] == "bon")
    for row in spending:
        assert float(row["mean_samples"]) <= float(row["budget"]) + 1e-9, row
    summary = json.loads((out / "summary.json").read_text())
    vs_uniform = summary["vs_uniform"]
    assert [entry["budget"] for entry in vs_uniform] == [2, 4]
    for entry in vs_uniform:
        assert set(entry) == {"budget", "difference", "ci_low", "ci_high"}
        assert entry["ci_low"] <= entry["difference"] <= entry["ci_high"]
    # At budget = m0 every question draws its first m0 samples: uniform Best-of-N itself.
    assert vs_uniform[0]["difference"] == 0.0
    figures = summary["budget"]["figures"]
    for budget in (2, 4):
        at = {f["method"]: f["accuracy"] for f in figures if f["budget"] == budget}
        assert at["budget-oracle"] >= max(at.values()) - 1e-12  # a ceiling: no method above it
    assert "ceiling" in summary["methods"]["budget-oracle"]
    assert "budget - uniform" in (out / "report.md").read_text()


def test_budget_in_tokens_spends_within_the_token_budget(tmp_path):
    budget = 3 * 100.0  # about three samples per question
    code, out = run_replay(
        tmp_path, *ONE_SET, "--budget-unit", "tokens", "--budget", str(budget),
        "--methods", "bon", "budget", "budget-uniform", log=tiny_log(),
    )  # fmt: skip
    assert code == 0
    _, spending = budget_rows(out)
    assert {row["method"] for row in spending} == {"budget", "budget-uniform"}
    for row in spending:
        assert row["cost_unit"] == "tokens"
        assert float(row["mean_cost"]) <= budget + 1e-9, row


def test_optscale0_at_the_budget_spends_within_it_in_every_set(tmp_path):
    from test_replay import small_log

    code, out = run_replay(tmp_path, "--permutations", "4", "--methods", "bon",
                           "budget-optscale0", "--budget", "2", "5", log=small_log(2))  # fmt: skip
    assert code == 0
    _, spending = budget_rows(out)
    assert {row["split"] for row in spending} == {"dev", "test"}
    for row in spending:
        assert float(row["mean_samples"]) <= float(row["budget"]) + 1e-9, row
        assert row["s_min"] and row["alpha"] and row["m"]  # the cell it chose
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["diagnostics"]["budget-optscale0_caps"]) == {"2", "5"}


def test_demo_log_spends_the_budget_within_dev_and_test(tmp_path, capsys):
    code, out = run_replay(tmp_path, "--demo", "--max-n", "8", "--permutations", "2", "--methods",
                           "bon", "budget-uniform", "budget-elimination", "budget-oracle",
                           "--budget", "2", "4")  # fmt: skip
    assert code == 0
    assert "budget-oracle knows each sample's correctness" in capsys.readouterr().out
    _, spending = budget_rows(out)
    assert {row["split"] for row in spending} == {"dev", "test"}  # spent within each set
    for row in spending:
        assert float(row["mean_samples"]) <= float(row["budget"]) + 1e-9, row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vs_uniform"] == []  # no allocation: nothing to compare
    figures = summary["budget"]["figures"]
    for budget in (2, 4):
        at = {f["method"]: f["accuracy"] for f in figures if f["budget"] == budget}
        assert at["budget-oracle"] >= max(at.values()) - 1e-12


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--budget", "1"], "--budget must be >= m0 (2)"),
        (["--max-n", "6", "--budget", "7"], "--budget must be <= max_n (6)"),
        (["--budget", "4", "--wave", "0"], "--wave must be an integer >= 1, got 0"),
        ([], "--budget must have at least one value (used by budget)"),
        (["--budget", "4", "--budget-unit", "tokens"], "--budget-unit: tokens needs token counts"),
        (["--budget", "4", "--select", "ltt"], "--select: the budget methods"),
    ],
)
def test_bad_budget_input_names_the_flag(tmp_path, capsys, flags, message):
    code, _ = run_replay(tmp_path, "--demo", "--methods", "bon", "budget", *flags)
    assert code == 2
    assert message in capsys.readouterr().err


def test_objective_on_a_log_without_scores_names_the_argument(tmp_path, capsys):
    config = replay.ReplayConfig(methods=("sc", "budget"), budget=(4,))
    with pytest.raises(ValueError, match="^objective: reach needs scores"):
        replay.evaluate(tiny_log(scores=False), config, explicit_methods=True, progress=False)
    code, _ = run_replay(tmp_path, "--methods", "sc", "budget", "--budget", "4",
                         "--objective", "best", log=tiny_log(scores=False))  # fmt: skip
    assert code == 2
    assert "--objective: best needs scores" in capsys.readouterr().err


def test_samples_only_baselines_refuse_tokens(tmp_path, capsys):
    code, _ = run_replay(tmp_path, "--methods", "bon", "budget-elimination", "--budget", "300",
                         "--budget-unit", "tokens", log=tiny_log())  # fmt: skip
    assert code == 2
    assert "--budget-unit: budget-elimination count samples" in capsys.readouterr().err


def test_budget_methods_run_only_when_asked():
    assert replay.ReplayConfig().methods == replay.DEFAULT_METHODS
    assert not set(replay.DEFAULT_METHODS) & set(replay.BUDGET_METHODS)
    assert set(replay.DEFAULT_METHODS) | set(replay.BUDGET_METHODS) == set(replay.METHODS)
