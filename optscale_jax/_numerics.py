"""Small numerical helpers shared by the library's modules (private)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

_LOG_HALF = math.log(0.5)


def float_dtype(*args: ArrayLike) -> jnp.dtype:
    """The promoted floating dtype of the arguments (Python scalars are weak; ints -> float)."""
    dtype = jnp.result_type(*args)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def log1mexp(d: jax.Array) -> jax.Array:
    """log(1 - exp(d)) for d <= 0, relatively accurate at both ends (Maechler's switch at -log 2).

    d is clamped to 0 first: rounding can put it a hair above 0 when two log masses are equal
    (fused and unfused log_ndtr differ in the last bit), and the true value is then log(0),
    not NaN.
    """
    d = jnp.minimum(d, 0.0)
    near_zero = d > _LOG_HALF
    # Double where: each branch sees a harmless input where it is not taken.
    d_near = jnp.where(near_zero, d, _LOG_HALF)
    d_far = jnp.where(near_zero, 2.0 * _LOG_HALF, d)
    return jnp.where(near_zero, jnp.log(-jnp.expm1(d_near)), jnp.log1p(-jnp.exp(d_far)))


def log1mexp_absolute(d: jax.Array) -> jax.Array:
    """log(1 - exp(d)) for d < 0, to an absolute (not relative) error of eps.

    For d << 0 the result, about -e^d, is only absolutely accurate; where it is added to
    terms of order one (the estimator's log Z) that is enough, and the one-branch form is
    cheaper (the two-branch form made the solver 6% slower).
    """
    return jnp.log(-jnp.expm1(d))
