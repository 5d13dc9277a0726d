"""Replay of vote-only logs (answers, no scores): self-consistency is the reference."""

import csv
import json

import numpy as np
import pytest

from optscale_jax import datasets, replay
from optscale_jax.experiments import cli
from optscale_jax.logs import Log, read_log, write_jsonl

FAST = ["--permutations", "2", "--bootstrap", "200", "--no-progress"]
VOTING = {"sc", "esc", "asc", "oracle"}


def vote_log(seed=0, questions=12, samples=8, tokens=True):
    """A seeded vote-only log: answer 0 is right; ragged questions; some samples unanswered."""
    rng = np.random.default_rng(seed)
    mask = np.arange(samples) < rng.integers(3, samples + 1, questions)[:, None]
    skill = rng.uniform(0.3, 0.9, questions)
    answers = np.where(rng.random(mask.shape) < skill[:, None], 0, rng.integers(1, 4, mask.shape))
    answers = np.where(rng.random(mask.shape) < 0.1, -1, answers)
    answers = np.where(mask, answers, -1).astype(np.int32)
    token_counts = np.where(mask, rng.integers(20, 400, mask.shape), 0).astype(float)
    return Log(
        ids=[f"v{i}" for i in range(questions)],
        mask=mask,
        tokens=token_counts if tokens else None,
        answers=answers,
        correct=mask & (answers == 0),
        source="votes",
    )


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_shipped_vote_log_replays_against_self_consistency(tmp_path, capsys):
    path = datasets.data_path(datasets.AMC23_VOTES)
    log = read_log(path)
    assert log.scores is None and log.answers is not None and log.mask.shape == (40, 32)
    out = tmp_path / "amc23"
    assert cli.main(["replay", str(path), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "sc" and "bon_curve" not in summary
    assert summary["sc_curve"]["n"] == list(range(1, 33))
    assert "fixed-N SC" in summary["selection_rule"]
    assert set(summary["methods"]) == VOTING
    assert set(summary["skipped_methods"]) == set(replay.DEFAULT_METHODS) - VOTING
    for figures in summary["methods"].values():
        assert "sc_cost_at_accuracy" in figures and "saving" in figures
    # SC cannot beat its own envelope; the adaptive votes are measured against it.
    assert summary["methods"]["sc"]["saving"] <= 1e-12
    assert all(summary["methods"][m]["saving"] is not None for m in ("esc", "asc"))
    assert summary["cost_unit"] == "samples"
    assert "cost fixed-N SC needs" in printed
    for method in ("sc", "esc", "asc"):
        assert method in printed


def test_vote_only_log_with_tokens_uses_token_costs(tmp_path):
    log = vote_log(1)
    path = tmp_path / "votes.jsonl"
    write_jsonl(log, path)
    out = tmp_path / "out"
    flags = ["--split", "none", "--window", "2", "--threshold", "0.9", *FAST]
    assert cli.main(["replay", str(path), "--out", str(out), *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost_unit"] == "tokens" and summary["reference"] == "sc"
    rows = read_rows(out / "results.csv")
    assert {r["cost_unit"] for r in rows} == {"tokens"}
    # SC at max_n draws every sample of every question: its cost is all the tokens.
    max_n = log.mask.shape[1]
    (full,) = [r for r in rows if r["method"] == "sc" and r["n"] == str(max_n)]
    assert float(full["mean_cost"]) == pytest.approx(log.tokens.sum(1).mean())
    assert float(full["mean_samples"]) == pytest.approx(log.mask.sum(1).mean())


def test_vote_only_log_without_tokens_costs_samples():
    config = replay.ReplayConfig(
        methods=("sc", "asc"), threshold=(0.9,), permutations=2, bootstrap=50, split="none"
    )
    result = replay.evaluate(vote_log(2, tokens=False), config, progress=False)
    assert result.summary["cost_unit"] == "samples"
    for figures in result.summary["methods"].values():
        assert figures["mean_cost"] == pytest.approx(figures["mean_samples"])


def test_methods_that_need_scores_are_refused_on_a_vote_only_log(tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    write_jsonl(vote_log(3), path)
    code = cli.main(["replay", str(path), "--out", str(tmp_path / "o"), "--methods", "bon"])
    assert code == 2
    error = capsys.readouterr().err
    assert "--methods: bon needs what the log lacks: the log has no scores" in error
    config = replay.ReplayConfig(methods=("bon",))
    with pytest.raises(ValueError, match="^methods: bon needs"):
        replay.evaluate(vote_log(3), config, explicit_methods=True, progress=False)


def test_the_reference_must_be_among_the_methods():
    config = replay.ReplayConfig(methods=("esc", "asc"), permutations=2, bootstrap=50)
    with pytest.raises(ValueError, match="^methods must include sc"):
        replay.evaluate(vote_log(4), config, progress=False)
    assert replay.reference_method(vote_log(4)) == "sc"
