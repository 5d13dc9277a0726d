"""The Learn-then-Test simulation study: the guarantee holds, OptScale0's promise does not."""

import warnings

import numpy as np
import pytest

from optscale_jax.figures.plots import plot_figure
from optscale_jax.io import read_csv, write_csv
from optscale_jax.sim import calibration_study as study
from optscale_jax.sim import populations


@pytest.fixture(scope="module")
def small_population():
    return populations.resample(populations.math_train(), 150, seed=0)


@pytest.fixture(scope="module")
def rows(small_population):
    return study.calibration_study(
        small_population,
        rhos=(0.5,),
        families=(),
        n_cals=(60,),
        risks=("disagree", "regret"),
        epsilons=(0.1, 0.2),
        deltas=(0.1, 0.2),
        trials=300,
        paths=4,
        max_n=16,
        s_mins=(0.95, 0.98),
        alphas=(0.5, 0.9),
        seed=0,
    )


def test_violation_rate_is_at_most_delta_within_three_standard_errors(rows):
    ltt = [r for r in rows if r["method"].startswith("ltt-")]
    assert len(ltt) == 2 * 2 * 2 * 2  # methods x risks x epsilons x deltas
    for row in ltt:
        assert row["trials"] == 300 and row["n_cal"] == 60 and row["max_n"] == 16
        assert row["violation_rate"] <= row["delta"] + 3 * row["violation_se"] + 1e-12, row
        assert 1 <= row["mean_cost"] <= 16 and row["mean_risk"] <= 1
        assert set(study.CALIBRATION_COLUMNS) == set(row)
    # Something is certified below the full budget, so the guarantee is not vacuous.
    assert min(r["mean_cost"] for r in ltt) < 16


def test_nominal_rows_stand_beside_the_ltt_rows(rows):
    nominal = [r for r in rows if r["method"] == "optscale0-nominal"]
    assert [r["epsilon"] for r in nominal] == [0.5, pytest.approx(0.1)]
    for row in nominal:
        assert row["risk"] == study.NOMINAL_RISK and row["delta"] == 0.0 and row["n_cal"] == 0
        assert row["trials"] == 2 and row["violation_rate"] in (0.0, 0.5, 1.0)
    # Correlated samples (rho = 0.5): OptScale0 misses its alpha = 0.9 promise.
    assert nominal[1]["mean_risk"] > 0.1 and nominal[1]["violation_rate"] == 1.0


def test_the_study_is_seeded(small_population):
    kwargs = dict(rhos=(), families=("beta",), n_cals=(50,), risks=("accuracy-drop",),
                  epsilons=(0.2,), deltas=(0.1,), trials=20, paths=1, max_n=8,
                  s_mins=(0.9,), alphas=(0.9,), seed=3)  # fmt: skip
    first = study.calibration_study(small_population, **kwargs)
    assert first == study.calibration_study(small_population, **kwargs)
    assert {r["population"] for r in first} == {"math/beta"}


def test_figure_renders_without_warnings(rows, tmp_path):
    path = write_csv(rows, tmp_path / "calibration.csv", study.CALIBRATION_COLUMNS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (png,) = plot_figure("calibration-ltt", tmp_path, tmp_path / "out", ("png",))
        (again,) = plot_figure("calibration-ltt", path, tmp_path / "again", ("png",))
    assert png.read_bytes().startswith(b"\x89PNG") and png.read_bytes() == again.read_bytes()
    with pytest.raises(ValueError, match="^risk: 'accuracy-drop' not in"):
        plot_figure("calibration-ltt", path, tmp_path / "x", ("png",), risk="accuracy-drop")
    nominal_only = [r for r in read_csv(path) if r["method"] == "optscale0-nominal"]
    only = write_csv(nominal_only, tmp_path / "nominal.csv", study.CALIBRATION_COLUMNS)
    with pytest.raises(ValueError, match="no Learn-then-Test rows"):
        plot_figure("calibration-ltt", only, tmp_path / "y", ("png",))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"families": ("gamma",)}, "families: unknown family 'gamma'"),
        ({"rhos": (1.0,)}, "rho must lie in [0, 1)"),
        ({"rhos": (), "families": ()}, "rhos and families: give at least one truth"),
        ({"risks": ("loss",)}, "risks: unknown risk 'loss'"),
        ({"epsilons": (0.0,)}, "epsilons must lie in (0, 1)"),
        ({"deltas": (1.0,)}, "deltas must lie in (0, 1)"),
        ({"n_cals": (0,)}, "n_cals must be >= 1"),
        ({"trials": 0}, "trials must be >= 1"),
        ({"max_n": 1}, "max_n must be >= 2"),
        ({"s_mins": (1.5,)}, "s_min must lie in [0, 1]"),
    ],
)
def test_bad_input_names_the_argument(small_population, changes, message):
    with pytest.raises(ValueError) as error:
        study.calibration_study(small_population, **({"trials": 2, "paths": 1} | changes))
    assert str(error.value).startswith(message)


def test_nothing_is_certified_on_too_few_questions(small_population):
    # 20 calibration questions < 45 needed at (0.05, 0.1): always the full budget, cost max_n.
    (row, *_) = study.calibration_study(
        small_population, rhos=(0.0,), families=(), n_cals=(20,), risks=("disagree",),
        epsilons=(0.05,), deltas=(0.1,), trials=10, paths=1, max_n=8, s_mins=(0.9,),
        alphas=(0.9,),
    )  # fmt: skip
    assert row["certified_fraction"] == 0.0 and row["mean_cost"] == 8.0
    assert row["violation_rate"] == 0.0 and np.isfinite(row["violation_se"])
