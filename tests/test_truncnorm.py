"""Tests of the truncated normal against scipy.stats.truncnorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from optscale_jax import truncnorm

FUNCTIONS = ["logpdf", "logcdf", "logsf", "cdf", "sf"]


def _parameters(shape, seed, mu_range=(-1.0, 2.0), sigma_range=(0.02, 3.0)):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(*mu_range, shape)
    sigma = np.exp(rng.uniform(np.log(sigma_range[0]), np.log(sigma_range[1]), shape))
    q = rng.uniform(0.001, 0.999, shape)
    return mu, sigma, q


def _scipy(mu, sigma):
    return scipy.stats.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_matches_scipy(dtype, shape, name):
    mu, sigma, q = _parameters(shape, seed=len(shape))
    # Round the inputs to the dtype first, so both sides see the same numbers.
    mu, sigma = mu.astype(dtype), sigma.astype(dtype)
    x = _scipy(mu.astype(float), sigma.astype(float)).ppf(q).astype(dtype)
    ours = getattr(truncnorm, name)(x, mu, sigma)
    assert ours.dtype == dtype and ours.shape == shape
    ref = getattr(_scipy(mu.astype(float), sigma.astype(float)), name)(x.astype(float))
    rtol = 2e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ppf_matches_scipy_and_inverts_cdf(dtype):
    mu, sigma, q = _parameters((200,), seed=3)
    mu, sigma = mu.astype(dtype), sigma.astype(dtype)
    ours = truncnorm.ppf(q.astype(dtype), mu, sigma)
    ref = _scipy(mu.astype(float), sigma.astype(float)).ppf(q)
    np.testing.assert_allclose(ours, ref, atol=2e-5 if dtype == np.float32 else 1e-10)
    back = truncnorm.cdf(ours, mu, sigma)
    np.testing.assert_allclose(back, q, atol=5e-5 if dtype == np.float32 else 1e-9)


def test_extreme_parameters_are_accurate_in_float64():
    # mu far outside [0, 1] and tiny sigma: the whole mass sits in a far tail.
    mu, sigma, q = _parameters((400,), seed=4, mu_range=(-30.0, 31.0), sigma_range=(1e-3, 10.0))
    ref = _scipy(mu, sigma)
    x = ref.ppf(q)
    np.testing.assert_allclose(truncnorm.logpdf(x, mu, sigma), ref.logpdf(x), rtol=1e-6)
    np.testing.assert_allclose(truncnorm.logcdf(x, mu, sigma), ref.logcdf(x), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(truncnorm.logsf(x, mu, sigma), ref.logsf(x), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(truncnorm.ppf(q, mu, sigma), x, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_gradients_finite_at_the_extremes(dtype):
    mus = np.array([-30.0, -1.0, 0.5, 2.0, 31.0])
    sigmas = np.array([1e-3, 0.1, 1.0, 10.0])
    mu, sigma = (a.astype(dtype).ravel() for a in np.meshgrid(mus, sigmas))
    x = jnp.asarray(np.full(mu.shape, 0.37), dtype)
    for name in ["logpdf", "logcdf", "logsf"]:
        fn = getattr(truncnorm, name)
        value = fn(x, mu, sigma)
        grads = jax.vmap(jax.grad(fn, argnums=(0, 1, 2)))(x, jnp.asarray(mu), jnp.asarray(sigma))
        assert np.all(np.isfinite(np.asarray(value))), name
        for g in grads:
            assert np.all(np.isfinite(np.asarray(g))), name
    assert np.all(np.isfinite(np.asarray(truncnorm.log_normaliser(mu, sigma))))
    draws = truncnorm.ppf(jnp.asarray(np.full(mu.shape, 0.5), dtype), mu, sigma)
    assert np.all((np.asarray(draws) >= 0) & (np.asarray(draws) <= 1))


def test_gradients_match_finite_differences():
    x, mu, sigma = 0.3, 0.6, 0.25
    for name in ["logpdf", "logcdf", "logsf"]:
        fn = getattr(truncnorm, name)
        grad = jax.grad(fn, argnums=(0, 1, 2))(x, mu, sigma)
        h = 1e-6
        for i, g in enumerate(grad):
            args_hi = [x, mu, sigma]
            args_lo = [x, mu, sigma]
            args_hi[i] += h
            args_lo[i] -= h
            fd = (float(fn(*args_hi)) - float(fn(*args_lo))) / (2 * h)
            assert float(g) == pytest.approx(fd, rel=1e-6, abs=1e-8), (name, i)


def test_outside_support_and_jit_vmap():
    assert float(truncnorm.logpdf(1.5, 0.5, 0.2)) == -np.inf
    assert float(truncnorm.cdf(-0.1, 0.5, 0.2)) == 0.0
    assert float(truncnorm.cdf(1.1, 0.5, 0.2)) == 1.0
    x = jnp.linspace(0, 1, 9)
    eager = truncnorm.logcdf(x, 0.3, 0.4)
    np.testing.assert_allclose(jax.jit(truncnorm.logcdf)(x, 0.3, 0.4), eager, rtol=1e-12)
    looped = [float(truncnorm.logcdf(v, 0.3, 0.4)) for v in x]
    np.testing.assert_allclose(jax.vmap(truncnorm.logcdf, (0, None, None))(x, 0.3, 0.4), looped)


def test_other_bounds():
    ref = scipy.stats.truncnorm((-2 - 0.5) / 1.5, (3 - 0.5) / 1.5, loc=0.5, scale=1.5)
    x = np.linspace(-2, 3, 11)
    np.testing.assert_allclose(truncnorm.logpdf(x, 0.5, 1.5, -2.0, 3.0), ref.logpdf(x), rtol=1e-10)
    np.testing.assert_allclose(
        truncnorm.cdf(x, 0.5, 1.5, -2.0, 3.0), ref.cdf(x), rtol=1e-10, atol=1e-15
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_samples_follow_the_distribution(dtype):
    draws = truncnorm.sample(jax.random.PRNGKey(0), 0.8, 0.3, (20000,), dtype=dtype)
    assert draws.dtype == dtype and draws.shape == (20000,)
    assert float(draws.min()) >= 0.0 and float(draws.max()) <= 1.0
    result = scipy.stats.kstest(
        np.asarray(draws, np.float64), _scipy(np.float64(0.8), np.float64(0.3)).cdf
    )
    assert result.pvalue > 1e-3
    batched = truncnorm.sample(jax.random.PRNGKey(1), jnp.array([[0.1], [0.9]]), 0.2, (2, 5000))
    assert batched.shape == (2, 5000)
    assert float(batched[0].mean()) < 0.3 < 0.6 < float(batched[1].mean())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logcdf_from_shared_endpoints_equals_logcdf(dtype):
    rng = np.random.default_rng(3)
    mu = rng.uniform(-30, 31, 400).astype(dtype)
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(10), 400)).astype(dtype)
    ends = truncnorm.endpoints(mu, sigma)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for x in (0.3, 0.9, 0.999):
        expected = np.asarray(truncnorm.logcdf(dtype(x), mu, sigma))
        got = np.asarray(truncnorm.logcdf_from(dtype(x), mu, sigma, ends))
        assert got.dtype == dtype
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.isfinite(got), finite)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=rtol, atol=1e-300)
    # F(1) = 1 in a batch too (rounding in equal masses once gave NaN here).
    np.testing.assert_allclose(np.asarray(truncnorm.logcdf(dtype(1.0), mu, sigma)), 0.0, atol=1e-6)
    assert np.all(np.asarray(truncnorm.logcdf_from(dtype(1.0), mu, sigma, ends)) == 0.0)
    assert np.all(np.asarray(truncnorm.logcdf_from(dtype(0.0), mu, sigma, ends)) == -np.inf)
