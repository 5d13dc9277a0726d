"""Score laws (`optscale_jax.laws`) against scipy, direct formulas and the core's truncated normal."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from optscale_jax import estimation, laws, optimal_n, truncnorm
from optscale_jax.laws import atoms, beta, empirical, tn
from optscale_jax.laws.base import FitStatus

DTYPES = [jnp.float32, jnp.float64]
PARAMETRIC = laws.PARAMETRIC_LAWS
# Most tests fit batches of ROWS questions: compiled fits are cached by batch shape and dtype.
ROWS = 6


def _tolerance(dtype):
    return 2e-4 if dtype == jnp.float32 else 1e-10


def _ragged_scores(seed, shape, dtype, atoms_fraction=0.0):
    """Random Beta scores with some exact 0s and 1s and a ragged mask (every row >= 2 scores)."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(2.0, 3.0, shape)
    pick = rng.uniform(size=shape)
    scores = np.where(pick < atoms_fraction / 2, 0.0, scores)
    scores = np.where(pick > 1 - atoms_fraction / 2, 1.0, scores)
    lengths = rng.integers(2, shape[-1] + 1, shape[:-1])
    mask = np.arange(shape[-1]) < lengths[..., None]
    return jnp.asarray(scores, dtype), jnp.asarray(mask)


def _beta_atom_draws(rng, p0, p1, a, b, shape):
    u = rng.uniform(size=shape)
    inner = rng.beta(a, b, shape)
    return np.where(u < p0, 0.0, np.where(u >= 1 - p1, 1.0, inner))


# --- tn: the core's code, unchanged -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_tn_law_is_the_core_unchanged(dtype):
    scores, mask = _ragged_scores(0, (ROWS, 9), dtype)
    law = laws.LAWS["tn"]
    params, status = law.fit(law.stats(scores, mask))
    core = estimation.fit_mle(scores, mask)
    np.testing.assert_array_equal(params.mu, core.mu)
    np.testing.assert_array_equal(params.sigma, core.sigma)
    np.testing.assert_array_equal(status, core.status)
    n = mask.sum(-1)
    np.testing.assert_allclose(
        law.loglik(params, law.stats(scores, mask)), -n * core.nll, rtol=10 * _tolerance(dtype)
    )
    for s_min in (0.3, 0.8, 1.0):
        np.testing.assert_array_equal(
            laws.optimal_n("tn", params, s_min, 0.9, max_n=500),
            optimal_n(core.mu, core.sigma, s_min, 0.9, max_n=500),
        )
    np.testing.assert_array_equal(
        law.log_cdf(params, 0.7), truncnorm.logcdf(jnp.asarray(0.7, dtype), core.mu, core.sigma)
    )
    if dtype == jnp.float64:
        prior = tn.TNPrior(0.5, 0.2, 0.1, 0.1)
        map_params, _ = law.fit(law.stats(scores, mask), prior)
        core_map = estimation.fit_map(scores, 0.5, 0.2, (0.1, 0.1), mask)
        np.testing.assert_array_equal(map_params.mu, core_map.mu)


def test_tn_law_matches_scipy_truncnorm():
    params = tn.TNParams(jnp.array([0.3, 0.9, 1.4]), jnp.array([0.2, 0.05, 0.3]))
    x = np.linspace(0.01, 0.99, 7)[:, None]
    ref = stats.truncnorm(-params.mu / params.sigma, (1 - params.mu) / params.sigma,
                          loc=params.mu, scale=params.sigma)  # fmt: skip
    np.testing.assert_allclose(tn.log_cdf(params, x), ref.logcdf(x), rtol=1e-9)
    np.testing.assert_allclose(tn.log_sf(params, x), ref.logsf(x), rtol=1e-9)
    np.testing.assert_allclose(tn.log_pdf(params, x), ref.logpdf(x), rtol=1e-9)


# --- beta ---------------------------------------------------------------------------------------


BETA_SHAPES = [(0.05, 2.0), (0.5, 0.7), (2.0, 3.0), (30.0, 1.5), (9.0, 1e4), (1e3, 2e3), (1e5, 1e5)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_distribution_functions_match_scipy(dtype):
    a, b = (np.array(v) for v in zip(*BETA_SHAPES, strict=True))
    mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    z = np.array([-8.0, -3.0, -1.0, 0.0, 1.0, 3.0, 8.0])[:, None]
    x = np.clip(mean + z * sd, 1e-5, 1 - 1e-5)
    x = np.asarray(jnp.asarray(x, dtype), np.float64)  # the points the law sees
    params = beta.BetaParams(jnp.asarray(a, dtype), jnp.asarray(b, dtype))
    log_cdf, log_sf = beta.log_cdf_sf(params, jnp.asarray(x, dtype))
    ref_cdf, ref_sf = stats.beta.logcdf(x, a, b), stats.beta.logsf(x, a, b)
    # log of the smaller tail: relative error of the probability (the larger side is log1p of it)
    small = ref_cdf < ref_sf
    atol = 5e-4 if dtype == jnp.float32 else 1e-11
    np.testing.assert_allclose(np.where(small, log_cdf, log_sf), np.minimum(ref_cdf, ref_sf),
                               rtol=atol, atol=atol)  # fmt: skip
    np.testing.assert_allclose(np.where(small, log_sf, log_cdf), np.maximum(ref_cdf, ref_sf),
                               atol=atol)  # fmt: skip
    # scipy's logpdf itself cancels (6e-10 off at a = b = 1e5, by mpmath); ours does not.
    np.testing.assert_allclose(beta.log_pdf(params, jnp.asarray(x, dtype)),
                               stats.beta.logpdf(x, a, b), rtol=max(atol, 1e-9))  # fmt: skip
    assert beta.log_cdf(params, jnp.asarray(0.0, dtype)).tolist() == [-np.inf] * len(a)
    assert beta.log_sf(params, jnp.asarray(1.0, dtype)).tolist() == [-np.inf] * len(a)


def _scipy_beta_loglik(x):
    """The Beta MLE's loglik by scipy: beta.fit (floc=0, fscale=1), polished by multi-start."""

    def nll(log_ab):
        return -stats.beta.logpdf(x, *np.exp(log_ab)).sum()

    a, b, _, _ = stats.beta.fit(x, floc=0, fscale=1)
    best = -nll(np.log([a, b]))
    for start in ([0.0, 0.0], [np.log(a), np.log(b)], [2.0, 2.0]):
        result = optimize.minimize(nll, start, method="Nelder-Mead",
                                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})  # fmt: skip
        best = max(best, -result.fun)
    return best


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_beta_mle_matches_scipy_optimum(dtype, seed):
    rng = np.random.default_rng(seed)
    a = np.exp(rng.uniform(np.log(0.2), np.log(60.0), ROWS))
    b = np.exp(rng.uniform(np.log(0.2), np.log(60.0), ROWS))
    x = np.clip(rng.beta(a[:, None], b[:, None], (ROWS, 32)), beta.CLAMP, 1 - beta.CLAMP)
    law = laws.LAWS["beta"]
    params, status = law.fit(law.stats(jnp.asarray(x, dtype), None))
    assert (np.asarray(status) == FitStatus.CONVERGED).all()
    mine = stats.beta.logpdf(x, np.asarray(params.a, np.float64)[:, None],
                             np.asarray(params.b, np.float64)[:, None]).sum(-1)  # fmt: skip
    reference = np.array([_scipy_beta_loglik(row) for row in x])
    # Relative to the loglik, with a floor of 1 nat: some rows have a loglik near 0.
    rtol = 1e-6 if dtype == jnp.float64 else 1e-4
    assert (mine >= reference - rtol * np.maximum(np.abs(reference), 1.0)).all()
    loglik = law.loglik(params, law.stats(jnp.asarray(x, dtype), None))
    # float32: the loglik from the statistics carries eps (|(a - 1) sum log s| + ...) of rounding.
    np.testing.assert_allclose(loglik, mine, rtol=10 * rtol, atol=rtol)


def test_beta_map_matches_scipy_minimum():
    rng = np.random.default_rng(4)
    x = rng.beta(2.0, 5.0, (ROWS, 6))
    prior = beta.BetaPrior(mean=0.5, concentration=4.0, scale_mean=0.1, scale_log_concentration=0.5)
    params, status = beta.fit(beta.stats(jnp.asarray(x), None), prior)
    assert (np.asarray(status) == FitStatus.CONVERGED).all()
    for row, a, b in zip(x, params.a, params.b, strict=True):

        def objective(ab, row=row):
            a, b = ab
            penalty = ((a / (a + b) - 0.5) / 0.1) ** 2 + ((np.log(a + b) - np.log(4.0)) / 0.5) ** 2
            return -stats.beta.logpdf(row, a, b).mean() + penalty / (2 * len(row))

        reference = optimize.minimize(objective, [1.0, 1.0], method="L-BFGS-B",
                                      bounds=[(1e-3, 1e6)] * 2, options={"ftol": 1e-15, "gtol": 1e-12})  # fmt: skip
        assert objective([float(a), float(b)]) <= reference.fun + 1e-9
        np.testing.assert_allclose([a, b], reference.x, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_degenerate_data_give_documented_fits(dtype):
    rows = [
        [0.0, 0.0, 0.3, 1.0, 1.0, 0.5],  # exact 0s and 1s (clamped)
        [0.4, 0.4, 0.4, 0.7, 0.7, 0.7],  # ties
        [0.6] + [0.0] * 5,  # n = 1 (masked below)
        [0.25] * 6,  # all equal
        [1.0] * 6,  # all exactly 1
        [0.5] * 6,  # no data (masked below)
    ]
    mask = np.ones((6, 6), bool)
    mask[2, 1:] = False
    mask[5] = False
    scores = jnp.asarray(rows, dtype)
    law = laws.LAWS["beta"]
    params, status = law.fit(law.stats(scores, mask))
    assert np.isfinite(np.asarray(params.a)).all() and np.isfinite(np.asarray(params.b)).all()
    expected = [FitStatus.CONVERGED, FitStatus.CONVERGED] + [FitStatus.AT_BOUND] * 3
    assert np.asarray(status).tolist() == [*expected, FitStatus.NO_DATA]
    # All equal at c: a / (a + b) = c and max(a, b) on the upper bound.
    for row, c in ((2, 0.6), (3, 0.25), (4, 1 - beta.CLAMP)):
        a, b = float(params.a[row]), float(params.b[row])
        assert max(a, b) == pytest.approx(beta.SHAPE_BOUNDS[1], rel=1e-5)
        assert a / (a + b) == pytest.approx(c, rel=1e-4)
    assert (float(params.a[5]), float(params.b[5])) == (1.0, 1.0)
    # A Beta law has no mass at exactly 0 or 1: such a question's loglik is -inf.
    loglik = np.asarray(law.loglik(params, law.stats(scores, mask)))
    assert np.isneginf(loglik[[0, 4]]).all() and np.isfinite(loglik[[1, 2, 3, 5]]).all()
    for value in (
        law.loglik(params, law.stats(scores, mask)),
        law.log_cdf(params, 0.5),
        law.log_pdf_or_pmf(law.with_sample_axis(params), scores),
        laws.optimal_n("beta", params, 0.9, 0.9, max_n=100),
    ):
        assert not np.isnan(np.asarray(value, np.float64)).any()
    # The 0/1 rule: an exact 0 enters the fit's statistics as CLAMP (and is counted).
    clamped = beta.stats(jnp.asarray([[beta.CLAMP, 0.5]], dtype), None)
    exact = beta.stats(jnp.asarray([[0.0, 0.5]], dtype), None)
    np.testing.assert_array_equal(exact[:3], clamped[:3])
    assert (float(exact.n_ends[0]), float(clamped.n_ends[0])) == (1.0, 0.0)


# --- atoms --------------------------------------------------------------------------------------


def _mixture_reference(name, params, s):
    """(P(X <= s), P(X < s)) of the atom law, from scipy's continuous CDF."""
    p0, p1 = np.asarray(params.mass0, np.float64), np.asarray(params.mass1, np.float64)
    if name == "beta-atoms":
        cont = stats.beta.cdf(s, np.asarray(params.inner.a), np.asarray(params.inner.b))
    else:
        mu, sigma = np.asarray(params.inner.mu), np.asarray(params.inner.sigma)
        cont = stats.truncnorm.cdf(s, -mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    w = 1 - p0 - p1
    return p0 + w * cont + p1 * (s >= 1), p0 * (s > 0) + w * cont


@pytest.mark.parametrize("name", ["tn-atoms", "beta-atoms"])
def test_atom_laws_fit_cdf_and_nstar_match_direct_formulas(name, dtype=jnp.float64):
    scores, mask = _ragged_scores(5, (ROWS, 20), dtype, atoms_fraction=0.5)
    law = laws.LAWS[name]
    stats_ = law.stats(scores, mask)
    params, status = law.fit(stats_)
    x, m = np.asarray(scores, np.float64), np.asarray(mask)
    n = m.sum(-1)
    np.testing.assert_allclose(params.mass0, ((x == 0) & m).sum(-1) / n, rtol=1e-6)
    np.testing.assert_allclose(params.mass1, ((x == 1) & m).sum(-1) / n, rtol=1e-6)
    inner = laws.LAWS[name.removesuffix("-atoms")]
    interior = m & (x > 0) & (x < 1)
    inner_params, _ = inner.fit(inner.stats(scores, jnp.asarray(interior)))
    for got, want in zip(params.inner, inner_params, strict=True):  # sums may round apart
        np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == jnp.float32 else 1e-10)
    # loglik: n0 log p0 + n1 log p1 + sum over interior scores of log(w f(s)); in float32
    # only where C's fit is not degenerate (from the sums, a + b = 1e6 costs 0.1 nat a score).
    log_mass = law.log_pdf_or_pmf(law.with_sample_axis(params), scores)
    checked = (np.asarray(status) == FitStatus.CONVERGED) | (dtype == jnp.float64)
    np.testing.assert_allclose(law.loglik(params, stats_)[checked],
                               np.where(m, log_mass, 0).sum(-1)[checked],
                               rtol=20 * _tolerance(dtype), atol=1e-3 if dtype == jnp.float32 else 1e-9)  # fmt: skip
    s = np.array([0.0, 0.2, 0.6, 0.95, 1.0])[:, None]
    cdf, below = _mixture_reference(name, params, s)
    tol = _tolerance(dtype) * 10
    np.testing.assert_allclose(np.exp(law.log_cdf(params, s)), cdf, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.exp(law.log_sf(params, s)), 1 - cdf, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.exp(law.log_miss(params, s)), below, rtol=tol, atol=tol)
    # N* from the direct formula P(max of N >= s) = 1 - P(X < s)^N, minimal.
    alpha, max_n = 0.9, 10**6
    for row, s_min in enumerate(s[:, 0]):
        n_star = np.asarray(laws.optimal_n(name, params, s_min, alpha, max_n=max_n))
        with np.errstate(divide="ignore"):  # P(X < s) = 0: N* = 1; = 1: N* = max_n
            direct = np.ceil(np.log1p(-alpha) / np.log(below[row]))
        direct = np.clip(np.where(below[row] >= 1, max_n, direct), 1, max_n)
        assert np.abs(n_star - direct).max() <= (1 if dtype == jnp.float32 else 0)
    # At s_min = 1 only the atom counts: 1 - (1 - p1)^N.
    p1 = np.asarray(params.mass1, np.float64)
    confidence = np.asarray(laws.confidence(name, params, 1.0, 5), np.float64)
    np.testing.assert_allclose(confidence, 1 - (1 - p1) ** 5, rtol=10 * _tolerance(dtype))


@pytest.mark.parametrize("name", ["tn-atoms", "beta-atoms"])
def test_atom_laws_conventions(name):
    scores = jnp.array([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3]] * 2)
    mask = jnp.array([[True] * 4, [True] * 4, [False] * 4] * 2)
    params, status = laws.fit(name, scores, mask)
    assert np.asarray(status).tolist() == ([FitStatus.AT_BOUND] * 2 + [FitStatus.NO_DATA]) * 2
    assert np.asarray(params.mass1).tolist() == [0.5, 1.0, 0.0] * 2
    # All scores at 1: P(X < 1) = 0, one sample reaches s_min = 1.
    assert laws.optimal_n(name, params, 1.0, 0.99, max_n=64).tolist() == [7, 1, 64] * 2
    law = laws.LAWS[name]
    for value in (
        law.log_cdf(params, 0.5),
        law.sample(jax.random.key(0), law.with_sample_axis(params), (ROWS, 5)),
    ):
        assert not np.isnan(np.asarray(value)).any()


# --- empirical ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_empirical_law_and_its_dkw_band(dtype):
    scores, mask = _ragged_scores(6, (ROWS, 40), dtype, atoms_fraction=0.3)
    law = laws.LAWS["empirical"]
    params, status = law.fit(law.stats(scores, mask))
    x, m = np.asarray(scores, np.float64), np.asarray(mask)
    n = m.sum(-1)
    eps = np.sqrt(np.log(1 / 0.05) / (2 * n))
    for s in (0.0, 0.3, 0.7, 1.0):
        f_n = ((x <= s) & m).sum(-1) / n
        below = ((x < s) & m).sum(-1) / n
        np.testing.assert_allclose(np.exp(law.log_cdf(params, s)), f_n, rtol=1e-6)
        np.testing.assert_allclose(np.exp(law.log_miss(params, s)), np.minimum(1, below + eps),
                                   rtol=1e-6)  # fmt: skip
        n_star = laws.optimal_n("empirical", params, s, 0.9, max_n=1000)
        upper = np.minimum(1, below + eps)
        direct = np.ceil(np.log(0.1) / np.log(np.where(upper >= 1, 0.5, upper)))
        np.testing.assert_array_equal(n_star, np.where(upper >= 1, 1000, direct))
    counts = ((x[:, :, None] == x[:, None, :]) & m[:, None, :]).sum(-1)
    reference = np.where(m, np.log(np.maximum(counts, 1) / n[:, None]), 0).sum(-1)
    np.testing.assert_allclose(law.loglik(params, law.stats(scores, mask)), reference, rtol=1e-6)
    draws = law.sample(jax.random.key(0), law.with_sample_axis(params), (ROWS, 30))
    assert all(
        set(np.asarray(d).tolist()) <= set(r[mm].tolist())
        for d, r, mm in zip(draws, x, m, strict=True)
    )
    assert np.isinf(
        np.asarray(laws.fit_all(scores, mask, laws=["empirical"])["empirical"].aic)
    ).all()


def test_empirical_nstar_is_conservative_for_a_discrete_law():
    """With probability >= level, F_upper(s_min^-) >= the true P(X < s_min), for any law."""
    rng = np.random.default_rng(7)
    x = _beta_atom_draws(rng, 0.2, 0.3, 2.0, 2.0, (4000, 24))
    params, _ = laws.fit("empirical", x)
    true_below = 0.2 + 0.5 * stats.beta.cdf(0.6, 2.0, 2.0)
    covered = np.exp(np.asarray(laws.LAWS["empirical"].log_miss(params, 0.6))) >= true_below
    assert covered.mean() >= 0.95
    level_90 = empirical.law(0.9)
    narrow, _ = level_90.fit(level_90.stats(x, None))
    assert (np.asarray(narrow.margin) < np.asarray(params.margin)).all()


# --- every law ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_all_reports_every_law_without_nan(dtype):
    rows = np.array([[0.0, 0.0, 0.3, 1.0, 1.0, 0.5], [0.4, 0.4, 0.4, 0.7, 0.7, 0.7],
                     [0.6, 0, 0, 0, 0, 0], [0.25] * 6, [1.0] * 6, [0.1, 0.5, 0.2, 0.9, 0.3, 0.6]])  # fmt: skip
    mask = np.ones(rows.shape, bool)
    mask[2, 1:] = False
    scores = jnp.asarray(rows, dtype)
    fits = laws.fit_all(scores, mask, laws=laws.LAWS)
    assert list(fits) == list(laws.LAWS)
    for name, result in fits.items():
        law = laws.LAWS[name]
        for field in ("status", "n", "loglik", "aic", "mass0", "mass1"):
            value = np.asarray(getattr(result, field), np.float64)
            assert value.shape == (6,) and not np.isnan(value).any(), (name, field)
        np.testing.assert_array_equal(result.n, mask.sum(-1))
        n_star = np.asarray(laws.optimal_n(name, result.params, 0.8, 0.9, max_n=1000))
        assert ((n_star >= 1) & (n_star <= 1000)).all(), name
        if law.num_params is not None:
            np.testing.assert_allclose(
                result.aic, 2 * law.num_params - 2 * result.loglik, rtol=1e-6
            )
        # loglik, summed over the scores, agrees with the law's loglik from its statistics
        if dtype == jnp.float64:
            from_stats = law.loglik(result.params, law.stats(scores, mask))
            np.testing.assert_allclose(result.loglik, from_stats, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fits["beta-atoms"].mass1, [2 / 6, 0, 0, 0, 1, 0], rtol=1e-6)
    assert (np.asarray(fits["beta"].mass1) == 0).all()
    # Exact 0s and 1s: continuous laws cannot produce them (AIC +inf), the atom laws can.
    for name in ("tn", "beta"):
        assert np.isposinf(np.asarray(fits[name].aic)[[0, 4]]).all()
    for name in ("tn-atoms", "beta-atoms"):
        assert np.isfinite(np.asarray(fits[name].aic)).all()


# Scores from a few values (exact 0s and 1s, ties) and masks leaving 0, 1 or more per row;
# the shapes of `test_fit_all_reports_every_law_without_nan`, whose compiled code it reuses.
_ROW_SCORES = st.lists(
    st.sampled_from([0.0, 1.0, 0.5, 0.25, 1e-9, 0.999, 0.7]), min_size=6, max_size=6
)


@settings(max_examples=15, deadline=None)
@given(
    scores=st.lists(_ROW_SCORES, min_size=ROWS, max_size=ROWS),
    lengths=st.lists(st.integers(0, 6), min_size=ROWS, max_size=ROWS),
)
def test_no_nan_and_nstar_in_range_on_awkward_data(scores, lengths):
    mask = np.arange(6) < np.array(lengths)[:, None]
    fits = laws.fit_all(np.array(scores), mask, laws=laws.LAWS)
    for name, result in fits.items():
        for leaf in jax.tree_util.tree_leaves(result):
            assert not np.isnan(np.asarray(leaf, np.float64)).any(), name
        for s_min in (0.0, 0.6, 1.0):
            n_star = np.asarray(laws.optimal_n(name, result.params, s_min, 0.9, max_n=100))
            assert ((n_star >= 1) & (n_star <= 100)).all(), name


@pytest.mark.parametrize("name", list(laws.LAWS))
def test_prefix_stats_fit_every_prefix(name):
    law = laws.LAWS[name]
    scores, mask = _ragged_scores(8, (3, 5), jnp.float64, atoms_fraction=0.4)
    prefix = law.prefix_stats(scores, mask)
    for j in range(5):
        whole = law.stats(scores[:, : j + 1], mask[:, : j + 1])
        at_j = jax.tree_util.tree_map(lambda p, j=j: p[:, j], prefix)
        if name == "empirical":  # the prefix keeps all k slots (+inf padding)
            at_j = at_j._replace(sorted=at_j.sorted[:, : j + 1])
        for got, want in zip(
            jax.tree_util.tree_leaves(at_j), jax.tree_util.tree_leaves(whole), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("name", ["beta", "beta-atoms", "empirical"])
def test_jit_and_eager_agree(name):
    law = laws.LAWS[name]
    scores, mask = _ragged_scores(9, (ROWS, 6), jnp.float64, atoms_fraction=0.3)
    jitted = law.fit(law.stats(scores, mask))
    with jax.disable_jit():
        eager = law.fit(law.stats(scores, mask))
        eager_cdf = law.log_cdf(eager[0], 0.4)
    for got, want in zip(
        jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(eager), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_allclose(law.log_cdf(jitted[0], 0.4), eager_cdf, rtol=1e-9)


def test_cvm_statistic_matches_scipy():
    rng = np.random.default_rng(10)
    x = rng.beta(2.0, 5.0, (ROWS, 30))
    params = beta.BetaParams(jnp.full(ROWS, 2.0), jnp.full(ROWS, 5.0))
    statistic = laws.cvm_statistic("beta", params, x)
    reference = [stats.cramervonmises(row, stats.beta(2.0, 5.0).cdf).statistic for row in x]
    np.testing.assert_allclose(statistic, reference, rtol=1e-9)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="^law: unknown law 'gamma'"):
        laws.fit("gamma", [[0.5]])
    with pytest.raises(ValueError, match="^laws: unknown law 'x'"):
        laws.fit_all([[0.5]], laws=["beta", "x"])
    with pytest.raises(ValueError, match="^scores must lie in"):
        laws.fit("beta", [[1.5]])
    with pytest.raises(ValueError, match="^law: the empirical law has no goodness-of-fit"):
        laws.goodness_of_fit("empirical", None, [[0.5]], key=jax.random.key(0))
    with pytest.raises(ValueError, match="^num_boot must be"):
        laws.goodness_of_fit("beta", None, [[0.5]], key=jax.random.key(0), num_boot=0)
    with pytest.raises(ValueError, match="^level must lie"):
        empirical.law(0.3)
    with pytest.raises(ValueError, match="^s_min must lie"):
        laws.optimal_n("tn", tn.TNParams(0.5, 0.1), 1.5, 0.9)


# --- goodness of fit: calibration ---------------------------------------------------------------

# 200 questions of 32 scores, B = 79 (p <= 0.05 is exactly 4 exceedances of 79); 200 x 79
# refits stay below the core solver's compaction threshold (one compilation less).
GOF_QUESTIONS, GOF_SAMPLES, GOF_BOOT = 200, 32, 79


def _simulated(name, rng):
    """Scores of GOF_QUESTIONS questions from `name`, parameters varying across questions."""
    shape = (GOF_QUESTIONS, GOF_SAMPLES)
    q = GOF_QUESTIONS
    a = rng.uniform(1.0, 6.0, (q, 1))
    b = rng.uniform(1.0, 6.0, (q, 1))
    if name == "beta":
        return rng.beta(a, b, shape)
    if name == "beta-atoms":
        return _beta_atom_draws(rng, 0.1, rng.uniform(0.1, 0.4, (q, 1)), a, b, shape)
    mu, sigma = rng.uniform(0.2, 0.9, (q, 1)), rng.uniform(0.08, 0.3, (q, 1))
    draws = stats.truncnorm.rvs(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma, size=shape,
                                random_state=rng)  # fmt: skip
    if name == "tn":
        return draws
    u = rng.uniform(size=shape)
    return np.where(u < 0.1, 0.0, np.where(u > 0.7, 1.0, draws))


@pytest.mark.parametrize("name", PARAMETRIC)
def test_gof_rejects_the_true_law_at_its_level(name):
    """On data from the law itself, P(p <= 5%) is 5% within Monte Carlo error (3 sd)."""
    rng = np.random.default_rng(11)
    x = _simulated(name, rng)
    params, _ = laws.fit(name, x)
    test = laws.goodness_of_fit(name, params, x, key=jax.random.key(0), num_boot=GOF_BOOT)
    rate = (np.asarray(test.p_value) <= 0.05).mean()
    sd = math.sqrt(0.05 * 0.95 / GOF_QUESTIONS)
    assert abs(rate - 0.05) <= 3 * sd, rate
    if name == "tn":  # and the test has power: tn on scores with 30% exact 1s
        x = _simulated("tn-atoms", rng)
        params, _ = laws.fit("tn", x)
        test = laws.goodness_of_fit("tn", params, x, key=jax.random.key(2), num_boot=GOF_BOOT)
        assert (np.asarray(test.p_value) <= 0.05).mean() > 0.9


def test_pit_is_uniform_under_the_true_atom_law():
    rng = np.random.default_rng(12)
    x = _beta_atom_draws(rng, 0.2, 0.3, 2.0, 3.0, (1, 4000))
    params = atoms.AtomParams(
        jnp.array([0.2]), jnp.array([0.3]), beta.BetaParams(jnp.array([2.0]), jnp.array([3.0]))
    )
    u = np.asarray(laws.pit("beta-atoms", params, x, key=jax.random.key(0)))
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
