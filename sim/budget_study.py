"""One total budget for a batch of questions: how many questions reach s_min, per method.

Every method spends a mean budget B of samples per question (B = 2, 4, ..., 32) on the same
simulated scores ([R, Q, K]: R orders of K scores for each of Q questions):

- `uniform`: Best-of-N with N = B for every question.
- `elimination`: rounds of one sample for every question whose best score is still below
  s_min, until B * Q samples are spent (`allocation.elimination_samples`).
- `optscale0`: OptScale0's sequential rule (MLE refit after every sample, stop at the first
  n >= N*) at the question's s_min, with alpha chosen by bisection on scores drawn with a
  separate key so that it spends B samples per question on average (its `mean_samples` on the
  measured scores is reported as it comes out).
- `allocation`: the wave allocation with plug-in fits (`allocation.replay_allocation`, m0 = 2,
  the empirical-Bayes prior, gains averaged over each fit's Laplace posterior, the default).
- `allocation-map`: the same with the MAP fit plugged in (`posterior="map"`).
- `allocation-true-params`: the wave allocation with each question's true law (m0 = 1).

Populations (`POPULATIONS`): `math` (the 4,501 MATH training questions, resampled), `grid`
(a grid of (mu, sigma), resampled), `beta` (the MATH questions with Beta score laws of the same
mean and standard deviation: the truncated-normal model is wrong). The reach objective sees a
law only through F(s_min), so the true-parameter allocation of a non-truncated-normal truth
uses the truncated normal with the true F(s_min) (`_matched_law`).

Measures per (population, budget, method): `reach_rate`, the fraction of (order, question)
pairs whose best drawn score reaches s_min, with its standard error given the questions,
sqrt(sum_q p_q (1 - p_q) / R) / Q; `mean_best`, the mean best drawn score (0 without
samples); `mean_samples`, the samples drawn per question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optscale_jax import allocation, devices, optimal_n_from_log_cdf, policies, truncnorm
from optscale_jax.sim import laws, populations
from optscale_jax.sim.studies import _conditional_se

BUDGET_COLUMNS = (
    "population", "budget", "method", "reach_rate", "reach_se", "mean_best", "mean_samples",
)  # fmt: skip
METHODS = (
    "uniform", "elimination", "optscale0", "allocation", "allocation-map",
    "allocation-true-params",
)  # fmt: skip
DEFAULT_BUDGETS = (2, 4, 8, 16, 32)
# Bisection steps of OptScale0's alpha (in logit space): far finer than a sample's effect.
_ALPHA_STEPS = 40


class BudgetTruth(NamedTuple):
    """One simulated population.

    Attributes:
        name: the population's name in the rows.
        law: the true score law of every question (batch shape `[Q]`).
        mu: truncated-normal location with the true F(s_min), `[Q]` (true-parameter allocation).
        sigma: its scale, `[Q]`.
        s_min: the threshold a question's best score must reach.
    """

    name: str
    law: laws.Law
    mu: np.ndarray
    sigma: np.ndarray
    s_min: float


def _math_truth(questions: int, seed: int) -> BudgetTruth:
    population = populations.resample(populations.math_train(), questions, seed)
    law = laws.TruncNormal(jnp.asarray(population.mu), jnp.asarray(population.sigma))
    return BudgetTruth("math", law, population.mu, population.sigma, 0.98)


def _grid_truth(questions: int, seed: int) -> BudgetTruth:
    grid = populations.grid(np.linspace(0.3, 0.9, 7), [0.05, 0.1, 0.2, 0.3])
    population = populations.resample(grid, questions, seed)
    law = laws.TruncNormal(jnp.asarray(population.mu), jnp.asarray(population.sigma))
    return BudgetTruth("grid", law, population.mu, population.sigma, 0.8)


def _beta_truth(questions: int, seed: int) -> BudgetTruth:
    population = populations.resample(populations.math_train(), questions, seed)
    law = laws.beta_from_moments(jnp.asarray(population.mean), jnp.asarray(population.std))
    mu = _matched_law(law, population.sigma, 0.98)
    return BudgetTruth("beta", law, mu, population.sigma, 0.98)


# Population name -> (questions, seed) -> its truth; adding a population is one entry.
POPULATIONS: dict[str, Callable[[int, int], BudgetTruth]] = {
    "math": _math_truth,
    "grid": _grid_truth,
    "beta": _beta_truth,
}


def _matched_law(law: laws.Law, sigma: np.ndarray, s_min: float) -> np.ndarray:
    """mu such that TN(mu, sigma) has the law's F(s_min): bisection, F decreases in mu."""
    target = np.asarray(law.log_cdf(s_min), np.float64)
    low, high = np.full(sigma.shape, -10.0), np.full(sigma.shape, 10.0)
    for _ in range(80):
        middle = 0.5 * (low + high)
        above = np.asarray(truncnorm.logcdf(s_min, middle, sigma)) > target
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    return 0.5 * (low + high)


def _scores(truth: BudgetTruth, orders: int, samples: int, key: jax.Array) -> jax.Array:
    """Simulated scores `[R, Q, K]`."""
    law = laws.with_sample_axis(laws.with_sample_axis(truth.law))
    draws = law.sample(key, (len(truth.mu), orders, samples))
    return jnp.moveaxis(draws, 1, 0)


# --------------------------------------------------------------------------- OptScale0


@jax.jit
def _optscale0_log_f(scores, s_min):
    """log F(s_min) of the MLE fit of every prefix, `[R, Q, K]`."""
    fit = policies.prefix_fits(scores, jnp.ones(scores.shape, bool))
    return truncnorm.logcdf(s_min, fit.mu, fit.sigma)


def _optscale0_samples(log_f, alpha: float) -> jax.Array:
    max_n = log_f.shape[-1]
    n_star = optimal_n_from_log_cdf(log_f, alpha, max_n)
    return policies.first_stop(n_star, jnp.ones(log_f.shape, bool), 1, max_n)


def _optscale0_alpha(log_f, budget: float) -> float:
    """The largest alpha (bisection in logit space) whose mean samples stay within budget."""
    low, high = -30.0, 30.0  # logit alpha: alpha from 1e-13 to 1 - 1e-13
    for _ in range(_ALPHA_STEPS):
        middle = 0.5 * (low + high)
        spent = float(jnp.mean(_optscale0_samples(log_f, float(1 / (1 + np.exp(-middle))))))
        low, high = (middle, high) if spent <= budget else (low, middle)
    return float(1 / (1 + np.exp(-low)))


# --------------------------------------------------------------------------- one population


def _measures(scores: jax.Array, samples: jax.Array, s_min: float) -> dict[str, float]:
    """reach_rate, reach_se, mean_best, mean_samples of drawing `samples` `[R, Q]`."""
    drawn = jnp.arange(scores.shape[-1]) < samples[..., None]
    best = np.asarray(jnp.max(jnp.where(drawn, scores, -jnp.inf), axis=-1), np.float64)
    reached = best >= s_min
    per_question = reached.mean(axis=0)
    return {
        "reach_rate": float(reached.mean()),
        "reach_se": _conditional_se(per_question, reached.shape[0]),
        "mean_best": float(np.where(np.isfinite(best), best, 0.0).mean()),
        "mean_samples": float(np.mean(np.asarray(samples))),
    }


def _method_samples(truth, scores, log_fs, budget, wave, seed) -> dict[str, Any]:
    """Samples `[R, Q]` of every method at one budget, and OptScale0's alpha."""
    mask = jnp.ones(scores.shape, bool)
    s_min = truth.s_min
    law = tuple(np.broadcast_to(x, scores.shape[:2]) for x in (truth.mu, truth.sigma))
    tuning_log_f, eval_log_f = log_fs
    alpha = _optscale0_alpha(tuning_log_f, budget)
    plug_in = {"m0": 2, "s_min": s_min, "wave": wave, "seed": seed}
    return {
        "uniform": allocation.uniform_samples(mask, budget),
        "elimination": allocation.elimination_samples(scores, mask, budget, s_min, seed=seed),
        "optscale0": _optscale0_samples(eval_log_f, alpha),
        "allocation": allocation.replay_allocation(scores, mask, budget, **plug_in),
        "allocation-map": allocation.replay_allocation(
            scores, mask, budget, posterior="map", **plug_in
        ),
        "allocation-true-params": allocation.replay_allocation(
            scores, mask, budget, m0=1, s_min=s_min, wave=wave, law=law, seed=seed
        ),
    }, alpha


def _population_rows(truth, budgets, shape, seed, progress, mesh) -> list[dict[str, Any]]:
    """The rows of one population; shape = (orders, samples, wave)."""
    orders, samples, wave = shape
    tuning_key, eval_key = jax.random.split(jax.random.key(seed))
    scores = _scores(truth, orders, samples, eval_key)
    s_min = jnp.asarray(truth.s_min, scores.dtype)
    # OptScale0's alpha is tuned on scores drawn with a separate key, then run on the measured ones.
    tuning_scores = _scores(truth, orders, samples, tuning_key)
    log_fs = tuple(
        # Questions on axis 1 of the scores [R, Q, K] and of log F.
        jnp.asarray(
            devices.run_on_mesh(_optscale0_log_f, x, mesh=mesh, axis=1, replicated=(s_min,))
        )
        for x in (tuning_scores, scores)
    )
    rows = []
    for budget in budgets:
        per_method, alpha = _method_samples(truth, scores, log_fs, budget, wave, seed)
        for method, drawn in per_method.items():
            row = {"population": truth.name, "budget": budget, "method": method}
            row |= _measures(scores, drawn, truth.s_min)
            if method == "optscale0":
                row |= {"alpha": alpha, "s_min": truth.s_min}  # JSON only (not a CSV column)
            rows.append(row)
        if progress is not None:
            progress(1)
    return rows


def _check(populations_: Sequence[str], budgets, questions, orders, samples, wave) -> None:
    unknown = [p for p in populations_ if p not in POPULATIONS]
    if unknown:
        raise ValueError(f"populations: unknown {unknown[0]!r}; choose from {tuple(POPULATIONS)}")
    if questions < 2:
        raise ValueError(f"questions must be >= 2, got {questions}")
    if orders < 1:
        raise ValueError(f"orders must be >= 1, got {orders}")
    if wave is not None and wave < 1:
        raise ValueError(f"wave must be >= 1, got {wave}")
    if not budgets or any(int(b) != b or not 2 <= b <= samples for b in budgets):
        raise ValueError(f"budgets must be integers in [2, samples = {samples}], got {budgets}")


def budget_study(
    populations_: Sequence[str] = tuple(POPULATIONS),
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    *,
    questions: int = 500,
    orders: int = 4,
    samples: int = 64,
    wave: int | None = None,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    mesh: Any = None,
) -> list[dict[str, Any]]:
    """Reach rate of every method (`METHODS`) at every mean budget per question.

    Args:
        populations_: names of `POPULATIONS`.
        budgets: mean samples per question (integers in [2, samples]).
        questions: questions drawn with replacement from each population.
        orders: simulated score orders (R) per question.
        samples: scores simulated per (order, question), K: every method's cap.
        wave: samples per wave of the allocations; default Q / 4 (a wave of Q samples gives
            questions that reach s_min early in the wave samples they no longer need).
        seed: seeds the questions, the scores, OptScale0's tuning scores and the tie rules.
        progress: called with 1 after each (population, budget).
        mesh: a `devices.question_mesh` to spread OptScale0's prefix fits over, or None
            (one device); the rows are the same either way. The allocations share one
            budget across questions and run whole on every process.

    Returns:
        Rows with the columns `BUDGET_COLUMNS` (OptScale0's rows also carry its `alpha`).
    """
    _check(populations_, budgets, questions, orders, samples, wave)
    shape = (orders, samples, max(1, questions // 4) if wave is None else wave)
    rows = []
    for index, name in enumerate(populations_):
        truth = POPULATIONS[name](questions, seed)
        rows += _population_rows(truth, budgets, shape, seed + index, progress, mesh)
    return rows
