"""Tests of the empirical-Bayes population prior (optscale_jax.empirical_bayes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optscale_jax import fit_map, fit_mle, sufficient_stats, truncnorm
from optscale_jax.empirical_bayes import (
    MIN_SCALE,
    fit_population,
    fit_population_prior,
    fit_population_prior_stats,
)


def _simulate(questions, k, mu_mean, mu_sd, log_sigma_mean, log_sigma_sd, seed, dtype):
    rng = np.random.default_rng(seed)
    mu = rng.normal(mu_mean, mu_sd, questions)
    log_sigma = rng.normal(log_sigma_mean, log_sigma_sd, questions)
    scores = truncnorm.sample(
        jax.random.PRNGKey(seed),
        jnp.asarray(mu, dtype)[:, None],
        jnp.exp(jnp.asarray(log_sigma, dtype))[:, None],
        shape=(questions, k),
    )
    return np.asarray(scores), mu, log_sigma


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_recovers_a_simulated_population(dtype):
    scores, mu, log_sigma = _simulate(400, 32, 0.65, 0.12, np.log(0.12), 0.3, seed=0, dtype=dtype)
    population = fit_population(*sufficient_stats(scores))
    assert population.mu_mean.dtype == dtype
    assert int(population.questions) == 400
    # Against the realised population (its sampling error is not the estimator's).
    assert float(population.mu_mean) == pytest.approx(mu.mean(), abs=0.02)
    assert float(population.mu_sd) == pytest.approx(mu.std(), rel=0.15)
    assert float(population.log_sigma_mean) == pytest.approx(log_sigma.mean(), abs=0.05)
    assert float(population.log_sigma_sd) == pytest.approx(log_sigma.std(), rel=0.2)


def test_deconvolves_estimation_noise():
    # Every question has the same law: the raw fits spread out, the population does not.
    # (The Laplace variances understate the noise of fits from few samples, so at small k
    # the noise is only partly removed.)
    scores, _, _ = _simulate(300, 16, 0.6, 0.0, np.log(0.15), 0.0, seed=1, dtype=jnp.float64)
    raw = fit_mle(scores)
    population = fit_population(*sufficient_stats(scores))
    assert float(np.std(raw.mu)) > 0.02
    assert float(population.mu_sd) < 0.5 * float(np.std(raw.mu))
    assert float(population.mu_mean) == pytest.approx(0.6, abs=0.02)


def test_prior_matches_the_population_and_plugs_into_fit_map():
    scores, _, _ = _simulate(500, 16, 0.7, 0.1, np.log(0.1), 0.2, seed=2, dtype=jnp.float64)
    population = fit_population(*sufficient_stats(scores))
    p = fit_population_prior(scores)
    assert float(p.mu) == pytest.approx(float(population.mu_mean))
    assert float(p.sigma) == pytest.approx(np.exp(float(population.log_sigma_mean)))
    expected_scale = np.exp(float(population.log_sigma_mean)) * np.sinh(
        float(population.log_sigma_sd)
    )
    assert float(p.sigma_scale) == pytest.approx(max(expected_scale, MIN_SCALE))
    # With two samples the MAP fit is pulled from the MLE toward the prior centre.
    first_two = scores[:, :2]
    mle = fit_mle(first_two)
    post = fit_map(first_two, p.mu, p.sigma, prior_scale=(p.mu_scale, p.sigma_scale))
    assert float(np.mean(np.abs(post.mu - p.mu))) < float(np.mean(np.abs(mle.mu - p.mu)))
    assert np.all(np.isfinite(post.mu)) and np.all(post.sigma > 0)


def test_stats_twin_and_mask_agree_with_truncated_rows():
    scores, _, _ = _simulate(60, 12, 0.5, 0.1, np.log(0.2), 0.2, seed=3, dtype=jnp.float64)
    counts = np.random.default_rng(3).integers(2, 13, size=60)
    mask = np.arange(12)[None, :] < counts[:, None]
    padded = np.where(mask, scores, 0.0)
    from_scores = fit_population_prior(padded, mask)
    from_stats = fit_population_prior_stats(*sufficient_stats(padded, mask))
    for a, b in zip(from_scores, from_stats, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # Garbage in masked slots changes nothing.
    noisy = np.where(mask, scores, 0.37)
    for a, b in zip(fit_population_prior(noisy, mask), from_scores, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_no_informative_question_falls_back():
    scores = np.array([[0.3, 0.0], [0.8, 0.8]])
    mask = np.array([[True, False], [True, True]])  # one sample; all-equal scores
    population = fit_population(*sufficient_stats(scores, mask))
    assert int(population.questions) == 0
    assert float(population.mu_mean) == pytest.approx(0.5)
    assert float(population.log_sigma_mean) == pytest.approx(np.log(1 / np.sqrt(12)))
    p = fit_population_prior(scores, mask)
    assert float(p.mu_scale) > 0 and float(p.sigma_scale) > 0


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="scores"):
        fit_population_prior(np.array([0.2, 0.4]))
    with pytest.raises(ValueError, match="scores"):
        fit_population_prior(np.array([[0.2, 1.4]]))
    with pytest.raises(ValueError, match="n"):
        fit_population_prior_stats(np.array([-1.0]), np.array([0.0]), np.array([0.0]))


def test_poorly_identified_questions_do_not_swamp_the_fit():
    scores, mu, _ = _simulate(400, 32, 0.65, 0.12, np.log(0.12), 0.3, seed=0, dtype=jnp.float64)
    # Nearly flat score laws: their MLE (mu, sigma) is barely identified (huge variance).
    flat = np.random.default_rng(9).uniform(0, 1, size=(4, 32))
    clean = fit_population(*sufficient_stats(scores))
    mixed = fit_population(*sufficient_stats(np.concatenate([scores, flat])))
    assert float(mixed.mu_sd) == pytest.approx(float(clean.mu_sd), rel=0.2)
    assert float(mixed.mu_sd) == pytest.approx(mu.std(), rel=0.2)
