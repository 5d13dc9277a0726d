"""Tests of Learn-then-Test calibration: p-values, selection, orders, losses, input checks."""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest
import scipy.special
import scipy.stats

from optscale_jax import calibration
from optscale_jax.calibration import (
    RISKS,
    accuracy_drop_loss,
    disagree_loss,
    grid_order,
    hb_p_value,
    ltt_select,
    min_calibration_questions,
    regret_loss,
    safety_order,
)


def _scipy_hb(k: np.ndarray, n: np.ndarray, epsilon: np.ndarray) -> np.ndarray:
    """The Hoeffding-Bentkus p-value at risk_hat = k / n, from scipy (k integer: no ceil)."""
    risk = np.minimum(k / n, epsilon)
    h1 = scipy.special.rel_entr(risk, epsilon) + scipy.special.rel_entr(1 - risk, 1 - epsilon)
    bentkus = math.e * scipy.stats.binom.cdf(k, n, epsilon)
    return np.minimum(np.exp(-n * h1), bentkus)


def _grid():
    """Every k / n for n in a range of sizes, against a range of epsilon: (k, n, epsilon)."""
    rows = [
        (k, n, eps)
        for n in (1, 2, 3, 7, 10, 50, 200, 1000, 4000)
        for eps in (0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9)
        for k in np.unique(np.linspace(0, n, min(n + 1, 60)).round())
    ]
    return (np.array(c, np.float64) for c in zip(*rows, strict=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hb_p_value_matches_scipy(dtype):
    k, n, eps = _grid()
    ours = hb_p_value((k / n).astype(dtype), n.astype(np.int64), eps)
    ref = _scipy_hb(k, n, eps)
    assert ours.dtype == np.float64
    assert np.all((ours >= 0) & (ours <= 1))  # 0: underflow, e.g. 0.1^4000
    # float32 risks move the Hoeffding exponent by n * h1' * (risk rounding).
    rtol = 1e-10 if dtype == np.float64 else 2e-4
    tiny = ref < 1e-300
    np.testing.assert_allclose(ours[~tiny], ref[~tiny], rtol=rtol)
    assert np.all(ours[tiny] < 1e-290)


def test_hb_p_value_off_grid_risks_use_the_ceiling():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 3000, 2000)
    eps = rng.uniform(0.01, 0.6, 2000)
    risk = rng.uniform(0, 0.7, 2000)
    ours = hb_p_value(risk, n, eps)
    a = np.minimum(risk, eps)
    h1 = scipy.special.rel_entr(a, eps) + scipy.special.rel_entr(1 - a, 1 - eps)
    ref = np.minimum(np.exp(-n * h1), math.e * scipy.stats.binom.cdf(np.ceil(n * risk), n, eps))
    # atol: scipy's binomial CDF underflows to 0 near 1e-290 where the log-space sum does not.
    np.testing.assert_allclose(ours, np.minimum(ref, 1.0), rtol=1e-9, atol=1e-250)


def test_hb_p_value_edges_and_monotonicity():
    # risk_hat = 0: Hoeffding's (1 - eps)^n beats Bentkus' e (1 - eps)^n.
    assert hb_p_value(0.0, 100, 0.1) == pytest.approx(0.9**100, rel=1e-12)
    assert hb_p_value(0.1, 100, 0.1) == 1.0
    assert hb_p_value(1.0, 100, 0.1) == 1.0
    assert hb_p_value(0.3, 1, 0.2) == 1.0
    risks = np.linspace(0, 1, 201)
    assert np.all(np.diff(hb_p_value(risks, 300, 0.2)) >= 0)
    # More questions at the same risk give more evidence (not monotone step by step: the
    # Bentkus term's ceil(n risk_hat) jumps).
    assert np.all(np.diff(hb_p_value(0.05, [10, 100, 1000, 10000], 0.1)) < 0)
    # Broadcasting, and a scalar in gives a scalar out.
    grid = hb_p_value(np.array([[0.0], [0.05]]), np.array([10, 100, 1000]), 0.1)
    assert grid.shape == (2, 3)
    assert grid[1, 2] == hb_p_value(0.05, 1000, 0.1)
    assert np.ndim(hb_p_value(0.05, 10, 0.1)) == 0


def test_hb_p_value_large_n_in_blocks():
    # 20,000 questions at epsilon 0.5: many terms per element, summed block by block.
    k = np.array([0, 5000, 9800, 9999])
    ours = hb_p_value(k / 20000, 20000, 0.5)
    np.testing.assert_allclose(ours, _scipy_hb(k, 20000, 0.5), rtol=1e-9, atol=1e-300)


def _bernoulli_losses(rng, true_risk, shape):
    return (rng.random(shape) < np.asarray(true_risk)[..., None]).astype(np.float64)


def test_ltt_certifies_low_risks_never_high():
    rng = np.random.default_rng(2)
    true_risk = np.array([0.0, 0.01, 0.03, 0.25, 0.4, 0.6])
    for _ in range(5):
        losses = _bernoulli_losses(rng, true_risk, (6, 1000))
        for method in calibration.FWER_METHODS:
            result = ltt_select(losses, 0.1, 0.1, method=method)
            assert result.certified.tolist() == [True] * 3 + [False] * 3
            assert int(result.index) == 2
            assert result.p_values.shape == (6,)
            assert np.all(result.p_values[3:] == 1.0)


def test_fixed_sequence_stops_at_the_first_non_rejection():
    losses = np.zeros((4, 200))
    losses[1] = 0.5  # the second tested setting is risky
    result = ltt_select(losses, 0.1, 0.1)
    assert result.certified.tolist() == [True, False, False, False]
    assert int(result.index) == 0
    # Tested in another order, the risky one comes last: the three safe ones pass.
    result = ltt_select(losses, 0.1, 0.1, order=[3, 2, 0, 1])
    assert result.certified.tolist() == [True, False, True, True]
    assert int(result.index) == 0  # the last certified along the order
    # Risky first: nothing is certified.
    result = ltt_select(losses, 0.1, 0.1, order=[1, 0, 2, 3])
    assert not result.certified.any() and int(result.index) == -1


def test_bonferroni_and_cost():
    losses = np.zeros((4, 200))
    losses[1] = 0.5
    result = ltt_select(losses, 0.1, 0.1, method="bonferroni")
    assert result.certified.tolist() == [True, False, True, True]
    assert int(result.index) == 3
    assert int(ltt_select(losses, 0.1, 0.1, method="bonferroni", cost=[5, 0, 2, 3]).index) == 2
    # Cost ties go to the earliest along the order.
    tied = ltt_select(losses, 0.1, 0.1, order=[3, 2, 1, 0], method="bonferroni", cost=[1, 0, 1, 1])
    assert int(tied.index) == 3
    # Bonferroni's level is delta / S: a p-value between the two separates the methods.
    p = float(hb_p_value(0.0, 20, 0.1))  # 0.9^20 = 0.12
    two = np.zeros((2, 20))
    assert ltt_select(two, 0.1, 0.2).certified.all()
    assert not ltt_select(two, 0.1, 0.2, method="bonferroni").certified.any()
    assert 0.1 < p <= 0.2


def _reference_select(p, delta, order, method, cost):
    """A slow, obviously-correct Learn-then-Test on given p-values."""
    certified = np.zeros(len(p), bool)
    if method == "bonferroni":
        certified = p <= delta / len(p)
    else:
        for s in order:
            if p[s] > delta:
                break
            certified[s] = True
    candidates = [s for s in order if certified[s]]
    if not candidates:
        return -1, certified
    if cost is None:
        return candidates[-1], certified
    return min(candidates, key=lambda s: cost[s]), certified  # min keeps the first of ties


def test_ltt_matches_a_python_reference_batched():
    rng = np.random.default_rng(3)
    batch, settings, questions = 50, 7, 60
    true_risk = rng.uniform(0, 0.3, (batch, settings))
    losses = _bernoulli_losses(rng, true_risk, (batch, settings, questions))
    order = rng.permutation(settings)
    cost = rng.integers(0, 4, settings).astype(float)
    for method, with_cost in itertools.product(calibration.FWER_METHODS, (False, True)):
        c = cost if with_cost else None
        result = ltt_select(losses, 0.15, 0.2, order=order, method=method, cost=c)
        assert result.index.shape == (batch,) and result.certified.shape == (batch, settings)
        for b in range(batch):
            p = hb_p_value(losses[b].mean(-1), questions, 0.15)
            np.testing.assert_array_equal(result.p_values[b], p)
            index, certified = _reference_select(p, 0.2, order, method, c)
            assert int(result.index[b]) == index
            np.testing.assert_array_equal(result.certified[b], certified)


def test_epsilon_and_delta_broadcast_with_the_batch():
    rng = np.random.default_rng(4)
    losses = _bernoulli_losses(rng, np.full((6, 3), 0.05), (6, 3, 300))
    deltas = np.array([0.01, 0.1, 0.5])[:, None]
    result = ltt_select(losses, 0.1, deltas)
    assert result.index.shape == (3, 6) and result.p_values.shape == (3, 6, 3)
    for i, delta in enumerate(deltas[:, 0]):
        np.testing.assert_array_equal(result.index[i], ltt_select(losses, 0.1, delta).index)
    # A larger delta certifies at least as much.
    assert np.all(np.diff(result.certified.sum(axis=(1, 2))) >= 0)


@pytest.mark.parametrize("method", calibration.FWER_METHODS)
def test_violation_rate_is_at_most_delta(method):
    # True risks straddle epsilon, losses are means over 4 orders (multiples of 1/4).
    rng = np.random.default_rng(5)
    trials, questions, epsilon, delta = 400, 300, 0.1, 0.1
    true_risk = np.array([0.0, 0.03, 0.06, 0.08, 0.09, 0.1, 0.105, 0.11, 0.13, 0.2])
    draws = _bernoulli_losses(rng, true_risk[:, None], (trials, 10, questions, 4))
    losses = draws.mean(-1)
    result = ltt_select(losses, epsilon, delta, method=method)
    chosen_risk = np.where(result.index >= 0, true_risk[result.index], 0.0)
    violation = np.mean(chosen_risk > epsilon)
    assert violation <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    # And the test has power: something below epsilon is certified nearly always.
    assert np.mean(result.index >= 0) > 0.95


def test_min_calibration_questions():
    epsilon = np.array([0.01, 0.05, 0.1, 0.2, 0.5])
    delta = np.array([[0.01], [0.1], [0.2]])
    n = min_calibration_questions(epsilon, delta)
    assert n.shape == (3, 5) and int(n[1, 1]) == 45
    assert np.all(hb_p_value(0.0, n, epsilon) <= delta)
    assert np.all(hb_p_value(0.0, np.maximum(n - 1, 1), epsilon) > delta)
    # Zero losses on 45 questions certify at (0.05, 0.1); on 44 nothing can be certified.
    assert ltt_select(np.zeros((1, 45)), 0.05, 0.1).certified.all()
    assert not ltt_select(np.zeros((1, 44)), 0.05, 0.1).certified.any()


def test_safety_order():
    np.testing.assert_array_equal(safety_order([1, 3, 2]), [1, 2, 0])
    np.testing.assert_array_equal(safety_order([2, 1, 2]), [0, 2, 1])  # ties keep the order
    np.testing.assert_array_equal(safety_order([1, 1, 0], [0, 5, 9]), [1, 0, 2])
    assert safety_order(np.array([0.9, 0.6])).dtype == np.int64


def test_grid_order_is_a_linear_extension_of_the_safety_order():
    cells = list(itertools.product((0.5, 0.6, 0.8, 0.95), (0.5, 0.9, 0.99), (1, 2, 4)))
    s_min, alpha, m = (np.array(c) for c in zip(*cells, strict=True))
    order = grid_order(s_min, alpha, m)
    assert sorted(order.tolist()) == list(range(len(cells)))
    position = np.argsort(order)
    for a, b in itertools.permutations(range(len(cells)), 2):
        if s_min[a] >= s_min[b] and alpha[a] >= alpha[b] and m[a] >= m[b]:
            assert position[a] < position[b] or cells[a] == cells[b]
    # The nominal count leads: (0.5, 0.99) needs 7 uniform samples, (0.95, 0.5) needs 14.
    two = grid_order([0.5, 0.95], [0.99, 0.5])
    np.testing.assert_array_equal(two, [1, 0])
    # The same order whatever the process-wide x64 flag.
    with jax.enable_x64(False):
        np.testing.assert_array_equal(grid_order(s_min, alpha, m), order)
    np.testing.assert_array_equal(grid_order([0.0, 1.0], [0.9, 0.9]), [1, 0])


def test_disagree_loss():
    stop = np.array([[[0, -1, 2], [1, -1, -1]]])  # [S=1, R=2, Q=3]
    full = np.array([[0, -1, 2], [0, 3, -1]])  # [R, Q]
    np.testing.assert_array_equal(disagree_loss(stop, full), [[0.5, 0.5, 0.0]])


def test_regret_and_accuracy_drop_losses():
    np.testing.assert_allclose(
        regret_loss([[0.5, 0.9], [0.7, 0.9]], [[0.9, 0.9], [0.7, 0.95]]), [0.2, 0.025]
    )
    stop = np.array([[True, False], [False, True]])
    full = np.array([[True, True], [True, False]])
    np.testing.assert_array_equal(accuracy_drop_loss(stop, full), [0.5, 0.5])
    assert set(RISKS) == {"disagree", "regret", "accuracy-drop"}
    assert {name: risk.needs for name, risk in RISKS.items()} == {
        "disagree": "answers",
        "regret": "scores",
        "accuracy-drop": "correct",
    }
    needs, loss = RISKS["accuracy-drop"]
    assert loss is accuracy_drop_loss and needs == "correct"


_LOSSES = np.zeros((3, 10))
_CODES = np.zeros((2, 3), np.int32)
_BAD_INPUTS = [
    (lambda: ltt_select(_LOSSES, 0.0, 0.1), r"epsilon must lie in \(0, 1\)"),
    (lambda: ltt_select(_LOSSES, 1.0, 0.1), r"epsilon must lie in \(0, 1\)"),
    (lambda: ltt_select(_LOSSES, 0.1, 1.5), r"delta must lie in \(0, 1\)"),
    (lambda: ltt_select(_LOSSES, 0.1, -0.1), r"delta must lie in \(0, 1\)"),
    (lambda: ltt_select(_LOSSES + 1.5, 0.1, 0.1), r"losses must lie in \[0, 1\]"),
    (lambda: ltt_select(_LOSSES - 0.5, 0.1, 0.1), r"losses must lie in \[0, 1\]"),
    (lambda: ltt_select(_LOSSES * np.nan, 0.1, 0.1), r"losses contains NaN"),
    (lambda: ltt_select(np.zeros(10), 0.1, 0.1), r"losses must have shape \[..., S, Q\]"),
    (lambda: ltt_select(np.zeros((3, 0)), 0.1, 0.1), r"losses needs at least one"),
    (lambda: ltt_select(None, 0.1, 0.1), r"losses must be an array"),
    (lambda: ltt_select(_LOSSES, 0.1, 0.1, order=[0, 0, 1]), r"order must be a permutation"),
    (lambda: ltt_select(_LOSSES, 0.1, 0.1, order=[0, 1]), r"order must be a permutation"),
    (lambda: ltt_select(_LOSSES, 0.1, 0.1, order=[0.0, 1, 2]), r"order must be an integer"),
    (lambda: ltt_select(_LOSSES, 0.1, 0.1, method="holm"), r"method: unknown method 'holm'"),
    (lambda: ltt_select(_LOSSES, 0.1, 0.1, cost=[1, 2]), r"cost has shape \(2,\)"),
    (lambda: ltt_select(_LOSSES, 0.1, 0.1, cost=[1, np.nan, 2]), r"cost contains NaN"),
    (lambda: ltt_select(np.zeros((2, 3, 5)), 0.1, [0.1, 0.2, 0.3]), r"delta has shape \(3,\)"),
    (lambda: hb_p_value(1.2, 10, 0.1), r"risk_hat must lie in \[0, 1\]"),
    (lambda: hb_p_value(np.nan, 10, 0.1), r"risk_hat must lie in \[0, 1\]"),
    (lambda: hb_p_value(0.1, 0, 0.1), r"n must be >= 1"),
    (lambda: hb_p_value(0.1, 2.5, 0.1), r"n must be an integer >= 1"),
    (lambda: hb_p_value(0.1, None, 0.1), r"n must be an integer >= 1"),
    (lambda: hb_p_value(0.1, 10, 1.0), r"epsilon must lie in \(0, 1\)"),
    (lambda: hb_p_value([0.1, 0.2], [10, 20, 30], 0.1), r"n has shape \(3,\)"),
    (lambda: disagree_loss(None, _CODES), r"answer_at_stop is None: .* needs answers"),
    (lambda: disagree_loss(_CODES, None), r"answer_at_full is None: .* needs answers"),
    (lambda: disagree_loss(_CODES - 2, _CODES), r"answer_at_stop must be codes >= 0 or -1"),
    (lambda: disagree_loss(_CODES * 1.0, _CODES), r"answer_at_stop must be integer"),
    (lambda: disagree_loss(_CODES[0], _CODES), r"answer_at_stop must have shape \[..., R, Q\]"),
    (lambda: disagree_loss(_CODES, np.zeros((2, 4), int)), r"answer_at_full has shape"),
    (lambda: regret_loss(None, _LOSSES), r"best_score_at_stop is None: .* needs scores"),
    (lambda: regret_loss(_LOSSES, _LOSSES * np.nan), r"best_score_at_full contains NaN"),
    (lambda: regret_loss(_LOSSES + 2, _LOSSES), r"best_score_at_stop must lie in \[0, 1\]"),
    (lambda: accuracy_drop_loss(None, _LOSSES), r"correct_at_stop is None: .* needs labels"),
    (lambda: accuracy_drop_loss(_LOSSES, None), r"correct_at_full is None: .* needs labels"),
    (lambda: grid_order([0.5, 2.0], [0.9, 0.9]), r"s_min must lie in \[0, 1\]"),
    (lambda: grid_order([0.5, 0.6], [0.9, 1.0]), r"alpha must lie in \(0, 1\)"),
    (lambda: grid_order([0.5, 0.6], [0.9, 0.9], [1, 0]), r"min_samples must be >= 1"),
    (lambda: grid_order([0.5, 0.6], [0.9]), r"alpha has shape \(1,\)"),
    (lambda: grid_order([[0.5]], [[0.9]]), r"s_min must be one-dimensional"),
    (lambda: min_calibration_questions(0.0, 0.1), r"epsilon must lie in \(0, 1\)"),
    (lambda: min_calibration_questions(0.1, 1.0), r"delta must lie in \(0, 1\)"),
    (lambda: safety_order(), r"keys: need at least one key"),
    (lambda: safety_order([[1, 2]]), r"keys\[0\] must be one-dimensional"),
    (lambda: safety_order([1, 2], [1]), r"keys\[1\] has length 1"),
    (lambda: safety_order([1, np.nan]), r"keys\[0\] contains NaN"),
]


@pytest.mark.parametrize(("call", "message"), _BAD_INPUTS)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
