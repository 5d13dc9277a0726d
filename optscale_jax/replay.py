"""Replay a logged run with every stopping method, and evaluate it fairly.

Data flow (each arrow one function):

    Log -> `permute` (R seeded sample orders per question, arrays [R, Q, K])
        -> `run_methods` (every method x hyper-parameter setting: per question accuracy,
           samples and cost, averaged over the R orders: `Outcomes`, arrays [S, Q])
        -> `make_splits` (dev/test, K folds, or none)
        -> `select_setting` (per method, chosen on the selection questions only)
        -> `bootstrap_ci`, `bon_cost_at_accuracy` (CIs over questions; equal-accuracy cost)
        -> `evaluate` (result rows, summary, per-question rows).

All work is batched over permutations and questions; Python loops run only over methods
and hyper-parameter values. OptScale fits every prefix of every ordered question once
(`policies.prefix_fits`), and the (s_min, alpha, m) grid reuses those fits: log F(s_min)
once per s_min, N* per alpha elementwise, the stop per m elementwise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

METHODS = (
    "bon",
    "sc",
    "wmv",
    "esc",
    "asc",
    "optscale0",
    "optscale0-peek",
    "optscalet",
    "oracle",
)
SCORE_METHODS = frozenset({"bon", "wmv", "optscale0", "optscale0-peek", "optscalet"})
ANSWER_METHODS = frozenset({"sc", "wmv", "esc", "asc"})
FIXED_N_METHODS = frozenset({"bon", "sc", "wmv", "oracle"})
HYPER_PARAMETERS = ("n", "s_min", "alpha", "m", "w", "threshold", "k")
RESULT_COLUMNS = (
    "method",
    "split",
    "setting",
    "max_n",
    *HYPER_PARAMETERS,
    "prior",
    "accuracy",
    "ci_low",
    "ci_high",
    "mean_samples",
    "mean_cost",
    "cost_ci_low",
    "cost_ci_high",
    "cost_unit",
    "selected",
)
PER_QUESTION_COLUMNS = ("method", "split", "question", "samples", "cost", "correct")
RELEASED_LABEL = "released-test-selected"

# Accuracies are means of means; two settings this close are equally accurate.
_ACCURACY_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Everything that defines a replay (hyper-parameter grids are tuples of values).

    Attributes:
        methods: methods to run (subset of `METHODS`).
        max_n: cap on samples per question (None: the longest question).
        fixed_n: N grid of the fixed-N methods (None: 1..max_n).
        s_min: OptScale score thresholds.
        alpha: OptScale target probabilities.
        min_samples: OptScale minimum samples m.
        peek: samples seen before the single fit of `optscale0-peek`.
        window: ESC window sizes.
        threshold: Adaptive-Consistency stopping thresholds.
        prior: OptScalet prior: "log", "eb", a JSONL path of {id, mu, sigma}, or "mu,sigma";
            None picks "log" when every question has one, else "eb".
        prior_scale: standard deviations of the Gaussian priors on (mu, sigma); the "eb"
            prior brings its own.
        permutations: sample orders per question.
        split: "dev-test", "kfold:K" or "none".
        protocol: "heldout" (select on dev) or "released" (best cell on the test split).
        tolerance: selection rule slack below fixed-N BoN's accuracy at max_n.
        verifier_cost_factor: verifier cost per generated token (or per sample).
        bootstrap: bootstrap resamples for the CIs.
        seed: seeds the orders, the split and the bootstrap.
    """

    methods: tuple[str, ...] = METHODS
    max_n: int | None = None
    fixed_n: tuple[int, ...] | None = None
    s_min: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    alpha: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
    min_samples: tuple[int, ...] = (1, 2, 4)
    peek: tuple[int, ...] = (2, 4, 8)
    window: tuple[int, ...] = (2, 3, 4, 5, 8)
    threshold: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    prior: str | None = None
    prior_scale: tuple[float, float] = (0.1, 0.1)
    permutations: int = 10
    split: str = "dev-test"
    protocol: str = "heldout"
    tolerance: float = 0.0
    verifier_cost_factor: float = 0.0
    bootstrap: int = 2000
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Setting:
    """One method with one choice of hyper-parameters (None where one does not apply)."""

    method: str
    n: int | None = None
    s_min: float | None = None
    alpha: float | None = None
    m: int | None = None
    w: int | None = None
    threshold: float | None = None
    k: int | None = None

    @property
    def label(self) -> str:
        parts = [
            f"{name}={getattr(self, name):g}"
            for name in HYPER_PARAMETERS
            if getattr(self, name) is not None
        ]
        return " ".join(parts) or "-"

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HYPER_PARAMETERS}


class Replayed(NamedTuple):
    """A log with R sample orders per question; arrays [R, Q, K], drawn order on the last axis.

    Attributes:
        mask: bool, True where a sample exists (a prefix).
        scores: float scores (None if the log has none).
        answers: int32 answer codes, -1 = none (None if the log has none).
        correct: bool correctness of each sample.
        cumulative_cost: float, cost of the first j + 1 samples.
        order: int, index of each drawn sample in the log.
    """

    mask: np.ndarray
    scores: np.ndarray | None
    answers: np.ndarray | None
    correct: np.ndarray
    cumulative_cost: np.ndarray
    order: np.ndarray


class Outcomes(NamedTuple):
    """Per setting and question, means over the R sample orders: arrays [S, Q]."""

    correct: np.ndarray
    samples: np.ndarray
    cost: np.ndarray


class Split(NamedTuple):
    """One evaluation split: settings are chosen on `select`, reported on `report`."""

    name: str
    select: np.ndarray
    report: np.ndarray


@dataclasses.dataclass
class ReplayResult:
    """What `evaluate` returns: the three result files' contents and the terminal table."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    per_question: list[dict[str, Any]]
    table: list[dict[str, Any]]


# --- orders -------------------------------------------------------------------------------------


def permute(log: Any, permutations: int, seed: int, verifier_cost_factor: float = 0.0) -> Replayed:
    """R seeded random orders of each question's samples (valid samples first).

    Args:
        log: an `optscale_jax.logs.Log`.
        permutations: R.
        seed: seed of the orders.
        verifier_cost_factor: the cost of a sample is tokens x (1 + factor) (samples x
            (1 + factor) when the log has no tokens).

    Returns:
        Replayed.
    """
    mask = np.asarray(log.mask, bool)
    rng = np.random.default_rng(seed)
    keys = rng.random((permutations, *mask.shape))
    keys[:, ~mask] = np.inf  # missing samples sort last
    order = np.argsort(keys, axis=-1, kind="stable")

    def take(values):
        if values is None:
            return None
        return np.take_along_axis(np.broadcast_to(values, order.shape), order, axis=-1)

    drawn_mask = take(mask)
    if log.tokens is not None:
        unit_cost = take(np.asarray(log.tokens, np.float64))
    else:
        unit_cost = drawn_mask.astype(np.float64)
    cumulative_cost = np.cumsum(np.where(drawn_mask, unit_cost, 0.0), axis=-1)
    cumulative_cost *= 1.0 + verifier_cost_factor
    answers = take(np.asarray(log.answers, np.int32)) if log.answers is not None else None
    return Replayed(
        mask=drawn_mask,
        scores=take(np.asarray(log.scores)) if log.scores is not None else None,
        answers=answers,
        correct=take(np.asarray(log.correct, bool)) & drawn_mask,
        cumulative_cost=cumulative_cost,
        order=order,
    )


def outcomes(replayed: Replayed, samples: np.ndarray, chosen: np.ndarray) -> Outcomes:
    """Per question accuracy, samples and cost of decisions, averaged over the orders.

    Args:
        replayed: the ordered log.
        samples: int `[..., R, Q]` samples drawn.
        chosen: int `[..., R, Q]` chosen sample index (into the drawn order).

    Returns:
        Outcomes with arrays `[..., Q]`.
    """
    samples = np.asarray(samples)
    chosen = np.asarray(chosen)
    shape = (*samples.shape, replayed.mask.shape[-1])
    correct = np.take_along_axis(
        np.broadcast_to(replayed.correct, shape), chosen[..., None], axis=-1
    )[..., 0]
    correct &= samples > 0
    cost = np.take_along_axis(
        np.broadcast_to(replayed.cumulative_cost, shape),
        np.maximum(samples - 1, 0)[..., None],
        axis=-1,
    )[..., 0]
    cost = np.where(samples > 0, cost, 0.0)
    return Outcomes(correct.mean(-2), samples.mean(-2), cost.mean(-2))


# --- methods ------------------------------------------------------------------------------------


def optscale_decisions(
    replayed: Replayed,
    s_min: Sequence[float],
    alpha: Sequence[float],
    min_samples: Sequence[int] = (1,),
    peek: Sequence[int] = (),
    max_n: int | None = None,
    prior: tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None,
    on_cell: Callable[[int], None] | None = None,
) -> tuple[list[tuple[float, float, str, int]], np.ndarray, np.ndarray, Any]:
    """OptScale over a (s_min, alpha) x (m | peek) grid: one batched prefix fit, no refits.

    Args:
        replayed: the ordered log (must have scores).
        s_min: thresholds.
        alpha: target probabilities.
        min_samples: m values of the sequential rule (empty: none).
        peek: k values of the released one-fit rule (empty: none).
        max_n: cap.
        prior: OptScalet: per question prior centres (mu [Q], sigma [Q]) and prior scales
            ((mu_scale [Q], sigma_scale [Q])); None for OptScale0 (MLE).
        on_cell: called with the number of (s_min, alpha) cells done, after each s_min.

    Returns:
        (cells, samples [cells, R, Q], chosen [cells, R, Q], prefix fits): see
        `optscale_jax.policies.optscale_grid`; chosen is the best-scored drawn sample.
    """
    import jax.numpy as jnp

    from optscale_jax import policies

    scores = jnp.asarray(replayed.scores)
    mask = jnp.asarray(replayed.mask)
    if prior is None:
        fit = policies.prefix_fits(scores, mask)
    else:
        shape = replayed.mask.shape[:-1]
        prior_mu, prior_sigma, (mu_scale, sigma_scale) = prior
        fit = policies.prefix_fits(
            scores,
            mask,
            np.broadcast_to(prior_mu, shape),
            np.broadcast_to(prior_sigma, shape),
            (np.broadcast_to(mu_scale, shape), np.broadcast_to(sigma_scale, shape)),
        )
    cells, samples = policies.optscale_grid(
        fit, mask, s_min, alpha, min_samples=min_samples, peek=peek, max_n=max_n, on_cell=on_cell
    )
    samples = np.asarray(samples)
    best = np.asarray(policies.running_best(scores, mask))
    index = np.maximum(samples - 1, 0)[..., None]
    chosen = np.take_along_axis(np.broadcast_to(best, (*samples.shape, best.shape[-1])), index, -1)
    return cells, samples, chosen[..., 0], fit


def top_score_ties(log: Any) -> float | None:
    """Fraction of questions where two or more different answers share the top score.

    Then best-of-n's choice among them rests on the tie rule (the sample order).

    Args:
        log: a Log with scores and answers (else None is returned).

    Returns:
        The fraction, or None.
    """
    if log.scores is None or log.answers is None:
        return None
    mask = np.asarray(log.mask)
    top = np.max(np.where(mask, log.scores, -np.inf), axis=1, keepdims=True)
    at_top = np.sort(np.where(mask & (log.scores == top), log.answers, -1), axis=1)
    distinct = (np.diff(at_top, axis=1) != 0) & (at_top[:, 1:] >= 0)
    distinct_count = distinct.sum(1) + (at_top[:, 0] >= 0)
    return float(np.mean(distinct_count >= 2))


# Vote tallies are [R, Q, K, answer codes]; above this many entries, orders go in chunks.
_VOTE_TALLY_BUDGET = 2**25


def _by_order_chunks(policy: Callable, answers: np.ndarray, *args: Any) -> Any:
    """Runs a voting policy on all orders at once, or in chunks of orders if the tallies
    would be large; [R, ...] array arguments are sliced, the rest passed as they are."""
    import jax

    orders, questions, samples = answers.shape
    codes = max(int(answers.max(initial=-1)) + 1, 1)
    per_order = questions * samples * codes
    chunk = max(1, min(orders, _VOTE_TALLY_BUDGET // per_order))
    if chunk == orders:
        return policy(*args)

    def piece(arg, start):
        if getattr(arg, "shape", ())[:1] == (orders,):
            return arg[start : start + chunk]
        return arg

    parts = [
        jax.device_get(policy(*(piece(a, start) for a in args)))
        for start in range(0, orders, chunk)
    ]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _advance(bar: Any, per_cell: int, cells: int) -> None:
    bar.update(cells * per_cell)


def _fixed_n(replayed: Replayed, per_prefix: np.ndarray, ns: Sequence[int]):
    """Decisions of a fixed-N method for every N from its per-prefix choices."""
    available = replayed.mask.sum(-1)
    samples = np.minimum(np.asarray(ns)[:, None, None], available[None])
    index = np.maximum(samples - 1, 0)[..., None]
    chosen = np.take_along_axis(
        np.broadcast_to(per_prefix, (len(ns), *per_prefix.shape)), index, -1
    )
    return samples, chosen[..., 0]


def run_methods(
    replayed: Replayed,
    config: ReplayConfig,
    max_n: int,
    prior: tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None,
    progress: bool = True,
) -> tuple[list[Setting], Outcomes, dict[str, Any]]:
    """Every method x setting of `config` on the ordered log.

    Args:
        replayed: the ordered log.
        config: methods and grids.
        max_n: cap on samples.
        prior: for OptScalet, per question (mu, sigma) centres `[Q]` and the prior scales.
        progress: show a tqdm bar on stderr.

    Returns:
        (settings, outcomes with arrays [S, Q], diagnostics such as fit status counts).
    """
    import jax.numpy as jnp
    from tqdm import tqdm

    from optscale_jax import policies

    ns = tuple(config.fixed_n) if config.fixed_n else tuple(range(1, max_n + 1))
    grid = len(config.s_min) * len(config.alpha)
    work = {
        "bon": 1,
        "sc": 1,
        "wmv": 1,
        "oracle": 1,
        "esc": len(config.window),
        "asc": len(config.threshold),
        "optscale0": grid,
        "optscale0-peek": grid,
        "optscalet": grid,
    }
    bar = tqdm(
        total=sum(work[m] for m in config.methods),
        desc="replay",
        unit="step",
        disable=not progress,
        leave=False,
    )
    settings: list[Setting] = []
    parts: list[Outcomes] = []
    diagnostics: dict[str, Any] = {}
    mask = jnp.asarray(replayed.mask)

    def add(new_settings, samples, chosen):
        settings.extend(new_settings)
        parts.append(outcomes(replayed, samples, chosen))

    def add_grid(method, cells, samples, chosen, fit):
        kind = "m" if method != "optscale0-peek" else "k"
        keep = [i for i, c in enumerate(cells) if c[2] == kind]
        add(
            [
                Setting(method, s_min=c[0], alpha=c[1], **{kind: c[3]})
                for c in (cells[i] for i in keep)
            ],
            samples[keep],
            chosen[keep],
        )
        status = np.bincount(np.asarray(fit.status)[np.asarray(replayed.mask)].ravel(), minlength=4)
        diagnostics[f"{method}_fit_status"] = {
            "converged": int(status[0]),
            "at_bound": int(status[1]),
            "no_data": int(status[2]),
            "max_steps": int(status[3]),
        }

    mle_grid = None
    for method in config.methods:
        bar.set_postfix_str(method)
        if method in ("bon", "sc", "wmv"):
            if method == "bon":
                per_prefix = policies.running_best(replayed.scores, mask)
            else:
                weights = replayed.scores if method == "wmv" else None
                per_prefix = _by_order_chunks(
                    policies.vote_leaders, replayed.answers, replayed.answers, mask, weights
                )
            samples, chosen = _fixed_n(replayed, np.asarray(per_prefix), ns)
            add([Setting(method, n=n) for n in ns], samples, chosen)
            bar.update(1)
        elif method == "oracle":
            decision = policies.oracle(replayed.correct, mask, np.asarray(ns)[:, None, None])
            add([Setting(method, n=n) for n in ns], decision.samples, decision.chosen)
            bar.update(1)
        elif method == "esc":
            for w in config.window:
                d = _by_order_chunks(
                    policies.early_stopping_consistency, replayed.answers,
                    replayed.answers, mask, w, max_n,
                )  # fmt: skip
                add([Setting(method, w=w)], np.asarray(d.samples)[None], np.asarray(d.chosen)[None])
                bar.update(1)
        elif method == "asc":
            for t in config.threshold:
                d = _by_order_chunks(
                    functools.partial(policies.adaptive_consistency_stop, max_n=max_n),
                    replayed.answers, replayed.answers, mask, t,
                )  # fmt: skip
                add(
                    [Setting(method, threshold=t)],
                    np.asarray(d.samples)[None],
                    np.asarray(d.chosen)[None],
                )
                bar.update(1)
        elif method in ("optscale0", "optscale0-peek"):
            if mle_grid is None:
                # One set of MLE prefix fits serves both OptScale0 rules.
                both = [m for m in ("optscale0", "optscale0-peek") if m in config.methods]
                mle_grid = optscale_decisions(
                    replayed,
                    config.s_min,
                    config.alpha,
                    min_samples=config.min_samples if "optscale0" in both else (),
                    peek=config.peek if "optscale0-peek" in both else (),
                    max_n=max_n,
                    on_cell=functools.partial(_advance, bar, len(both)),
                )
            add_grid(method, *mle_grid)
        elif method == "optscalet":
            grid = optscale_decisions(
                replayed,
                config.s_min,
                config.alpha,
                min_samples=config.min_samples,
                max_n=max_n,
                prior=prior,
                on_cell=bar.update,
            )
            add_grid(method, *grid)
        else:
            raise ValueError(f"--methods: unknown method {method!r}")
    bar.close()
    merged = Outcomes(*(np.concatenate([getattr(p, f) for p in parts]) for f in Outcomes._fields))
    return settings, merged, diagnostics


# --- splits, statistics, selection --------------------------------------------------------------


def parse_split(split: str) -> tuple[str, int]:
    """'dev-test' | 'none' | 'kfold:K' -> (kind, K); ValueError naming --split otherwise."""
    if split in ("dev-test", "none"):
        return split, 0
    if split.startswith("kfold:"):
        try:
            folds = int(split.split(":", 1)[1])
        except ValueError:
            folds = 0
        if folds >= 2:
            return "kfold", folds
    raise ValueError(f"--split: expected dev-test, none or kfold:K with K >= 2, got {split!r}")


def make_splits(num_questions: int, split: str, seed: int) -> list[Split]:
    """Question index sets for selection and reporting.

    Args:
        num_questions: Q.
        split: "dev-test" (seeded 50/50: select on dev, report on test), "kfold:K" (each fold
            reported with settings chosen on the other folds) or "none" (one split "all",
            selection in-sample).
        seed: seed of the shuffle.

    Returns:
        Splits; for "dev-test" one Split("test", dev, test).
    """
    kind, folds = parse_split(split)
    everything = np.arange(num_questions)
    if kind == "none":
        return [Split("all", everything, everything)]
    shuffled = np.random.default_rng(seed).permutation(num_questions)
    if kind == "dev-test":
        if num_questions < 2:
            raise ValueError("--split dev-test needs at least 2 questions")
        half = num_questions // 2
        return [Split("test", np.sort(shuffled[:half]), np.sort(shuffled[half:]))]
    if num_questions < folds:
        raise ValueError(f"--split kfold:{folds} needs at least {folds} questions")
    parts = np.array_split(shuffled, folds)
    return [
        Split(f"fold{i + 1}", np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(part))
        for i, part in enumerate(parts)
    ]


def bootstrap_ci(
    values: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over questions and a percentile bootstrap CI, for many rows at once.

    The same resampled question sets serve every row (paired across settings).

    Args:
        values: `[S, Q]` per-question values.
        resamples: B.
        seed: seed of the resampling.
        level: CI coverage.

    Returns:
        (mean, low, high), each `[S]`.
    """
    values = np.asarray(values, np.float64)
    num = values.shape[-1]
    mean = values.mean(-1)
    if num == 0:
        nan = np.full(values.shape[:-1], np.nan)
        return nan, nan, nan
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num, np.full(num, 1.0 / num), size=resamples)  # [B, Q]
    means = values @ counts.T.astype(np.float64) / num  # [S, B]
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=-1)
    return mean, low, high


def select_setting(
    accuracy: np.ndarray, cost: np.ndarray, reference: float, tolerance: float = 0.0
) -> tuple[int, bool]:
    """The default rule: the cheapest setting with accuracy >= reference - tolerance.

    Ties in cost go to the more accurate, then to the earlier setting. If no setting
    qualifies, the most accurate one (ties: the cheaper).

    Args:
        accuracy: `[S]` accuracies on the selection questions.
        cost: `[S]` mean costs on the same questions.
        reference: fixed-N BoN's accuracy at max_n on the same questions.
        tolerance: allowed shortfall.

    Returns:
        (index of the setting, whether it qualified).
    """
    accuracy = np.asarray(accuracy, np.float64)
    cost = np.asarray(cost, np.float64)
    qualified = accuracy >= reference - tolerance - _ACCURACY_EPS
    index = np.arange(len(accuracy))
    if qualified.any():
        rows = index[qualified]
        order = np.lexsort((rows, -accuracy[rows], cost[rows]))
        return int(rows[order[0]]), True
    return best_accuracy(accuracy, cost), False


def best_accuracy(accuracy: np.ndarray, cost: np.ndarray) -> int:
    """The most accurate setting (ties: the cheaper, then the earlier)."""
    rounded = np.round(np.asarray(accuracy, np.float64), 12)
    order = np.lexsort((np.arange(len(rounded)), np.asarray(cost), -rounded))
    return int(order[0])


def bon_cost_at_accuracy(bon_cost: np.ndarray, bon_accuracy: np.ndarray, target: float) -> float:
    """The cost fixed-N BoN needs to reach `target` accuracy, on its monotone envelope.

    The envelope keeps, over increasing N, each N whose accuracy beats every smaller N's
    (the running maximum's record points: the cheapest N for each accuracy level). Between
    two record points the cost is interpolated linearly (what mixing the two N would cost).
    A target at or below the first point costs the first point's cost (BoN cannot draw
    fewer than its smallest N); a target above the best accuracy is unreachable (NaN).

    Args:
        bon_cost: `[N]` mean cost of BoN at increasing N.
        bon_accuracy: `[N]` its accuracy.
        target: the accuracy to reach.

    Returns:
        The interpolated cost, or NaN.

    Example:
        >>> bon_cost_at_accuracy([1, 2, 3, 4], [0.2, 0.4, 0.3, 0.6], 0.5)
        3.0
    """
    cost = np.asarray(bon_cost, np.float64)
    accuracy = np.asarray(bon_accuracy, np.float64)
    previous_best = np.concatenate([[-np.inf], np.maximum.accumulate(accuracy)[:-1]])
    record = accuracy > previous_best + _ACCURACY_EPS
    cost, accuracy = cost[record], accuracy[record]
    if not np.isfinite(target) or target > accuracy[-1] + _ACCURACY_EPS:
        return math.nan
    j = int(np.argmax(accuracy >= target - _ACCURACY_EPS))
    if j == 0:
        return float(cost[0])
    t = (target - accuracy[j - 1]) / (accuracy[j] - accuracy[j - 1])
    return float(cost[j - 1] + t * (cost[j] - cost[j - 1]))


# --- priors ---------------------------------------------------------------------------------


def resolve_prior(
    log: Any,
    spec: str | None,
    select: Sequence[np.ndarray],
    report: Sequence[np.ndarray],
    prior_scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], str]:
    """Per-question prior centres for OptScalet.

    Args:
        log: the Log.
        spec: "log", "eb", a JSONL path of {id, mu, sigma}, "mu,sigma", or None (auto).
        select: per split, the selection questions (the empirical-Bayes prior of a split's
            reported questions is fitted on its selection questions only).
        report: per split, the reported questions.
        prior_scale: prior standard deviations (replaced by the fitted ones for "eb").

    Returns:
        (mu [Q], sigma [Q], (mu_scale [Q], sigma_scale [Q]), description).
    """
    num = len(log.ids)
    has_log_prior = (
        log.prior_mu is not None
        and np.all(np.isfinite(log.prior_mu))
        and np.all(np.isfinite(log.prior_sigma))
    )
    if spec is None:
        spec = "log" if has_log_prior else "eb"
    if spec == "log":
        if not has_log_prior:
            missing = [
                log.ids[i]
                for i in range(num)
                if log.prior_mu is None or not np.isfinite(log.prior_mu[i])
            ]
            raise ValueError(
                f"--prior log: {log.source} has no prior for question(s) {missing[:5]}"
            )
        return (
            np.asarray(log.prior_mu, float),
            np.asarray(log.prior_sigma, float),
            _per_question(prior_scale, num),
            "log",
        )
    if spec == "eb":
        from optscale_jax.empirical_bayes import fit_population_prior

        if log.scores is None:
            raise ValueError("--prior eb needs scores in the log")
        # Each split's reported questions get the prior fitted on its selection questions;
        # questions only ever selected on (dev) get the first split's.
        centre = np.zeros((4, num))
        for fit_on, apply_to in reversed(list(zip(select, report, strict=True))):
            p = fit_population_prior(np.asarray(log.scores)[fit_on], np.asarray(log.mask)[fit_on])
            values = np.array([p.mu, p.sigma, p.mu_scale, p.sigma_scale], np.float64)[:, None]
            if apply_to is report[0]:
                centre[:] = values
            centre[:, apply_to] = values
        return centre[0], centre[1], (centre[2], centre[3]), "eb"
    if "," in spec and not pathlib.Path(spec).exists():
        try:
            mu_value, sigma_value = (float(x) for x in spec.split(","))
        except ValueError:
            raise ValueError(
                f"--prior: expected log, eb, a JSONL file or 'mu,sigma', got {spec!r}"
            ) from None
        if not sigma_value > 0:
            raise ValueError(f"--prior: sigma must be > 0, got {sigma_value}")
        scales = _per_question(prior_scale, num)
        return np.full(num, mu_value), np.full(num, sigma_value), scales, spec
    scales = _per_question(prior_scale, num)
    return (*read_prior_file(spec, log.ids), scales, pathlib.Path(spec).name)


def _per_question(prior_scale: tuple[float, float], num: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(num, float(prior_scale[0])), np.full(num, float(prior_scale[1]))


def read_prior_file(path: str | pathlib.Path, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Priors from a JSONL file of {"id", "mu", "sigma"}, aligned to `ids`.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: naming file and line for malformed records or missing questions.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--prior: no such file {path}")
    table: dict[str, tuple[float, float]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, mu, sigma = str(record["id"]), float(record["mu"]), float(record["sigma"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line_number}: bad prior record ({error})") from None
            if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"{path}:{line_number}: mu must be finite and sigma > 0")
            table[key] = (mu, sigma)
    missing = [i for i in ids if i not in table]
    if missing:
        raise ValueError(f"{path}: no prior for question(s) {missing[:5]}")
    values = np.array([table[i] for i in ids], np.float64).reshape(len(ids), 2)
    return values[:, 0], values[:, 1]


# --- evaluation ---------------------------------------------------------------------------------


def check_log(
    log: Any, methods: Iterable[str], explicit: bool
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Methods the log supports; ValueError for an explicitly requested one it does not."""
    if log.correct is None:
        raise ValueError(
            f"{log.source}: the log has no correctness (needs `correct` or `gold` + answers)"
        )
    kept, skipped = [], {}
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"--methods: unknown method {method!r} (choose from {', '.join(METHODS)})"
            )
        if method in SCORE_METHODS and log.scores is None:
            skipped[method] = "the log has no scores"
        elif method in ANSWER_METHODS and log.answers is None:
            skipped[method] = "the log has no answers"
        else:
            kept.append(method)
            continue
        if explicit:
            raise ValueError(f"--methods: {method} needs what the log lacks: {skipped[method]}")
    return tuple(kept), skipped


def evaluate(
    log: Any, config: ReplayConfig, explicit_methods: bool = False, progress: bool = True
) -> ReplayResult:
    """Replays every method over R orders and evaluates it under the configured protocol.

    Args:
        log: an `optscale_jax.logs.Log`.
        config: the replay configuration.
        explicit_methods: the user named the methods (unsupported ones are an error rather
            than skipped).
        progress: show progress bars.

    Returns:
        ReplayResult.
    """
    methods, skipped = check_log(log, config.methods, explicit_methods)
    if not methods:
        raise ValueError("--methods: no method can run on this log")
    kind, _ = parse_split(config.split)
    if config.protocol not in ("heldout", "released"):
        raise ValueError(f"--protocol: expected heldout or released, got {config.protocol!r}")
    if config.protocol == "released" and kind == "kfold":
        raise ValueError(
            "--protocol released selects on the test split: use --split dev-test or none"
        )
    if "bon" not in methods:
        raise ValueError(
            "--methods must include bon: the selection rule and the savings are relative to it"
        )
    num_q, longest = np.asarray(log.mask).shape
    # No question has more than `longest` samples: a larger cap changes nothing.
    max_n = longest if config.max_n is None else min(int(config.max_n), longest)
    ns = tuple(config.fixed_n) if config.fixed_n else tuple(range(1, max_n + 1))
    if max(ns) != max_n:
        raise ValueError(f"--fixed-n: the grid must end at --max-n ({max_n})")

    seeds = np.random.SeedSequence(config.seed).spawn(3)
    order_seed, split_seed, boot_seed = (int(s.generate_state(1)[0]) for s in seeds)
    splits = make_splits(num_q, config.split, split_seed)
    prior = prior_label = None
    if "optscalet" in methods:
        *prior, prior_label = resolve_prior(
            log,
            config.prior,
            [s.select for s in splits],
            [s.report for s in splits],
            tuple(config.prior_scale),
        )
    replayed = permute(log, config.permutations, order_seed, config.verifier_cost_factor)
    settings, out, diagnostics = run_methods(
        replayed, dataclasses.replace(config, methods=methods, fixed_n=ns), max_n, prior, progress
    )
    cost_unit = "tokens" if log.tokens is not None else "samples"
    diagnostics["questions_with_tied_top_answers"] = top_score_ties(log)
    by_method: dict[str, list[int]] = {}
    for i, s in enumerate(settings):
        by_method.setdefault(s.method, []).append(i)
    bon_rows = np.array(by_method["bon"])
    bon_max = bon_rows[[settings[i].n for i in bon_rows].index(max_n)]

    def row(i, split_name, questions, selected, stats):
        s = settings[i]
        acc, acc_lo, acc_hi, cost, cost_lo, cost_hi = stats
        return {
            "method": s.method,
            "split": split_name,
            "setting": s.label,
            "max_n": max_n,
            **s.params(),
            "prior": prior_label if s.method == "optscalet" else None,
            "accuracy": acc,
            "ci_low": acc_lo,
            "ci_high": acc_hi,
            "mean_samples": float(out.samples[i, questions].mean()) if len(questions) else math.nan,
            "mean_cost": cost,
            "cost_ci_low": cost_lo,
            "cost_ci_high": cost_hi,
            "cost_unit": cost_unit,
            "selected": selected,
        }

    # Per split: all settings on the reported (and, for dev-test, the selection) questions.
    rows: list[dict[str, Any]] = []
    all_index = list(range(len(settings)))
    named_sets: list[tuple[str, np.ndarray]] = []
    if kind == "dev-test":
        named_sets = [("dev", splits[0].select), ("test", splits[0].report)]
    elif kind == "none":
        named_sets = [("all", splits[0].report)]
    else:
        named_sets = [("all", np.arange(num_q))] + [(s.name, s.report) for s in splits]
    split_stats = {
        name: _stats(out, all_index, q, config.bootstrap, boot_seed) for name, q in named_sets
    }

    # Selection per method and split.
    choices: dict[str, list[tuple[int, bool]]] = {}
    for method in methods:
        idx = np.array(by_method[method])
        choices[method] = []
        for split in splits:
            pick_on = split.report if config.protocol == "released" else split.select
            acc = out.correct[idx][:, pick_on].mean(-1)
            cost = out.cost[idx][:, pick_on].mean(-1)
            if config.protocol == "released":
                choices[method].append((int(idx[best_accuracy(acc, cost)]), True))
            else:
                reference = float(out.correct[bon_max, pick_on].mean())
                j, ok = select_setting(acc, cost, reference, config.tolerance)
                choices[method].append((int(idx[j]), ok))

    report_name = {"dev-test": "test", "none": "all", "kfold": "crossfit"}[kind]
    if config.protocol == "released":
        report_name = RELEASED_LABEL
    selected_test = {m: c[0][0] for m, c in choices.items()} if kind != "kfold" else {}
    for name, questions in named_sets:
        for i in all_index:
            mark = (
                config.protocol == "heldout"
                and kind == "dev-test"
                and name == "test"
                and selected_test.get(settings[i].method) == i
            )
            rows.append(row(i, name, questions, mark, split_stats[name][i]))

    # Held-out figures per method: one setting (dev-test, none) or pooled folds (kfold).
    held_out: dict[str, dict[str, Any]] = {}
    per_question: list[dict[str, Any]] = []
    for method in methods:
        picks = choices[method]
        correct_q = np.full(num_q, np.nan)
        samples_q = np.full(num_q, np.nan)
        cost_q = np.full(num_q, np.nan)
        for (i, _), split in zip(picks, splits, strict=True):
            q = split.report
            correct_q[q], samples_q[q], cost_q[q] = (
                out.correct[i, q],
                out.samples[i, q],
                out.cost[i, q],
            )
        questions = np.flatnonzero(~np.isnan(correct_q))
        (acc, lo, hi), (cost, c_lo, c_hi) = (
            tuple(
                float(v[0]) for v in bootstrap_ci(x[questions][None], config.bootstrap, boot_seed)
            )
            for x in (correct_q, cost_q)
        )
        labels = [settings[i].label for i, _ in picks]
        params = {
            name: (
                getattr(settings[picks[0][0]], name)
                if len({getattr(settings[i], name) for i, _ in picks}) == 1
                else None
            )
            for name in HYPER_PARAMETERS
        }
        held_out[method] = {
            "setting": labels[0] if len(set(labels)) == 1 else " | ".join(labels),
            "params": params,
            "split": report_name,
            "questions": len(questions),
            "accuracy": acc,
            "ci": [lo, hi],
            "mean_samples": float(samples_q[questions].mean()),
            "mean_cost": cost,
            "cost_ci": [c_lo, c_hi],
            "selection": _selection_note(config.protocol, all(ok for _, ok in picks)),
            "qualified": all(ok for _, ok in picks),
        }
        if kind == "kfold" or config.protocol == "released":
            rows.append(
                {
                    "method": method,
                    "split": report_name,
                    "setting": held_out[method]["setting"],
                    "max_n": max_n,
                    **params,
                    "prior": prior_label if method == "optscalet" else None,
                    "accuracy": acc,
                    "ci_low": lo,
                    "ci_high": hi,
                    "mean_samples": held_out[method]["mean_samples"],
                    "mean_cost": cost,
                    "cost_ci_low": c_lo,
                    "cost_ci_high": c_hi,
                    "cost_unit": cost_unit,
                    "selected": True,
                }
            )
        # Per question figures of the selected setting (pooled held-out folds for kfold).
        if kind == "dev-test":
            i = picks[0][0]
            for split_name, qs in (("dev", splits[0].select), ("test", splits[0].report)):
                per_question += _question_rows(
                    method, split_name, log.ids, qs, out.correct[i], out.samples[i], out.cost[i]
                )
        else:
            per_question += _question_rows(
                method, report_name, log.ids, questions, correct_q, samples_q, cost_q
            )

    # Equal-accuracy comparison on the reported questions: BoN's accuracy-vs-N envelope.
    curve_questions = splits[0].report if kind != "kfold" else np.arange(num_q)
    bon_acc = out.correct[bon_rows][:, curve_questions].mean(-1)
    bon_cost = out.cost[bon_rows][:, curve_questions].mean(-1)
    for figures in held_out.values():
        needed = bon_cost_at_accuracy(bon_cost, bon_acc, figures["accuracy"])
        figures["bon_cost_at_accuracy"] = needed
        figures["saving"] = _clean(
            (1.0 - figures["mean_cost"] / needed) if needed and math.isfinite(needed) else None
        )
        figures["bon_reaches_accuracy"] = bool(math.isfinite(needed))

    summary = {
        "log": str(log.source),
        "questions": num_q,
        "max_n": max_n,
        "max_n_requested": config.max_n,
        "permutations": config.permutations,
        "split": config.split,
        "protocol": RELEASED_LABEL if config.protocol == "released" else "heldout",
        "reported_split": report_name,
        "selection_rule": (
            "best accuracy on the test split itself (the released code's protocol)"
            if config.protocol == "released"
            else f"cheapest setting with selection accuracy >= fixed-N BoN at n={max_n} - {config.tolerance}"
        ),
        "seed": config.seed,
        "bootstrap": config.bootstrap,
        "cost_unit": cost_unit,
        "verifier_cost_factor": config.verifier_cost_factor,
        "prior": prior_label,
        "prior_means": None
        if prior is None
        else {
            name: float(np.mean(values))
            for name, values in zip(
                ("mu", "sigma", "mu_scale", "sigma_scale"),
                (prior[0], prior[1], *prior[2]),
                strict=True,
            )
        },
        "bon_curve": {
            "split": report_name if kind != "kfold" else "all",
            "n": list(ns),
            "accuracy": bon_acc.tolist(),
            "envelope": np.maximum.accumulate(bon_acc).tolist(),
            "mean_cost": bon_cost.tolist(),
        },
        "methods": held_out,
        "skipped_methods": skipped,
        "diagnostics": diagnostics,
    }
    if kind == "none":
        summary["note"] = "--split none: settings were chosen and reported on the same questions"
    table = [
        {
            "method": m,
            "setting": f["setting"],
            "accuracy": f["accuracy"],
            "ci": f["ci"],
            "mean_samples": f["mean_samples"],
            "mean_cost": f["mean_cost"],
            "saving": f["saving"],
            "qualified": f["qualified"],
        }
        for m, f in held_out.items()
    ]
    return ReplayResult(rows, summary, per_question, table)


def _selection_note(protocol: str, qualified: bool) -> str:
    if protocol == "released":
        return "best accuracy on the test split itself (released protocol, not held out)"
    if qualified:
        return (
            "cheapest setting reaching fixed-N BoN's accuracy at max_n on the selection questions"
        )
    return (
        "no setting reached fixed-N BoN's accuracy at max_n on the selection questions: "
        "the most accurate one was taken"
    )


def _clean(x: float | None) -> float | None:
    """Rounds away float noise (a method compared with itself saves exactly 0)."""
    return None if x is None else round(float(x), 12) + 0.0


def _question_rows(method, split_name, ids, questions, correct, samples, cost):
    return [
        {
            "method": method,
            "split": split_name,
            "question": ids[q],
            "samples": float(samples[q]),
            "cost": float(cost[q]),
            "correct": float(correct[q]),
        }
        for q in questions
    ]


def _stats(
    out: Outcomes, index: Sequence[int], questions: np.ndarray, resamples: int, seed: int
) -> dict[int, tuple[float, ...]]:
    """Per setting in `index`: (accuracy, CI low, CI high, cost, cost CI low, cost CI high)."""
    index = np.asarray(index)
    acc = bootstrap_ci(out.correct[index][:, questions], resamples, seed)
    cost = bootstrap_ci(out.cost[index][:, questions], resamples, seed)
    return {int(i): tuple(float(x[j]) for x in (*acc, *cost)) for j, i in enumerate(index)}
