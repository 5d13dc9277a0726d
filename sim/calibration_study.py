"""Monte Carlo check of the Learn-then-Test guarantee where OptScale's parametric bound fails.

For each truth (the MATH-like population of `populations.math_train` with truncated-normal
scores under a Gaussian copula, rho in {0, 0.5, 0.8}, or Beta scores with the questions' own
moments), the study simulates a large finite population: `paths` sample paths of `max_n`
scores for each of the 4,501 questions (answers and correctness from `sim.logs`'s
score-to-correctness link), and replays fixed-N Best-of-N and OptScale0 on it with the replay
engine (`replay.run_methods`), which gives every setting's loss against the full budget per
population member. That pool *is* the population: its mean loss is each setting's exact
test risk.

Then, per calibration size n_cal, `trials` calibration sets are drawn i.i.d. from the pool
(all at once), Learn-then-Test chooses each method's setting on each of them (`ltt_select`
on batched losses, along the replay's data-independent `ltt_order`, the cheapest certified
setting, the full budget when none is), and

    violation_rate = fraction of trials whose chosen setting's test risk exceeds epsilon,

which the guarantee bounds by delta, whatever the score law and the dependence between the
samples of a question. Beside it, OptScale0's own promise on the same pool (`*-nominal`
rows): for each alpha, the fraction of its s_min settings whose realised miss rate
P(best score at the stop < s_min) exceeds 1 - alpha (a promise made with certainty, delta =
0, and no calibration, n_cal = 0). Questions whose N* exceeds max_n count as misses, as they
would in a run capped at max_n.

`optscale simulate calibration --out DIR` writes DIR/calibration.csv (plotted by `optscale
plot calibration-ltt`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from optscale_jax import calibration, validation
from optscale_jax.replay import ReplayConfig, Setting, ltt_order, outcome_at, permute
from optscale_jax.replay.engine import _run_methods, sharded_over
from optscale_jax.replay.selection import reference_cost_at_accuracy
from optscale_jax.sim.logs import synthetic_log
from optscale_jax.sim.populations import Population
from optscale_jax.sim.studies import MISSPEC_FAMILIES, truth_law

CALIBRATION_COLUMNS = (
    "population", "rho", "n_cal", "method", "risk", "epsilon", "delta", "trials",
    "violation_rate", "violation_se", "mean_cost", "max_n", "mean_risk", "certified_fraction",
    "mean_accuracy", "saving",
)  # fmt: skip
"""calibration.csv. mean_cost is in samples; mean_risk the mean test risk of the chosen
setting; certified_fraction the trials where LTT certified a setting (else it fell back to
max_n); saving = 1 - mean_cost / (the cost fixed-N Best-of-N needs for mean_accuracy)."""

DEFAULT_RHOS = (0.0, 0.5, 0.8)
DEFAULT_FAMILIES = ("beta",)
DEFAULT_N_CALS = (50, 200, 1000)
DEFAULT_RISKS = tuple(calibration.RISKS)
DEFAULT_EPSILONS = (0.02, 0.05, 0.1, 0.2)
DEFAULT_DELTAS = (0.05, 0.1, 0.2)
# OptScale0's grid: MATH scores sit near 1 (median mean 0.95), so the thresholds are high.
DEFAULT_S_MINS = (0.8, 0.9, 0.95, 0.98, 0.99)
DEFAULT_ALPHAS = (0.5, 0.7, 0.9, 0.95, 0.99)
LTT_METHODS = ("bon", "optscale0")
NOMINAL_RISK = "miss"
# Elements of one batch of gathered calibration losses [trials, S, n_cal] (bounds memory).
_BATCH_ELEMENTS = 1 << 22


class _Pool(NamedTuple):
    """One truth as a finite population: every setting's outcome on every pool member.

    Attributes:
        name: the population's name (`math/<family>`).
        rho: the copula correlation.
        settings: the replayed settings (each method's grid and its full budget n = max_n).
        rows: method -> the indices of its settings.
        losses: risk -> `[S, P]` loss of each setting against the full budget.
        samples: `[S, P]` samples drawn.
        correct: `[S, P]` the returned answer is right.
        miss: `[S, P]` the best score at the stop is below the setting's s_min (OptScale).
    """

    name: str
    rho: float
    settings: list[Setting]
    rows: dict[str, np.ndarray]
    losses: dict[str, np.ndarray]
    samples: np.ndarray
    correct: np.ndarray
    miss: np.ndarray


class _Grid(NamedTuple):
    """The study's settings, checked (see `calibration_study`)."""

    n_cals: tuple[int, ...]
    risks: tuple[str, ...]
    epsilons: np.ndarray
    deltas: np.ndarray
    trials: int
    paths: int
    max_n: int
    s_mins: tuple[float, ...]
    alphas: tuple[float, ...]


def calibration_study(
    population: Population,
    rhos: Sequence[float] = DEFAULT_RHOS,
    families: Sequence[str] = DEFAULT_FAMILIES,
    n_cals: Sequence[int] = DEFAULT_N_CALS,
    risks: Sequence[str] = DEFAULT_RISKS,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    *,
    trials: int = 200,
    paths: int = 4,
    max_n: int = 64,
    s_mins: Sequence[float] = DEFAULT_S_MINS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    mesh: Any = None,
) -> list[dict[str, Any]]:
    """Violation rate of Learn-then-Test, and of OptScale0's nominal promise, per truth.

    Args:
        population: the questions (their truncated-normal parameters and moments).
        rhos: copula correlations in [0, 1) of the truncated-normal truths.
        families: further i.i.d. truths, of `studies.MISSPEC_FAMILIES` (e.g. "beta").
        n_cals: calibration set sizes.
        risks: risks of `calibration.RISKS` to control.
        epsilons: target risks in (0, 1).
        deltas: error levels in (0, 1).
        trials: calibration draws per cell.
        paths: sample paths per question in the pool (pool size = paths x questions).
        max_n: samples per path, the full budget.
        s_mins: OptScale0's thresholds.
        alphas: OptScale0's targets.
        seed: seeds the pools and the draws.
        progress: called with 1 after each truth (`len(truths(rhos, families))` in all).
        mesh: a `devices.question_mesh`: the replay of each pool (prefix fits, grid cells,
            votes) shards its members over it, with the same results; None: one device.

    Returns:
        Rows with the columns of `CALIBRATION_COLUMNS`.

    Raises:
        ValueError: naming the offending argument.
    """
    runs = truths(rhos, families)
    grid = _check(runs, n_cals, risks, epsilons, deltas, trials, paths, max_n, s_mins, alphas)
    rows = []
    for index, (family, rho) in enumerate(runs):
        with sharded_over(mesh):
            pool = _simulate_pool(population, family, float(rho), grid, seed + index)
        draws = np.random.default_rng([seed, index])
        for n_cal in grid.n_cals:
            members = draws.integers(0, pool.samples.shape[1], (grid.trials, n_cal))
            for method in LTT_METHODS:
                for risk in grid.risks:
                    rows += _ltt_rows(pool, method, risk, members, grid)
        rows += _nominal_rows(pool, grid)
        if progress is not None:
            progress(1)
    return rows


def truths(rhos: Sequence[float], families: Sequence[str]) -> list[tuple[str, float]]:
    """The (family, rho) truths the study simulates: the truncated normal at each rho, then
    each other family i.i.d."""
    runs = [("truncnorm", float(rho)) for rho in rhos] + [(family, 0.0) for family in families]
    return list(dict.fromkeys(runs))


def _check(runs, n_cals, risks, epsilons, deltas, trials, paths, max_n, s_mins, alphas) -> _Grid:
    if not runs:
        raise ValueError("rhos and families: give at least one truth")
    for family, rho in runs:
        if family not in MISSPEC_FAMILIES:
            raise ValueError(f"families: unknown family {family!r}; choose from {MISSPEC_FAMILIES}")
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must lie in [0, 1), got {rho}")
    for risk in risks:
        if risk not in calibration.RISKS:
            raise ValueError(
                f"risks: unknown risk {risk!r}; choose from {tuple(calibration.RISKS)}"
            )
    for name, values in (("n_cals", n_cals), ("epsilons", epsilons), ("deltas", deltas)):
        if not len(values):
            raise ValueError(f"{name} must have at least one value")
    validation.check_max_n(list(n_cals), "n_cals")
    validation.check_open_unit(epsilons, "epsilons")
    validation.check_open_unit(deltas, "deltas")
    for name, value in (("trials", trials), ("paths", paths)):
        validation.check_max_n(value, name)
    if max_n < 2:
        raise ValueError(f"max_n must be >= 2, got {max_n}")
    return _Grid(
        tuple(int(n) for n in n_cals), tuple(risks), np.asarray(epsilons, np.float64),
        np.asarray(deltas, np.float64), int(trials), int(paths), int(max_n),
        tuple(float(s) for s in s_mins), tuple(float(a) for a in alphas),
    )  # fmt: skip


def _simulate_pool(
    population: Population, family: str, rho: float, grid: _Grid, seed: int
) -> _Pool:
    """Simulates `paths` paths per question and replays every setting on them."""
    members = population.take(np.tile(np.arange(len(population)), grid.paths))
    law = truth_law(family, members, seed=seed)
    log = synthetic_log(
        members.mu, members.sigma, grid.max_n, seed, law=law, rho=rho, prior_noise=None
    )
    replayed = permute(log, 1, seed)
    # The grids are checked here, once (ValueError naming s_min / alpha / max_n).
    config = ReplayConfig(
        methods=LTT_METHODS, max_n=grid.max_n, s_min=grid.s_mins, alpha=grid.alphas,
        min_samples=(1,),
    )  # fmt: skip
    settings, out, _ = _run_methods(replayed, config, grid.max_n, None, False, None, grid.risks)
    rows = {m: np.array([i for i, s in enumerate(settings) if s.method == m]) for m in LTT_METHODS}
    # One sample order (R = 1): the means over orders are each member's own outcome.
    samples = np.rint(out.samples).astype(np.int64)
    best = outcome_at(replayed, "scores", samples[:, None], samples[:, None])[:, 0]
    s_min = np.array([np.nan if s.s_min is None else s.s_min for s in settings])
    miss = np.where(np.isnan(s_min)[:, None], np.nan, best < s_min[:, None])
    name = f"{population.name}/{family}"
    return _Pool(name, rho, settings, rows, out.losses, out.samples, out.correct, miss)


def _ltt_rows(
    pool: _Pool, method: str, risk: str, members: np.ndarray, grid: _Grid
) -> list[dict[str, Any]]:
    """One row per (epsilon, delta): LTT on every calibration draw of `members`."""
    rows = pool.rows[method]
    order = ltt_order([pool.settings[i] for i in rows], grid.max_n)
    losses, cost = pool.losses[risk][rows], pool.samples[rows]
    chosen, certified = _ltt_choices(losses, cost, members, order, grid)
    test_risk = losses.mean(-1)[chosen]  # [trials, E, D]: the population's risk
    violated = test_risk > grid.epsilons[:, None]
    accuracy = pool.correct[rows].mean(-1)[chosen].mean(0)
    mean_cost = cost.mean(-1)[chosen].mean(0)
    bon = pool.rows["bon"]
    bon_accuracy, bon_cost = pool.correct[bon].mean(-1), pool.samples[bon].mean(-1)
    out = []
    for e, epsilon in enumerate(grid.epsilons):
        for d, delta in enumerate(grid.deltas):
            needed = reference_cost_at_accuracy(bon_cost, bon_accuracy, accuracy[e, d])
            rate = float(violated[:, e, d].mean())
            out.append(
                _row(pool, members.shape[1], f"ltt-{method}", risk, epsilon, delta, grid)
                | {
                    "violation_rate": rate,
                    "violation_se": math.sqrt(rate * (1 - rate) / grid.trials),
                    "mean_cost": float(mean_cost[e, d]),
                    "mean_risk": float(test_risk[:, e, d].mean()),
                    "certified_fraction": float(certified[:, e, d].mean()),
                    "mean_accuracy": float(accuracy[e, d]),
                    "saving": _saving(float(mean_cost[e, d]), needed),
                }
            )
    return out


def _ltt_choices(
    losses: np.ndarray, cost: np.ndarray, members: np.ndarray, order: np.ndarray, grid: _Grid
) -> tuple[np.ndarray, np.ndarray]:
    """LTT's setting on each calibration draw, for every (epsilon, delta).

    Args:
        losses: `[S, P]` one method's losses on the pool.
        cost: `[S, P]` its samples drawn.
        members: `[trials, n_cal]` the pool members of each calibration draw.
        order: the method's `ltt_order`; `order[0]` (the full budget) is the fallback.
        grid: epsilons and deltas.

    Returns:
        (chosen `[trials, E, D]` setting indices, certified `[trials, E, D]`).
    """
    trials, n_cal = members.shape
    batch = max(1, _BATCH_ELEMENTS // (losses.shape[0] * n_cal))
    chosen, certified = [], []
    for start in range(0, trials, batch):
        draw = members[start : start + batch]
        calibration_losses = np.moveaxis(losses[:, draw], 1, 0)  # [b, S, n_cal]
        calibration_cost = np.moveaxis(cost[:, draw].mean(-1), 1, 0)  # [b, S]
        result = calibration.ltt_select(
            calibration_losses[:, None, None],
            grid.epsilons[:, None],
            grid.deltas,
            order=order,
            cost=calibration_cost[:, None, None],
        )
        chosen.append(np.where(result.index >= 0, result.index, order[0]))
        certified.append(result.index >= 0)
    return np.concatenate(chosen), np.concatenate(certified)


def _nominal_rows(pool: _Pool, grid: _Grid) -> list[dict[str, Any]]:
    """OptScale0's own promise, P(best at the stop >= s_min) >= alpha, per alpha over its
    s_min settings: how often the realised miss rate exceeds 1 - alpha."""
    rows = pool.rows["optscale0"]
    alpha = np.array([np.nan if pool.settings[i].alpha is None else pool.settings[i].alpha
                      for i in rows])  # fmt: skip
    bon = pool.rows["bon"]
    bon_accuracy, bon_cost = pool.correct[bon].mean(-1), pool.samples[bon].mean(-1)
    out = []
    for target in grid.alphas:
        cells = rows[alpha == target]
        miss = pool.miss[cells].mean(-1)
        violated = miss > 1 - target
        accuracy = float(pool.correct[cells].mean())
        mean_cost = float(pool.samples[cells].mean())
        needed = reference_cost_at_accuracy(bon_cost, bon_accuracy, accuracy)
        out.append(
            _row(pool, 0, "optscale0-nominal", NOMINAL_RISK, 1 - target, 0.0, grid)
            | {
                "trials": len(cells),
                "violation_rate": float(violated.mean()),
                "violation_se": 0.0,
                "mean_cost": mean_cost,
                "mean_risk": float(miss.mean()),
                "certified_fraction": math.nan,
                "mean_accuracy": accuracy,
                "saving": _saving(mean_cost, needed),
            }
        )
    return out


def _row(pool: _Pool, n_cal: int, method: str, risk: str, epsilon, delta, grid: _Grid) -> dict:
    """The identifying columns of a row."""
    return {
        "population": pool.name,
        "rho": pool.rho,
        "n_cal": n_cal,
        "method": method,
        "risk": risk,
        "epsilon": round(float(epsilon), 12),
        "delta": float(delta),
        "trials": grid.trials,
        "max_n": grid.max_n,
    }


def _saving(cost: float, needed: float) -> float:
    """1 - cost / (Best-of-N's cost at the same accuracy); NaN when BoN never gets there."""
    return 1.0 - cost / needed if math.isfinite(needed) and needed > 0 else math.nan
