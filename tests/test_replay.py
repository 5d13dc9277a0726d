"""Replay: orders, outcomes, splits, bootstrap, selection, equal-accuracy cost, and the CLI."""

import csv
import json

import numpy as np
import pytest

from optscale_jax import replay
from optscale_jax.experiments import cli
from optscale_jax.logs import Log, write_jsonl

Q, K = 24, 10


def small_log(seed=0, tokens=True, prior=True):
    """A seeded log: ragged questions, answer 0 is right, better answers score higher."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(4, K + 1, Q)
    mask = np.arange(K) < counts[:, None]
    skill = rng.uniform(0.2, 0.9, Q)
    right = rng.random((Q, K)) < skill[:, None]
    answers = np.where(right, 0, rng.integers(1, 4, (Q, K)))
    answers = np.where(rng.random((Q, K)) < 0.05, -1, answers)
    scores = np.clip(np.where(right, 0.7, 0.4) + rng.normal(0, 0.15, (Q, K)), 0, 1)
    return Log(
        ids=[f"q{i}" for i in range(Q)],
        mask=mask,
        scores=np.where(mask, np.round(scores * 64) / 64, 0.0),
        tokens=np.where(mask, rng.integers(50, 500, (Q, K)), 0).astype(float) if tokens else None,
        answers=np.where(mask, answers, -1).astype(np.int32),
        correct=mask & (answers == 0),
        prior_mu=skill if prior else None,
        prior_sigma=np.full(Q, 0.2) if prior else None,
        source="small",
    )


def test_permute_reorders_each_question_seeded():
    log = small_log()
    a = replay.permute(log, 3, seed=5)
    b = replay.permute(log, 3, seed=5)
    np.testing.assert_array_equal(a.order, b.order)
    assert a.mask.shape == (3, Q, K)
    for r in range(3):
        for q in range(Q):
            k = log.mask[q].sum()
            assert sorted(a.order[r, q, :k]) == list(range(k))  # the valid samples, permuted
            assert a.mask[r, q, :k].all() and not a.mask[r, q, k:].any()
            np.testing.assert_array_equal(a.scores[r, q, :k], log.scores[q, a.order[r, q, :k]])
    assert not np.array_equal(a.order[0], a.order[1])


def test_outcomes_cost_is_tokens_of_drawn_samples():
    log = small_log()
    rep = replay.permute(log, 2, seed=1, verifier_cost_factor=0.5)
    samples = np.minimum(np.array([[3] * Q, [1] * Q]), log.mask.sum(1))
    chosen = np.zeros_like(samples)
    out = replay.outcomes(rep, samples, chosen)
    expected = [
        np.mean([log.tokens[q, rep.order[r, q, : samples[r, q]]].sum() * 1.5 for r in range(2)])
        for q in range(Q)
    ]
    np.testing.assert_allclose(out.cost, expected)
    np.testing.assert_allclose(out.samples, samples.mean(0))
    np.testing.assert_allclose(out.correct, rep.correct[:, np.arange(Q), 0].mean(0))


def test_bootstrap_ci_contains_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    values = rng.random((5, 40))
    values[4] = 0.25  # constant: the CI collapses
    mean, low, high = replay.bootstrap_ci(values, 500, seed=3)
    np.testing.assert_allclose(mean, values.mean(1))
    assert np.all(low <= mean) and np.all(mean <= high) and np.all(low[:4] < high[:4])
    assert low[4] == high[4] == 0.25
    again = replay.bootstrap_ci(values, 500, seed=3)
    np.testing.assert_array_equal(low, again[1])


def test_select_setting_rule():
    accuracy = np.array([0.50, 0.70, 0.72, 0.69, 0.71])
    cost = np.array([1.0, 5.0, 9.0, 2.0, 5.0])
    # Cheapest reaching 0.70; cost tie between 1 and 4 goes to the more accurate (4).
    assert replay.select_setting(accuracy, cost, reference=0.70) == (4, True)
    assert replay.select_setting(accuracy, cost, reference=0.70, tolerance=0.01) == (3, True)
    # Nobody reaches 0.8: the most accurate, flagged.
    assert replay.select_setting(accuracy, cost, reference=0.80) == (2, False)


def test_bon_cost_at_accuracy_on_a_known_curve():
    cost, accuracy = [1, 2, 3, 4, 5], [0.2, 0.4, 0.3, 0.6, 0.55]
    # Envelope record points: (1, .2), (2, .4), (4, .6).
    assert replay.bon_cost_at_accuracy(cost, accuracy, 0.5) == pytest.approx(3.0)
    assert replay.bon_cost_at_accuracy(cost, accuracy, 0.3) == pytest.approx(1.5)
    assert replay.bon_cost_at_accuracy(cost, accuracy, 0.4) == pytest.approx(2.0)
    assert replay.bon_cost_at_accuracy(cost, accuracy, 0.1) == 1.0
    assert np.isnan(replay.bon_cost_at_accuracy(cost, accuracy, 0.61))


def test_make_splits():
    (split,) = replay.make_splits(11, "dev-test", seed=0)
    assert len(split.select) == 5 and len(split.report) == 6
    assert not set(split.select) & set(split.report)
    folds = replay.make_splits(11, "kfold:3", seed=0)
    reported = np.concatenate([f.report for f in folds])
    assert sorted(reported) == list(range(11))
    for f in folds:
        assert not set(f.select) & set(f.report) and len(f.select) + len(f.report) == 11
    (everything,) = replay.make_splits(4, "none", seed=0)
    assert everything.name == "all" and list(everything.select) == list(everything.report)
    with pytest.raises(ValueError, match="^split"):
        replay.make_splits(4, "kfold:1", seed=0)


FAST = dict(
    s_min=(0.6, 0.8),
    alpha=(0.5, 0.9),
    min_samples=(1, 3),
    peek=(2,),
    window=(2, 3),
    threshold=(0.8, 0.95),
    permutations=4,
    bootstrap=200,
    prior="log",
)


def test_selection_never_looks_at_test_questions():
    log = small_log(1)
    # The empirical-Bayes prior must be fitted on dev questions only, too.
    config = replay.ReplayConfig(**{**FAST, "prior": "eb"})
    base = replay.evaluate(log, config, progress=False)
    (split,) = replay.make_splits(Q, "dev-test", _split_seed(config.seed))
    test = split.report
    # Change everything about the test questions: flip correctness, shuffle scores.
    rng = np.random.default_rng(9)
    correct = log.correct.copy()
    correct[test] = log.mask[test] & ~log.correct[test]
    scores = log.scores.copy()
    scores[test] = np.where(log.mask[test], rng.random((len(test), K)).round(3), 0.0)
    perturbed = Log(
        ids=log.ids,
        mask=log.mask,
        scores=scores,
        tokens=log.tokens,
        answers=log.answers,
        correct=correct,
        prior_mu=log.prior_mu,
        prior_sigma=log.prior_sigma,
        source="perturbed",
    )
    other = replay.evaluate(perturbed, config, progress=False)
    for method, figures in base.summary["methods"].items():
        assert other.summary["methods"][method]["setting"] == figures["setting"]
    # ...while the reported test figures did change (the perturbation was real).
    assert other.summary["methods"]["bon"]["accuracy"] != base.summary["methods"]["bon"]["accuracy"]


def _split_seed(seed):
    return int(np.random.SeedSequence(seed).spawn(3)[1].generate_state(1)[0])


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fast_flags():
    return [
        "--s-min", "0.6", "0.8", "--alpha", "0.5", "0.9", "--min-samples", "1", "3",
        "--peek", "2", "--window", "2", "3", "--threshold", "0.8", "0.95",
        "--permutations", "4", "--bootstrap", "200", "--prior", "log", "--no-progress",
    ]  # fmt: skip


def test_cli_end_to_end_writes_the_files(tmp_path, capsys):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(small_log(2), log_path)
    out = tmp_path / "out"
    assert cli.main(["replay", str(log_path), "--out", str(out), *fast_flags()]) == 0
    printed = capsys.readouterr().out
    rows = read_rows(out / "results.csv")
    assert tuple(rows[0]) == replay.RESULT_COLUMNS
    methods = {r["method"] for r in rows}
    assert methods == set(replay.DEFAULT_METHODS)
    assert {r["split"] for r in rows} == {"dev", "test"}
    selected = [r for r in rows if r["selected"] == "True"]
    assert sorted(r["method"] for r in selected) == sorted(replay.DEFAULT_METHODS)
    assert all(r["split"] == "test" and r["cost_unit"] == "tokens" for r in selected)
    for r in rows:
        assert float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"])
    bon = [r for r in rows if r["method"] == "bon" and r["split"] == "test"]
    assert [int(r["n"]) for r in bon] == list(range(1, K + 1)) and bon[0]["s_min"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == set(replay.DEFAULT_METHODS)
    for figures in summary["methods"].values():
        assert figures["split"] == "test" and len(figures["ci"]) == 2
        assert "saving" in figures and "bon_cost_at_accuracy" in figures
    # BoN cannot beat its own envelope: its saving is at most 0 (0 when on the envelope).
    assert summary["methods"]["bon"]["saving"] <= 1e-12
    per_question = read_rows(out / "per_question.csv")
    assert tuple(per_question[0]) == replay.PER_QUESTION_COLUMNS
    assert len(per_question) == len(replay.DEFAULT_METHODS) * Q  # dev + test rows
    for method in replay.DEFAULT_METHODS:
        assert method in printed


def test_cli_kfold_none_and_released_protocols(tmp_path):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(small_log(3, tokens=False), log_path)
    methods = ["--methods", "bon", "sc", "optscalet"]
    out = tmp_path / "kfold"
    assert cli.main(["replay", str(log_path), "--out", str(out), "--split", "kfold:3",
                     *methods, *fast_flags(), "--prior", "eb"]) == 0  # fmt: skip
    rows = read_rows(out / "results.csv")
    pooled = [r for r in rows if r["split"] == "crossfit"]
    assert sorted(r["method"] for r in pooled) == ["bon", "optscalet", "sc"]
    assert {r["split"] for r in rows} == {"all", "fold1", "fold2", "fold3", "crossfit"}
    assert all(r["selected"] == "True" and r["cost_unit"] == "samples" for r in pooled)
    assert len(read_rows(out / "per_question.csv")) == 3 * Q  # every question held out once
    out = tmp_path / "none"
    assert cli.main(["replay", str(log_path), "--out", str(out), "--split", "none",
                     *methods, *fast_flags()]) == 0  # fmt: skip
    rows = read_rows(out / "results.csv")
    assert {r["split"] for r in rows} == {"all"} and not any(r["selected"] == "True" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reported_split"] == "all" and "note" in summary
    out = tmp_path / "released"
    assert cli.main(["replay", str(log_path), "--out", str(out), "--protocol", "released",
                     *methods, *fast_flags()]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == replay.RELEASED_LABEL and summary["prior"] == "log"
    released = [r for r in read_rows(out / "results.csv") if r["split"] == replay.RELEASED_LABEL]
    test_rows = [r for r in read_rows(out / "results.csv") if r["split"] == "test"]
    for r in released:  # the best test cell of its method
        best = max(float(t["accuracy"]) for t in test_rows if t["method"] == r["method"])
        assert float(r["accuracy"]) == pytest.approx(best)


def run_cli(argv):
    """cli.main's exit code, also when argparse itself stops (SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--alpha", "1.5"], "--alpha must lie in (0, 1)"),
        (["--alpha", "1"], "--alpha must lie in (0, 1)"),
        (["--alpha", "nan"], "--alpha must lie in (0, 1)"),
        (["--s-min", "-0.1"], "--s-min must lie in [0, 1]"),
        (["--s-min", "2"], "--s-min must lie in [0, 1]"),
        (["--split", "halves"], "--split: expected"),
        (["--split", "kfold:1"], "--split: expected"),
        (["--max-n", "0"], "--max-n must be >= 1"),
        (["--window", "0"], "--window must be >= 1"),
        (["--peek", "0"], "--peek must be >= 1"),
        (["--threshold", "1"], "--threshold must lie in (0, 1)"),
        (["--prior", "0.5,-1"], "--prior: sigma must be > 0"),
        (["--prior-scale", "0", "1"], "--prior-scale must be two positive numbers"),
        # Library errors name arguments; the command line names the flags.
        (["--fixed-n", "1", "2"], "--fixed-n: the grid must end at max_n"),
        (["--fixed-n", "0", "10"], "--fixed-n must be >= 1"),
        (["--protocol", "released", "--split", "kfold:3"], "--protocol released"),
        (["--min-samples", "0"], "--min-samples must be >= 1"),
        (["--tolerance", "-1"], "--tolerance must be finite and >= 0"),
        (["--tolerance", "nan"], "--tolerance must be finite and >= 0"),
        (["--tolerance", "inf"], "--tolerance must be finite and >= 0"),
        (["--verifier-cost-factor", "-1"], "--verifier-cost-factor must be finite"),
        (["--permutations", "0"], "--permutations must be >= 1"),
        (["--permutations", "-3"], "--permutations must be >= 1"),
        (["--bootstrap", "0"], "--bootstrap must be >= 1"),
        (["--epsilon", "1"], "--epsilon must lie in (0, 1)"),
        (["--delta", "0"], "--delta must lie in (0, 1)"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--methods", "sc"], "--methods must include bon"),
        (["--prior", "nowhere.jsonl"], "--prior: no such file"),
        # argparse's own errors (no value, or not a number) name the flag their way.
        (["--methods"], "argument --methods: expected at least one argument"),
        (["--fixed-n"], "argument --fixed-n: expected at least one argument"),
        (["--permutations", "x"], "argument --permutations: invalid int value"),
        (["--seed", "2.5"], "argument --seed: invalid int value"),
    ],
)
def test_cli_rejects_bad_flags(tmp_path, capsys, flags, message):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(small_log(4), log_path)
    code = run_cli(["replay", str(log_path), "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert f"optscale replay: error: {message}" in err
    assert "Traceback" not in err


def test_top_score_ties_counts_distinct_answers_at_the_top():
    mask = np.array([[True, True, True], [True, True, False], [True, True, True]])
    log = Log(
        ids=["a", "b", "c"],
        mask=mask,
        scores=np.array([[1.0, 1.0, 0.5], [0.9, 0.9, 0.0], [0.2, 1.0, 1.0]]),
        answers=np.array([[0, 1, 1], [0, 0, -1], [0, 1, 1]], np.int32),
        correct=np.zeros((3, 3), bool),
    )
    # a: answers 0 and 1 share 1.0; b: one answer at the top; c: answer 1 twice.
    assert replay.top_score_ties(log) == pytest.approx(1 / 3)


def test_voting_in_chunks_of_orders_matches_all_at_once(monkeypatch):
    rep = replay.permute(small_log(5), 4, seed=0)
    config = replay.ReplayConfig(
        methods=("sc", "wmv", "esc", "asc"), window=(2,), threshold=(0.9,), fixed_n=(1, 5, K)
    )
    settings, whole, _ = replay.run_methods(rep, config, K, progress=False)
    monkeypatch.setattr(replay.methods, "_VOTE_TALLY_BUDGET", 1)  # one order per chunk
    chunked_settings, chunked, _ = replay.run_methods(rep, config, K, progress=False)
    assert settings == chunked_settings and len(settings) == 3 + 3 + 1 + 1
    for field in replay.Outcomes._fields:
        np.testing.assert_array_equal(getattr(whole, field), getattr(chunked, field))


def test_demo_runs_on_the_shipped_gpqa_log(tmp_path, capsys):
    out = tmp_path / "demo"
    flags = ["--permutations", "2", "--bootstrap", "200", "--no-progress"]
    assert cli.main(["replay", "--demo", "--out", str(out), *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 64 and summary["cost_unit"] == "samples"
    assert summary["prior"] == "eb"  # the GPQA log has no priors
    assert set(summary["methods"]) == set(replay.DEFAULT_METHODS)
    for figures in summary["methods"].values():
        low, high = figures["ci"]
        assert low <= figures["accuracy"] <= high and figures["mean_cost"] >= 1
    assert "optscalet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"methods": ("bon", "best")}, "methods: unknown method 'best'"),
        ({"alpha": (0.5, 1.0)}, "alpha must lie in (0, 1)"),
        ({"s_min": (1.2,)}, "s_min must lie in [0, 1]"),
        ({"max_n": 0}, "max_n must be >= 1"),
        ({"fixed_n": (3, 2)}, "fixed_n must be strictly increasing"),
        ({"window": ()}, "window must have at least one value"),
        ({"permutations": 0}, "permutations must be >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"tolerance": -0.1}, "tolerance must be finite and >= 0"),
        ({"split": "halves"}, "split: expected"),
        ({"protocol": "best"}, "protocol: expected"),
        ({"protocol": "released", "split": "kfold:3"}, "protocol released"),
    ],
)
def test_config_errors_name_the_field(fields, message):
    with pytest.raises(ValueError) as error:
        replay.ReplayConfig(**fields)
    assert str(error.value).startswith(message)


def test_log_dependent_errors_name_the_argument():
    log = small_log(6)
    with pytest.raises(ValueError, match=r"^fixed_n: the grid must end at max_n \(10\)"):
        replay.evaluate(log, replay.ReplayConfig(fixed_n=(1, 2)), progress=False)
    with pytest.raises(ValueError, match="^prior: sigma must be > 0"):
        config = replay.ReplayConfig(methods=("bon", "optscalet"), prior="0.5,-1")
        replay.evaluate(log, config, progress=False)
    with pytest.raises(ValueError, match="^methods must include bon"):
        replay.evaluate(log, replay.ReplayConfig(methods=("sc",)), progress=False)


def test_every_table_entry_names_config_grids_and_setting_fields():
    config = replay.ReplayConfig()
    for name, method in replay.METHOD_TABLE.items():
        assert set(method.needs) <= {"scores", "answers", "correct"}, name
        for field, grid in method.grids:
            parameters = (*replay.HYPER_PARAMETERS, replay.BUDGET_PARAMETER)
            assert field in parameters and hasattr(config, grid), name
        assert set(method.progress) <= {field for field, _ in method.grids}, name
    assert replay.METHODS == tuple(replay.METHOD_TABLE)


def test_a_method_is_one_table_entry(monkeypatch):
    def first_sample(inputs, grid):
        shape = (1, *inputs.replayed.mask.shape[:-1])
        inputs.advance(1)
        return replay.Decisions([{"n": 1}], np.ones(shape, int), np.zeros(shape, int))

    entry = replay.Method(needs=(), grids=(("n", "fixed_n"),), run=first_sample)
    monkeypatch.setitem(replay.METHOD_TABLE, "first", entry)
    config = replay.ReplayConfig(methods=("bon", "first"), permutations=2, bootstrap=50)
    result = replay.evaluate(small_log(7), config, progress=False)
    first = result.summary["methods"]["first"]
    assert first["setting"] == "n=1" and first["mean_samples"] == 1.0
    # Drawing one sample is fixed-N BoN at n = 1: the same accuracy and cost.
    bon_n1 = [r for r in result.rows if r["method"] == "bon" and r["n"] == 1]
    first_row = [r for r in result.rows if r["method"] == "first"]
    for bon_row, row in zip(bon_n1, first_row, strict=True):
        assert row["mean_cost"] == bon_row["mean_cost"]


def test_cli_validates_s_min_once(tmp_path, monkeypatch):
    from optscale_jax import validation

    seen = []
    original = validation.check_unit

    def counting(x, name):
        if np.any(np.isclose(np.asarray(x, float), 0.55)):
            seen.append(name)
        return original(x, name)

    monkeypatch.setattr(validation, "check_unit", counting)
    log_path = tmp_path / "log.jsonl"
    write_jsonl(small_log(8), log_path)
    flags = [*fast_flags(), "--s-min", "0.55", "--methods", "bon", "optscale0", "optscalet"]
    assert cli.main(["replay", str(log_path), "--out", str(tmp_path / "o"), *flags]) == 0
    assert seen == ["s_min"]
