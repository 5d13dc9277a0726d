"""Tests of the input checks at the Python boundary."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optscale_jax import fit_map, fit_mle, fit_mle_stats, prefix_stats, validation


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.array([0.2, np.nan]), r"scores contains NaN or infinity at index 1"),
        (np.array([[0.2, 1.5]]), r"scores must lie in \[0, 1\]; found 1.5 at index \(0, 1\)"),
        (np.array([-0.1, 0.3]), r"scores must lie in \[0, 1\]"),
        (np.array(0.5), r"scores must have at least one dimension"),
        (np.array(["a", "b"]), r"scores must be numeric"),
    ],
)
def test_bad_scores_are_named(scores, message):
    with pytest.raises(ValueError, match=message):
        fit_mle(scores)


def test_masked_entries_are_not_checked_and_mask_shape_must_match():
    scores = np.array([[0.2, np.nan, 7.0]])
    mask = np.array([[True, False, False]])
    checked, checked_mask = validation.check_scores(scores, mask)
    assert checked_mask.dtype == bool and checked.dtype == np.float64
    fit = fit_mle(scores, mask)
    assert float(fit.mu[0]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"mask has shape \(3,\) but scores has shape \(1, 3\)"):
        fit_mle(scores, np.array([True, False, False]))
    with pytest.raises(ValueError, match="mask must be boolean"):
        prefix_stats(np.array([0.1, 0.2]), np.array([0.5, 1.0]))


def test_interval_checks():
    assert validation.check_open_unit(0.5, "alpha") == 0.5
    assert validation.check_unit(np.array([0.0, 1.0]), "s_min") is not None
    for bad in (0.0, 1.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            validation.check_open_unit(bad, "alpha")
    with pytest.raises(ValueError, match=r"s_min must lie in \[0, 1\], got 1.2"):
        validation.check_unit([0.5, 1.2], "s_min")


def test_max_n_checks():
    assert validation.check_max_n(None) is None
    assert validation.check_max_n(5) == 5
    for bad, message in ((0, ">= 1"), (2.5, "integer"), (True, "integer"), (2**31, "int32")):
        with pytest.raises(ValueError, match=f"max_n must .*{message}"):
            validation.check_max_n(bad)
    with pytest.raises(ValueError, match="--max-n"):
        validation.check_max_n(-3, "--max-n")


def test_broadcast_and_stats_checks():
    assert validation.check_broadcast({"a": np.zeros((2, 1)), "b": np.zeros(3)}) == (2, 3)
    with pytest.raises(
        ValueError, match=r"b has shape \(4,\), which does not broadcast with a \(3,\)"
    ):
        validation.check_broadcast({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="n must be >= 0"):
        fit_mle_stats(np.array([-1.0]), 0.0, 0.0)
    with pytest.raises(ValueError, match="s2 contains NaN"):
        fit_mle_stats(1.0, 0.5, np.nan)


def test_prior_checks():
    scores = np.array([0.2, 0.4])
    with pytest.raises(ValueError, match=r"prior_scale\[1\] must be > 0"):
        fit_map(scores, 0.5, 0.2, prior_scale=(0.1, 0.0))
    with pytest.raises(ValueError, match="prior_scale must be a pair"):
        fit_map(scores, 0.5, 0.2, prior_scale=0.1)
    with pytest.raises(ValueError, match="prior_mu contains NaN"):
        fit_map(scores, np.nan, 0.2)


def test_traced_values_pass_through_inside_jit():
    # Inside a caller's jit nothing can be inspected; the checks must not get in the way.
    fitted = jax.jit(lambda s: fit_mle(s).mu)(jnp.array([0.2, 0.4, 0.6]))
    assert np.isfinite(float(fitted))
    assert validation.is_traced(jnp.zeros(2)) is False
