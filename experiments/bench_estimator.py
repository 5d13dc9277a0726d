"""`optscale bench estimator`: the batched MLE + N* against the released code's scipy loop.

Both paths see the same scores. (a) The released path, per question in a Python loop:
`scipy.optimize.minimize(method="L-BFGS-B")` of the truncated-normal NLL started at the
sample mean and std, then a scan N = 1..max_n for the first N with 1 - F^N >= alpha; timed
on a subsample and extrapolated per fit. (b) This package: `fit_mle` on all questions at
once, then `optimal_n`; with `--devices N|all`, both with the question axis sharded over
that many devices (`optscale_jax.devices`) and gathered back to the host. Figures are
printed as `name: value` lines; the last line is `speedup_vs_scipy_loop: X`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's options."""
    parser.add_argument("--questions", type=int, default=1_000_000, help="questions fitted by JAX")
    parser.add_argument("--samples", type=int, default=16, help="scores per question")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scores")
    parser.add_argument(
        "--scipy-subsample", type=int, default=200, help="questions timed through the scipy loop"
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--s-min", type=float, default=0.9, help="score threshold for N*")
    parser.add_argument("--alpha", type=float, default=0.95, help="target probability for N*")
    parser.add_argument("--max-n", type=int, default=256, help="cap of N*")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument(
        "--devices",
        default=None,
        metavar="N|all",
        help="shard the questions over N devices (or all); default: one device, unsharded",
    )


def _scipy_released_path(scores, s_min, alpha, max_n):
    """One question the way the released code does it: L-BFGS-B MLE, then a scan over N."""
    import numpy as np
    import scipy.optimize
    import scipy.stats

    def nll(theta):
        mu, sigma = theta
        a, b = (0.0 - mu) / sigma, (1.0 - mu) / sigma
        return -np.sum(scipy.stats.truncnorm.logpdf(scores, a, b, loc=mu, scale=sigma))

    start = [scores.mean(), max(scores.std(), 1e-3)]
    result = scipy.optimize.minimize(
        nll, start, method="L-BFGS-B", bounds=[(-1.0, 2.0), (1e-3, 3.0)]
    )
    mu, sigma = result.x
    f = scipy.stats.truncnorm.cdf(s_min, -mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    for n in range(1, max_n + 1):
        if 1.0 - f**n >= alpha:
            return n
    return max_n


def _one_blas_thread():
    """A context limiting BLAS to one thread (threadpoolctl if installed, else a no-op)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _jax_paths(scores, args, mesh):
    """(fit, fit + N*) of all questions: on one device, or sharded over `mesh` if given."""
    import functools

    import jax

    from optscale_jax import devices, fit_mle, optimal_n

    # One object across calls, so the sharded program is compiled once.
    nstar = functools.partial(optimal_n, s_min=args.s_min, alpha=args.alpha, max_n=args.max_n)
    if mesh is None:

        def fit_only():
            return jax.block_until_ready(fit_mle(scores))

        def fit_and_nstar():
            fit = fit_mle(scores)
            return jax.block_until_ready((fit, nstar(fit.mu, fit.sigma)))

        return fit_only, fit_and_nstar

    def fit_only():
        return devices.run_sharded(fit_mle, scores, mesh=mesh)

    def fit_and_nstar():
        fit = fit_only()
        return fit, devices.run_sharded(nstar, fit.mu, fit.sigma, mesh=mesh)

    return fit_only, fit_and_nstar


def _best_time(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures."""
    from optscale_jax.validation import check_max_n, check_open_unit, check_unit

    for value, name in ((args.questions, "--questions"), (args.samples, "--samples")):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if args.scipy_subsample < 1:
        raise ValueError(f"--scipy-subsample must be >= 1, got {args.scipy_subsample}")
    check_unit(args.s_min, "--s-min")
    check_open_unit(args.alpha, "--alpha")
    check_max_n(args.max_n, "--max-n")

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from optscale_jax import devices

    mesh = None if args.devices is None else devices.question_mesh(args.devices)
    import jax.numpy as jnp
    import numpy as np
    from jax.scipy.special import log_ndtr
    from tqdm import tqdm

    from optscale_jax import FitStatus, truncnorm

    dtype = jnp.dtype(args.dtype)
    key_params, key_scores = jax.random.split(jax.random.PRNGKey(args.seed))
    # Questions with varied difficulty: mu in [-0.5, 1.5], sigma in [0.05, 0.5].
    params = jax.random.uniform(key_params, (2, args.questions, 1), dtype)
    mu = -0.5 + 2.0 * params[0]
    sigma = 0.05 + 0.45 * params[1]
    scores = truncnorm.sample(key_scores, mu, sigma, (args.questions, args.samples), dtype=dtype)
    scores = jax.block_until_ready(scores)

    fit_only, jax_path = _jax_paths(scores, args, mesh)
    fit, n_star = jax_path()  # compile
    fit_time = _best_time(fit_only, args.repeats)
    total_time = _best_time(jax_path, args.repeats)

    probe = jax.random.normal(jax.random.PRNGKey(1), (1_000_000,), dtype) * 5.0
    log_ndtr_jit = jax.jit(log_ndtr)
    jax.block_until_ready(log_ndtr_jit(probe))
    log_ndtr_time = _best_time(lambda: jax.block_until_ready(log_ndtr_jit(probe)), 10)
    # Scale the pass to the number of fits (one pass over one element per question).
    passes = fit_time / (log_ndtr_time * args.questions / 1_000_000)

    subsample = np.asarray(scores[: args.scipy_subsample], np.float64)
    # One BLAS thread, so the scipy loop is not slowed by OpenBLAS spinning on tiny
    # vectors (that would flatter the speedup).
    with _one_blas_thread():
        start = time.perf_counter()
        scipy_n = [
            _scipy_released_path(row, args.s_min, args.alpha, args.max_n)
            for row in tqdm(subsample, desc="scipy loop", file=sys.stderr, leave=False)
        ]
        scipy_per_fit = (time.perf_counter() - start) / len(subsample)
    jax_per_fit = total_time / args.questions
    agree = np.mean(np.asarray(n_star[: len(scipy_n)]) == np.asarray(scipy_n))
    status = np.bincount(np.asarray(fit.status), minlength=len(FitStatus))

    figures = [
        ("questions", f"{args.questions} x {args.samples} {args.dtype}"),
        *([] if mesh is None else [("devices", f"{mesh.devices.size}")]),
        ("jax_fit_seconds", f"{fit_time:.3f}"),
        ("jax_fit_plus_nstar_seconds", f"{total_time:.3f}"),
        ("log_ndtr_pass_seconds_1e6", f"{log_ndtr_time:.5f}"),
        ("fit_over_log_ndtr_passes", f"{passes:.1f}"),
        ("mean_newton_steps", f"{float(np.mean(np.asarray(fit.steps))):.2f}"),
        ("max_newton_steps", f"{int(np.max(np.asarray(fit.steps)))}"),
        (
            "status_counts",
            ", ".join(f"{s.name}={c}" for s, c in zip(FitStatus, status, strict=True)),
        ),
        ("scipy_subsample", f"{len(subsample)}"),
        ("nstar_agreement_with_scipy", f"{agree:.3f}"),
        ("fits_per_second_jax | scipy_loop", f"{1 / jax_per_fit:,.0f} | {1 / scipy_per_fit:,.1f}"),
        ("seconds_per_fit_jax | scipy_loop", f"{jax_per_fit:.3e} | {scipy_per_fit:.3e}"),
        ("speedup_vs_scipy_loop", f"{scipy_per_fit / jax_per_fit:,.0f}"),
    ]
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name + ':':<{width + 1}} {value}")
    return 0
