"""Calibrated stopping: Learn-then-Test (LTT) certifies a setting of any stopping rule.

Learn-then-Test (Angelopoulos, Bates, Candes, Jordan, Lei, arXiv 2110.01052): for a family
of settings of a stopping rule, a loss L_q(setting) in [0, 1] per calibration question, a
target risk epsilon and an error level delta, test H0: E[L(setting)] > epsilon for every
setting with a valid p-value, control the family-wise error at delta, and choose the
cheapest setting whose null is rejected. For a question exchangeable with the calibration
questions, P(E[L(chosen)] <= epsilon) >= 1 - delta over the draw of the calibration set,
whatever the score law and however the samples of one question depend on each other.

Data flow (each arrow one function):

    outcomes at the stop and at the full budget, [S, R, Q]
        -> `RISKS[name].loss` (mean over the R sample orders: losses [S, Q])
        -> `hb_p_value` of each setting's mean loss (Hoeffding-Bentkus)
        -> fixed-sequence testing along a data-independent `order` (`safety_order`,
           `grid_order`), or Bonferroni
        -> `ltt_select` -> `LTTResult(index, p_values, certified)`.

Everything is numpy float64 whatever the process-wide JAX x64 flag: a p-value's validity
should not depend on a dtype, and the inputs are concrete arrays checked at the boundary.

Example:
    >>> import numpy as np
    >>> from optscale_jax import calibration
    >>> rng = np.random.default_rng(0)
    >>> true_risk = np.array([0.0, 0.01, 0.02, 0.2])[:, None]  # safest first
    >>> losses = (rng.random((4, 500)) < true_risk).astype(float)
    >>> result = calibration.ltt_select(losses, epsilon=0.05, delta=0.1)
    >>> int(result.index), result.certified.tolist()
    (2, [True, True, True, False])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
from jax.typing import ArrayLike

from optscale_jax import validation

__all__ = [
    "FWER_METHODS",
    "RISKS",
    "LTTResult",
    "Risk",
    "accuracy_drop_loss",
    "disagree_loss",
    "grid_order",
    "hb_p_value",
    "ltt_select",
    "min_calibration_questions",
    "regret_loss",
    "safety_order",
]

FWER_METHODS = ("fixed-sequence", "bonferroni")
"""How `ltt_select` controls the family-wise error."""

# n * risk_hat this close (relative, in ulps of the input's dtype) to an integer k counts as
# k: a mean of losses that are multiples of 1 / n is only known to a few ulps, and the
# next integer would make the Bentkus term needlessly conservative.
_ROUNDING_ULPS = 32
# Cells of the [pairs, counts] array of one block of binomial CDF tables (bounds memory).
_CELLS_PER_BLOCK = 1 << 20


class LTTResult(NamedTuple):
    """What `ltt_select` returns; `...` is the batch shape of the call.

    Attributes:
        index: int `[...]`, the chosen setting (the cheapest certified one), -1 if none.
        p_values: float64 `[..., S]`, the Hoeffding-Bentkus p-value of each setting.
        certified: bool `[..., S]`, True where the null "risk > epsilon" was rejected.
    """

    index: np.ndarray
    p_values: np.ndarray
    certified: np.ndarray


# --- p-values -----------------------------------------------------------------------------------


def hb_p_value(risk_hat: ArrayLike, n: ArrayLike, epsilon: ArrayLike) -> np.ndarray:
    """The Hoeffding-Bentkus p-value of H0: risk > epsilon, for losses in [0, 1].

        p = min(exp(-n h1(min(risk_hat, epsilon), epsilon)),
                e * P(Binomial(n, epsilon) <= ceil(n risk_hat))),
        h1(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b))

    (the HB p-value of LTT, arXiv 2110.01052; the Bentkus term is the bound of RCPS, arXiv
    2101.02703). It is valid for any losses in [0, 1], not only 0/1 ones. p = 1 when
    risk_hat >= epsilon. The binomial CDF is a running sum of pmf terms in log space (exact
    to rounding, no scipy). n * risk_hat within 32 ulps (of the input's dtype) of an integer
    counts as that integer: a mean of k / n computed in floating point.

    Args:
        risk_hat: empirical risks (mean losses) in [0, 1].
        n: number of calibration questions behind each risk (integers >= 1).
        epsilon: target risks in (0, 1).

    Returns:
        float64 p-values in [0, 1] (0 only by underflow), broadcast over the arguments.

    Raises:
        ValueError: naming the offending argument.

    Example:
        >>> from optscale_jax.calibration import hb_p_value
        >>> round(float(hb_p_value(0.02, 500, 0.05)), 6)  # the Bentkus term is the smaller
        0.00125
    """
    if n is None:
        raise ValueError("n must be an integer >= 1, got None")
    validation.check_unit(risk_hat, "risk_hat")
    validation.check_max_n(n, "n")
    validation.check_open_unit(epsilon, "epsilon")
    validation.check_broadcast({"risk_hat": risk_hat, "n": n, "epsilon": epsilon})
    risk_hat = np.asarray(risk_hat)
    p = _hb_p_value(risk_hat, n, epsilon, _rounding(risk_hat.dtype))
    return p[()]


def _rounding(dtype: np.dtype) -> float:
    """The relative slack on n * risk_hat for inputs of this dtype."""
    floating = dtype if np.issubdtype(dtype, np.floating) else np.float64
    return _ROUNDING_ULPS * float(np.finfo(floating).eps)


def _hb_p_value(
    risk_hat: ArrayLike, n: ArrayLike, epsilon: ArrayLike, rounding: float
) -> np.ndarray:
    """`hb_p_value` on checked input (any broadcastable shapes), as a float64 array."""
    risk_hat, n, epsilon = (
        np.array(a, np.float64) for a in np.broadcast_arrays(risk_hat, n, epsilon)
    )
    hoeffding = np.array(np.exp(-n * _bernoulli_kl(np.minimum(risk_hat, epsilon), epsilon)))
    # At risk_hat >= epsilon Hoeffding gives 1 and the Bentkus term is at least e / 2 (the
    # binomial median is at most ceil(n epsilon)): only the rest needs the binomial CDF.
    below = risk_hat < epsilon
    count = np.ceil(n[below] * risk_hat[below] * (1.0 - rounding))
    bentkus = np.exp(1.0 + _log_binomial_cdf(count, n[below], epsilon[below]))
    p = hoeffding
    p[below] = np.minimum(p[below], bentkus)
    return p


def _bernoulli_kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """h1(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b)), 0 <= a <= b < 1, 0 log 0 = 0."""
    positive = a > 0
    safe_a = np.where(positive, a, 1.0)
    first = np.where(positive, a * np.log(safe_a / b), 0.0)
    second = (1.0 - a) * (np.log1p(-a) - np.log1p(-b))
    return np.maximum(first + second, 0.0)


def _log_binomial_cdf(count: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """log P(Binomial(n, p) <= count) for 1-D float64 arrays, 0 <= count <= n, 0 < p < 1.

    One table of the log CDF per distinct (n, p) (usually one: n = Q, p = epsilon), looked
    up at each count. The tables go in blocks so that a block's [pairs, counts] array stays
    under `_CELLS_PER_BLOCK` cells (the loop is over blocks of tables, not questions).
    """
    out = np.empty(count.shape)
    if count.size == 0:
        return out
    pairs, pair_of = np.unique(np.stack([n, p], axis=-1), axis=0, return_inverse=True)
    pair_of = pair_of.reshape(-1)
    width = int(count.max()) + 1
    block = max(1, _CELLS_PER_BLOCK // width)
    for start in range(0, len(pairs), block):
        table = _log_binomial_cdf_table(*pairs[start : start + block].T, width)
        rows = (pair_of >= start) & (pair_of < start + block)
        out[rows] = table[pair_of[rows] - start, count[rows].astype(np.int64)]
    return out


def _log_binomial_cdf_table(n: np.ndarray, p: np.ndarray, width: int) -> np.ndarray:
    """log P(Binomial(n, p) <= k) for k = 0..width - 1: `[len(n), width]`.

    The log pmf of j = 0..k, with log C(n, j) the running sum of log((n - i + 1) / i),
    accumulated by log-add-exp (exact to rounding, no scipy).
    """
    j = np.arange(width, dtype=np.float64)
    n_col = n[:, None]
    # Columns past n are masked below; the floor keeps their log finite meanwhile.
    log_ratio = np.log(np.maximum(n_col - j[1:] + 1.0, 1.0)) - np.log(j[1:])
    log_choose = np.concatenate([np.zeros_like(n_col), np.cumsum(log_ratio, axis=-1)], axis=-1)
    log_pmf = log_choose + j * np.log(p)[:, None] + (n_col - j) * np.log1p(-p)[:, None]
    return np.logaddexp.accumulate(np.where(j <= n_col, log_pmf, -np.inf), axis=-1)


def min_calibration_questions(epsilon: ArrayLike, delta: ArrayLike) -> np.ndarray:
    """The fewest calibration questions with which any setting can be certified.

    The smallest Hoeffding-Bentkus p-value on n questions is (1 - epsilon)^n (all losses
    0; the p-value grows with the risk), so certifying needs (1 - epsilon)^n <= delta:

        n >= log(delta) / log(1 - epsilon).

    For Bonferroni over S settings pass delta / S.

    Args:
        epsilon: target risks in (0, 1).
        delta: error levels in (0, 1).

    Returns:
        int64 counts, broadcast over the arguments.

    Raises:
        ValueError: naming the offending argument.

    Example:
        >>> from optscale_jax.calibration import min_calibration_questions
        >>> int(min_calibration_questions(0.05, 0.1))
        45
    """
    validation.check_open_unit(epsilon, "epsilon")
    validation.check_open_unit(delta, "delta")
    validation.check_broadcast({"epsilon": epsilon, "delta": delta})
    epsilon, delta = np.asarray(epsilon, np.float64), np.asarray(delta, np.float64)
    n = np.maximum(np.ceil(np.log(delta) / np.log1p(-epsilon)), 1.0)
    # The ratio's rounding can put n one below or above the least n with p <= delta.
    n = np.where(np.exp(n * np.log1p(-epsilon)) > delta, n + 1.0, n)
    n = np.where((n > 1) & (np.exp((n - 1) * np.log1p(-epsilon)) <= delta), n - 1.0, n)
    return n.astype(np.int64)[()]


# --- selection ----------------------------------------------------------------------------------


def ltt_select(
    losses: ArrayLike,
    epsilon: ArrayLike,
    delta: ArrayLike,
    order: ArrayLike | None = None,
    method: str = "fixed-sequence",
    cost: ArrayLike | None = None,
) -> LTTResult:
    """Learn-then-Test: certify the settings whose risk is <= epsilon, choose the cheapest.

    Each setting's p-value is `hb_p_value(mean loss, Q, epsilon)`. The family-wise error
    (some setting of risk > epsilon certified) is controlled at delta by

    * "fixed-sequence": test along `order` at level delta each, stop at the first
      p > delta; every setting rejected before it is certified;
    * "bonferroni": certify p <= delta / S (every setting, order irrelevant).

    Then P(risk of the chosen setting <= epsilon) >= 1 - delta for questions exchangeable
    with the calibration questions. `order` must not depend on these losses: take it from a
    data-independent rule (`safety_order` of N, window or threshold; `grid_order` for
    OptScale's (s_min, alpha, m)), or learn it on calibration questions kept apart.

    Args:
        losses: `[..., S, Q]` losses in [0, 1] of S settings on Q calibration questions;
            leading axes are a batch (e.g. simulated calibration draws).
        epsilon: target risk in (0, 1); scalar or broadcasting with the batch shape.
        delta: error level in (0, 1); scalar or broadcasting with the batch shape.
        order: permutation of 0..S-1 listing the settings from safest to cheapest; None
            means 0, 1, ..., S-1.
        method: one of `FWER_METHODS`.
        cost: optional `[S]` (or `[..., S]`) cost of each setting. With a cost the chosen
            setting is the certified one of least cost (ties: the earliest along `order`);
            without, the last certified along `order`.

    Returns:
        LTTResult(index, p_values, certified); index is -1 where nothing is certified.

    Raises:
        ValueError: naming the offending argument.
    """
    losses = _check_losses(losses)
    num_settings, num_questions = losses.shape[-2:]
    validation.check_open_unit(epsilon, "epsilon")
    validation.check_open_unit(delta, "delta")
    batch = _check_batch(losses.shape[:-2], {"epsilon": epsilon, "delta": delta})
    order = _check_order(order, num_settings)
    if method not in FWER_METHODS:
        raise ValueError(f"method: unknown method {method!r}; choose from {FWER_METHODS}")
    shape = (*batch, num_settings)
    if cost is not None:
        validation.check_finite(cost, "cost")
        cost = _broadcast_to(np.asarray(cost, np.float64), shape, "cost")
    risk_hat = losses.astype(np.float64).mean(axis=-1)
    epsilon = np.asarray(epsilon, np.float64)[..., None]
    p_values = np.broadcast_to(
        _hb_p_value(risk_hat, num_questions, epsilon, _rounding(losses.dtype)), shape
    ).copy()
    level = np.asarray(delta, np.float64)[..., None]
    if method == "bonferroni":
        certified = p_values <= level / num_settings
    else:
        certified = _fixed_sequence(p_values, level, order)
    return LTTResult(_cheapest(certified, order, cost)[()], p_values, certified)


def _fixed_sequence(p_values: np.ndarray, level: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Certified mask of fixed-sequence testing: rejections along `order` up to the first miss."""
    along = np.logical_and.accumulate(p_values[..., order] <= level, axis=-1)
    certified = np.empty_like(along)
    certified[..., order] = along
    return certified


def _cheapest(certified: np.ndarray, order: np.ndarray, cost: np.ndarray | None) -> np.ndarray:
    """The chosen setting per batch element: least cost, or last along `order`; -1 if none."""
    along = certified[..., order]
    if cost is None:
        position = along.shape[-1] - 1 - np.argmax(along[..., ::-1], axis=-1)
    else:
        # argmin takes the first minimum: ties go to the earliest (safest) along the order.
        position = np.argmin(np.where(along, cost[..., order], np.inf), axis=-1)
    return np.where(along.any(axis=-1), order[position], -1)


# --- orders -------------------------------------------------------------------------------------


def safety_order(*keys: ArrayLike) -> np.ndarray:
    """Settings sorted from safest to cheapest: by the keys, largest first, lexicographically.

    The rule of every one-parameter method whose stop comes later as its parameter grows:
    fixed N (`safety_order(n)`: max_n first), ESC (`safety_order(window)`), Adaptive-
    Consistency (`safety_order(threshold)`). Ties (equal keys) keep the given order.

    Args:
        *keys: `[S]` numeric arrays; the first is the primary key.

    Returns:
        int64 `[S]` permutation of 0..S-1, the `order` argument of `ltt_select`.

    Raises:
        ValueError: naming the offending key (`keys[i]`).
    """
    if not keys:
        raise ValueError("keys: need at least one key")
    arrays = [np.asarray(validation.check_finite(k, f"keys[{i}]")) for i, k in enumerate(keys)]
    for i, array in enumerate(arrays):
        if array.ndim != 1:
            raise ValueError(f"keys[{i}] must be one-dimensional [S], got shape {array.shape}")
        if array.shape != arrays[0].shape:
            raise ValueError(
                f"keys[{i}] has length {array.size} but keys[0] has length {arrays[0].size}"
            )
    return _descending_order(arrays)


def _descending_order(keys: list[np.ndarray]) -> np.ndarray:
    """Lexicographic order, largest first on every key, ties by index (np.lexsort: last key first)."""
    index = np.arange(keys[0].size)
    return np.lexsort((index, *(-k.astype(np.float64) for k in reversed(keys)))).astype(np.int64)


def grid_order(
    s_min: ArrayLike, alpha: ArrayLike, min_samples: ArrayLike | None = None
) -> np.ndarray:
    """A data-independent safest-to-cheapest order of OptScale's (s_min, alpha, m) settings.

    OptScale stops later (is safer) as s_min, alpha or m grows, so the settings are only
    partially ordered. This order is a linear extension of that partial order, chosen
    without data: settings sorted by the nominal sample count

        N_nominal = max(m, N*(s_min, alpha)) under Uniform(0, 1) scores
                  = max(m, ceil(log(1 - alpha) / log(s_min)))

    largest first (N* of `optimal_n_from_log_cdf` with log F(s_min) = log s_min), ties by
    alpha, then s_min, then m, largest first. Every monotone path of the grid (alpha falling
    at fixed s_min and m, and so on) is a subsequence of it. A setting placed early whose
    real risk is high stops the fixed-sequence test early: that costs power, never validity.
    For `optscale0-peek` pass the peek k as `min_samples` (it draws at least k).

    Args:
        s_min: `[S]` score thresholds in [0, 1].
        alpha: `[S]` target probabilities in (0, 1).
        min_samples: `[S]` minimum samples m (integers >= 1), or None for 1.

    Returns:
        int64 `[S]` permutation of 0..S-1, the `order` argument of `ltt_select`.

    Raises:
        ValueError: naming the offending argument.
    """
    validation.check_unit(s_min, "s_min")
    validation.check_open_unit(alpha, "alpha")
    s_min, alpha = np.asarray(s_min, np.float64), np.asarray(alpha, np.float64)
    if s_min.ndim != 1:
        raise ValueError(f"s_min must be one-dimensional [S], got shape {s_min.shape}")
    if min_samples is None:
        min_samples = np.ones(s_min.shape, np.int64)
    validation.check_max_n(min_samples, "min_samples")
    arrays = {"s_min": s_min, "alpha": alpha, "min_samples": np.asarray(min_samples)}
    for name, array in arrays.items():
        if array.shape != s_min.shape:
            raise ValueError(f"{name} has shape {array.shape} but s_min has shape {s_min.shape}")
    nominal = np.maximum(arrays["min_samples"], _uniform_n_star(s_min, alpha))
    return _descending_order([nominal, alpha, s_min, arrays["min_samples"]])


def _uniform_n_star(s_min: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """OptScale's N* when the scores are Uniform(0, 1), F(s_min) = s_min, in float64."""
    import jax
    import jax.numpy as jnp

    from optscale_jax.nstar import optimal_n_from_log_cdf

    with np.errstate(divide="ignore"):
        log_f = np.log(s_min)  # s_min = 0: log F = -inf, N* = 1
    # float64 whatever the process-wide x64 flag: the order must not depend on it.
    with jax.enable_x64(True):
        n_star = optimal_n_from_log_cdf(jnp.asarray(log_f, jnp.float64), alpha)
        return np.asarray(n_star, np.int64)


# --- losses -------------------------------------------------------------------------------------


class Risk(NamedTuple):
    """A risk of `RISKS`: what the log must have, and the loss function.

    Attributes:
        needs: the per-sample field the loss reads: "answers", "scores" or "correct".
        loss: `loss(at_stop, at_full)` with arrays `[..., R, Q]` -> losses `[..., Q]`.
    """

    needs: str
    loss: Callable[[ArrayLike, ArrayLike], np.ndarray]


def disagree_loss(answer_at_stop: ArrayLike, answer_at_full: ArrayLike) -> np.ndarray:
    """Label-free: how often the answer returned at the stop differs from the full budget's.

    loss_q = mean over the R orders of [answer at the stop != answer at max_n], the two on
    the same order. Answers are codes of equal normalised strings within a question (as in
    `Replayed.answers`), so equal answers from different samples agree. -1 is "no answer";
    two no-answers agree (the user gets the same nothing), an answer and no answer do not.

    Args:
        answer_at_stop: int `[..., R, Q]` code of the answer each setting returns.
        answer_at_full: int `[..., R, Q]` code of the answer the full budget returns
            (broadcasting with `answer_at_stop`, e.g. `[R, Q]` against `[S, R, Q]`).

    Returns:
        float64 `[..., Q]` losses in [0, 1].

    Raises:
        ValueError: naming the argument (None means the log has no answers).
    """
    stop = _check_codes(answer_at_stop, "answer_at_stop")
    full = _check_codes(answer_at_full, "answer_at_full")
    validation.check_broadcast({"answer_at_stop": stop, "answer_at_full": full})
    return (stop != full).mean(axis=-2)


def regret_loss(best_score_at_stop: ArrayLike, best_score_at_full: ArrayLike) -> np.ndarray:
    """Label-free, scores only: best score seen at max_n minus best score seen at the stop.

    loss_q = mean over the R orders of max(0, best_full - best_stop). The stop's samples
    are a prefix of the full budget's, so the difference is >= 0; the floor only guards
    against a caller mixing orders.

    Args:
        best_score_at_stop: `[..., R, Q]` best score among the samples drawn at the stop.
        best_score_at_full: `[..., R, Q]` best score among the first max_n samples.

    Returns:
        float64 `[..., Q]` losses in [0, 1].

    Raises:
        ValueError: naming the argument (None means the log has no scores).
    """
    names = ("best_score_at_stop", "best_score_at_full")
    return _mean_shortfall(best_score_at_stop, best_score_at_full, names, "scores")


def accuracy_drop_loss(correct_at_stop: ArrayLike, correct_at_full: ArrayLike) -> np.ndarray:
    """Needs labels: correct at max_n minus correct at the stop, floored at 0.

    loss_q = mean over the R orders of max(0, correct_full - correct_stop): stopping early
    is charged only when it loses a right answer, not rewarded when it keeps one that the
    full budget would lose.

    Args:
        correct_at_stop: bool (or 0/1) `[..., R, Q]`, the returned answer is right.
        correct_at_full: bool (or 0/1) `[..., R, Q]`, the full budget's answer is right.

    Returns and raises as `regret_loss` (None means the log has no labels).
    """
    names = ("correct_at_stop", "correct_at_full")
    return _mean_shortfall(correct_at_stop, correct_at_full, names, "labels")


def _mean_shortfall(
    at_stop: ArrayLike, at_full: ArrayLike, names: tuple[str, str], needs: str
) -> np.ndarray:
    """Mean over the R orders of max(0, at_full - at_stop), each input checked under its name."""
    stop = _check_outcome(at_stop, names[0], needs)
    full = _check_outcome(at_full, names[1], needs)
    validation.check_broadcast(dict(zip(names, (stop, full), strict=True)))
    return np.maximum(full - stop, 0.0).mean(axis=-2)


RISKS: Mapping[str, Risk] = {
    "disagree": Risk("answers", disagree_loss),
    "regret": Risk("scores", regret_loss),
    "accuracy-drop": Risk("correct", accuracy_drop_loss),
}
"""Risk name (the `--risk` choices) -> (the field the log needs, the loss function)."""


# --- checks -------------------------------------------------------------------------------------


def _check_losses(losses: ArrayLike) -> np.ndarray:
    """losses: numeric, finite, in [0, 1], shape [..., S, Q] with S, Q >= 1."""
    if losses is None:
        raise ValueError("losses must be an array [..., S, Q], got None")
    losses, _ = validation.check_scores(losses, name="losses")
    if losses.ndim < 2:
        raise ValueError(
            f"losses must have shape [..., S, Q] (settings x questions), got shape {losses.shape}"
        )
    if 0 in losses.shape[-2:]:
        raise ValueError(f"losses needs at least one setting and one question, got {losses.shape}")
    return losses


def _check_batch(batch: tuple[int, ...], name_to_array: Mapping[str, ArrayLike]) -> tuple:
    """The arguments broadcast with the batch shape of losses; returns the joint batch shape."""
    shape = batch
    for name, value in name_to_array.items():
        try:
            shape = np.broadcast_shapes(shape, np.shape(value))
        except ValueError:
            raise ValueError(
                f"{name} has shape {np.shape(value)}, which does not broadcast with the batch "
                f"shape {batch} of losses [..., S, Q]"
            ) from None
    return shape


def _check_order(order: ArrayLike | None, num_settings: int) -> np.ndarray:
    """order: None (0..S-1) or a permutation of 0..S-1, as int64."""
    if order is None:
        return np.arange(num_settings)
    array = np.asarray(order)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"order must be an integer array, got dtype {array.dtype}")
    if array.shape != (num_settings,) or not np.array_equal(
        np.sort(array), np.arange(num_settings)
    ):
        raise ValueError(
            f"order must be a permutation of 0..{num_settings - 1} (one entry per setting), "
            f"got {array.tolist() if array.size <= 10 else f'shape {array.shape}'}"
        )
    return array.astype(np.int64)


def _broadcast_to(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {array.shape}, which does not broadcast to [..., S] = {shape}"
        ) from None


def _check_codes(codes: ArrayLike | None, name: str) -> np.ndarray:
    """Answer codes: integers >= -1, shape [..., R, Q]."""
    if codes is None:
        raise ValueError(f"{name} is None: the disagree risk needs answers (the log has none)")
    array = np.asarray(codes)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integer answer codes, got dtype {array.dtype}")
    if array.size and array.min() < -1:
        raise ValueError(f"{name} must be codes >= 0 or -1 (no answer), got {array.min()}")
    return _check_orders_axis(array, name)


def _check_outcome(values: ArrayLike | None, name: str, needs: str) -> np.ndarray:
    """Scores or correctness: finite, in [0, 1], shape [..., R, Q], as float64."""
    if values is None:
        raise ValueError(f"{name} is None: this risk needs {needs} (the log has none)")
    array, _ = validation.check_scores(values, name=name)
    return _check_orders_axis(array.astype(np.float64), name)


def _check_orders_axis(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim < 2 or array.shape[-2] == 0:
        raise ValueError(
            f"{name} must have shape [..., R, Q] (sample orders x questions), got {array.shape}"
        )
    return array
