"""Studies, populations, synthetic logs and the `optscale simulate` command."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from optscale_jax import FitStatus, confidence, policies
from optscale_jax.experiments.cli import main
from optscale_jax.logs import read_log
from optscale_jax.sim import laws, populations, studies
from optscale_jax.sim.logs import synthetic_log

Z = 4.5  # Monte Carlo tolerance in standard errors (seeded: reproducible)


def test_iid_coverage_of_n_star_matches_closed_form_at_a_million_trials():
    rows = studies.coverage_study(
        [0.4, 0.6, 0.9], [0.15, 0.25, 0.05], [0.8], [0.9, 0.99], trials=10**6, seed=3
    )
    assert len(rows) == 6
    gaps = []
    for row in rows:
        assert row["trials"] == 10**6
        assert not row["capped"]
        # The guarantee: N* reaches alpha, and the simulation agrees with 1 - F^N*.
        assert row["nominal"] >= row["alpha"]
        assert abs(row["coverage"] - row["nominal"]) <= Z * row["coverage_se"]
        # N* is minimal: one sample fewer falls below alpha (closed form and simulated).
        assert row["n_star_minus_one_nominal"] < row["alpha"]
        less, less_se = row["n_star_minus_one_coverage"], row["n_star_minus_one_coverage_se"]
        assert abs(less - row["n_star_minus_one_nominal"]) <= Z * less_se
        if row["alpha"] - row["n_star_minus_one_nominal"] > 2 * Z * less_se:
            gaps.append(row)
            assert less < row["alpha"]
    assert gaps, "no cell where N* - 1 is far enough below alpha to be resolved"


def test_coverage_agrees_with_draw_n_then_max_under_the_copula():
    mu, sigma, s_min, alpha, rho = 0.5, 0.15, 0.8, 0.9, 0.5
    (row,) = studies.coverage_study([mu], [sigma], [s_min], [alpha], [rho], trials=40_000, seed=1)
    law = laws.TruncNormal(jnp.array([mu]), jnp.array([sigma]))
    full = laws.sample_max_full(law, jax.random.key(2), row["n_star"], (20_000, 1), rho=rho)
    p_full = float(np.mean(np.asarray(full) >= s_min))
    se = np.hypot(row["coverage_se"], np.sqrt(p_full * (1 - p_full) / 20_000))
    assert abs(row["coverage"] - p_full) <= Z * se
    # Correlated samples reach s_min less often than the i.i.d. promise.
    assert row["coverage"] < row["nominal"] - Z * row["coverage_se"]


def test_moment_match_recovers_truncated_normal_parameters():
    mu = np.array([0.5, 0.8, 0.95, 0.3, 1.2])
    sigma = np.array([0.2, 0.1, 0.05, 0.3, 0.3])
    reference = stats.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    got_mu, got_sigma = populations.moment_match(reference.mean(), reference.std())
    np.testing.assert_allclose(got_mu, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_sigma, sigma, rtol=1e-5)
    status = populations.moment_match_status(reference.mean(), reference.std())
    assert np.all(status == FitStatus.CONVERGED)


def test_moment_match_flags_spreads_no_truncated_normal_has():
    # Mean 0.985 with sd 0.05 is wider than any truncated normal with that mean.
    status = populations.moment_match_status([0.985], [0.05])
    assert status[0] == FitStatus.AT_BOUND
    with pytest.raises(ValueError, match="mean"):
        populations.moment_match([1.2], [0.1])


def test_math_population_keeps_the_shipped_statistics():
    population = populations.math_train()
    assert len(population) == 4501
    assert np.all((population.mean > 0) & (population.mean < 1))
    converged = populations.moment_match_status(population.mean, population.std) == 0
    reference = stats.truncnorm(
        -population.mu[converged] / population.sigma[converged],
        (1 - population.mu[converged]) / population.sigma[converged],
        loc=population.mu[converged],
        scale=population.sigma[converged],
    )
    np.testing.assert_allclose(reference.mean(), population.mean[converged], atol=1e-5)
    np.testing.assert_allclose(reference.std(), population.std[converged], rtol=1e-3)


def test_population_tables_and_their_errors(tmp_path):
    grid = populations.grid([0.2, 0.5], [0.1, 0.2, 0.3])
    assert len(grid) == 6 and grid.mu[0] == 0.2 and grid.sigma[2] == 0.3
    table = tmp_path / "pop.csv"
    table.write_text("id,mu,sigma\na,0.4,0.2\nb,0.9,0.05\n")
    population = populations.read_table(table)
    assert population.ids == ["a", "b"]
    np.testing.assert_array_equal(population.sigma, [0.2, 0.05])
    lines = tmp_path / "pop.jsonl"
    lines.write_text('{"mu": 0.4, "sigma": 0.2}\n{"mu": 0.5, "sigma": -1}\n')
    with pytest.raises(ValueError, match=r"pop.jsonl:2"):
        populations.read_table(lines)
    sample = populations.resample(population, 5, seed=0)
    assert len(sample) == 5 and set(sample.ids) <= {"a", "b"}


def test_policy_block_matches_the_reference_policies():
    # One path per question: the block's per-question means are the per-path outcomes.
    rng = np.random.default_rng(0)
    questions, k, s_min, alpha, peek = 40, 24, 0.85, 0.9, 4
    mu, sigma = rng.uniform(0.4, 0.9, questions), rng.uniform(0.05, 0.3, questions)
    law = laws.TruncNormal(jnp.asarray(mu)[:, None, None], jnp.asarray(sigma)[:, None, None])
    scores = law.sample(jax.random.key(4), (questions, 1, k))
    prior_mu, prior_sigma = mu + 0.05, sigma
    oracle = studies._oracle_n(mu, sigma, (s_min,), (alpha,), k)[None]
    (covered, samples, _, capped), curves = studies._policy_block(
        scores,
        jnp.asarray(oracle, jnp.int32),
        jnp.asarray(prior_mu)[None],
        jnp.asarray(prior_sigma)[None],
        s_mins=(s_min,),
        alphas=(alpha,),
        max_n=k,
        peek=peek,
        min_samples=1,
        prior_scale=(0.1, 0.1),
    )
    paths = np.asarray(scores[:, 0])
    mask = np.ones(paths.shape, bool)
    expected = [
        np.asarray(oracle[0, 0, 0]),
        policies.sequential_stop(paths, mask, s_min, alpha, max_n=k).samples,
        policies.peek_stop(paths, mask, s_min, alpha, peek=peek, max_n=k).samples,
        policies.sequential_stop(
            paths, mask, s_min, alpha, max_n=k, prior_mu=prior_mu, prior_sigma=prior_sigma
        ).samples,
    ]
    for p, n in enumerate(expected):
        n = np.asarray(n)
        np.testing.assert_array_equal(np.asarray(samples[p, 0, 0]), n)
        reached = np.array([paths[q, : n[q]].max() >= s_min for q in range(questions)])
        np.testing.assert_array_equal(np.asarray(covered[p, 0, 0]), reached)
        np.testing.assert_array_equal(np.asarray(capped[p, 0, 0]), n >= k)
    best = np.maximum.accumulate(paths, axis=1)
    np.testing.assert_array_equal(np.asarray(curves[0]), best >= s_min)


def test_adaptive_oracle_matches_closed_form_and_fixed_n_interpolates():
    population = populations.grid([0.5, 0.7], [0.1, 0.2])
    rows = studies.adaptive_study(
        population, [0.8], [0.9], paths=400, max_n=32, prior_noises=(), seed=5
    )
    names = {row["policy"] for row in rows}
    assert names == {"oracle", "optscale0", "peek"}
    oracle = next(row for row in rows if row["policy"] == "oracle")
    n_star = studies._oracle_n(population.mu, population.sigma, (0.8,), (0.9,), 32)[0, 0]
    exact = np.mean(np.asarray(confidence(population.mu, population.sigma, 0.8, n_star)))
    assert oracle["mean_samples"] == pytest.approx(np.mean(n_star))
    assert abs(oracle["coverage"] - exact) <= Z * oracle["coverage_se"]
    # Fixed N at the oracle's mean cost, interpolated between floor and ceil of that cost.
    n_bar = np.mean(n_star)
    low, weight = int(np.floor(n_bar)), n_bar - np.floor(n_bar)
    fixed = (1 - weight) * np.mean(
        np.asarray(confidence(population.mu, population.sigma, 0.8, low))
    )
    fixed += weight * np.mean(np.asarray(confidence(population.mu, population.sigma, 0.8, low + 1)))
    assert abs(oracle["fixed_n_coverage"] - fixed) <= Z * oracle["fixed_n_coverage_se"]
    for row in rows:
        assert 1 <= row["mean_samples"] <= 32
        assert 0 <= row["coverage"] <= 1 and row["coverage_se"] > 0


def test_misspec_truths_have_the_requested_moments_and_oracles():
    population = populations.resample(populations.math_train(), 30, seed=0)
    beta = studies.truth_law("beta", population)
    mean, std = studies.law_moments(beta, samples=5_000)
    tolerance = 5 * np.max(population.std) / np.sqrt(5_000)
    np.testing.assert_allclose(mean, population.mean, atol=tolerance)
    np.testing.assert_allclose(std, population.std, rtol=0.15)
    saturated = studies.truth_law("saturated", population, weight=0.25)
    base = laws.TruncNormal(jnp.asarray(population.mu), jnp.asarray(population.sigma))
    x = 0.999999
    np.testing.assert_allclose(
        saturated.log_sf(x), np.log(0.25 + 0.75 * np.exp(base.log_sf(x))), rtol=1e-9
    )
    rows = studies.misspec_study(
        population,
        [0.9],
        [0.9],
        families=("truncnorm", "beta"),
        rhos=(0.0,),
        paths=4,
        max_n=16,
        seed=1,
    )
    assert {(row["family"], row["rho"]) for row in rows} == {
        ("truncnorm", 0.0),
        ("beta", 0.0),
    }
    by_key = {(r["family"], r["rho"], r["policy"]): r for r in rows}
    # With a truncated-normal truth the model is right: both oracles draw the same N*.
    assert (
        by_key["truncnorm", 0.0, "oracle"]["coverage"]
        == by_key["truncnorm", 0.0, "model-oracle"]["coverage"]
    )
    assert (
        by_key["truncnorm", 0.0, "oracle"]["mean_samples"]
        == by_key["truncnorm", 0.0, "model-oracle"]["mean_samples"]
    )


def test_synthetic_log_loads_in_the_replay_engine(tmp_path):
    from optscale_jax.logs import write_jsonl

    mu, sigma = np.array([0.5, 0.8, 0.95]), np.array([0.2, 0.1, 0.05])
    log = synthetic_log(mu, sigma, 200, seed=7, prior_noise=0.05)
    path = write_jsonl(log, tmp_path / "log.jsonl")
    back = read_log(path)
    assert back.equals(log)
    assert back.scores.shape == (3, 200) and back.mask.all()
    assert np.all(back.tokens >= 1)
    gold = np.array([[text == back.gold[q] for text in back.answer_text[q]] for q in range(3)])
    np.testing.assert_array_equal(back.correct, gold)
    # The link makes higher scores more often correct.
    assert stats.pearsonr(back.scores.ravel(), back.correct.ravel()).statistic > 0.2
    np.testing.assert_allclose(back.prior_mu, mu, atol=5 * 0.05)
    again = synthetic_log(mu, sigma, 200, seed=7, prior_noise=0.05)
    assert again.equals(log)


def test_simulate_commands_write_their_tables(tmp_path):
    out = tmp_path / "cov"
    code = main(
        [
            "simulate",
            "coverage",
            "--mu",
            "0.5",
            "--sigma",
            "0.2",
            "--s-min",
            "0.8",
            "--alpha",
            "0.9",
            "--rho",
            "0",
            "0.5",
            "--trials",
            "2000",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    header = (out / "coverage.csv").read_text().splitlines()[0].split(",")
    for column in (
        "family",
        "rho",
        "mu",
        "sigma",
        "s_min",
        "alpha",
        "n_star",
        "coverage",
        "coverage_se",
        "trials",
        "nominal",
    ):
        assert column in header
    config = json.loads((out / "coverage.json").read_text())
    assert config["config"]["seed"] == 1 and len(config["rows"]) == 2

    log_dir = tmp_path / "log"
    code = main(
        [
            "simulate",
            "log",
            "--questions",
            "6",
            "--samples",
            "8",
            "--population",
            "math",
            "--seed",
            "2",
            "--out",
            str(log_dir),
        ]
    )
    assert code == 0
    log = read_log(log_dir / "log.jsonl")
    assert log.num_questions == 6 and log.max_samples == 8

    assert main(["simulate", "coverage", "--alpha", "1.5", "--out", str(out)]) == 2
