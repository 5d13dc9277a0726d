"""Statistics over questions and the choice of a setting.

`bootstrap_ci` gives means and CIs over questions; `select_setting` is the default rule
(the cheapest setting that reaches the reference's accuracy); `select_certified` the
Learn-then-Test rule (the cheapest setting certified to keep a risk below epsilon);
`best_accuracy` the released code's rule; `reference_cost_at_accuracy` the cost a fixed-N
reference method (Best-of-N, or self-consistency on a log without scores) needs for a given
accuracy, on its envelope.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Accuracies are means of means; two settings this close are equally accurate.
ACCURACY_EPS = 1e-9
# Most bootstrap counts held at once (B x Q int64: 400 MB).
_BOOTSTRAP_CELLS = 50_000_000


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
    probabilities = np.full(num, 1.0 / num)
    # The resamples in chunks of at most _BOOTSTRAP_CELLS counts (a million questions would
    # need B x Q at once); drawn one after another they are the same resamples.
    chunk = max(1, _BOOTSTRAP_CELLS // num)
    means = np.concatenate(
        [
            values @ rng.multinomial(num, probabilities, size=size).T.astype(np.float64) / num
            for size in np.diff([*range(0, resamples, chunk), resamples])
        ],
        axis=-1,
    )  # [S, B]
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
        reference: the reference method's accuracy at max_n on the same questions.
        tolerance: allowed shortfall.

    Returns:
        (index of the setting, whether it qualified).
    """
    accuracy = np.asarray(accuracy, np.float64)
    cost = np.asarray(cost, np.float64)
    qualified = accuracy >= reference - tolerance - ACCURACY_EPS
    index = np.arange(len(accuracy))
    if qualified.any():
        rows = index[qualified]
        order = np.lexsort((rows, -accuracy[rows], cost[rows]))
        return int(rows[order[0]]), True
    return best_accuracy(accuracy, cost), False


class Certified(NamedTuple):
    """What `select_certified` chose.

    Attributes:
        index: the chosen setting (the fallback `order[0]` when none is certified).
        certified: whether LTT certified it.
        p_value: its Hoeffding-Bentkus p-value.
    """

    index: int
    certified: bool
    p_value: float


def select_certified(
    losses: np.ndarray, cost: np.ndarray, order: np.ndarray, epsilon: float, delta: float
) -> Certified:
    """The Learn-then-Test rule: the cheapest setting certified to have risk <= epsilon.

    Fixed-sequence testing along `order` with Hoeffding-Bentkus p-values
    (`optscale_jax.calibration.ltt_select`): P(the chosen setting's risk > epsilon) <= delta
    on questions exchangeable with these. Among the certified settings the one of least
    mean cost is chosen (any rule among certified settings keeps the guarantee); with none
    certified, the safest one, `order[0]` (the full budget, whose loss is 0).

    Args:
        losses: `[S, Q]` per-question losses in [0, 1] on the selection questions.
        cost: `[S]` mean costs on the same questions.
        order: the settings from safest to cheapest, fixed without looking at `losses`.
        epsilon: target risk in (0, 1).
        delta: error level in (0, 1).

    Returns:
        Certified(index, certified, p_value).
    """
    from optscale_jax.calibration import ltt_select

    result = ltt_select(losses, epsilon, delta, order=order, cost=cost)
    index = int(result.index)
    certified = index >= 0
    if not certified:
        index = int(order[0])
    return Certified(index, certified, float(result.p_values[index]))


def best_accuracy(accuracy: np.ndarray, cost: np.ndarray) -> int:
    """The most accurate setting (ties: the cheaper, then the earlier)."""
    rounded = np.round(np.asarray(accuracy, np.float64), 12)
    order = np.lexsort((np.arange(len(rounded)), np.asarray(cost), -rounded))
    return int(order[0])


def reference_cost_at_accuracy(
    reference_cost: np.ndarray, reference_accuracy: np.ndarray, target: float
) -> float:
    """The cost a fixed-N reference method needs to reach `target` accuracy, on its envelope.

    The envelope keeps, over increasing N, each N whose accuracy beats every smaller N's
    (the running maximum's record points: the cheapest N for each accuracy level). Between
    two record points the cost is interpolated linearly (what mixing the two N would cost).
    A target at or below the first point costs the first point's cost (the method cannot
    draw fewer than its smallest N); a target above the best accuracy is unreachable (NaN).

    Args:
        reference_cost: `[N]` mean cost of the reference at increasing N.
        reference_accuracy: `[N]` its accuracy.
        target: the accuracy to reach.

    Returns:
        The interpolated cost, or NaN.

    Example:
        >>> reference_cost_at_accuracy([1, 2, 3, 4], [0.2, 0.4, 0.3, 0.6], 0.5)
        3.0
    """
    cost = np.asarray(reference_cost, np.float64)
    accuracy = np.asarray(reference_accuracy, np.float64)
    previous_best = np.concatenate([[-np.inf], np.maximum.accumulate(accuracy)[:-1]])
    record = accuracy > previous_best + ACCURACY_EPS
    cost, accuracy = cost[record], accuracy[record]
    if not np.isfinite(target) or target > accuracy[-1] + ACCURACY_EPS:
        return math.nan
    j = int(np.argmax(accuracy >= target - ACCURACY_EPS))
    if j == 0:
        return float(cost[0])
    t = (target - accuracy[j - 1]) / (accuracy[j] - accuracy[j - 1])
    return float(cost[j - 1] + t * (cost[j] - cost[j - 1]))


# The name from when Best-of-N was the only reference.
bon_cost_at_accuracy = reference_cost_at_accuracy
