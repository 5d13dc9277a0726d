"""Score laws of `optscale_jax.sim.laws` against scipy, the exact-maximum draw and the Gaussian copula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from optscale_jax.sim import laws

DTYPES = [jnp.float32, jnp.float64]
# KS p-values below this fail; the seeds are fixed, so a pass is reproducible.
P_FLOOR = 1e-4


def _scipy_truncnorm(mu, sigma):
    return stats.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)


def _dkw_bound(n, delta=1e-6):
    """sup |F_n - F| exceeds this with probability < delta (Dvoretzky-Kiefer-Wolfowitz)."""
    return np.sqrt(np.log(2 / delta) / (2 * n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mu, sigma", [(0.3, 0.2), (0.9, 0.05), (1.4, 0.3)])
def test_truncnormal_matches_scipy(dtype, mu, sigma):
    law = laws.TruncNormal(jnp.asarray(mu, dtype), jnp.asarray(sigma, dtype))
    reference = _scipy_truncnorm(mu, sigma)
    draws = np.asarray(law.sample(jax.random.key(1), (4000,)))
    assert draws.dtype == np.dtype(dtype)
    assert stats.kstest(draws, reference.cdf).pvalue > P_FLOOR
    x = np.linspace(0.01, 0.99, 9)
    tol = 1e-5 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(law.cdf(jnp.asarray(x, dtype)), reference.cdf(x), atol=tol, rtol=tol)
    q = np.array([0.01, 0.3, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(law.ppf(jnp.asarray(q, dtype)), reference.ppf(q), atol=20 * tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a, b", [(0.5, 0.7), (30.0, 1.5)])
def test_beta_matches_scipy(dtype, a, b):
    law = laws.Beta(jnp.asarray(a, dtype), jnp.asarray(b, dtype))
    reference = stats.beta(a, b)
    draws = np.asarray(law.sample(jax.random.key(2), (4000,)))
    assert draws.dtype == np.dtype(dtype)
    assert stats.kstest(draws, reference.cdf).pvalue > P_FLOOR
    x = np.linspace(0.02, 0.98, 7)
    rtol = 1e-4 if dtype == jnp.float32 else 1e-9
    # atol: float32 underflows below ~1e-38 (scipy's 6.7e-51 at x = 0.02 for Beta(30, 1.5)).
    np.testing.assert_allclose(
        law.cdf(jnp.asarray(x, dtype)), reference.cdf(x), rtol=rtol, atol=1e-37
    )
    np.testing.assert_allclose(
        law.log_sf(jnp.asarray(x, dtype)), reference.logsf(x), rtol=rtol, atol=rtol
    )
    q = np.array([0.001, 0.2, 0.5, 0.8, 0.999])
    np.testing.assert_allclose(law.ppf(jnp.asarray(q, dtype)), reference.ppf(q), rtol=100 * rtol)


def test_beta_upper_tail_keeps_precision():
    # 1 - q = 1e-12 is lost in q itself; ppf_log takes log(1 - q) directly.
    law = laws.Beta(jnp.float64(2.0), jnp.float64(3.0))
    log_p = np.log(1e-12)
    x = law.ppf_log(jnp.log1p(-jnp.exp(log_p)), jnp.asarray(log_p))
    assert float(x) == pytest.approx(stats.beta(2, 3).isf(1e-12), rel=1e-9)


def test_beta_from_moments_hits_mean_and_std():
    law = laws.beta_from_moments(jnp.array([0.9, 0.3]), jnp.array([0.05, 0.2]))
    np.testing.assert_allclose(law.mean(), [0.9, 0.3], rtol=1e-12)
    np.testing.assert_allclose(law.std(), [0.05, 0.2], rtol=1e-12)
    reference = stats.beta(np.asarray(law.a), np.asarray(law.b))
    np.testing.assert_allclose(reference.std(), [0.05, 0.2], rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixture_with_point_mass_matches_its_definition(dtype):
    weight = 0.2
    tn = laws.TruncNormal(jnp.asarray(0.6, dtype), jnp.asarray(0.15, dtype))
    law = laws.Mixture(jnp.asarray(weight, dtype), laws.PointMass(jnp.asarray(1.0, dtype)), tn)
    reference = _scipy_truncnorm(0.6, 0.15)

    def cdf(x):
        return (1 - weight) * reference.cdf(x) + weight * (np.asarray(x) >= 1.0)

    x = np.array([0.1, 0.5, 0.8, 0.999, 1.0])
    np.testing.assert_allclose(law.cdf(jnp.asarray(x, dtype)), cdf(x), atol=1e-5)
    n = 20_000
    draws = np.asarray(law.sample(jax.random.key(3), (n,)))
    grid = np.linspace(0, 1, 101)
    empirical = np.searchsorted(np.sort(draws), grid, side="right") / n
    assert np.max(np.abs(empirical - cdf(grid))) < _dkw_bound(n)
    # Generalised inverse: every q above 1 - weight lands on the atom.
    q = np.array([0.1, 0.5, 0.79, 0.81, 0.99])
    expected = np.where(q > 1 - weight, 1.0, reference.ppf(np.minimum(q / (1 - weight), 1.0)))
    np.testing.assert_allclose(law.ppf(jnp.asarray(q, dtype)), expected, atol=1e-4)


def test_atom_law_matches_its_masses_and_cdf(dtype=jnp.float64):
    # The atoms wrap any continuous law the same way: one inner law (Beta) is tested.
    mass0, mass1 = np.array([0.1, 0.0]), np.array([0.25, 0.4])
    a, b = np.array([2.0, 5.0]), np.array([3.0, 1.5])
    continuous = laws.Beta(jnp.asarray(a, dtype), jnp.asarray(b, dtype))
    reference = stats.beta(a, b)
    law = laws.WithAtoms(jnp.asarray(mass0, dtype), jnp.asarray(mass1, dtype), continuous)
    weight = 1 - mass0 - mass1

    def cdf(x):
        x = np.asarray(x)[..., None]
        return mass0 * (x >= 0) + weight * reference.cdf(np.clip(x, 0, 1)) + mass1 * (x >= 1)

    x = np.array([-0.1, 0.0, 0.2, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(law.cdf(jnp.asarray(x)[:, None]), cdf(x), atol=1e-12)
    np.testing.assert_allclose(np.exp(law.log_sf(jnp.asarray(x)[:, None])), 1 - cdf(x), atol=1e-12)
    n = 20_000
    draws = np.asarray(law.sample(jax.random.key(6), (n, 2)))
    for column in range(2):
        column_draws = draws[:, column]
        se = np.sqrt(np.maximum(mass0[column] * (1 - mass0[column]), 1e-12) / n)
        assert abs((column_draws == 0).mean() - mass0[column]) < 5 * se + 1e-12
        se = np.sqrt(mass1[column] * (1 - mass1[column]) / n)
        assert abs((column_draws == 1).mean() - mass1[column]) < 5 * se
        grid = np.linspace(0, 1, 101)
        empirical = np.searchsorted(np.sort(column_draws), grid, side="right") / n
        assert np.max(np.abs(empirical - cdf(grid)[:, column])) < _dkw_bound(n)
    # Generalised inverse: q <= mass0 -> 0, q > 1 - mass1 -> 1, else the continuous quantile.
    q = np.array([0.05, 0.1, 0.3, 0.5, 0.59, 0.61, 0.9])[:, None]
    inside = np.clip((q - mass0) / weight, 1e-12, 1 - 1e-12)
    expected = np.where(q <= mass0, 0.0, np.where(q > 1 - mass1, 1.0, reference.ppf(inside)))
    np.testing.assert_allclose(law.ppf(jnp.asarray(q)), expected, atol=1e-7)
    per_sample = laws.with_sample_axis(law)
    assert per_sample.mass0.shape == per_sample.inner.a.shape == (2, 1)


def test_two_beta_mixture_matches_scipy():
    law = laws.Mixture(
        jnp.array(0.3),
        laws.Beta(jnp.array(2.0), jnp.array(8.0)),
        laws.Beta(jnp.array(9.0), jnp.array(2.0)),
    )

    def cdf(x):
        return 0.3 * stats.beta(2, 8).cdf(x) + 0.7 * stats.beta(9, 2).cdf(x)

    draws = np.asarray(law.sample(jax.random.key(4), (4000,)))
    assert stats.kstest(draws, cdf).pvalue > P_FLOOR
    q = np.array([0.05, 0.3, 0.6, 0.95])
    x = np.asarray(law.ppf(jnp.asarray(q)))
    np.testing.assert_allclose(cdf(x), q, rtol=1e-9)


def test_empirical_law_resamples_the_pool():
    pool = np.array([0.9, 0.1, 0.5, 0.5, 0.3])
    law = laws.empirical(jnp.asarray(pool))
    q = np.array([0.1, 0.2, 0.21, 0.5, 0.61, 0.99])
    expected = np.quantile(pool, q, method="inverted_cdf")
    np.testing.assert_array_equal(law.ppf(jnp.asarray(q)), expected)
    np.testing.assert_allclose(law.cdf(jnp.array([0.0, 0.3, 0.5, 1.0])), [0, 0.4, 0.8, 1.0])
    draws = np.asarray(law.sample(jax.random.key(5), (50_000,)))
    values, counts = np.unique(draws, return_counts=True)
    np.testing.assert_array_equal(values, [0.1, 0.3, 0.5, 0.9])
    np.testing.assert_allclose(counts / draws.size, [0.2, 0.2, 0.4, 0.2], atol=0.01)


def test_laws_vectorise_over_parameters():
    mu = jnp.array([0.2, 0.5, 0.8])
    sigma = jnp.array([0.1, 0.3, 0.05])
    law = laws.TruncNormal(mu, sigma)
    draws = np.asarray(law.sample(jax.random.key(6), (3000, 3)))
    for j in range(3):
        reference = _scipy_truncnorm(float(mu[j]), float(sigma[j]))
        assert stats.kstest(draws[:, j], reference.cdf).pvalue > P_FLOOR
    batched = jax.vmap(lambda m, s: laws.TruncNormal(m, s).cdf(0.5))(mu, sigma)
    np.testing.assert_allclose(batched, law.cdf(0.5), rtol=1e-12)


@pytest.mark.parametrize(
    "law",
    [
        laws.TruncNormal(jnp.array([0.4, 0.9]), jnp.array([0.2, 0.1])),
        laws.Beta(jnp.array([2.0, 0.6]), jnp.array([3.0, 0.9])),
        laws.Mixture(
            jnp.array(0.1),
            laws.PointMass(jnp.array(1.0)),
            laws.TruncNormal(jnp.array([0.4, 0.6]), jnp.array([0.2, 0.1])),
        ),
    ],
    ids=["truncnorm", "beta", "saturated"],
)
def test_exact_maximum_matches_draw_n_then_max(law):
    n = 37
    fast = np.asarray(laws.sample_max(law, jax.random.key(7), n, (2000, 2)))
    slow = np.asarray(laws.sample_max_full(law, jax.random.key(8), n, (2000, 2)))
    for j in range(2):
        assert stats.ks_2samp(fast[:, j], slow[:, j], method="asymp").pvalue > P_FLOOR


def test_exact_maximum_of_many_draws_matches_closed_form():
    # P(max of n <= x) = F(x)^n, for n far beyond what draw-n-then-max could afford.
    mu, sigma, n = 0.5, 0.1, 10**9
    law = laws.TruncNormal(jnp.float64(mu), jnp.float64(sigma))
    draws = np.asarray(laws.sample_max(law, jax.random.key(9), n, (4000,)))
    reference = _scipy_truncnorm(mu, sigma)

    def cdf(x):
        return np.exp(n * reference.logcdf(x))

    assert draws.max() <= 1.0
    assert stats.kstest(draws, cdf).pvalue > P_FLOOR


def test_copula_maximum_matches_full_samples():
    law = laws.TruncNormal(jnp.array([0.5]), jnp.array([0.2]))
    for rho in (0.3, 0.8):
        fast = np.asarray(laws.sample_max(law, jax.random.key(10), 25, (4000, 1), rho=rho))
        slow = np.asarray(laws.sample_max_full(law, jax.random.key(11), 25, (4000, 1), rho=rho))
        assert stats.ks_2samp(fast[:, 0], slow[:, 0]).pvalue > P_FLOOR


@pytest.mark.parametrize("dtype", [jnp.float32])
def test_copula_at_rho_zero_is_iid(dtype):
    law = laws.TruncNormal(jnp.asarray([0.7], dtype), jnp.asarray([0.15], dtype))
    copula = np.asarray(laws.sample_copula(law, jax.random.key(12), 0.0, (400, 10)))
    iid = np.asarray(laws.with_sample_axis(law).sample(jax.random.key(13), (400, 10)))
    assert copula.dtype == np.dtype(dtype)
    assert stats.ks_2samp(copula.ravel(), iid.ravel()).pvalue > P_FLOOR
    # Independence within a row: the correlation of two samples of one question is ~0.
    r = np.corrcoef(copula[:, 0], copula[:, 1])[0, 1]
    assert abs(r) < 4 / np.sqrt(400)


def test_copula_has_the_gaussian_rank_correlation_and_marginal():
    rho = 0.5
    law = laws.Beta(jnp.array([2.0]), jnp.array([5.0]))
    draws = np.asarray(laws.sample_copula(law, jax.random.key(14), rho, (2000, 2)))
    assert stats.kstest(draws[:, 0], stats.beta(2, 5).cdf).pvalue > P_FLOOR
    spearman = stats.spearmanr(draws[:, 0], draws[:, 1]).statistic
    # Gaussian copula: Spearman's rho_S = (6 / pi) arcsin(rho / 2).
    assert spearman == pytest.approx(6 / np.pi * np.arcsin(rho / 2), abs=0.06)


def test_simulate_log_draws_from_the_chosen_family(tmp_path, capsys):
    from optscale_jax.experiments.cli import main
    from optscale_jax.io import read_jsonl

    common = ["simulate", "log", "--questions", "40", "--samples", "16", "--seed", "1"]
    atoms = [*common, "--family", "beta-atoms", "--atom-mass", "0.1", "0.3"]
    assert main([*atoms, "--out", str(tmp_path / "atoms")]) == 0
    assert main([*common, "--out", str(tmp_path / "tn")]) == 0
    scores = {
        name: np.concatenate([r["scores"] for r in read_jsonl(tmp_path / name / "log.jsonl")])
        for name in ("atoms", "tn")
    }
    assert scores["atoms"].size == 640
    # 640 draws: the masses 0.1 and 0.3 within about 4 standard errors
    assert abs(np.mean(scores["atoms"] == 0.0) - 0.1) < 0.05
    assert abs(np.mean(scores["atoms"] == 1.0) - 0.3) < 0.07
    assert not np.any((scores["tn"] == 0.0) | (scores["tn"] == 1.0))
    assert main([*common, "--family", "gauss", "--out", str(tmp_path / "x")]) == 2
    assert "--family: unknown 'gauss'" in capsys.readouterr().err
