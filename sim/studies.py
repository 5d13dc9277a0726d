"""Monte Carlo studies of the N* guarantee: coverage, adaptive policies, misspecification.

Each study returns table rows (dicts) with Monte Carlo standard errors; `optscale_jax.experiments.simulate_cli` writes them.

- `coverage_study`: N* from the true (mu, sigma); realised P(max of N* >= s_min) against
  alpha and against the nominal 1 - F(s_min)^N*, also for N* - 1. The maximum is drawn
  directly (`laws.sample_max`: one exponential per trial, plus one normal under a copula).
- `law_coverage_study`: N* from a score law (`optscale_jax.laws`) fitted to a pilot of the
  question's scores, under each true law (truncated normal, Beta, and both with atoms at 0
  and 1); realised coverage 1 - P_true(X < s_min)^N* per pilot, averaged over pilots.
- `adaptive_study`: OptScale0 (sequential MLE refits), the released peek rule and OptScalet
  (MAP with a prior of chosen noise) on simulated sample paths, each against fixed-N
  Best-of-N with the same expected number of samples.
- `misspec_study`: the same policies with a truncated-normal model when the truth is Beta,
  a mixture (saturated or failing verifier, a second mode) or correlated (rho).

The policy studies share one loop (`_policy_study`): each is a sequence of truths (`_Truth`:
the law, the oracles' N*, the priors), simulated in blocks of questions and turned into one
row per (policy, s_min, alpha). A new truth family is one entry of `_TRUTHS`.

Coverage is the probability that the best drawn score reaches s_min, averaged over the
questions of a population and over simulated paths. Standard errors are conditional on the
questions: sqrt(sum_q p_q (1 - p_q) / T) / Q with T paths per question.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from optscale_jax import (
    confidence,
    devices,
    optimal_n,
    optimal_n_from_log_cdf,
    policies,
    truncnorm,
    validation,
)
from optscale_jax import laws as score_laws
from optscale_jax._numerics import log1mexp
from optscale_jax.sim import laws, sharding
from optscale_jax.sim.populations import Population, moment_match, noisy_prior

COVERAGE_COLUMNS = (
    "family",
    "rho",
    "mu",
    "sigma",
    "s_min",
    "alpha",
    "n_star",
    "nominal",
    "coverage",
    "coverage_se",
    "trials",
    "capped",
    "n_star_minus_one_nominal",
    "n_star_minus_one_coverage",
    "n_star_minus_one_coverage_se",
    "method",
)

POLICY_COLUMNS = (
    "policy",
    "family",
    "rho",
    "alpha",
    "s_min",
    "coverage",
    "coverage_se",
    "mean_samples",
    "mean_samples_se",
    "fixed_n",
    "fixed_n_coverage",
    "fixed_n_coverage_se",
    "coverage_minus_alpha",
    "capped_fraction",
    "questions",
    "paths",
    "max_n",
)

# Elements per simulated block: bounds memory (a few arrays of this many float64).
_BLOCK_ELEMENTS = 1 << 21


def coverage_block_trials(cells: int, trials: int) -> int:
    """Trials per block when `cells` cells are simulated together: a block holds at most
    about 2^21 draws (a short last block keeps this shape and is masked)."""
    return max(1, min(trials, _BLOCK_ELEMENTS // cells))


def _binomial_se(p: np.ndarray, trials: int) -> np.ndarray:
    return np.sqrt(np.maximum(p * (1.0 - p), 0.0) / trials)


def _float():
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def _check_grid(s_mins: Sequence[float], alphas: Sequence[float], rhos: Sequence[float]) -> None:
    """The thresholds, targets and correlations every study crosses."""
    validation.check_unit(np.asarray(s_mins, np.float64), "s_min")
    validation.check_open_unit(np.asarray(alphas, np.float64), "alpha")
    for rho in rhos:
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must lie in [0, 1), got {rho}")


# --------------------------------------------------------------------------- coverage


class _CoverageCells(NamedTuple):
    """One cell per (rho, s_min, alpha, question): the values as given and their closed forms."""

    given: list[tuple[Any, Any, Any, Any, Any]]  # (mu, sigma, s_min, alpha, rho)
    rho: np.ndarray
    n_star: np.ndarray  # N* with the true parameters
    nominal: np.ndarray  # 1 - F(s_min)^N*
    nominal_less: np.ndarray  # 1 - F(s_min)^(N* - 1)
    log_f: np.ndarray  # log F(s_min)
    z_min: np.ndarray  # Phi^-1(F(s_min)), the threshold of the copula's latent normal


def _coverage_cells(mu, sigma, s_mins, alphas, rhos, max_n, mesh=None) -> _CoverageCells:
    given = list(
        (m, s, s_min, alpha, rho)
        for rho, s_min, alpha, (m, s) in itertools.product(
            rhos, s_mins, alphas, zip(mu, sigma, strict=True)
        )
    )
    cm, cs, cq, ca, cr = (np.array(c, np.float64) for c in zip(*given, strict=True))
    forms = devices.run_on_mesh(_closed_forms, cm, cs, cq, ca, mesh=mesh, replicated=(max_n,))
    n_star, nominal, nominal_less, log_f, z_min = (np.asarray(x) for x in forms)
    return _CoverageCells(given, cr, n_star.astype(np.int64), nominal, nominal_less, log_f, z_min)


def _closed_forms(mu, sigma, s_min, alpha, max_n):
    """Per cell (elementwise): N*, 1 - F(s_min)^N*, 1 - F(s_min)^(N* - 1), log F(s_min) and
    the copula's latent threshold Phi^-1(F(s_min))."""
    n_star = optimal_n(mu, sigma, s_min, alpha, max_n)
    log_f = truncnorm.logcdf(s_min, mu, sigma)
    return (
        n_star,
        confidence(mu, sigma, s_min, n_star),
        confidence(mu, sigma, s_min, n_star - 1),
        log_f,
        laws.normal_ppf_log(log_f, truncnorm.logsf(s_min, mu, sigma)),
    )


@functools.partial(jax.jit, static_argnames=("trials", "correlated", "mesh"))
def _coverage_block(key, log_f, z_min, rho, n_star, valid, *, trials, correlated, mesh=None):
    """Covered counts `[C]` at N* and at N* - 1 over the first `valid` of `trials` trials.

    The best of n scores has quantile level U^(1/n) (`laws.sample_max`), and
    F^-1(U^(1/n)) >= s_min exactly when U >= F(s_min)^n: each trial compares one uniform
    with a per-cell constant exp(n log F(s_min)), with no quantile function evaluated. Under the copula
    the best latent normal is sqrt(rho) W + sqrt(1 - rho) Phi^-1(U^(1/n)), compared with
    z_min = Phi^-1(F(s_min)). N* - 1 reuses the same draws (common random numbers).

    With a `mesh` every device draws the trials of its own cells only (the same bits as
    one device: partitionable threefry) and the counts come back whole on every device.
    """
    dtype = log_f.dtype
    shape = (trials, log_f.shape[0])
    uniform_key, shared_key = jax.random.split(key)
    u = sharding.constrain(jax.random.uniform(uniform_key, shape, dtype), mesh, 1)
    counted = (jnp.arange(trials) < valid)[:, None]
    n = n_star.astype(dtype)
    less = jnp.maximum(n - 1.0, 1.0)
    if correlated:
        normal = sharding.constrain(jax.random.normal(shared_key, shape, dtype), mesh, 1)
        shared = jnp.sqrt(rho) * normal

        log_u = jnp.log(u)

        def reached(n):
            log_q = log_u / n
            top = laws.normal_ppf_log(log_q, log1mexp(log_q))
            return shared + jnp.sqrt(1.0 - rho) * top >= z_min

        covered, covered_less = reached(n), reached(less)
    else:
        # U >= F^n with F^n formed once per cell: no per-trial transcendental.
        covered, covered_less = u >= jnp.exp(n * log_f), u >= jnp.exp(less * log_f)
    # n = N* - 1 may be 0: no sample, never covered.
    covered_less = covered_less & (n_star > 1)
    counts = (
        jnp.sum(counted & covered, axis=0, dtype=jnp.int32),
        jnp.sum(counted & covered_less, axis=0, dtype=jnp.int32),
    )
    return sharding.constrain(counts, mesh, None)


def _count_covered(
    cells: _CoverageCells,
    trials: int,
    seed: int,
    progress: Callable[[int], Any] | None,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Covered trials per cell at N* and at N* - 1; i.i.d. and copula cells in two groups."""
    covered = np.zeros(len(cells.given), np.int64)
    covered_less = np.zeros(len(cells.given), np.int64)
    dtype = _float()
    key = jax.random.key(seed)
    for correlated in (False, True):
        group = np.flatnonzero((cells.rho > 0) == correlated)
        if group.size == 0:
            continue
        block = coverage_block_trials(group.size, trials)
        inputs = (
            jnp.asarray(cells.log_f[group], dtype),
            jnp.asarray(cells.z_min[group], dtype),
            jnp.asarray(cells.rho[group], dtype),
            jnp.asarray(cells.n_star[group], jnp.int32),
        )
        for done in range(0, trials, block):
            size = min(block, trials - done)
            key, sub = jax.random.split(key)
            # A short last block keeps the block's shape (no recompilation); the rest is masked.
            hits, hits_less = _coverage_block(
                *sharding.replicate((sub, *inputs, size), mesh),
                trials=block,
                correlated=correlated,
                mesh=mesh,
            )
            covered[group] += np.asarray(hits)
            covered_less[group] += np.asarray(hits_less)
            if progress is not None:
                progress(size)
    return covered, covered_less


def _coverage_row(cells: _CoverageCells, i: int, covered, covered_less, trials, max_n) -> dict:
    m, s, s_min, alpha, rho = cells.given[i]
    p, p_less = covered / trials, covered_less / trials
    return {
        "family": "truncnorm",
        "rho": rho,
        "mu": m,
        "sigma": s,
        "s_min": s_min,
        "alpha": alpha,
        "n_star": int(cells.n_star[i]),
        "nominal": float(cells.nominal[i]),
        "coverage": p,
        "coverage_se": float(_binomial_se(p, trials)),
        "trials": trials,
        "capped": bool(cells.n_star[i] >= max_n and cells.nominal[i] < alpha),
        "n_star_minus_one_nominal": float(cells.nominal_less[i]),
        "n_star_minus_one_coverage": p_less,
        "n_star_minus_one_coverage_se": float(_binomial_se(p_less, trials)),
        "method": "exact-max copula" if rho > 0 else "exact-max",
    }


def coverage_study(
    mu: Sequence[float],
    sigma: Sequence[float],
    s_mins: Sequence[float],
    alphas: Sequence[float],
    rhos: Sequence[float] = (0.0,),
    *,
    trials: int = 100_000,
    max_n: int = 1_000_000,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    mesh: Mesh | None = None,
) -> list[dict[str, Any]]:
    """Realised coverage of the closed-form N* with the true truncated-normal parameters.

    One cell per (question, s_min, alpha, rho); the questions are the (mu[i], sigma[i])
    pairs. N* = optimal_n(mu, sigma, s_min, alpha, max_n); nominal = 1 - F(s_min)^N*.
    With rho > 0 scores are exchangeable (Gaussian copula) and the nominal value is what
    the i.i.d. model promises.

    Args:
        mu: truncated-normal locations, one per question.
        sigma: scales, same length.
        s_mins: thresholds in [0, 1].
        alphas: targets in (0, 1).
        rhos: copula correlations in [0, 1).
        trials: Monte Carlo trials per cell.
        max_n: cap of N* (capped cells promise less than alpha; column `capped`).
        seed: PRNG seed.
        progress: called with the number of trials done after each block (a tqdm update).
        mesh: a `devices.question_mesh` to spread the cells over, or None (one device);
            the rows are the same either way.

    Returns:
        Rows with the columns of `COVERAGE_COLUMNS`.
    """
    mu = np.asarray(mu, np.float64).ravel()
    sigma = np.asarray(sigma, np.float64).ravel()
    if mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must have the same length, got {mu.size} and {sigma.size}")
    _check_grid(s_mins, alphas, rhos)
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    cells = _coverage_cells(mu, sigma, s_mins, alphas, rhos, max_n, mesh)
    covered, covered_less = _count_covered(cells, trials, seed, progress, mesh)
    return [
        _coverage_row(cells, i, covered[i], covered_less[i], trials, max_n)
        for i in range(len(cells.given))
    ]


# --------------------------------------------------------------------------- coverage by law

LAW_COVERAGE_COLUMNS = (
    "family",
    "law",
    "mu",
    "sigma",
    "s_min",
    "alpha",
    "pilot",
    "true_n_star",
    "n_star_mean",
    "coverage",
    "coverage_se",
    "below_alpha",
    "trials",
    "method",
)

LAW_FAMILIES = ("truncnorm", "beta", "tn-atoms", "beta-atoms")
"""True laws of `law_coverage_study`: TN(mu, sigma), the Beta law of the question's moments,
and each with point masses (mass0, mass1) at 0 and 1 (`laws.WithAtoms`)."""


def law_truth(family: str, population: Population, atom_masses=(0.05, 0.2), seed: int = 0):
    """The true law of every question for a `LAW_FAMILIES` family (batch `[Q]`).

    Args:
        family: one of `LAW_FAMILIES`.
        population: the questions (mu, sigma; `beta` uses their score moments as `truth_law`).
        atom_masses: (mass0, mass1) of the atom families, each >= 0, summing to < 1.
        seed: seeds the Monte Carlo moments where the population has none (`truth_law`).

    Returns:
        A law of `optscale_jax.sim.laws`.
    """
    _check_law_families((family,), atom_masses)
    mass0, mass1 = (float(m) for m in atom_masses)
    inner = truth_law("beta" if family.startswith("beta") else "truncnorm", population, seed=seed)
    if not family.endswith("atoms"):
        return inner
    dtype = _float()
    shape = (len(population),)
    return laws.WithAtoms(jnp.full(shape, mass0, dtype), jnp.full(shape, mass1, dtype), inner)


def _check_law_families(families: Sequence[str], atom_masses) -> None:
    for family in families:
        if family not in LAW_FAMILIES:
            raise ValueError(f"families: unknown {family!r}; choose from {LAW_FAMILIES}")
    mass0, mass1 = (float(m) for m in atom_masses)
    if mass0 < 0 or mass1 < 0 or mass0 + mass1 >= 1:
        raise ValueError(f"atom_masses must be >= 0 with a sum below 1, got {atom_masses}")


def _log_below(law: laws.Law, s_min: float) -> np.ndarray:
    """log P(X < s_min) of the true law: its log CDF just below s_min (an atom at s_min,
    e.g. s_min = 1 and a mass at 1, does not count)."""
    below = np.nextafter(s_min, -np.inf)
    return np.asarray(law.log_cdf(jnp.asarray(below, _float())), np.float64)


def _law_cells(truth, name, draws, s_mins, alphas, max_n):
    """Per (s_min, alpha): (true N* [Q], N* of the fit per pilot [T, Q], realised coverage
    1 - P_true(X < s_min)^N* per pilot [T, Q])."""
    params, _ = score_laws.fit(name, draws)
    for s_min in s_mins:
        log_below = _log_below(truth, s_min)
        for alpha in alphas:
            n_star = np.asarray(score_laws.optimal_n(name, params, s_min, alpha, max_n), np.int64)
            true_n = np.asarray(optimal_n_from_log_cdf(log_below, alpha, max_n), np.int64)
            coverage = -np.expm1(n_star * log_below)
            yield s_min, alpha, true_n, n_star, coverage


def law_coverage_study(
    population: Population,
    families: Sequence[str],
    fitted_laws: Sequence[str],
    s_mins: Sequence[float],
    alphas: Sequence[float],
    *,
    pilot: int = 16,
    trials: int = 200,
    max_n: int = 1_000_000,
    atom_masses: tuple[float, float] = (0.05, 0.2),
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
) -> list[dict[str, Any]]:
    """Realised coverage of N* from a fitted score law, under each true law.

    For every true law (`family`) and question, `trials` pilots of `pilot` i.i.d. scores are
    drawn; each fitted law (`law`) is fitted to each pilot (`optscale_jax.laws.fit`) and its
    N* computed (`optscale_jax.laws.optimal_n`). The realised coverage of that N* is exact
    given the pilot: 1 - P_true(X < s_min)^N* (fresh draws, i.i.d.); a row reports its mean
    over the pilots (`coverage`, with the standard error over pilots), the fraction of
    pilots below alpha (`below_alpha`), the mean N* and the true law's N* (`true_n_star`).

    Args:
        population: the questions (mu, sigma and score moments).
        families: true laws, from `LAW_FAMILIES`.
        fitted_laws: law names of `optscale_jax.laws.LAWS`.
        s_mins: thresholds in [0, 1].
        alphas: targets in (0, 1).
        pilot: scores each fit sees (>= 1).
        trials: pilots per question (>= 1).
        max_n: cap of N*.
        atom_masses: (mass0, mass1) of the atom families.
        seed: PRNG seed (pilots of family i use key fold_in(seed, i); every fitted law sees
            the same pilots).
        progress: called with 1 after each (family, law).

    Returns:
        Rows with the columns of `LAW_COVERAGE_COLUMNS`.
    """
    names = [law.name for law in score_laws.get_laws(fitted_laws, "law")]
    _check_law_families(families, atom_masses)
    _check_grid(s_mins, alphas, (0.0,))
    for value, name in ((pilot, "pilot"), (trials, "trials")):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    rows = []
    for index, family in enumerate(families):
        truth = law_truth(family, population, atom_masses, seed)
        key = jax.random.fold_in(jax.random.key(seed), index)
        draws = laws.with_sample_axis(truth).sample(key, (trials, len(population), pilot))
        for name in names:
            for s_min, alpha, true_n, n_star, coverage in _law_cells(
                truth, name, draws, s_mins, alphas, max_n
            ):
                for q in range(len(population)):
                    rows.append(_law_row(population, q, family, name, s_min, alpha, pilot,
                                         true_n[q], n_star[:, q], coverage[:, q]))  # fmt: skip
            if progress is not None:
                progress(1)
    return rows


def _law_row(population, q, family, name, s_min, alpha, pilot, true_n, n_star, coverage):
    trials = coverage.shape[0]
    return {
        "family": family,
        "law": name,
        "mu": float(population.mu[q]),
        "sigma": float(population.sigma[q]),
        "s_min": s_min,
        "alpha": alpha,
        "pilot": pilot,
        "true_n_star": int(true_n),
        "n_star_mean": float(n_star.mean()),
        "coverage": float(coverage.mean()),
        "coverage_se": float(coverage.std(ddof=1) / math.sqrt(trials)) if trials > 1 else 0.0,
        "below_alpha": float((coverage < alpha).mean()),
        "trials": trials,
        "method": "fitted-law closed-form",
    }


# --------------------------------------------------------------------------- policies


class _PolicyGrid(NamedTuple):
    """The settings a policy study applies to every truth (validated; static under jit)."""

    s_mins: tuple[float, ...]
    alphas: tuple[float, ...]
    paths: int
    max_n: int
    peek: int
    min_samples: int
    prior_scale: tuple[float, float]


class _Truth(NamedTuple):
    """One simulated truth of a policy study, labelled (family, rho) in its rows.

    Attributes:
        family: the truth's family (`MISSPEC_FAMILIES`).
        rho: copula correlation of the simulated paths (0 = i.i.d.).
        law: the true score law, batch shape `[Q]`.
        oracle_n: `[O, S, A, Q]` N* of the oracle policies.
        prior_mu: `[P, Q]` prior centres of the OptScalet variants (P may be 0).
        prior_sigma: `[P, Q]`.
    """

    family: str
    rho: float
    law: laws.Law
    oracle_n: np.ndarray
    prior_mu: np.ndarray
    prior_sigma: np.ndarray


def _policy_grid(s_mins, alphas, rhos, paths, max_n, peek, min_samples, prior_scale) -> _PolicyGrid:
    _check_grid(s_mins, alphas, rhos)
    if paths < 1:
        raise ValueError(f"paths must be >= 1, got {paths}")
    if max_n < 2:
        raise ValueError(f"max_n must be >= 2, got {max_n}")
    if not 1 <= peek <= max_n:
        raise ValueError(f"peek must lie in [1, max_n], got {peek}")
    if not 1 <= min_samples <= max_n:
        raise ValueError(f"min_samples must lie in [1, max_n], got {min_samples}")
    return _PolicyGrid(
        tuple(float(s) for s in s_mins),
        tuple(float(a) for a in alphas),
        paths,
        max_n,
        peek,
        min_samples,
        tuple(prior_scale),
    )


def _outcome(best, samples, s_min):
    """Per-question (coverage, mean n, mean n^2, capped fraction) of drawing `samples` per path."""
    samples = jnp.broadcast_to(samples, best.shape[:2])
    reached = jnp.take_along_axis(best, (samples - 1)[..., None], axis=2)[..., 0] >= s_min
    n = samples.astype(best.dtype)
    return (
        jnp.mean(reached, axis=1, dtype=best.dtype),
        jnp.mean(n, axis=1),
        jnp.mean(n * n, axis=1),
        jnp.mean(samples >= best.shape[-1], axis=1, dtype=best.dtype),
    )


@functools.partial(
    jax.jit, static_argnames=("s_mins", "alphas", "max_n", "peek", "min_samples", "prior_scale")
)
def _policy_block(
    scores, oracle_n, prior_mu, prior_sigma, *, s_mins, alphas, max_n, peek, min_samples,
    prior_scale,
):  # fmt: skip
    """Per-question outcomes of every policy on one block of simulated paths.

    Policies in order: the oracles, `optscale0` (sequential MLE), `peek`, then one
    sequential MAP rule per prior.

    Args:
        scores: `[c, T, K]` simulated scores (K = max_n).
        oracle_n: `[O, S, A, c]` int32 N* of the oracle policies.
        prior_mu: `[P, c]` prior centres of mu (P OptScalet variants, may be 0).
        prior_sigma: `[P, c]`.

    Returns:
        (covered, samples, samples_sq, capped) each `[policies, S, A, c]` (means over the T
        paths), and the fixed-N coverage curves `[S, c, K]`.
    """
    mask = jnp.ones(scores.shape, bool)
    best = jax.lax.cummax(scores, axis=2)
    fits = [policies.prefix_fits(scores, mask)]
    for p in range(prior_mu.shape[0]):
        fits.append(
            policies.prefix_fits(
                scores, mask, prior_mu[p][:, None], prior_sigma[p][:, None], prior_scale
            )
        )
    per_s = []
    for si, s_min in enumerate(s_mins):
        log_fs = [truncnorm.logcdf(jnp.asarray(s_min, f.mu.dtype), f.mu, f.sigma) for f in fits]
        per_a = []
        for ai, alpha in enumerate(alphas):
            samples = [oracle_n[o, si, ai][:, None] for o in range(oracle_n.shape[0])]
            stars = [optimal_n_from_log_cdf(log_f, alpha, max_n) for log_f in log_fs]
            samples.append(policies.first_stop(stars[0], mask, min_samples, max_n))
            samples.append(policies.peek_samples(stars[0], mask, peek, max_n))
            samples += [policies.first_stop(star, mask, min_samples, max_n) for star in stars[1:]]
            results = [_outcome(best, n, s_min) for n in samples]
            per_a.append([jnp.stack(r) for r in zip(*results, strict=True)])
        per_s.append([jnp.stack(r, axis=1) for r in zip(*per_a, strict=True)])
    stats = tuple(jnp.stack(r, axis=1) for r in zip(*per_s, strict=True))
    curves = jnp.stack([jnp.mean(best >= s_min, axis=1, dtype=scores.dtype) for s_min in s_mins])
    return stats, curves


@functools.lru_cache(maxsize=16)
def _policy_program(grid: _PolicyGrid) -> Callable:
    """`_policy_block` with the grid's static settings: one object per grid, so a sharded
    run reuses its compiled program."""
    return functools.partial(
        _policy_block,
        s_mins=grid.s_mins,
        alphas=grid.alphas,
        max_n=grid.max_n,
        peek=grid.peek,
        min_samples=grid.min_samples,
        prior_scale=grid.prior_scale,
    )


def _simulate_policies(
    truth: _Truth,
    grid: _PolicyGrid,
    key: jax.Array,
    progress: Callable[[int], Any] | None,
    mesh: Mesh | None = None,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Runs `_policy_block` over blocks of questions; returns the concatenated outcomes."""
    questions = truth.oracle_n.shape[-1]
    block = max(1, min(questions, _BLOCK_ELEMENTS // (grid.paths * grid.max_n)))
    stats_parts, curve_parts = [], []
    for start in range(0, questions, block):
        # Pad the last block by repeating its first question, so shapes (and jit) stay fixed.
        index = np.minimum(np.arange(start, start + block), questions - 1)
        index = np.where(index >= start, index, start)
        valid = min(block, questions - start)
        key, sample_key = jax.random.split(key)
        law = laws.with_sample_axis(jax.tree.map(lambda p, index=index: p[index], truth.law))
        shape = (block, grid.paths, grid.max_n)
        scores = laws.sample_exchangeable(law, sample_key, shape, truth.rho)
        # Questions on axis 0 of the scores, last of the oracles' N*, 1 of the priors; out
        # on axis 3 of the stats ([policies, S, A, c]) and 1 of the curves ([S, c, K]).
        stats, curves = devices.run_on_mesh(
            _policy_program(grid),
            scores,
            jnp.asarray(truth.oracle_n[..., index], jnp.int32),
            jnp.asarray(truth.prior_mu[:, index], scores.dtype),
            jnp.asarray(truth.prior_sigma[:, index], scores.dtype),
            mesh=mesh,
            axis=(0, 3, 1, 1),
            out_axis=(3, 1),
        )
        stats_parts.append([np.asarray(s, np.float64)[..., :valid] for s in stats])
        curve_parts.append(np.asarray(curves, np.float64)[:, :valid])
        if progress is not None:
            progress(valid)
    stats = tuple(np.concatenate(parts, axis=-1) for parts in zip(*stats_parts, strict=True))
    return stats, np.concatenate(curve_parts, axis=1)


def _conditional_se(p_q: np.ndarray, paths: int) -> float:
    """Standard error of mean_q p_q given the questions: sqrt(sum_q p_q (1 - p_q) / T) / Q."""
    return float(np.sqrt(np.sum(p_q * (1 - p_q) / paths)) / p_q.shape[-1])


def _fixed_n_coverage(curve: np.ndarray, n_bar: float, max_n: int) -> np.ndarray:
    """Per-question coverage `[Q]` of fixed N at a fractional expected sample count n_bar.

    Fixed N draws floor(n_bar) or floor(n_bar) + 1 samples with probabilities making the
    mean n_bar: its coverage interpolates linearly between the two integers of `curve`
    (`[Q, K]`, coverage at N = 1..K on the same paths, so the comparison is paired).
    """
    low = int(np.clip(math.floor(n_bar), 1, max_n))
    high = min(low + 1, max_n)
    weight = float(np.clip(n_bar - low, 0.0, 1.0))
    return (1.0 - weight) * curve[:, low - 1] + weight * curve[:, high - 1]


def _policy_measures(p_q, n_q, n_sq_q, capped_q, curve, alpha, grid: _PolicyGrid) -> dict:
    """The measured columns of one (policy, s_min, alpha) row from per-question means."""
    questions = p_q.shape[-1]
    var_q = np.maximum(n_sq_q - n_q**2, 0.0)
    n_bar = float(np.mean(n_q))
    fixed_q = _fixed_n_coverage(curve, n_bar, grid.max_n)
    coverage = float(np.mean(p_q))
    return {
        "coverage": coverage,
        "coverage_se": _conditional_se(p_q, grid.paths),
        "mean_samples": n_bar,
        "mean_samples_se": float(np.sqrt(np.sum(var_q / grid.paths)) / questions),
        "fixed_n": n_bar,
        "fixed_n_coverage": float(np.mean(fixed_q)),
        "fixed_n_coverage_se": _conditional_se(fixed_q, grid.paths),
        "coverage_minus_alpha": coverage - alpha,
        "capped_fraction": float(np.mean(capped_q)),
        "questions": questions,
        "paths": grid.paths,
        "max_n": grid.max_n,
    }


def _policy_rows(names, stats, curves, truth: _Truth, grid: _PolicyGrid) -> list[dict[str, Any]]:
    """One row per (policy, s_min, alpha), with the equal-cost fixed-N comparison."""
    rows = []
    for (pi, name), (si, s_min), (ai, alpha) in itertools.product(
        enumerate(names), enumerate(grid.s_mins), enumerate(grid.alphas)
    ):
        row = {"policy": name, "family": truth.family, "rho": truth.rho}
        row |= {"alpha": alpha, "s_min": s_min}
        row |= _policy_measures(*(stat[pi, si, ai] for stat in stats), curves[si], alpha, grid)
        rows.append(row)
    return rows


def _policy_study(
    truths: Iterable[_Truth],
    names: list[str],
    grid: _PolicyGrid,
    seed: int,
    progress: Callable[[int], Any] | None,
    mesh: Mesh | None = None,
) -> list[dict[str, Any]]:
    """Simulates every truth in turn (one PRNG key each) and returns all their rows."""
    rows = []
    key = jax.random.key(seed)
    for truth in truths:
        key, sub = jax.random.split(key)
        stats, curves = _simulate_policies(truth, grid, sub, progress, mesh)
        rows += _policy_rows(names, stats, curves, truth, grid)
    return rows


def _oracle_n(mu, sigma, s_mins, alphas, max_n) -> np.ndarray:
    """`[S, A, Q]` N* with the given truncated-normal parameters."""
    mu, sigma = np.asarray(mu), np.asarray(sigma)
    return np.stack(
        [np.stack([np.asarray(optimal_n(mu, sigma, s, a, max_n)) for a in alphas]) for s in s_mins]
    )


def _law_oracle_n(law: laws.Law, s_mins, alphas, max_n) -> np.ndarray:
    """`[S, A, Q]` N* = ceil(log(1 - alpha) / log F(s_min)) with the law's own CDF."""
    return np.stack(
        [
            np.stack([np.asarray(optimal_n_from_log_cdf(law.log_cdf(s), a, max_n)) for a in alphas])
            for s in s_mins
        ]
    )


def adaptive_study(
    population: Population,
    s_mins: Sequence[float],
    alphas: Sequence[float],
    rhos: Sequence[float] = (0.0,),
    *,
    paths: int = 16,
    max_n: int = 64,
    peek: int = 4,
    min_samples: int = 1,
    prior_noises: Sequence[float] = (0.05, 0.2),
    prior_scale: tuple[float, float] = (0.1, 0.1),
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    mesh: Mesh | None = None,
) -> list[dict[str, Any]]:
    """Plug-in policies on simulated truncated-normal paths, against equal-cost fixed N.

    Policies: `oracle` (N* from the true parameters, capped at max_n), `optscale0`
    (sequential: refit the MLE after every sample, stop at the first n >= max(min_samples,
    N*_n)), `peek` (one MLE fit after `peek` samples, draw max(N*, peek)) and
    `optscalet(noise=x)` (sequential MAP fits; prior centres = true (mu, sigma) plus Gaussian
    noise of standard deviation x, prior scales `prior_scale`). Every policy draws from the
    same paths of `max_n` scores per (question, path).

    Args:
        population: the questions (true mu, sigma).
        s_mins: thresholds in [0, 1].
        alphas: targets in (0, 1).
        rhos: copula correlations of the simulated paths (0 = i.i.d.).
        paths: simulated paths per question.
        max_n: samples per path, the cap of every policy.
        peek: samples before the peek rule's single fit.
        min_samples: minimum samples of the sequential rules.
        prior_noises: prior-centre noise levels of the OptScalet variants.
        prior_scale: prior standard deviations on (mu, sigma).
        seed: PRNG seed (paths and prior noise).
        progress: called with the number of questions done after each block.
        mesh: a `devices.question_mesh` to spread the questions over, or None (one
            device); the rows are the same either way.

    Returns:
        Rows with the columns of `POLICY_COLUMNS` (family `truncnorm`).
    """
    grid = _policy_grid(s_mins, alphas, rhos, paths, max_n, peek, min_samples, prior_scale)
    rng = np.random.default_rng(seed)
    priors = [noisy_prior(population.mu, population.sigma, x, rng) for x in prior_noises]
    prior_mu = np.array([mu for mu, _ in priors]).reshape(len(priors), len(population))
    prior_sigma = np.array([sigma for _, sigma in priors]).reshape(len(priors), len(population))
    oracle = _oracle_n(population.mu, population.sigma, grid.s_mins, grid.alphas, max_n)[None]
    law = truth_law("truncnorm", population)
    truths = (_Truth("truncnorm", float(rho), law, oracle, prior_mu, prior_sigma) for rho in rhos)
    names = ["oracle", "optscale0", "peek"] + [f"optscalet(noise={x:g})" for x in prior_noises]
    return _policy_study(truths, names, grid, seed, progress, mesh)


# --------------------------------------------------------------------------- misspecification


class _TruthParts(NamedTuple):
    """What a misspecification family builds its law from (see `truth_law`)."""

    population: Population
    base: laws.TruncNormal  # TN(mu, sigma) of every question
    weight: jax.Array  # the extra component's weight, per question
    shift: float
    moment_samples: int
    seed: int


def _beta_truth(parts: _TruthParts) -> laws.Law:
    mean, std = parts.population.mean, parts.population.std
    if np.any(~np.isfinite(mean)) or np.any(~np.isfinite(std)):
        mean, std = law_moments(parts.base, parts.moment_samples, parts.seed)
    dtype = parts.base.mu.dtype
    return laws.beta_from_moments(jnp.asarray(mean, dtype), jnp.asarray(std, dtype))


def _atom_truth(loc: float) -> Callable[[_TruthParts], laws.Law]:
    def truth(parts: _TruthParts) -> laws.Law:
        atom = laws.PointMass(jnp.full_like(parts.base.mu, loc))
        return laws.Mixture(parts.weight, atom, parts.base)

    return truth


def _bimodal_truth(parts: _TruthParts) -> laws.Law:
    mu, sigma = parts.base
    return laws.Mixture(parts.weight, laws.TruncNormal(mu - parts.shift, sigma), parts.base)


# Family -> its law from the parts; adding a family is one entry.
_TRUTHS: dict[str, Callable[[_TruthParts], laws.Law]] = {
    "truncnorm": lambda parts: parts.base,
    "beta": _beta_truth,
    "saturated": _atom_truth(1.0),
    "zero-inflated": _atom_truth(0.0),
    "bimodal": _bimodal_truth,
}
MISSPEC_FAMILIES = tuple(_TRUTHS)


def _check_families(families: Sequence[str]) -> None:
    for family in families:
        if family not in _TRUTHS:
            raise ValueError(f"families: unknown {family!r}; choose from {MISSPEC_FAMILIES}")


def truth_law(
    family: str,
    population: Population,
    *,
    weight: float = 0.1,
    shift: float = 0.3,
    moment_samples: int = 4096,
    seed: int = 0,
) -> laws.Law:
    """The true score law of every question for a misspecification family.

    - `truncnorm`: TN(mu, sigma) (the model is right).
    - `beta`: the Beta law with the question's score mean and std (the population's `mean`/
      `std`, e.g. the observed PRM statistics; estimated from `moment_samples` TN draws
      where the population has none).
    - `saturated`: with probability `weight` the verifier returns exactly 1.0, else TN.
    - `zero-inflated`: with probability `weight` it returns 0.0 (a failed parse), else TN.
    - `bimodal`: with probability `weight` the score comes from a second mode
      TN(mu - shift, sigma) (confidently scored wrong solutions), else TN(mu, sigma).

    Args:
        family: one of `MISSPEC_FAMILIES`.
        population: the questions.
        weight: weight of the extra component of the mixtures, in [0, 1].
        shift: distance of the bimodal family's second mode.
        moment_samples: draws per question to estimate missing moments.
        seed: PRNG seed for those draws.

    Returns:
        A law with batch shape `[Q]`.
    """
    if family not in _TRUTHS:
        raise ValueError(f"family must be one of {MISSPEC_FAMILIES}, got {family!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], got {weight}")
    dtype = _float()
    mu = jnp.asarray(population.mu, dtype)
    base = laws.TruncNormal(mu, jnp.asarray(population.sigma, dtype))
    weights = jnp.full(mu.shape, weight, dtype)
    return _TRUTHS[family](_TruthParts(population, base, weights, shift, moment_samples, seed))


def law_moments(law: laws.Law, samples: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo mean and standard deviation of a law with batch shape `[Q]`.

    Args:
        law: the law.
        samples: draws per question.
        seed: PRNG seed.

    Returns:
        (mean, std), float64 `[Q]`.
    """
    batch = jnp.shape(law.cdf(jnp.asarray(0.5)))
    draws = laws.with_sample_axis(law).sample(jax.random.key(seed), tuple(batch) + (samples,))
    draws = np.asarray(draws, np.float64)
    return draws.mean(axis=-1), draws.std(axis=-1, ddof=1)


def misspec_runs(families: Sequence[str], rhos: Sequence[float]) -> list[tuple[str, float]]:
    """The (family, rho) truths `misspec_study` simulates, in order.

    Each family i.i.d. when 0 is among `rhos`; then a correlated truncated normal per rho > 0.
    """
    runs = [(family, 0.0) for family in families] if 0.0 in [float(r) for r in rhos] else []
    return runs + [("truncnorm", float(rho)) for rho in rhos if rho > 0]


def _misspec_truth(population, family, rho, grid: _PolicyGrid, weight, shift, seed) -> _Truth:
    """The truth of one run, with its two oracles: the true law's N* and the model's."""
    law = truth_law(family, population, weight=weight, shift=shift, seed=seed)
    if family == "truncnorm":
        model_mu, model_sigma = population.mu, population.sigma
    else:
        model_mu, model_sigma = moment_match(*law_moments(law, seed=seed))
    oracle = np.stack(
        [
            _law_oracle_n(law, grid.s_mins, grid.alphas, grid.max_n),
            _oracle_n(model_mu, model_sigma, grid.s_mins, grid.alphas, grid.max_n),
        ]
    )
    no_prior = np.zeros((0, len(population)))
    return _Truth(family, rho, law, oracle, no_prior, no_prior)


def misspec_study(
    population: Population,
    s_mins: Sequence[float],
    alphas: Sequence[float],
    families: Sequence[str] = ("truncnorm", "beta", "saturated", "bimodal"),
    rhos: Sequence[float] = (0.0, 0.2, 0.5, 0.8),
    *,
    paths: int = 16,
    max_n: int = 64,
    peek: int = 4,
    min_samples: int = 1,
    weight: float = 0.1,
    shift: float = 0.3,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    mesh: Mesh | None = None,
) -> list[dict[str, Any]]:
    """Plug-in policies with a truncated-normal model when the truth is not i.i.d. TN.

    Each family in `families` is simulated i.i.d. (rho = 0); each rho > 0 in `rhos` is
    simulated with TN marginals under the Gaussian copula (family `truncnorm`); see
    `misspec_runs`. Policies: `oracle` (N* from the true law's own CDF: what a correct
    model would do; for rho > 0 the i.i.d. N* of the true marginal), `model-oracle` (N*
    from the truncated normal with the true law's mean and std, i.e. what OptScale0
    converges to with unlimited data: the cost of the wrong family alone), `optscale0` and
    `peek`.

    Args:
        population: the questions (their TN parameters and, for Beta, their moments).
        s_mins: thresholds in [0, 1].
        alphas: targets in (0, 1).
        families: truth families for rho = 0 (see `truth_law`).
        rhos: correlations; 0 runs the families, each value > 0 a correlated TN truth.
        paths: simulated paths per question.
        max_n: samples per path and cap.
        peek: samples before the peek rule's fit.
        min_samples: minimum samples of the sequential rule.
        weight: mixture weight of the extra component.
        shift: the bimodal family's second-mode distance.
        seed: PRNG seed.
        progress: called with the number of questions done after each block.
        mesh: a `devices.question_mesh` to spread the questions over, or None (one
            device); the rows are the same either way.

    Returns:
        Rows with the columns of `POLICY_COLUMNS`.
    """
    # The prior scale is unused (no MAP policy) but static under jit: the adaptive default.
    grid = _policy_grid(s_mins, alphas, rhos, paths, max_n, peek, min_samples, (0.1, 0.1))
    _check_families(families)
    truths = (
        _misspec_truth(population, family, rho, grid, weight, shift, seed + run)
        for run, (family, rho) in enumerate(misspec_runs(families, rhos))
    )
    names = ["oracle", "model-oracle", "optscale0", "peek"]
    return _policy_study(truths, names, grid, seed, progress, mesh)
