"""Replay with Learn-then-Test selection: losses, orders, the guarantee block, the CLI, errors."""

import csv
import json

import numpy as np
import pytest

from optscale_jax import calibration, replay
from optscale_jax.experiments import cli
from optscale_jax.logs import Log, write_jsonl

Q, K = 60, 8


def ltt_log(seed=0, questions=Q, scores=True, answers=True, correct=True):
    """A seeded log: ragged questions, answer 0 is right, right answers score higher."""
    rng = np.random.default_rng(seed)
    mask = np.arange(K) < rng.integers(5, K + 1, questions)[:, None]
    right = rng.random((questions, K)) < rng.uniform(0.3, 0.95, questions)[:, None]
    codes = np.where(right, 0, rng.integers(1, 3, (questions, K)))
    values = np.clip(np.where(right, 0.75, 0.45) + rng.normal(0, 0.15, (questions, K)), 0, 1)
    return Log(
        ids=[f"q{i}" for i in range(questions)],
        mask=mask,
        scores=np.where(mask, np.round(values * 32) / 32, 0.0) if scores else None,
        answers=np.where(mask, codes, -1).astype(np.int32) if answers else None,
        correct=(mask & right) if correct else None,
        source="ltt",
    )


def small_config(**changes):
    grids = dict(
        s_min=(0.6, 0.8), alpha=(0.5, 0.9), min_samples=(1, 2), peek=(2,), window=(2, 3),
        threshold=(0.8, 0.95), permutations=3, bootstrap=100, prior="0.5,0.2",
    )  # fmt: skip
    return replay.ReplayConfig(**(grids | changes))


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- losses and orders ---------------------------------------------------------------------------


def test_losses_match_a_slow_reference_and_the_full_budget_loses_nothing():
    log = ltt_log(1)
    replayed = replay.permute(log, 3, seed=0)
    config = small_config(methods=("bon", "sc", "esc", "optscale0"))
    risks = tuple(calibration.RISKS)
    settings, out, _ = replay.run_methods(replayed, config, K, progress=False, risks=risks)
    # Every method's family holds its full budget n = max_n, whose loss is 0.
    for method in config.methods:
        full = settings.index(replay.full_budget_setting(method, K))
        for risk in risks:
            assert np.all(out.losses[risk][full] == 0), (method, risk)
    # Best-of-N at n = 3 against a per-question Python reference.
    row = settings.index(replay.Setting("bon", n=3))
    for q in range(Q):
        disagree, regret, drop = [], [], []
        for r in range(3):
            drawn = np.flatnonzero(replayed.mask[r, q])
            scores = replayed.scores[r, q, drawn]
            stop, full = int(np.argmax(scores[:3])), int(np.argmax(scores))
            disagree.append(replayed.answers[r, q, stop] != replayed.answers[r, q, full])
            regret.append(scores.max() - scores[:3].max())
            drop.append(
                max(0, int(replayed.correct[r, q, full]) - int(replayed.correct[r, q, stop]))
            )
        assert out.losses["disagree"][row, q] == pytest.approx(np.mean(disagree))
        assert out.losses["regret"][row, q] == pytest.approx(np.mean(regret))
        assert out.losses["accuracy-drop"][row, q] == pytest.approx(np.mean(drop))


def test_orders_put_the_full_budget_first_and_follow_the_method_rule():
    bon = [replay.Setting("bon", n=n) for n in (1, 4, 8, 2)]
    assert replay.ltt_order(bon, 8).tolist() == [2, 1, 3, 0]
    esc = [replay.Setting("esc", w=w) for w in (2, 5, 3)] + [replay.full_budget_setting("esc", 8)]
    assert replay.ltt_order(esc, 8).tolist() == [3, 1, 2, 0]
    cells = [(0.6, 0.5, 1), (0.8, 0.9, 2), (0.8, 0.5, 1)]
    optscale = [replay.Setting("optscale0", s_min=s, alpha=a, m=m) for s, a, m in cells]
    order = replay.ltt_order([*optscale, replay.full_budget_setting("optscale0", 8)], 8)
    expected = calibration.grid_order(*(np.array(c) for c in zip(*cells, strict=True)))
    assert order.tolist() == [3, *expected.tolist()]


def test_select_certified_falls_back_to_the_safest_setting():
    rng = np.random.default_rng(0)
    losses = (rng.random((3, 400)) < np.array([[0.0], [0.01], [0.5]])).astype(float)
    order = np.array([0, 1, 2])
    pick = replay.select_certified(losses, np.array([8.0, 4.0, 1.0]), order, 0.05, 0.1)
    assert pick == (1, True, pytest.approx(calibration.hb_p_value(losses[1].mean(), 400, 0.05)))
    few = replay.select_certified(losses[:, :20], np.array([8.0, 4.0, 1.0]), order, 0.05, 0.1)
    assert few.index == 0 and not few.certified  # 20 < 45 questions: nothing certifiable


# --- evaluate ------------------------------------------------------------------------------------


def test_ltt_replay_reports_risk_guarantee_and_certified_settings():
    log = ltt_log(2)
    config = small_config(select="ltt", risk="disagree", epsilon=0.2, delta=0.1)
    assert config.split == replay.LTT_DEFAULT_SPLIT
    result = replay.evaluate(log, config, progress=False)
    assert result.columns == replay.LTT_RESULT_COLUMNS
    for row in result.rows:
        assert row["risk_ci_low"] <= row["risk"] <= row["risk_ci_high"]
    summary = result.summary
    folds = int(replay.LTT_DEFAULT_SPLIT.split(":")[1])
    for method, entry in summary["methods"].items():
        guarantee = entry["guarantee"]
        assert set(guarantee) >= {"risk", "epsilon", "delta", "calibration_questions",
                                  "certified", "p_value"}  # fmt: skip
        assert guarantee["calibration_questions"] == Q - Q // folds
        assert len(guarantee["splits"]) == folds
        assert guarantee["certified"] == entry["qualified"], method
        if guarantee["certified"]:
            assert guarantee["p_value"] <= 0.1
        low, high = entry["realised_risk_ci"]
        assert low <= entry["realised_risk"] <= high
    deploy = summary["certified_settings"]
    assert deploy["calibration_questions"] == Q and deploy["max_n"] == K
    assert set(deploy["methods"]) == set(summary["methods"])
    assert deploy["methods"]["bon"]["certified"]  # epsilon 0.2 on 60 questions: some N is
    assert summary["ltt"]["min_calibration_questions"] == 11 and "note" not in summary["ltt"]


def test_too_few_questions_fall_back_to_max_n_and_say_so():
    config = small_config(select="ltt", split="dev-test", methods=("bon", "esc"))
    result = replay.evaluate(ltt_log(3), config, progress=False)  # 30 selection questions < 45
    assert "at least 45" in result.summary["ltt"]["note"]
    for method, entry in result.summary["methods"].items():
        assert not entry["guarantee"]["certified"] and entry["params"]["n"] == K, method
        assert "fell back to the full budget" in entry["selection"]
        assert entry["realised_risk"] == 0.0  # the full budget never disagrees with itself


def test_regret_and_accuracy_drop_select_too():
    for risk in ("regret", "accuracy-drop"):
        config = small_config(select="ltt", risk=risk, epsilon=0.2, methods=("bon", "optscale0"))
        summary = replay.evaluate(ltt_log(4), config, progress=False).summary
        assert summary["methods"]["bon"]["guarantee"]["risk"] == risk


# --- the command line ----------------------------------------------------------------------------


def test_cli_ltt_writes_columns_guarantee_and_certified_setting(tmp_path, capsys):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(ltt_log(5), log_path)
    out = tmp_path / "out"
    flags = ["--select", "ltt", "--risk", "disagree", "--epsilon", "0.2", "--delta", "0.1",
             "--methods", "bon", "sc", "optscale0", "--s-min", "0.6", "0.8", "--alpha", "0.5",
             "0.9", "--permutations", "2", "--bootstrap", "100", "--no-progress"]  # fmt: skip
    assert cli.main(["replay", str(log_path), "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert "epsilon" in printed and "disagree risk" in printed and "certified on all" in printed
    rows = read_rows(out / "results.csv")
    assert tuple(rows[0]) == replay.LTT_RESULT_COLUMNS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == replay.LTT_DEFAULT_SPLIT
    certified = json.loads((out / replay.CERTIFIED_SETTING_FILE).read_text())
    assert certified == summary["certified_settings"]
    for path in (out / "summary.json", out / replay.CERTIFIED_SETTING_FILE):
        setting = replay.read_certified_setting(path, "optscale0")
        assert setting["epsilon"] == 0.2 and setting["max_n"] == K
        values = replay.loop_values(setting)
        assert values["max_n"] == K and 1 <= values["min_samples"] <= K


def test_loop_values_of_a_fallback_draws_max_n():
    fallback = {"method": "optscale0", "setting": "n=8", "max_n": 8,
                "params": {"n": 8, "s_min": None, "alpha": None, "m": None}}  # fmt: skip
    assert replay.loop_values(fallback) == {"max_n": 8, "min_samples": 8}
    peek = {"method": "optscale0-peek", "setting": "k=2", "max_n": 8,
            "params": {"n": None, "s_min": 0.8, "alpha": 0.9, "m": None, "k": 2}}  # fmt: skip
    with pytest.raises(ValueError, match="^setting: optscale0-peek"):
        replay.loop_values(peek)


def test_read_certified_setting_errors_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="^setting: no such file"):
        replay.read_certified_setting(tmp_path / "none.json", "optscale0")
    plain = tmp_path / "summary.json"
    plain.write_text(json.dumps({"methods": {}}))
    with pytest.raises(ValueError, match="^setting: .* neither"):
        replay.read_certified_setting(plain, "optscale0")
    block = {"risk": "disagree", "epsilon": 0.05, "delta": 0.1, "calibration_questions": 64,
             "max_n": 8, "methods": {"bon": {}}}  # fmt: skip
    plain.write_text(json.dumps(block))
    with pytest.raises(ValueError, match="^setting: .* no setting for optscale0 .it has bon"):
        replay.read_certified_setting(plain, "optscale0")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must lie in (0, 1)"),
        ({"epsilon": 1.5}, "epsilon must lie in (0, 1)"),
        ({"delta": 1.0}, "delta must lie in (0, 1)"),
        ({"delta": -0.1}, "delta must lie in (0, 1)"),
        ({"risk": "loss"}, "risk: unknown risk 'loss'"),
        ({"select": "best"}, "select: expected accuracy or ltt"),
        ({"select": "ltt", "protocol": "released"}, "select ltt certifies"),
    ],
)
def test_config_errors_name_the_field(fields, message):
    with pytest.raises(ValueError) as error:
        replay.ReplayConfig(**fields)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("log_fields", "risk", "message"),
    [
        ({"answers": False}, "disagree", "risk: disagree needs answers, and the log has none"),
        ({"scores": False}, "regret", "risk: regret needs scores, and the log has none"),
        ({"correct": False}, "accuracy-drop", "risk: accuracy-drop needs labels"),
    ],
)
def test_a_risk_the_log_cannot_give_is_named(log_fields, risk, message):
    log = ltt_log(6, **log_fields)
    config = small_config(select="ltt", risk=risk, methods=("sc",) if "scores" in log_fields
                          else ("bon",))  # fmt: skip
    with pytest.raises(ValueError, match=f"^{message}"):
        replay.evaluate(log, config, progress=False)
    replayed_log = ltt_log(6)
    with pytest.raises(ValueError, match="^risks: unknown risk"):
        replay.run_methods(replay.permute(replayed_log, 1, 0), config, K, risks=("loss",))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epsilon", "1.5"], "--epsilon must lie in (0, 1)"),
        (["--delta", "0"], "--delta must lie in (0, 1)"),
        (["--protocol", "released"], "--select ltt certifies on the selection questions"),
    ],
)
def test_cli_errors_name_the_flag(tmp_path, capsys, flags, message):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(ltt_log(7), log_path)
    code = cli.main(["replay", str(log_path), "--out", str(tmp_path / "o"), "--select", "ltt",
                     *flags])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_names_risk_for_a_log_without_answers(tmp_path, capsys):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(ltt_log(8, answers=False), log_path)
    code = cli.main(["replay", str(log_path), "--out", str(tmp_path / "o"), "--select", "ltt",
                     "--methods", "bon", "--risk", "disagree"])  # fmt: skip
    assert code == 2
    assert "--risk: disagree needs answers" in capsys.readouterr().err


# --- logs without labels ------------------------------------------------------------------------


@pytest.mark.parametrize("risk", ["disagree", "regret"])
def test_an_unlabelled_log_calibrates_with_a_label_free_risk(risk):
    config = small_config(select="ltt", risk=risk, epsilon=0.2, methods=("bon", "esc", "optscale0"))
    result = replay.evaluate(ltt_log(10, correct=False), config, progress=False)
    summary = result.summary
    assert summary["labels"] is False and "no labels" in summary["labels_note"]
    for method, entry in summary["methods"].items():
        assert np.isnan(entry["accuracy"]) and entry["saving"] is None, method
        assert np.isfinite(entry["realised_risk"]) and entry["mean_cost"] >= 1, method
        assert entry["guarantee"]["risk"] == risk
    assert summary["certified_settings"]["methods"]["bon"]["certified"]
    assert all(np.isnan(row["accuracy"]) for row in result.rows)
    assert all(np.isfinite(row["risk"]) for row in result.rows)
    assert len(result.per_question) == 3 * Q  # every question held out once
    assert all(np.isnan(row["correct"]) for row in result.per_question)


def test_an_unlabelled_log_names_select_and_risk():
    log = ltt_log(11, correct=False)
    with pytest.raises(ValueError, match="^select: the log has no labels.*select='ltt'"):
        replay.evaluate(log, small_config(methods=("bon", "sc")), progress=False)
    with pytest.raises(ValueError, match="^risk: accuracy-drop needs labels"):
        config = small_config(select="ltt", risk="accuracy-drop", methods=("bon",))
        replay.evaluate(log, config, progress=False)
    # The oracle reads labels: skipped when not asked for, an error naming methods when asked.
    config = small_config(select="ltt", methods=("bon", "oracle"))
    with pytest.raises(ValueError, match="^methods: oracle needs"):
        replay.evaluate(log, config, explicit_methods=True, progress=False)


def test_cli_replays_an_unlabelled_log(tmp_path, capsys):
    log_path = tmp_path / "log.jsonl"
    write_jsonl(ltt_log(12, correct=False), log_path)
    out = tmp_path / "out"
    flags = ["--s-min", "0.6", "0.8", "--alpha", "0.5", "0.9", "--permutations", "2",
             "--bootstrap", "50", "--no-progress"]  # fmt: skip
    ltt = ["--select", "ltt", "--risk", "disagree", "--epsilon", "0.2", "--methods", "bon", "sc"]
    assert cli.main(["replay", str(log_path), "--out", str(out), *flags, *ltt]) == 0
    printed = capsys.readouterr().out
    assert "no labels" in printed and "certified on all" in printed and "n/a" in printed
    assert all(row["accuracy"] == "" for row in read_rows(out / "results.csv"))
    assert all(row["correct"] == "" for row in read_rows(out / "per_question.csv"))
    assert json.loads((out / replay.CERTIFIED_SETTING_FILE).read_text())["methods"]["bon"]
    report = (out / "report.md").read_text()
    assert "no pareto figure" in report and "](samples.png)" in report
    assert not (out / "pareto.png").exists()
    code = cli.main(["replay", str(log_path), "--out", str(tmp_path / "o"), *flags])
    assert code == 2
    assert "optscale replay: error: --select: the log has no labels" in capsys.readouterr().err


# --- optscale sample --setting -------------------------------------------------------------------


class _FakeSampler:
    """Answers 42 every time; tokens 5 each."""

    def generate(self, prompts, counts, seeds):
        return [[("so \\boxed{42}", 5)] * count for count in counts]


class _FakeVerifier:
    """Seeded scores in [0, 1]."""

    def __init__(self):
        self.calls = self.inputs = self.truncated = 0
        self.rng = np.random.default_rng(0)

    def score(self, questions, texts):
        self.calls += 1
        self.inputs += len(texts)
        return self.rng.uniform(0.3, 1.0, len(texts)).tolist()


def test_sample_runs_with_the_certified_setting_and_records_it(tmp_path, monkeypatch, capsys):
    from optscale_jax.experiments import sample_cli
    from optscale_jax.io import write_jsonl_records
    from optscale_jax.live import models, verifiers

    log_path = tmp_path / "log.jsonl"
    write_jsonl(ltt_log(9), log_path)
    replay_out = tmp_path / "replay"
    flags = ["--select", "ltt", "--epsilon", "0.2", "--methods", "bon", "optscale0",
             "--permutations", "2", "--bootstrap", "50", "--no-progress"]  # fmt: skip
    assert cli.main(["replay", str(log_path), "--out", str(replay_out), *flags]) == 0
    certificate = replay_out / replay.CERTIFIED_SETTING_FILE
    expected = replay.loop_values(replay.read_certified_setting(certificate, "optscale0"))

    monkeypatch.setattr(models, "offline_environment", lambda: None)
    monkeypatch.setattr(models, "resolve_model", lambda spec: tmp_path)
    monkeypatch.setattr(sample_cli, "build_sampler", lambda args, path: _FakeSampler())
    monkeypatch.setattr(verifiers, "build_verifier", lambda spec, **options: _FakeVerifier())
    prompts = write_jsonl_records(
        [{"id": "a", "question": "6 x 7?", "answer": "42"}, {"id": "b", "question": "40 + 2?"}],
        tmp_path / "prompts.jsonl",
    )
    summary_path = tmp_path / "run.json"
    sample = ["sample", "--model", "m", "--verifier", "judge:m", "--prompts", str(prompts),
              "--max-n", "3", "--s-min", "0.99", "--summary", str(summary_path)]  # fmt: skip
    capsys.readouterr()
    run_out = str(tmp_path / "run.jsonl")
    assert cli.main([*sample, "--out", run_out, "--setting", str(certificate)]) == 0
    assert "setting: optscale0 " in capsys.readouterr().out
    summary = json.loads(summary_path.read_text())
    assert summary["max_n"] == expected["max_n"] == K  # the file's cap, not --max-n 3
    assert summary["setting"]["method"] == "optscale0"
    assert summary["setting"]["epsilon"] == 0.2 and summary["setting"]["file"] == str(certificate)
    assert all(n >= expected["min_samples"] for n in summary["samples_per_question"].values())

    not_a_certificate = tmp_path / "plain.json"
    not_a_certificate.write_text("{}")
    again = ["--out", str(tmp_path / "again.jsonl"), "--setting", str(not_a_certificate)]
    assert cli.main([*sample, *again]) == 2
    assert "optscale sample: error: --setting: " in capsys.readouterr().err
