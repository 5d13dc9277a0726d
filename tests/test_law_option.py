"""`--law`: OptScale stopping with another score law, live (`optscale sample`) and simulated.

The live loop runs on test_live_budget's in-process fakes (no vLLM): 4 prompts, max_n 8,
waves of 2. Each stop is checked against the chosen law's N*, recomputed from the log.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_live_budget import FakeSampler, FakeVerifier, _cli, _use_fakes

from optscale_jax import laws
from optscale_jax.experiments import cli
from optscale_jax.io import read_csv, read_jsonl
from optscale_jax.live import loop

QUESTIONS = [loop.Question(f"q{i}", f"Question {i}?", gold="7") for i in range(4)]


def _config(law: str) -> loop.LoopConfig:
    return loop.LoopConfig(
        s_min=0.8, alpha=0.9, max_n=8, wave_size=2, seed=3, prompt_template="Q: {question}",
        law=law,
    )  # fmt: skip


def _padded(scores: list[list[float]], max_n: int):
    padded = np.full((len(scores), max_n), 0.5)
    mask = np.zeros(padded.shape, bool)
    for row, values in enumerate(scores):
        padded[row, : len(values)], mask[row, : len(values)] = values, True
    return padded, mask


def _decision(law: str, scores: list[list[float]], config: loop.LoopConfig):
    """(N*, law) per question from the scores seen, as the loop decides (reference)."""
    padded, mask = _padded(scores, config.max_n)
    names = laws.PARAMETRIC_LAWS if law == "auto" else (law,)
    fits = laws.fit_all(padded, mask, laws=names)
    decided = []
    for row in range(len(scores)):
        aic = [float(fits[name].aic[row]) for name in names]
        name = names[int(np.argmin(aic))]
        n_star = laws.optimal_n(name, fits[name].params, config.s_min, config.alpha, config.max_n)
        decided.append((int(n_star[row]), name))
    return decided


def test_live_stops_at_the_laws_nstar(tmp_path, law="auto"):
    # `auto` fits every parametric law (beta among them): one compilation serves the CLI test.
    config, path = _config(law), tmp_path / "run.jsonl"
    summary = loop.run_online(
        QUESTIONS, FakeSampler(), FakeVerifier(), config, path, progress=False
    )
    records = read_jsonl(path)
    ids = [q.id for q in QUESTIONS]
    # Every wave was drawn because the law's N* on the scores before it was not reached.
    for wave in range(1, summary.waves + 1):
        before = [[r["score"] for r in records if r["id"] == i and r["wave"] < wave] for i in ids]
        decided = _decision(law, before, config)
        drawn = {r["id"]: r.get("law") for r in records if r["wave"] == wave}
        for i, scores, (n_star, name) in zip(ids, before, decided, strict=True):
            assert (i in drawn) == (len(scores) < max(n_star, config.min_samples, 1)
                                    and len(scores) < config.max_n)  # fmt: skip
            assert drawn.get(i, name) == name
            if wave == summary.waves:  # after the last wave: every question has stopped
                assert summary.nstar[i] == n_star and summary.question_laws[i] == name
                assert len(scores) == summary.samples_per_question[i]
    assert summary.as_dict()["law"] == law


def test_tn_default_log_and_summary_are_unchanged(tmp_path):
    path = tmp_path / "run.jsonl"
    summary = loop.run_online(
        QUESTIONS, FakeSampler(), FakeVerifier(), _config("tn"), path, progress=False
    )
    assert all("law" not in record for record in read_jsonl(path))
    assert "law" not in summary.as_dict() and "question_laws" not in summary.as_dict()


def test_cli_law_option_and_its_errors(tmp_path, monkeypatch, capsys):
    _use_fakes(monkeypatch)
    out, summary = tmp_path / "beta.jsonl", tmp_path / "summary.json"
    assert cli.main(_cli(tmp_path, out, "--law", "beta", "--limit", "4", "--summary",
                         str(summary))) == 0  # fmt: skip
    assert "law: beta (beta 4)" in capsys.readouterr().out
    assert json.loads(summary.read_text())["law"] == "beta"
    records = read_jsonl(out)
    assert {r["law"] for r in records} == {"beta"}
    for extra, message in (
        (["--law", "gamma"], "--law: unknown law 'gamma'"),
        (["--law", "beta", "--budget", "3"], "--law: --budget plans with the tn law only"),
    ):
        assert cli.main(_cli(tmp_path, tmp_path / "x.jsonl", *extra)) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="^law: the .mu, sigma. priors"):
        prior = [loop.Question("a", "A?", prior=(0.5, 0.1))]
        loop.run_online(prior, FakeSampler(), FakeVerifier(), _config("beta"), tmp_path / "p")
    assert not (tmp_path / "x.jsonl").exists()


def test_simulate_coverage_with_fitted_laws(tmp_path, capsys):
    # Last in the file: `optscale simulate` switches the process to float64.
    grid = ["--mu", "0.6", "--sigma", "0.2", "--s-min", "0.8", "--alpha", "0.9", "--max-n",
            "1000", "--pilot", "16", "--pilots", "100", "--seed", "1"]  # fmt: skip
    for extra, message in (
        (["--law", "gamma"], "--law: unknown law 'gamma'"),
        (["--law", "tn", "--rho", "0.5"], "--rho: the --law coverage study draws i.i.d."),
        (["--law", "tn", "--families", "gamma"], "--families: unknown 'gamma'"),
        (["--families", "beta"], "--families: only with --law"),
    ):
        assert cli.main(["simulate", "coverage", *grid, *extra, "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
    laws_fitted, families = ["tn", "tn-atoms", "empirical"], ["truncnorm", "tn-atoms"]
    argv = ["simulate", "coverage", *grid, "--law", *laws_fitted, "--families", *families]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "coverage.csv")
    assert [(r["family"], r["law"]) for r in rows] == [
        (family, law) for family in families for law in laws_fitted
    ]
    by = {(r["family"], r["law"]): r for r in rows}
    # The true N* of TN(0.6, 0.2) at s_min 0.8, alpha 0.9, and with masses (0.05, 0.2) added.
    log_f = float(laws.tn.LAW.log_cdf(laws.tn.TNParams(0.6, 0.2), 0.8))
    for family, log_below in (
        ("truncnorm", log_f),
        ("tn-atoms", np.log(0.05 + 0.75 * np.exp(log_f))),
    ):
        assert int(by[family, "tn"]["true_n_star"]) == int(np.ceil(np.log(0.1) / log_below))
        # The DKW band makes the empirical law's N* conservative: coverage >= alpha mostly.
        assert float(by[family, "empirical"]["below_alpha"]) <= 0.1
    # The right law, fitted to 16 scores, lands near alpha.
    for family, law in (("truncnorm", "tn"), ("tn-atoms", "tn-atoms")):
        row = by[family, law]
        assert abs(float(row["coverage"]) - 0.9) < 5 * float(row["coverage_se"]) + 0.03
