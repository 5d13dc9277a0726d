"""Tests of the optimal-N rule."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from optscale_jax import NSTAR_UNBOUNDED, confidence, optimal_n, truncnorm
from optscale_jax.nstar import optimal_n_from_log_cdf


def _scipy_nstar(mu, sigma, s_min, alpha, max_n):
    """The released code's rule: scan N = 1..max_n for the first 1 - F^N >= alpha."""
    f = scipy.stats.truncnorm.cdf(s_min, -mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    for n in range(1, max_n + 1):
        if 1.0 - f**n >= alpha:
            return n
    return max_n


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_matches_a_scan_over_n(dtype):
    rng = np.random.default_rng(0)
    mu = rng.uniform(-0.5, 1.5, 300)
    sigma = rng.uniform(0.05, 1.0, 300)
    s_min = rng.uniform(0.3, 0.95, 300)
    alpha = rng.uniform(0.5, 0.99, 300)
    ours = np.asarray(optimal_n(mu.astype(dtype), sigma.astype(dtype), s_min, alpha, max_n=500))
    assert ours.dtype == np.int32
    ref = np.array([_scipy_nstar(*args, 500) for args in zip(mu, sigma, s_min, alpha, strict=True)])
    # float32 rounding of F may move N* by one right at a boundary.
    tolerance = 0 if dtype == jnp.float64 else 1
    assert np.max(np.abs(ours - ref)) <= tolerance
    assert np.mean(ours == ref) >= 0.97


def test_edge_cases_of_f():
    # F(s_min) = 0 (s_min = 0): one sample. F(s_min) = 1 (s_min = 1): the cap or the sentinel.
    assert int(optimal_n(0.5, 0.2, 0.0, 0.9)) == 1
    assert int(optimal_n(0.5, 0.2, 1.0, 0.9, max_n=64)) == 64
    assert int(optimal_n(0.5, 0.2, 1.0, 0.9)) == NSTAR_UNBOUNDED
    # F(s_min) below float precision of 1 but not 1: still a finite, huge N*.
    assert int(optimal_n(0.0, 0.01, 0.3, 0.9)) == NSTAR_UNBOUNDED
    assert int(optimal_n(0.0, 0.01, 0.3, 0.9, max_n=1000)) == 1000
    assert float(confidence(0.5, 0.2, 0.0, 3)) == 1.0
    assert float(confidence(0.5, 0.2, 0.0, 0)) == 0.0
    assert float(confidence(0.5, 0.2, 1.0, 5)) == 0.0


def test_large_n_star_in_log_space():
    # 1 - F is about 1e-12: N* = log(1 - alpha) / log F is about 2.3e12, beyond int32.
    log_f = -1e-12
    assert int(optimal_n_from_log_cdf(jnp.float64(log_f), 0.9)) == NSTAR_UNBOUNDED
    n = int(optimal_n_from_log_cdf(jnp.float64(-1e-6), 0.9))
    assert n == math.ceil(math.log(0.1) / -1e-6)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    mu=st.floats(-1.0, 2.0),
    sigma=st.floats(1e-3, 3.0),
    s_min=st.floats(0.0, 1.0),
    alpha=st.floats(1e-6, 1 - 1e-6),
    max_n=st.one_of(st.none(), st.integers(1, 10**6)),
)
def test_n_star_is_minimal_and_in_range(mu, sigma, s_min, alpha, max_n):
    args = tuple(jnp.float64(v) for v in (mu, sigma, s_min))
    n = int(optimal_n(*args, alpha, max_n=max_n))
    cap = NSTAR_UNBOUNDED if max_n is None else max_n
    assert 1 <= n <= cap
    if n < cap:
        assert float(confidence(*args, n)) >= alpha
    if 1 < n < cap:
        assert float(confidence(*args, n - 1)) < alpha
    if n == cap and cap < NSTAR_UNBOUNDED:
        assert float(confidence(*args, cap - 1)) < alpha or cap == 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_confidence_matches_definition_and_broadcasts(dtype):
    mu = jnp.array([[0.2], [0.6]], dtype)
    sigma = jnp.array([0.1, 0.3, 0.5], dtype)
    conf = confidence(mu, sigma, 0.7, 4)
    assert conf.shape == (2, 3) and conf.dtype == dtype
    m, s = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    log_f = scipy.stats.truncnorm.logcdf(0.7, -m / s, (1 - m) / s, loc=m, scale=s)
    np.testing.assert_allclose(
        conf, -np.expm1(4 * log_f), rtol=1e-4 if dtype == jnp.float32 else 1e-10
    )
    assert np.all(np.asarray(truncnorm.cdf(jnp.asarray(0.7, dtype), mu, sigma)) <= 1)


def test_jit_and_vmap_agree_with_eager():
    mu = jnp.linspace(-0.5, 1.5, 11)
    eager = optimal_n(mu, 0.2, 0.8, 0.9, max_n=10**5)
    jitted = jax.jit(lambda m: optimal_n(m, 0.2, 0.8, 0.9, max_n=10**5))(mu)
    vmapped = jax.vmap(lambda m: optimal_n(m, 0.2, 0.8, 0.9, max_n=10**5))(mu)
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_array_equal(eager, vmapped)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"s_min": 1.5}, "s_min"),
        ({"s_min": float("nan")}, "s_min"),
        ({"max_n": 0}, "max_n"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = {"mu": 0.5, "sigma": 0.2, "s_min": 0.8, "alpha": 0.9, "max_n": None} | kwargs
    with pytest.raises(ValueError, match=name):
        optimal_n(**args)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="sigma"):
        optimal_n(np.zeros(3), np.ones(4) * 0.2, 0.8, 0.9)
