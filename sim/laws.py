"""Score laws on [0, 1]: truncated normal, Beta, mixtures, point masses, atoms, empirical.

Every law is a NamedTuple of arrays (so a pytree: it can be passed through `jax.jit` and
`jax.vmap`, and its parameters broadcast like numpy arrays). All share one interface:

- `sample(key, shape=None)`: draws of shape `shape`; the parameters broadcast to `shape`
  (`None` = the law's batch shape).
- `cdf(x)`, `log_cdf(x)`, `log_sf(x)`: elementwise, broadcasting `x` against the parameters.
- `ppf(q)`: the quantile `inf {x : F(x) >= q}`.
- `ppf_log(log_q, log_p)`: the same quantile from `log q` and `log(1 - q)`, both given so the
  upper tail (q near 1, where the maximum of many draws lives) keeps full precision.

The truncated normal is the core's (`optscale_jax.truncnorm`); the Beta and the mixtures find
quantiles by bisection on their log CDF / log survival function. `WithAtoms` adds point masses
at 0 and 1 to a continuous law (the `tn-atoms` and `beta-atoms` laws of `optscale_jax.laws`).

Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> law = Beta(jnp.array([2.0, 5.0]), jnp.array([3.0, 1.0]))
    >>> law.sample(jax.random.key(0), (1000, 2)).shape
    (1000, 2)
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, log_ndtr, ndtri
from jax.typing import ArrayLike

from optscale_jax import truncnorm
from optscale_jax._numerics import float_dtype as _float_dtype
from optscale_jax._numerics import log1mexp as _log1mexp
from optscale_jax.validation import is_traced


class Law(Protocol):
    """What the studies need from a score law on [0, 1]."""

    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array: ...

    def cdf(self, x: ArrayLike) -> jax.Array: ...

    def log_cdf(self, x: ArrayLike) -> jax.Array: ...

    def log_sf(self, x: ArrayLike) -> jax.Array: ...

    def ppf(self, q: ArrayLike) -> jax.Array: ...

    def ppf_log(self, log_q: ArrayLike, log_p: ArrayLike) -> jax.Array: ...


def _bisection_steps(dtype) -> int:
    # Interval [0, 1] halves each step: enough steps to reach the last bit of the type.
    return 64 if jnp.finfo(dtype).bits == 64 else 32


@jax.jit
def _bisect_ppf(law: Law, log_q: ArrayLike, log_p: ArrayLike) -> jax.Array:
    """inf {x in [0, 1] : F(x) >= q} by bisection, comparing in the better-conditioned tail.

    Below the median the test is log F(x) < log q; above it, log S(x) > log(1 - q): the same
    event, but the survival form resolves q within one ulp of 1. The `ppf_log` of the laws
    without a closed-form quantile.
    """
    log_q, log_p = jnp.asarray(log_q), jnp.asarray(log_p)
    dtype = _float_dtype(log_q, log_p)
    lower_tail = log_q < jnp.log(jnp.asarray(0.5, dtype))
    shape = jnp.broadcast_shapes(
        jnp.shape(log_q), jnp.shape(log_p), jnp.shape(law.cdf(jnp.asarray(0.5, dtype)))
    )
    lo = jnp.zeros(shape, dtype)
    hi = jnp.ones(shape, dtype)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = jnp.where(lower_tail, law.log_cdf(mid) < log_q, law.log_sf(mid) > log_p)
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _bisection_steps(dtype), step, (lo, hi))
    return hi


@jax.jit
def _ppf_via_logs(law: Law, q: ArrayLike) -> jax.Array:
    """F^-1(q) through the law's `ppf_log`: the `ppf` of the laws that only have that."""
    q = jnp.asarray(q, _float_dtype(q))
    return law.ppf_log(jnp.log(q), jnp.log1p(-q))


def _from_core(function):
    """The law method x -> function(x, mu, sigma) of the core's truncated normal, jitted."""

    def method(self, x: ArrayLike) -> jax.Array:
        return function(x, self.mu, self.sigma)

    method.__name__ = method.__qualname__ = function.__name__
    return jax.jit(method)


class TruncNormal(NamedTuple):
    """Normal(mu, sigma) truncated to [0, 1]: the OptScale score model (core maths).

    Attributes:
        mu: location of the untruncated normal.
        sigma: scale of the untruncated normal (> 0).
    """

    mu: jax.Array
    sigma: jax.Array

    cdf = _from_core(truncnorm.cdf)
    log_cdf = _from_core(truncnorm.logcdf)
    log_sf = _from_core(truncnorm.logsf)
    ppf = _from_core(truncnorm.ppf)

    @functools.partial(jax.jit, static_argnames=("shape",))
    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
        shape = (
            jnp.broadcast_shapes(jnp.shape(self.mu), jnp.shape(self.sigma))
            if shape is None
            else shape
        )
        return truncnorm.sample(
            key, self.mu, self.sigma, shape=shape, dtype=_float_dtype(self.mu, self.sigma)
        )

    @jax.jit
    def ppf_log(self, log_q: ArrayLike, log_p: ArrayLike) -> jax.Array:
        # The core's ppf takes q and re-derives log q and log(1 - q) itself, so above the
        # median 1 - q is only as exact as q's rounding (fine in float64 for n < ~1e12).
        del log_p
        return truncnorm.ppf(jnp.exp(jnp.asarray(log_q)), self.mu, self.sigma)


class Beta(NamedTuple):
    """Beta(a, b) on [0, 1].

    Attributes:
        a: first shape parameter (> 0).
        b: second shape parameter (> 0).
    """

    a: jax.Array
    b: jax.Array

    @functools.partial(jax.jit, static_argnames=("shape",))
    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
        shape = (
            jnp.broadcast_shapes(jnp.shape(self.a), jnp.shape(self.b)) if shape is None else shape
        )
        return jax.random.beta(key, self.a, self.b, shape, dtype=_float_dtype(self.a, self.b))

    @jax.jit
    def cdf(self, x: ArrayLike) -> jax.Array:
        return jnp.exp(self.log_cdf(x))

    @jax.jit
    def log_cdf(self, x: ArrayLike) -> jax.Array:
        upper, below, above = self._masses(x)
        return jnp.where(upper, jnp.log1p(-above), jnp.log(below))

    @jax.jit
    def log_sf(self, x: ArrayLike) -> jax.Array:
        upper, below, above = self._masses(x)
        return jnp.where(upper, jnp.log(above), jnp.log1p(-below))

    def _masses(self, x: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(x above the mean, I_x(a, b), I_{1-x}(b, a)): F(x) and S(x) = 1 - F(x) written directly.

        Above the mean the survival mass I_{1-x}(b, a) keeps the tiny tail a CDF near 1
        rounds away, so the log CDF and log survival function use whichever side is small.
        """
        x = jnp.clip(jnp.asarray(x, _float_dtype(x, self.a)), 0.0, 1.0)
        upper = x > self.a / (self.a + self.b)
        return upper, betainc(self.a, self.b, x), betainc(self.b, self.a, 1.0 - x)

    # Quantiles by bisection (jitted functions of the law, bound as methods).
    ppf = _ppf_via_logs
    ppf_log = _bisect_ppf

    def mean(self) -> jax.Array:
        """E[s] = a / (a + b)."""
        return self.a / (self.a + self.b)

    def std(self) -> jax.Array:
        """sd[s] = sqrt(a b / ((a + b)^2 (a + b + 1)))."""
        total = self.a + self.b
        return jnp.sqrt(self.a * self.b / (total**2 * (total + 1.0)))


def beta_from_moments(mean: ArrayLike, std: ArrayLike) -> Beta:
    """The Beta law with the given mean and standard deviation (method of moments).

    a = m c, b = (1 - m) c with c = m (1 - m) / sd^2 - 1; needs sd^2 < m (1 - m).

    Args:
        mean: target means in (0, 1).
        std: target standard deviations, 0 < std < sqrt(mean (1 - mean)).

    Returns:
        `Beta(a, b)` broadcast over the inputs.
    """
    mean = jnp.asarray(mean, _float_dtype(mean, std))
    std = jnp.asarray(std, mean.dtype)
    concentration = mean * (1.0 - mean) / std**2 - 1.0
    return Beta(mean * concentration, (1.0 - mean) * concentration)


class PointMass(NamedTuple):
    """All mass at `loc` (0 or 1 for a saturated verifier).

    Attributes:
        loc: the atom, in [0, 1].
    """

    loc: jax.Array

    @functools.partial(jax.jit, static_argnames=("shape",))
    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
        del key
        shape = jnp.shape(self.loc) if shape is None else shape
        return jnp.broadcast_to(jnp.asarray(self.loc, _float_dtype(self.loc)), shape)

    @jax.jit
    def cdf(self, x: ArrayLike) -> jax.Array:
        return jnp.where(jnp.asarray(x) >= self.loc, 1.0, 0.0).astype(_float_dtype(x, self.loc))

    @jax.jit
    def log_cdf(self, x: ArrayLike) -> jax.Array:
        return jnp.log(self.cdf(x))

    @jax.jit
    def log_sf(self, x: ArrayLike) -> jax.Array:
        # F is exactly 0 or 1, so log(1 - F) is exact (0 or -inf).
        return jnp.log(1.0 - self.cdf(x))

    @jax.jit
    def ppf(self, q: ArrayLike) -> jax.Array:
        return jnp.broadcast_to(
            self.loc, jnp.broadcast_shapes(jnp.shape(q), jnp.shape(self.loc))
        ).astype(_float_dtype(q, self.loc))

    @jax.jit
    def ppf_log(self, log_q: ArrayLike, log_p: ArrayLike) -> jax.Array:
        shape = jnp.broadcast_shapes(jnp.shape(log_q), jnp.shape(log_p), jnp.shape(self.loc))
        return jnp.broadcast_to(self.loc, shape).astype(_float_dtype(log_q, self.loc))


class Mixture(NamedTuple):
    """Two-component mixture `weight * first + (1 - weight) * second` of any two laws.

    With a `PointMass(1.0)` component it models a verifier that saturates on some samples.

    Attributes:
        weight: probability of the first component, in [0, 1].
        first: a law.
        second: a law.
    """

    weight: jax.Array
    first: Law
    second: Law

    @functools.partial(jax.jit, static_argnames=("shape",))
    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
        if shape is None:
            shape = jnp.shape(self.log_cdf(jnp.asarray(0.5, _float_dtype(self.weight))))
        pick_key, first_key, second_key = jax.random.split(key, 3)
        from_first = jax.random.bernoulli(pick_key, self.weight, shape)
        return jnp.where(
            from_first, self.first.sample(first_key, shape), self.second.sample(second_key, shape)
        )

    @jax.jit
    def cdf(self, x: ArrayLike) -> jax.Array:
        return self.weight * self.first.cdf(x) + (1.0 - self.weight) * self.second.cdf(x)

    @jax.jit
    def log_cdf(self, x: ArrayLike) -> jax.Array:
        return self._log_mix(self.first.log_cdf(x), self.second.log_cdf(x))

    @jax.jit
    def log_sf(self, x: ArrayLike) -> jax.Array:
        return self._log_mix(self.first.log_sf(x), self.second.log_sf(x))

    def _log_mix(self, log_first: jax.Array, log_second: jax.Array) -> jax.Array:
        """log(w e^log_first + (1 - w) e^log_second), in log space."""
        return jnp.logaddexp(jnp.log(self.weight) + log_first, jnp.log1p(-self.weight) + log_second)

    # Quantiles by bisection (jitted functions of the law, bound as methods).
    ppf = _ppf_via_logs
    ppf_log = _bisect_ppf


class WithAtoms(NamedTuple):
    """Point masses at 0 and at 1 plus a continuous law in between (`optscale_jax.laws.atoms`).

    P(X = 0) = mass0, P(X = 1) = mass1, and X | 0 < X < 1 follows `inner` (CDF G), weight
    w = 1 - mass0 - mass1:

        F(x) = mass0 [x >= 0] + w G(x) + mass1 [x >= 1].

    Attributes:
        mass0: the point mass at 0.
        mass1: the point mass at 1 (mass0 + mass1 <= 1).
        inner: a continuous law on [0, 1] (`TruncNormal`, `Beta`).
    """

    mass0: jax.Array
    mass1: jax.Array
    inner: Law

    def _log_masses(self, dtype):
        mass0 = jnp.asarray(self.mass0, dtype)
        mass1 = jnp.asarray(self.mass1, dtype)
        return jnp.log(mass0), jnp.log(mass1), jnp.log(jnp.maximum(1.0 - mass0 - mass1, 0.0))

    @functools.partial(jax.jit, static_argnames=("shape",))
    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
        pick_key, inner_key = jax.random.split(key)
        draws = self.inner.sample(inner_key, shape)
        # A continuous draw that rounds to exactly 0 or 1 would count as an atom: keep it inside.
        finfo = jnp.finfo(draws.dtype)
        draws = jnp.clip(draws, finfo.tiny, 1.0 - finfo.epsneg)
        u = jax.random.uniform(pick_key, draws.shape, draws.dtype)
        return jnp.where(u < self.mass0, 0.0, jnp.where(u >= 1.0 - self.mass1, 1.0, draws)).astype(
            draws.dtype
        )

    @jax.jit
    def cdf(self, x: ArrayLike) -> jax.Array:
        return jnp.exp(self.log_cdf(x))

    @jax.jit
    def log_cdf(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x, _float_dtype(x, self.mass0))
        log_p0, log_p1, log_w = self._log_masses(x.dtype)
        inside = log_w + self.inner.log_cdf(jnp.clip(x, 0.0, 1.0))
        total = jnp.logaddexp(log_p0, jnp.logaddexp(inside, jnp.where(x >= 1.0, log_p1, -jnp.inf)))
        return jnp.where(x < 0.0, -jnp.inf, total)

    @jax.jit
    def log_sf(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x, _float_dtype(x, self.mass0))
        log_p0, log_p1, log_w = self._log_masses(x.dtype)
        inside = log_w + self.inner.log_sf(jnp.clip(x, 0.0, 1.0))
        total = jnp.logaddexp(inside, jnp.where(x >= 1.0, -jnp.inf, log_p1))
        return jnp.where(x < 0.0, 0.0, total)

    ppf = _ppf_via_logs

    @jax.jit
    def ppf_log(self, log_q: ArrayLike, log_p: ArrayLike) -> jax.Array:
        """0 where q <= mass0, 1 where 1 - q < mass1, else G^-1((q - mass0) / w), with
        log((q - mass0) / w) and log((1 - q - mass1) / w) formed in log space."""
        log_q, log_p = jnp.asarray(log_q), jnp.asarray(log_p)
        log_p0, log_p1, log_w = self._log_masses(_float_dtype(log_q, log_p))
        at_zero = log_q <= log_p0
        at_one = log_p < log_p1
        inner = ~at_zero & ~at_one
        # Inside, log q > log mass0 and log p >= log mass1: the differences are >= 0.
        safe_q = jnp.where(inner, log_q, 0.0)
        safe_p = jnp.where(inner, log_p, 0.0)
        below = safe_q + _log1mexp(jnp.minimum(jnp.where(inner, log_p0, -jnp.inf) - safe_q, 0.0))
        above = safe_p + _log1mexp(jnp.minimum(jnp.where(inner, log_p1, -jnp.inf) - safe_p, 0.0))
        value = self.inner.ppf_log(below - log_w, above - log_w)
        return jnp.where(at_zero, 0.0, jnp.where(at_one, 1.0, value)).astype(value.dtype)


class Empirical(NamedTuple):
    """Resampling a pool of observed scores: the law puts mass 1/m on each pool entry.

    Build it with `empirical(pool)`, which sorts the pool (the quantile needs that).

    Attributes:
        pool: sorted scores `[..., m]`; leading axes are the batch.
    """

    pool: jax.Array

    def _size(self) -> int:
        return self.pool.shape[-1]

    @functools.partial(jax.jit, static_argnames=("shape",))
    def sample(self, key: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
        shape = self.pool.shape[:-1] if shape is None else tuple(shape)
        index = jax.random.randint(key, shape, 0, self._size())
        pool = jnp.broadcast_to(self.pool, shape + (self._size(),))
        return jnp.take_along_axis(pool, index[..., None], axis=-1)[..., 0]

    @jax.jit
    def cdf(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)[..., None]
        return jnp.mean(self.pool <= x, axis=-1, dtype=_float_dtype(self.pool))

    @jax.jit
    def log_cdf(self, x: ArrayLike) -> jax.Array:
        return jnp.log(self.cdf(x))

    @jax.jit
    def log_sf(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)[..., None]
        return jnp.log(jnp.mean(self.pool > x, axis=-1, dtype=_float_dtype(self.pool)))

    ppf = _ppf_via_logs

    @jax.jit
    def ppf_log(self, log_q: ArrayLike, log_p: ArrayLike) -> jax.Array:
        # Entry ceil(q m) - 1 of the sorted pool; above the median written as m - 1 - floor(p m).
        m = self._size()
        log_q, log_p = jnp.asarray(log_q), jnp.asarray(log_p)
        from_lower = jnp.ceil(jnp.exp(log_q) * m) - 1
        from_upper = m - 1 - jnp.floor(jnp.exp(log_p) * m)
        index = jnp.where(log_q < jnp.log(0.5), from_lower, from_upper)
        index = jnp.clip(index, 0, m - 1).astype(jnp.int32)
        shape = jnp.broadcast_shapes(index.shape, self.pool.shape[:-1])
        pool = jnp.broadcast_to(self.pool, shape + (m,))
        index = jnp.broadcast_to(index, shape)
        return jnp.take_along_axis(pool, index[..., None], axis=-1)[..., 0]


def empirical(pool: ArrayLike) -> Empirical:
    """The empirical law of `pool` (`[..., m]`, scores in [0, 1]); sorts along the last axis.

    Args:
        pool: observed scores; leading axes index independent pools.

    Returns:
        `Empirical` with the sorted pool.
    """
    pool = jnp.asarray(pool)
    return Empirical(jnp.sort(pool.astype(_float_dtype(pool)), axis=-1))


@jax.jit
def normal_ppf_log(log_q: ArrayLike, log_p: ArrayLike) -> jax.Array:
    """Standard normal quantile Phi^-1(q) from log q and log(1 - q).

    Uses the tail that is exact: Phi^-1(q) below the median, -Phi^-1(1 - q) above it.

    Args:
        log_q: log q.
        log_p: log(1 - q).

    Returns:
        Phi^-1(q), broadcast over the arguments.
    """
    log_q, log_p = jnp.asarray(log_q), jnp.asarray(log_p)
    lower = log_q < jnp.log(0.5)
    return jnp.where(
        lower,
        ndtri(jnp.exp(jnp.where(lower, log_q, -1.0))),
        -ndtri(jnp.exp(jnp.where(lower, -1.0, log_p))),
    )


@functools.partial(jax.jit, static_argnames=("shape",))
def sample_max(
    law: Law,
    key: jax.Array,
    n: ArrayLike,
    shape: tuple[int, ...],
    rho: ArrayLike | None = None,
) -> jax.Array:
    """The maximum of `n` draws from `law`, drawn in one go: F^-1(U^(1/n)).

    With E ~ Exponential(1), U = exp(-E): log q = -E / n and log(1 - q) = log(-expm1(-E / n)),
    so neither tail loses precision however large n is (U^(1/n) itself rounds to 1 in float64
    once n passes ~1e16).

    With `rho` (the Gaussian copula of `sample_copula`), the n draws are i.i.d. given the
    shared factor W, so their maximum is F^-1(Phi(sqrt(rho) W + sqrt(1 - rho) Phi^-1(U^(1/n)))):
    two random numbers per trial instead of n.

    Args:
        law: marginal law of each draw; its parameters broadcast to `shape`.
        key: PRNG key.
        n: number of draws (broadcasts against `shape`), >= 1.
        shape: shape of the output.
        rho: optional equicorrelation in [0, 1), broadcasting against `shape`; None = i.i.d.

    Returns:
        Maxima of shape `shape`.
    """
    dtype = _float_dtype(jnp.asarray(law.cdf(0.5)))
    exp_key, shared_key = jax.random.split(key)
    log_q = -jax.random.exponential(exp_key, shape, dtype) / jnp.asarray(n, dtype)
    log_p = _log1mexp(log_q)
    if rho is None:
        return law.ppf_log(log_q, log_p)
    rho = jnp.asarray(rho, dtype)
    top_own = normal_ppf_log(log_q, log_p)
    z = jnp.sqrt(rho) * jax.random.normal(shared_key, shape, dtype) + jnp.sqrt(1.0 - rho) * top_own
    return law.ppf_log(log_ndtr(z), log_ndtr(-z))


@functools.partial(jax.jit, static_argnames=("n", "shape"))
def sample_max_full(
    law: Law,
    key: jax.Array,
    n: int,
    shape: tuple[int, ...],
    rho: ArrayLike | None = None,
) -> jax.Array:
    """The maximum of `n` draws, by drawing all n and taking the max (the slow reference).

    Args:
        law: marginal law; its parameters broadcast to `shape`.
        key: PRNG key.
        n: number of draws (a Python int: it sizes the array).
        shape: shape of the output.
        rho: optional equicorrelation (see `sample_copula`); None = i.i.d.

    Returns:
        Maxima of shape `shape`.
    """
    draws = sample_exchangeable(law, key, tuple(shape) + (int(n),), rho)
    return jnp.max(draws, axis=-1)


@functools.partial(jax.jit, static_argnames=("shape",))
def sample_copula(law: Law, key: jax.Array, rho: ArrayLike, shape: tuple[int, ...]) -> jax.Array:
    """Exchangeable draws: an equicorrelated Gaussian copula with marginal `law`.

    Z_i = sqrt(rho) W + sqrt(1 - rho) E_i with W, E_i i.i.d. standard normal (W shared along the
    last axis), U_i = Phi(Z_i), s_i = F^-1(U_i). rho = 0 is i.i.d.; rho -> 1 repeats one score,
    the way low-temperature sampling repeats one solution.

    Args:
        law: marginal law of each score; its parameters broadcast to `shape[:-1]` (one law
            per row of exchangeable samples).
        key: PRNG key.
        rho: equicorrelation in [0, 1), broadcasting against `shape[:-1]`.
        shape: output shape; the last axis holds one question's exchangeable samples.

    Returns:
        Scores of shape `shape`.
    """
    dtype = _float_dtype(jnp.asarray(law.cdf(0.5)), rho)
    shared_key, own_key = jax.random.split(key)
    rho = jnp.asarray(rho, dtype)[..., None]
    shared = jax.random.normal(shared_key, tuple(shape[:-1]) + (1,), dtype)
    own = jax.random.normal(own_key, tuple(shape), dtype)
    z = jnp.sqrt(rho) * shared + jnp.sqrt(1.0 - rho) * own
    return with_sample_axis(law).ppf_log(log_ndtr(z), log_ndtr(-z))


def sample_exchangeable(
    law: Law, key: jax.Array, shape: tuple[int, ...], rho: ArrayLike | None = None
) -> jax.Array:
    """Rows of exchangeable scores: i.i.d. draws, or the Gaussian copula of `sample_copula`.

    Args:
        law: law of each score; its parameters broadcast to `shape[:-1]` (one law per row).
        key: PRNG key.
        shape: output shape; the last axis holds one row's samples.
        rho: equicorrelation in [0, 1), broadcasting against `shape[:-1]`. None, or a
            concrete 0, draws i.i.d. scores directly (no copula transform); a traced value
            always goes through the copula.

    Returns:
        Scores of shape `shape`.
    """
    if rho is None or (not is_traced(rho) and np.all(np.asarray(rho) == 0)):
        return with_sample_axis(law).sample(key, shape)
    return sample_copula(law, key, rho, shape)


def with_sample_axis(law: Law) -> Law:
    """The same law with a trailing axis of size 1 on its batch shape.

    A law with batch shape `[...]` then broadcasts against draws `[..., k]`: k samples per row.

    Args:
        law: any law of this module.

    Returns:
        A law of the same family with batch shape `[..., 1]`.
    """
    if isinstance(law, Empirical):
        return Empirical(law.pool[..., None, :])
    if isinstance(law, WithAtoms):
        return WithAtoms(
            jnp.asarray(law.mass0)[..., None],
            jnp.asarray(law.mass1)[..., None],
            with_sample_axis(law.inner),
        )
    if isinstance(law, Mixture):
        return Mixture(
            jnp.asarray(law.weight)[..., None],
            with_sample_axis(law.first),
            with_sample_axis(law.second),
        )
    return type(law)(*(jnp.asarray(p)[..., None] for p in law))
