"""The budget study (`optscale simulate budget`) and the posterior-averaged allocation gains."""

import json

import jax
import numpy as np
import pytest

from optscale_jax import allocation, truncnorm
from optscale_jax.experiments.cli import main
from optscale_jax.io import read_csv
from optscale_jax.sim import budget_study


@pytest.mark.parametrize("name", list(budget_study.POPULATIONS))
def test_true_parameter_allocation_beats_uniform_in_expectation(name):
    """One wave planned before any sample, in expectation (sum_q 1 - F_q^c_q), is at or
    above uniform: greedy is optimal among allocations fixed in advance. (It is not above
    the elimination rule, which adapts: on math at budget 2, 0.537 against 0.572 in its
    large-Q limit; the waves adapt too, see the simulated comparison below.)"""
    truth = budget_study.POPULATIONS[name](300, 0)
    f = np.asarray(truncnorm.cdf(truth.s_min, truth.mu, truth.sigma), np.float64)
    for budget in budget_study.DEFAULT_BUDGETS:
        gains = allocation.reach_gains(truth.mu, truth.sigma, -np.inf, truth.s_min, 64)
        counts = np.asarray(allocation.allocate(gains, budget * f.shape[0]))
        assert np.mean(1 - f**counts) >= np.mean(1 - f**budget) - 1e-12, (name, budget)


def test_matched_law_has_the_true_f_at_s_min():
    truth = budget_study.POPULATIONS["beta"](50, 1)
    tn = np.asarray(truncnorm.logcdf(truth.s_min, truth.mu, truth.sigma))
    np.testing.assert_allclose(tn, np.asarray(truth.law.log_cdf(truth.s_min)), rtol=1e-8)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    argv = ["simulate", "budget", "--populations", "grid", "--budgets", "2", "4", "8",
            "--questions", "120", "--orders", "8", "--samples", "32", "--seed", "3",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_simulate_budget_writes_the_table_and_its_config(small_study):
    rows = read_csv(small_study / "budget.csv", required=budget_study.BUDGET_COLUMNS)
    assert list(rows[0]) == list(budget_study.BUDGET_COLUMNS)
    assert {(r["budget"], r["method"]) for r in rows} == {
        (b, m) for b in ("2", "4", "8") for m in budget_study.METHODS
    }
    record = json.loads((small_study / "budget.json").read_text())
    assert record["config"]["seed"] == 3 and record["config"]["populations"] == ["grid"]
    assert all(0 < row["alpha"] < 1 for row in record["rows"] if row["method"] == "optscale0")
    for row in rows:
        budget, spent = float(row["budget"]), float(row["mean_samples"])
        assert 0 <= float(row["reach_rate"]) <= 1 and float(row["reach_se"]) >= 0
        if row["method"] != "optscale0":
            assert spent <= budget + 1e-9
        else:  # alpha is tuned on other scores, and no alpha spends under ~4 samples on the grid
            assert spent >= 1.0


def test_true_parameter_allocation_at_or_above_every_baseline_on_simulated_scores(small_study):
    rows = read_csv(small_study / "budget.csv")
    by = {(r["budget"], r["method"]): r for r in rows}
    for budget in ("2", "4", "8"):
        best = by[(budget, "allocation-true-params")]
        for method in ("uniform", "elimination", "optscale0"):
            other = by[(budget, method)]
            slack = 2 * np.hypot(float(best["reach_se"]), float(other["reach_se"]))
            assert float(best["reach_rate"]) >= float(other["reach_rate"]) - slack, (budget, method)


def test_budget_study_names_bad_arguments():
    with pytest.raises(ValueError, match="populations: unknown 'nope'"):
        budget_study.budget_study(["nope"])
    with pytest.raises(ValueError, match="budgets must be"):
        budget_study.budget_study(["grid"], (1,))


def _state(scores):
    return allocation.init(np.asarray(scores, np.float64))


def test_laplace_gains_are_concave_and_approach_the_map_plug_in_with_many_samples():
    mu = np.random.default_rng(0).uniform(0.3, 0.9, 40)
    key = jax.random.PRNGKey(0)
    scores = np.asarray(truncnorm.sample(key, mu[:, None], 0.15, shape=(40, 3)), np.float64)
    state = _state(scores)
    gains = np.asarray(allocation.marginal_gains(state, "reach", 0.8, 16, posterior="laplace"))
    assert np.all(gains >= 0) and np.all(np.diff(gains, axis=1) <= 1e-15)
    best = np.asarray(allocation.marginal_gains(state, "best", 0.8, 8, posterior="laplace"))
    assert np.all(best >= 0) and np.all(np.diff(best, axis=1) <= 1e-12)
    # Posterior uncertainty only fattens a question's tails: its first reach gain, the
    # probability a new sample reaches s_min, is above the MAP plug-in's where that is tiny.
    plug_in = np.asarray(allocation.marginal_gains(state, "reach", 0.8, 16, posterior="map"))
    tiny = (plug_in[:, 0] < 1e-3) & (np.asarray(state.best) < 0.8)
    assert np.all(gains[tiny, 0] >= plug_in[tiny, 0])
    many = np.asarray(truncnorm.sample(key, mu[:, None], 0.15, shape=(40, 4000)), np.float64)
    state = _state(many)
    state = state._replace(best=np.full(40, -np.inf))
    laplace = np.asarray(allocation.marginal_gains(state, "reach", 0.8, 4, posterior="laplace"))
    plug_in = np.asarray(allocation.marginal_gains(state, "reach", 0.8, 4, posterior="map"))
    np.testing.assert_allclose(laplace, plug_in, atol=0.01)


def test_unknown_posterior_is_named():
    state = _state([[0.2, 0.4], [0.5, 0.9]])
    with pytest.raises(ValueError, match="posterior: unknown posterior 'x'"):
        allocation.marginal_gains(state, posterior="x")
    with pytest.raises(ValueError, match="posterior: unknown posterior 'x'"):
        allocation.replay_allocation(np.full((2, 4), 0.5), np.ones((2, 4), bool), 2, posterior="x")


def test_budget_figure_renders_one_panel_per_population(small_study, tmp_path):
    from optscale_jax.figures import plots

    paths = plots.plot_figure("budget", small_study, tmp_path, ("png",))
    assert [p.name for p in paths] == ["budget.png"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
