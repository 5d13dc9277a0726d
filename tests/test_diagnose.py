"""`optscale diagnose` and `optscale plot diagnose`: files, their consistency, bad input.

The calibration of the goodness-of-fit test (true-law rejection ~5%) is
`tests/test_laws.py::test_gof_rejects_the_true_law_at_its_level`. One small diagnose run
(6 questions of at most 6 scores, the shape test_laws compiles its fits for; the truncated
normal only, as each law's bootstrap compiles for seconds; B = 19) is shared by the tests of
this module; the comparison of several laws is tested on made-up results.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from optscale_jax import datasets, laws
from optscale_jax.experiments import cli, diagnose_cli
from optscale_jax.figures.registry import DIAGNOSE_PIT_COLUMNS
from optscale_jax.io import read_csv, write_jsonl_records

LAWS = ("tn",)
BOOT = 19
SCORES = {
    "inner": [0.21, 0.35, 0.5, 0.62, 0.44, 0.3],
    "ends": [1.0, 0.0, 1.0, 0.7, 1.0, 0.55],
    "all-equal": [0.4] * 6,
    "all-one": [1.0] * 6,
    "short": [0.9, 0.8, 0.95],
    "wide": [0.05, 0.97, 0.1, 0.92, 0.5, 0.03],
}


def _main(argv: list[str]) -> tuple[int, str, str]:
    """cli.main's exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(output folder, stdout) of one diagnose run on the SCORES log."""
    root = tmp_path_factory.mktemp("diagnose")
    log = write_jsonl_records(
        [{"id": name, "scores": scores} for name, scores in SCORES.items()], root / "log.jsonl"
    )
    out = root / "out"
    argv = ["diagnose", str(log), "--out", str(out), "--laws", *LAWS, "--bootstrap", str(BOOT),
            "--seed", "3", "--no-progress"]  # fmt: skip
    code, stdout, stderr = _main(argv)
    assert code == 0, stderr
    return out, stdout


def test_csv_has_one_consistent_row_per_question_and_law(run):
    out, _ = run
    rows = read_csv(out / "diagnose.csv")
    assert list(rows[0]) == list(diagnose_cli.DIAGNOSE_COLUMNS)
    assert [(row["id"], row["law"]) for row in rows] == [(q, law) for q in SCORES for law in LAWS]
    for row in rows:
        values = {c: float(row[c]) for c in diagnose_cli.DIAGNOSE_COLUMNS[3:]}
        assert not any(math.isnan(v) for v in values.values()), row
        assert int(row["n"]) == len(SCORES[row["id"]])
        k = laws.LAWS[row["law"]].num_params
        assert values["aic"] == pytest.approx(2 * k - 2 * values["loglik"], rel=1e-12)
        assert 0 < values["gof_p"] <= 1 and round(values["gof_p"] * (BOOT + 1), 9) % 1 == 0
        assert 0 <= values["mass0"] <= 1 and 0 <= values["mass1"] <= 1
    by_key = {(row["id"], row["law"]): row for row in rows}
    # A continuous law cannot produce an exact 0 or 1 (written inf, not left empty); atoms can.
    assert by_key["ends", "tn"]["aic"] == "inf" and by_key["ends", "tn"]["loglik"] == "-inf"
    assert float(by_key["inner", "tn"]["aic"]) < math.inf


def test_summary_matches_the_csv_and_the_verdict_is_printed(run):
    out, stdout = run
    rows = read_csv(out / "diagnose.csv")
    summary = json.loads((out / "summary.json").read_text())
    aic = np.array([[float(r["aic"]) for r in rows if r["law"] == law] for law in LAWS])
    best = np.where(np.isfinite(aic.min(0)), aic.argmin(0), -1)
    for i, law in enumerate(LAWS):
        p = np.array([float(r["gof_p"]) for r in rows if r["law"] == law])
        assert summary["laws"][law]["rejected"] == pytest.approx(np.mean(p <= 0.05))
        assert summary["laws"][law]["best_aic"] == pytest.approx(np.mean(best == i))
        assert sum(summary["laws"][law]["fit_status"].values()) == len(SCORES)
        # all-equal scores: a documented degenerate fit
        assert summary["laws"][law]["fit_status"]["AT_BOUND"] >= 2
    assert summary["all_equal_ids"] == ["all-equal", "all-one"]
    assert summary["settings"] == {"laws": list(LAWS), "bootstrap": BOOT, "seed": 3,
                                   "level": 0.05, "format": "auto", "demo": False}  # fmt: skip
    assert summary["verdict"].startswith("the truncated normal is rejected for ")
    assert summary["verdict"] in stdout.splitlines()


def test_pit_file_feeds_the_plot(run, tmp_path):
    out, _ = run
    rows = read_csv(out / "pit.csv")
    assert list(rows[0]) == list(DIAGNOSE_PIT_COLUMNS)
    assert len(rows) == len(LAWS) * sum(len(s) for s in SCORES.values())
    assert all(0 <= float(row["pit"]) <= 1 for row in rows)
    code, stdout, stderr = _main(["plot", "diagnose", "--in", str(out), "--out", str(tmp_path),
                                  "--format", "png"])  # fmt: skip
    assert code == 0, stderr
    assert (tmp_path / "diagnose.png").stat().st_size > 0


def test_verdict_names_the_truncated_normal_and_the_best_aic():
    per_law = {"beta-atoms": {"rejected": 0.05, "best_aic": 0.71},
               "tn": {"rejected": 0.38, "best_aic": 0.29}}  # fmt: skip
    assert diagnose_cli.verdict(per_law) == (
        "the truncated normal is rejected for 38% of questions (beta-atoms 5%); "
        "beta-atoms has the best AIC for 71%"
    )
    no_aic = {"tn": {"rejected": 1.0, "best_aic": 0.0}, "beta": {"rejected": 1.0, "best_aic": 0.0}}
    assert diagnose_cli.verdict(no_aic).endswith(
        "; no law has a finite AIC (exact 0s or 1s need an atom law)"
    )


def _made_up(aic: list[float], p: list[float]) -> diagnose_cli.LawDiagnosis:
    q = len(aic)
    zeros = np.zeros(q)
    return diagnose_cli.LawDiagnosis(
        n=np.full(q, 4), loglik=-np.array(aic) / 2, aic=np.array(aic), gof_stat=zeros,
        gof_p=np.array(p), mass0=zeros, mass1=zeros, status=np.array([0, 1, 0, 3][:q]),
        pit=np.full((q, 4), 0.5),
    )  # fmt: skip


def test_law_summary_counts_rejections_best_aic_ties_and_statuses():
    inf = math.inf
    results = {
        "tn": _made_up([inf, 3.0, 5.0, inf], [0.01, 0.05, 0.5, 0.06]),
        "beta-atoms": _made_up([2.0, 3.0, 4.0, inf], [0.2, 0.3, 0.04, 1.0]),
    }
    # question 1: a tie (the law listed first wins); question 3: no finite AIC, no best law
    np.testing.assert_array_equal(diagnose_cli.best_aic(results), [1, 0, 1, -1])
    summary = diagnose_cli.law_summary(results)
    assert summary["tn"]["rejected"] == 0.5 and summary["tn"]["best_aic"] == 0.25
    assert summary["beta-atoms"]["rejected"] == 0.25 and summary["beta-atoms"]["best_aic"] == 0.5
    assert summary["tn"]["fit_status"] == {"CONVERGED": 2, "AT_BOUND": 1, "NO_DATA": 0,
                                           "MAX_STEPS": 1}  # fmt: skip
    rows = diagnose_cli.diagnose_rows(["a", "b", "c", "d"], results)
    assert [(r["id"], r["law"]) for r in rows][:3] == [
        ("a", "tn"),
        ("a", "beta-atoms"),
        ("b", "tn"),
    ]
    assert rows[0]["aic"] == "inf" and rows[0]["loglik"] == "-inf"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--laws", "tn", "gamma"], "--laws: unknown law 'gamma'"),
        (["--laws", "empirical"], "--laws: the empirical law has no likelihood"),
        (["--laws", "tn", "tn"], "--laws: a law is named twice"),
        (["--bootstrap", "0"], "--bootstrap must be an integer >= 1"),
        (["{votes}"], "amc23_votes32.jsonl: has no scores (a log for voting only)"),
        ([], "LOG is required (or --demo)"),
    ],
)
def test_bad_input_stops_with_an_error_naming_the_argument(argv, message, tmp_path):
    votes = str(datasets.data_path(datasets.AMC23_VOTES))
    argv = [arg.format(votes=votes) for arg in argv]
    code, _, stderr = _main(["diagnose", *argv, "--out", str(tmp_path / "o")])
    assert code == 2
    assert stderr.startswith("optscale diagnose: error: ") and message in stderr
    assert not (tmp_path / "o").exists()
