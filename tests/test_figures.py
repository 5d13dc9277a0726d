"""Tests of the figures: rendering, byte-identical reruns, column checks, the CLI, the study."""

from __future__ import annotations

import argparse
import pathlib
import warnings

import jax
import numpy as np
import pytest

from optscale_jax.figures import plots, style
from optscale_jax.io import read_csv, write_csv

RESULTS_COLUMNS = [
    "method", "split", "setting", "max_n", "n", "s_min", "alpha", "m", "w", "threshold", "k",
    "prior", "accuracy", "ci_low", "ci_high", "mean_samples", "mean_cost", "cost_ci_low",
    "cost_ci_high", "cost_unit", "selected",
]  # fmt: skip


def _results_rows(seed: int = 0) -> list[dict]:
    """A small replay-like results table: fixed-N BoN over n, a grid per adaptive method."""
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("dev", "test"):
        for n in (1, 2, 4, 8, 16, 32, 64):
            accuracy = 0.45 + 0.2 * (1 - np.exp(-n / 8))
            rows.append({"method": "bon", "split": split, "setting": f"n={n}", "max_n": 64, "n": n,
                         "accuracy": accuracy, "ci_low": accuracy - 0.05, "ci_high": accuracy + 0.05,
                         "mean_samples": n, "mean_cost": 700.0 * n, "cost_ci_low": 690.0 * n,
                         "cost_ci_high": 710.0 * n, "cost_unit": "tokens", "selected": split == "test" and n == 32})  # fmt: skip
        for method in ("optscale0", "optscalet", "self_consistency"):
            for i, (s_min, alpha) in enumerate([(0.6, 0.9), (0.8, 0.9), (0.9, 0.95), (0.95, 0.99)]):
                samples = 2.0 + 6 * i + rng.uniform(0, 2)
                accuracy = 0.5 + 0.04 * i + rng.uniform(0, 0.03)
                rows.append({"method": method, "split": split, "setting": f"cell{i}", "max_n": 64,
                             "s_min": s_min, "alpha": alpha, "accuracy": accuracy,
                             "ci_low": accuracy - 0.06, "ci_high": accuracy + 0.06,
                             "mean_samples": samples, "mean_cost": 700 * samples,
                             "cost_ci_low": 650 * samples, "cost_ci_high": 760 * samples,
                             "cost_unit": "tokens", "selected": split == "test" and i == 2})  # fmt: skip
        rows.append({"method": "oracle", "split": split, "setting": "n=64", "max_n": 64, "n": 64,
                     "accuracy": 0.9, "ci_low": 0.85, "ci_high": 0.95, "mean_samples": 64,
                     "mean_cost": 700.0 * 64, "cost_unit": "tokens", "selected": False})  # fmt: skip
    return rows


def _per_question_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for method, draw in (
        ("bon", lambda: 32.0),
        ("optscale0", lambda: float(rng.integers(1, 65))),
        ("optscalet", lambda: float(min(rng.geometric(0.1), 64))),
    ):
        for q in range(30):
            samples = draw()
            rows.append({"method": method, "split": "test", "question": f"q{q}", "samples": samples,
                         "cost": 700 * samples, "correct": float(rng.uniform() < 0.6)})  # fmt: skip
    return rows


def _coverage_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for rho in (0.0, 0.5):
        for alpha in (0.5, 0.8, 0.9, 0.95, 0.99):
            for mu, sigma in ((0.5, 0.2), (0.3, 0.3)):
                nominal = min(1.0, alpha + rng.uniform(0, 0.03))
                coverage = nominal - rho * 0.2 * rng.uniform(0.5, 1)
                rows.append({"family": "truncnorm", "rho": rho, "mu": mu, "sigma": sigma, "s_min": 0.8,
                             "alpha": alpha, "n_star": 5, "coverage": coverage, "coverage_se": 0.01,
                             "trials": 2000, "nominal": nominal, "capped": False})  # fmt: skip
    # A cell whose N* hit the simulator's cap: left out of the figure.
    rows.append({**rows[0], "mu": 0.1, "n_star": 10**6, "coverage": 0.001, "capped": True})
    return rows


def _estimator_rows() -> list[dict]:
    rows = []
    for estimator, noise in (("mle", None), ("map", 0.05), ("map", 0.2)):
        for n in (1, 2, 4, 8, 16, 32):
            for param, scale in (("mu", 0.3), ("sigma", 0.15)):
                shrink = 1.0 if noise is None else noise / (noise + 0.05)
                rmse = scale * shrink / np.sqrt(n)
                rows.append({"estimator": estimator, "prior_noise": noise, "n": n, "param": param,
                             "rmse": rmse, "rmse_se": 0.05 * rmse, "bias": -0.3 * rmse,
                             "bias_se": 0.05 * rmse, "at_bound": 0.0, "questions": 200})  # fmt: skip
    return rows


def _calibration_ltt_rows() -> list[dict]:
    rows = []
    for population, rho in (("math/truncnorm", 0.0), ("math/truncnorm", 0.5)):
        for method in ("ltt-bon", "ltt-optscale0"):
            for epsilon in (0.05, 0.1):
                for delta in (0.05, 0.1):
                    rows.append({"population": population, "rho": rho, "n_cal": 200,
                                 "method": method, "risk": "disagree", "epsilon": epsilon,
                                 "delta": delta, "violation_rate": delta / 2,
                                 "violation_se": 0.01, "mean_cost": 400 * epsilon})  # fmt: skip
        rows.append({"population": population, "rho": rho, "n_cal": 0,
                     "method": "optscale0-nominal", "risk": "miss", "epsilon": 0.1, "delta": 0.0,
                     "violation_rate": 0.4, "violation_se": 0.0, "mean_cost": 8.0})  # fmt: skip
    return rows


def _budget_rows() -> list[dict]:
    methods = ("uniform", "elimination", "allocation", "allocation-true-params")
    return [
        {"population": population, "budget": budget, "method": method,
         "mean_samples": budget, "reach_rate": 1 - 0.5 / (budget + rank), "reach_se": 0.01}
        for population in ("math", "grid")
        for budget in (2, 4, 8)
        for rank, method in enumerate(methods)
    ]  # fmt: skip


def _pit_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"id": f"q{q}", "law": law, "sample": j, "score": rng.uniform(), "pit": rng.uniform()}
        for law in ("tn", "beta-atoms")
        for q in range(5)
        for j in range(8)
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("inputs")
    return {
        "pareto": write_csv(_results_rows(), root / "results.csv", columns=RESULTS_COLUMNS),
        "samples": write_csv(_per_question_rows(), root / "per_question.csv"),
        "calibration": write_csv(_coverage_rows(), root / "coverage.csv"),
        "estimator": write_csv(_estimator_rows(), root / "estimator.csv"),
        "calibration-ltt": write_csv(_calibration_ltt_rows(), root / "calibration.csv"),
        "budget": write_csv(_budget_rows(), root / "budget.csv"),
        "diagnose": write_csv(_pit_rows(), root / "pit.csv"),
    }


def _render(
    name: str, inputs: dict[str, pathlib.Path], out_dir: pathlib.Path
) -> list[pathlib.Path]:
    formats = ("pdf", "png")
    if name == "nstar":
        return plots.plot_figure("nstar", None, out_dir, formats, resolution=41)
    return plots.plot_figure(name, inputs[name], out_dir, formats)


PLOTS = [
    "pareto",
    "samples",
    "calibration",
    "estimator",
    "nstar",
    "calibration-ltt",
    "budget",
    "diagnose",
]


@pytest.mark.parametrize("name", PLOTS)
def test_plot_renders_both_formats_without_warnings_and_reproducibly(name, inputs, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = _render(name, inputs, tmp_path / "first")
        second = _render(name, inputs, tmp_path / "second")
    assert [p.name for p in first] == [f"{name}.pdf", f"{name}.png"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two runs"
    pdf, png = (p.read_bytes() for p in first)
    assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf
    assert png.startswith(b"\x89PNG")
    # 300 dpi: the pixel width is the figure width in inches x 300.
    width = int.from_bytes(png[16:20], "big")
    assert width in (
        round(style.SINGLE_COLUMN_WIDTH * style.DPI),
        round(style.DOUBLE_COLUMN_WIDTH * style.DPI),
    )


REQUIRED = {name: figure.columns for name, figure in plots.FIGURES.items() if figure.columns}


@pytest.mark.parametrize(
    "name,column",
    [(name, column) for name, columns in REQUIRED.items() for column in columns[-2:]],
)
def test_missing_column_is_named(name, column, inputs, tmp_path):
    rows = read_csv(inputs[name])
    kept = [c for c in rows[0] if c != column]
    broken = write_csv(rows, tmp_path / inputs[name].name, columns=kept)
    with pytest.raises(ValueError, match=rf"{broken.name}.*missing column\(s\) {column}"):
        _render(name, {name: broken}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_cell_names_file_line_and_column(inputs, tmp_path):
    rows = read_csv(inputs["pareto"])
    rows[3]["accuracy"] = "high"
    broken = write_csv(rows, tmp_path / "results.csv")
    with pytest.raises(ValueError, match=r"results.csv, line 5: column accuracy"):
        plots.plot_figure("pareto", broken, tmp_path / "out", ("png",))


def test_directory_input_resolves_default_file_and_reports_absence(inputs, tmp_path):
    paths = plots.plot_figure("samples", inputs["samples"].parent, tmp_path, ("png",))
    assert paths == [tmp_path / "samples.png"] and paths[0].stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="in_path: no such file: .*per_question.csv"):
        plots.plot_figure("samples", tmp_path, tmp_path, ("png",))


def test_calibration_with_only_capped_cells_says_so(inputs, tmp_path):
    rows = [dict(row, capped="True") for row in read_csv(inputs["calibration"])]
    capped = write_csv(rows, tmp_path / "coverage.csv")
    with pytest.raises(ValueError, match="capped"):
        plots.plot_figure("calibration", capped, tmp_path, ("png",))


def test_unknown_split_is_named(inputs, tmp_path):
    with pytest.raises(ValueError, match="^split: 'holdout'"):
        plots.plot_figure("pareto", inputs["pareto"], tmp_path, ("png",), split="holdout")


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        size = int(rng.integers(1, 12))
        # Few distinct values so that ties in cost and accuracy are common.
        cost = rng.integers(1, 5, size).astype(float)
        accuracy = rng.integers(0, 4, size).astype(float)
        expected = set()
        for i in range(size):
            dominated = any(
                (cost[j] <= cost[i] and accuracy[j] > accuracy[i])
                or (cost[j] < cost[i] and accuracy[j] >= accuracy[i])
                for j in range(size)
            )
            if not dominated:
                expected.add((cost[i], accuracy[i]))
        front = plots.pareto_front(cost, accuracy)
        assert {(cost[i], accuracy[i]) for i in front} == expected
        assert np.all(np.diff(cost[front]) > 0)


def test_method_colours_are_fixed_and_distinct():
    known = ["optscale0", "optscale0_peek", "optscalet", "bon", "self_consistency",
             "weighted_majority", "esc", "adaptive_consistency", "oracle"]  # fmt: skip
    colours = [style.method_style(m).color for m in known]
    assert len(set(colours)) == len(known)
    assert style.method_style("OptScale0").color == style.method_style("optscale0").color
    assert style.method_style("Best-of-N") == style.method_style("bon")
    unknown = style.method_style("my_new_rule")
    assert unknown == style.method_style("my_new_rule") and unknown.label == "my_new_rule"


def test_parse_formats_names_the_option():
    assert style.parse_formats("PDF, png,pdf") == ("pdf", "png")
    with pytest.raises(ValueError, match="^format: "):
        style.parse_formats("pdf,jpg")


def test_cli_plot_writes_files_and_reports_missing_column(inputs, tmp_path, capsys):
    from optscale_jax.experiments.cli import main

    assert main(["plot", "calibration", "--in", str(inputs["calibration"].parent),
                 "--out", str(tmp_path), "--format", "png"]) == 0  # fmt: skip
    assert (tmp_path / "calibration.png").read_bytes().startswith(b"\x89PNG")
    rows = read_csv(inputs["estimator"])
    broken = write_csv(
        rows, tmp_path / "bad" / "estimator.csv", columns=[c for c in rows[0] if c != "rmse"]
    )
    assert main(["plot", "estimator", "--in", str(broken), "--out", str(tmp_path)]) == 2
    assert "missing column(s) rmse" in capsys.readouterr().err
    assert main(["plot", "nstar", "--out", str(tmp_path), "--alpha", "1.5"]) == 2
    assert "alpha" in capsys.readouterr().err


def test_estimator_study_rows_and_the_prior_helps():
    from optscale_jax.sim.estimator_study import COLUMNS, estimator_study

    kwargs = dict(questions=300, ns=(1, 4, 32), prior_noises=(0.0, 0.3), prior_scale=(0.05, 0.05))
    rows = estimator_study(seed=1, **kwargs)
    # Same numbers whatever the process-wide x64 flag (replay and simulate turn it on).
    with jax.enable_x64(False):
        assert rows == estimator_study(seed=1, **kwargs)
    assert len(rows) == 3 * 3 * 2 and all(set(row) == set(COLUMNS) for row in rows)
    table = {(r["estimator"], r["prior_noise"], r["n"], r["param"]): r for r in rows}
    # n = 1: every fit sits on sigma's lower bound (the core's documented convention).
    assert table[("mle", None, 1, "sigma")]["at_bound"] == 1.0
    for param in ("mu", "sigma"):
        # More samples help the MLE; a prior centred on the truth beats a noisy one and the MLE.
        assert table[("mle", None, 32, param)]["rmse"] < table[("mle", None, 4, param)]["rmse"]
        exact, noisy = table[("map", 0.0, 4, param)], table[("map", 0.3, 4, param)]
        assert (
            exact["rmse"] < noisy["rmse"] and exact["rmse"] < table[("mle", None, 4, param)]["rmse"]
        )
        assert all(r["rmse"] >= 0 and r["rmse_se"] >= 0 for r in rows)
    with pytest.raises(ValueError, match="ns"):
        estimator_study(questions=10, ns=(0, 2))


def test_nstar_values_do_not_depend_on_the_x64_flag():
    mu, sigma = np.linspace(0.0, 1.0, 41)[None, :], np.geomspace(0.02, 0.5, 41)[:, None]
    with jax.enable_x64(False):
        without = plots.optimal_n_numpy(mu, sigma, 0.8, 0.9, 4096)
    with_x64 = plots.optimal_n_numpy(mu, sigma, 0.8, 0.9, 4096)
    np.testing.assert_array_equal(without, with_x64)
    assert with_x64.min() >= 1 and with_x64.max() <= 4096


def test_figure_set_command_rejects_a_bad_format(capsys):
    from optscale_jax.experiments.cli import main

    assert main(["figures", "--format", "jpg", "--out", "unused"]) == 2
    assert "optscale figures: error: --format: expected" in capsys.readouterr().err


def test_plot_figure_names_the_argument_that_does_not_fit(inputs, tmp_path):
    with pytest.raises(ValueError, match="^kind: unknown figure 'bars'"):
        plots.plot_figure("bars", None, tmp_path)
    with pytest.raises(ValueError, match="^in_path: the pareto figure reads results.csv"):
        plots.plot_figure("pareto", None, tmp_path)
    with pytest.raises(ValueError, match="^in_path: the nstar figure reads no file"):
        plots.plot_figure("nstar", inputs["pareto"], tmp_path)
    assert not list(tmp_path.iterdir())


def test_every_figure_of_the_table_is_an_optscale_plot_subcommand():
    from optscale_jax.experiments import plot_cli

    parser = argparse.ArgumentParser()
    plot_cli.configure(parser)
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(subparsers.choices) == list(plots.FIGURES)
    for kind, figure in plots.FIGURES.items():
        assert callable(plots.draw_function(kind))
        takes_input = any("--in" in a.option_strings for a in subparsers.choices[kind]._actions)
        assert takes_input == (figure.input_file is not None)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["plot", "pareto", "--in", "{pareto}", "--split", "holdout"], "--split: 'holdout' not in"),
        (["plot", "samples", "--in", "{missing}"], "--in: no such file: "),
        (["plot", "nstar", "--format", "jpg"], "--format: expected a comma-separated subset"),
        (["plot", "nstar", "--s-mins", "0.5,x"], "--s-mins: expected comma-separated numbers"),
        (["plot", "nstar", "--s-min", "2"], "--s-min must lie in"),
        (["plot", "nstar", "--sigma", "0"], "--sigma: must be > 0, got 0.0"),
        (["plot", "nstar", "--max-n", "0"], "--max-n must be >= 1"),
    ],
)
def test_cli_errors_name_the_flag(argv, message, inputs, tmp_path, capsys):
    from optscale_jax.experiments.cli import main

    paths = {"pareto": inputs["pareto"], "missing": tmp_path / "missing"}
    argv = [arg.format(**paths) for arg in argv] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert f"optscale plot: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
