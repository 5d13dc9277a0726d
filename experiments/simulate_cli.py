"""`optscale simulate {coverage,adaptive,misspec,log}`: Monte Carlo studies and synthetic logs.

Examples:
    optscale simulate coverage --seed 0 --out runs/sim
    optscale simulate adaptive --population math --questions 300 --seed 0 --out runs/sim
    optscale simulate misspec --rho 0 0.2 0.5 0.8 --seed 0 --out runs/sim
    optscale simulate log --questions 500 --samples 64 --population math --seed 0 --out runs/log

Each study writes `<study>.csv` (one row per cell) and `<study>.json` (the configuration,
the elapsed time and the rows); `log` writes `log.jsonl` (the replay schema) and `log.json`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

STUDIES = ("coverage", "adaptive", "misspec", "log")


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `optscale simulate` subcommands and their arguments."""
    subparsers = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    coverage = subparsers.add_parser(
        "coverage", help="realised coverage of N* with the true parameters (exact maximum)"
    )
    _grid_arguments(coverage)
    _population_arguments(coverage, default=None, questions=50)
    coverage.add_argument("--s-min", type=float, nargs="+", default=[0.7, 0.9], metavar="S")
    coverage.add_argument("--alpha", type=float, nargs="+", default=[0.9, 0.95, 0.99], metavar="A")
    coverage.add_argument(
        "--rho",
        type=float,
        nargs="+",
        default=[0.0, 0.2, 0.5, 0.8],
        metavar="RHO",
        help="copula correlations (0 = i.i.d.)",
    )
    coverage.add_argument("--trials", type=int, default=100_000, help="trials per cell")
    coverage.add_argument("--max-n", type=int, default=1_000_000, help="cap of N*")
    _common_arguments(coverage)

    adaptive = subparsers.add_parser(
        "adaptive", help="OptScale0 / peek / OptScalet on simulated paths vs equal-cost fixed N"
    )
    _grid_arguments(adaptive)
    _population_arguments(adaptive, default="math", questions=200)
    _policy_arguments(adaptive)
    adaptive.add_argument("--rho", type=float, nargs="+", default=[0.0], metavar="RHO")
    adaptive.add_argument(
        "--prior-noise",
        type=float,
        nargs="+",
        default=[0.05, 0.2],
        metavar="X",
        help="OptScalet variants: sd of the prior centres' error (true value + noise)",
    )
    adaptive.add_argument(
        "--prior-scale",
        type=float,
        nargs=2,
        default=[0.1, 0.1],
        metavar=("MU", "SIGMA"),
        help="prior standard deviations on (mu, sigma)",
    )
    _common_arguments(adaptive)

    misspec = subparsers.add_parser(
        "misspec", help="the policies with a truncated-normal model under Beta/mixture/rho truth"
    )
    _grid_arguments(misspec)
    _population_arguments(misspec, default="math", questions=200)
    _policy_arguments(misspec)
    misspec.add_argument(
        "--families",
        nargs="+",
        default=["truncnorm", "beta", "saturated", "bimodal"],
        metavar="FAMILY",
        help="truth families at rho = 0: truncnorm, beta, saturated, zero-inflated, bimodal",
    )
    misspec.add_argument(
        "--rho", type=float, nargs="+", default=[0.0, 0.2, 0.5, 0.8], metavar="RHO"
    )
    misspec.add_argument(
        "--weight", type=float, default=0.1, help="weight of the mixtures' extra component"
    )
    misspec.add_argument(
        "--shift", type=float, default=0.3, help="bimodal: second mode at mu - shift"
    )
    _common_arguments(misspec)

    log = subparsers.add_parser("log", help="a synthetic log in the replay schema (log.jsonl)")
    _grid_arguments(log)
    _population_arguments(log, default="math", questions=500)
    log.add_argument("--samples", type=int, default=64, help="samples per question (K)")
    log.add_argument("--rho", type=float, default=0.0, help="copula correlation of the samples")
    log.add_argument("--median-tokens", type=float, default=600.0, help="median tokens per sample")
    log.add_argument(
        "--prior-noise",
        type=float,
        default=0.05,
        help="sd of the prior centres' error written as `prior` (negative: no prior)",
    )
    log.add_argument("--link-slope", type=float, default=12.0, help="P(correct|s) logistic slope")
    log.add_argument("--link-midpoint", type=float, default=0.8, help="score with P(correct) = 1/2")
    _common_arguments(log)


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mu",
        type=float,
        nargs="+",
        default=[0.3, 0.5, 0.7],
        metavar="MU",
        help="grid population: locations",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        nargs="+",
        default=[0.1, 0.2, 0.4],
        metavar="SIGMA",
        help="grid population: scales",
    )


def _population_arguments(parser: argparse.ArgumentParser, default: str | None, questions: int):
    parser.add_argument(
        "--population",
        default=default,
        help="`grid` (--mu x --sigma), `math` (4,501 MATH train questions, moment-matched) "
        f"or a CSV/JSONL table with mu, sigma (default: {default or 'grid'})",
    )
    parser.add_argument(
        "--questions",
        type=int,
        default=questions,
        help="questions drawn with replacement from a math/table population (0 = all of them)",
    )


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s-min", type=float, nargs="+", default=[0.9, 0.95], metavar="S")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.8, 0.9, 0.95], metavar="A")
    parser.add_argument("--paths", type=int, default=8, help="simulated paths per question")
    parser.add_argument(
        "--max-n", type=int, default=64, help="samples per path, every policy's cap"
    )
    parser.add_argument("--peek", type=int, default=4, help="samples before the peek rule's fit")
    parser.add_argument("--min-samples", type=int, default=1, help="sequential rules' minimum")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument(
        "--float32", action="store_true", help="simulate in float32 (default float64)"
    )


def run(args: argparse.Namespace) -> int:
    """Runs the chosen study and writes its files; returns the exit code."""
    import jax

    jax.config.update("jax_enable_x64", not args.float32)
    started = time.perf_counter()
    study = {
        "coverage": _coverage,
        "adaptive": _adaptive,
        "misspec": _misspec,
        "log": _log,
    }[args.study]
    written = study(args, started)
    for path in written:
        print(path)
    return 0


def _config(args: argparse.Namespace) -> dict:
    return {
        key: (str(value) if isinstance(value, pathlib.Path) else value)
        for key, value in vars(args).items()
        if not key.startswith("_")
    }


def _check_common(args: argparse.Namespace) -> None:
    from optscale_jax import validation

    if hasattr(args, "s_min"):
        validation.check_unit(args.s_min, "--s-min")
    if hasattr(args, "alpha"):
        validation.check_open_unit(args.alpha, "--alpha")
    rhos = args.rho if isinstance(args.rho, list) else [args.rho]
    for rho in rhos:
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"--rho must lie in [0, 1), got {rho}")
    if args.questions < 0:
        raise ValueError(f"--questions must be >= 0, got {args.questions}")


def _population(args: argparse.Namespace):
    from optscale_jax.sim import populations

    spec = args.population or "grid"
    if spec == "grid":
        return populations.grid(args.mu, args.sigma)
    population = populations.load(spec)
    if args.questions:
        population = populations.resample(population, args.questions, args.seed)
    return population


def _progress(total: int, unit: str, description: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=description, file=sys.stderr, dynamic_ncols=True)


def _write(args, name: str, rows: list[dict], columns, started: float) -> list[pathlib.Path]:
    from optscale_jax.io import write_csv, write_json

    elapsed = time.perf_counter() - started
    csv_path = write_csv(rows, args.out / f"{name}.csv", columns=columns)
    json_path = write_json(
        {"study": name, "config": _config(args), "elapsed_seconds": elapsed, "rows": rows},
        args.out / f"{name}.json",
    )
    print(f"{name}: {len(rows)} rows in {elapsed:.1f} s", file=sys.stderr)
    return [csv_path, json_path]


def _coverage(args: argparse.Namespace, started: float) -> list[pathlib.Path]:
    from optscale_jax.sim import studies

    _check_common(args)
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    population = _population(args)
    groups = (0.0 in args.rho) + any(r > 0 for r in args.rho)
    with _progress(args.trials * groups, "trials", "coverage") as bar:
        rows = studies.coverage_study(
            population.mu,
            population.sigma,
            args.s_min,
            args.alpha,
            args.rho,
            trials=args.trials,
            max_n=args.max_n,
            seed=args.seed,
            progress=bar.update,
        )
    return _write(args, "coverage", rows, studies.COVERAGE_COLUMNS, started)


def _adaptive(args: argparse.Namespace, started: float) -> list[pathlib.Path]:
    from optscale_jax.sim import studies

    _check_common(args)
    population = _population(args)
    with _progress(len(population) * len(args.rho), "questions", "adaptive") as bar:
        rows = studies.adaptive_study(
            population,
            args.s_min,
            args.alpha,
            args.rho,
            paths=args.paths,
            max_n=args.max_n,
            peek=args.peek,
            min_samples=args.min_samples,
            prior_noises=args.prior_noise,
            prior_scale=tuple(args.prior_scale),
            seed=args.seed,
            progress=bar.update,
        )
    return _write(args, "adaptive", rows, studies.POLICY_COLUMNS, started)


def _misspec(args: argparse.Namespace, started: float) -> list[pathlib.Path]:
    from optscale_jax.sim import studies

    _check_common(args)
    for family in args.families:
        if family not in studies.MISSPEC_FAMILIES:
            raise ValueError(
                f"--families: unknown {family!r}; choose from {studies.MISSPEC_FAMILIES}"
            )
    population = _population(args)
    runs = len(args.families) * (0.0 in args.rho) + sum(r > 0 for r in args.rho)
    with _progress(len(population) * runs, "questions", "misspec") as bar:
        rows = studies.misspec_study(
            population,
            args.s_min,
            args.alpha,
            args.families,
            args.rho,
            paths=args.paths,
            max_n=args.max_n,
            peek=args.peek,
            min_samples=args.min_samples,
            weight=args.weight,
            shift=args.shift,
            seed=args.seed,
            progress=bar.update,
        )
    return _write(args, "misspec", rows, studies.POLICY_COLUMNS, started)


def _log(args: argparse.Namespace, started: float) -> list[pathlib.Path]:
    from optscale_jax.sim.logs import synthetic_log

    from optscale_jax.io import write_json
    from optscale_jax.logs import write_jsonl

    _check_common(args)
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    population = _population(args)
    ids = [f"sim-{q:05d}" for q in range(len(population))]
    with _progress(1, "log", "log") as bar:
        log = synthetic_log(
            population.mu,
            population.sigma,
            args.samples,
            args.seed,
            rho=args.rho,
            ids=ids,
            median_tokens=args.median_tokens,
            link_slope=args.link_slope,
            link_midpoint=args.link_midpoint,
            prior_noise=None if args.prior_noise < 0 else args.prior_noise,
        )
        bar.update(1)
    log_path = write_jsonl(log, args.out / "log.jsonl")
    config = _config(args) | {
        "questions_written": len(population),
        "source_population": population.name,
        "elapsed_seconds": time.perf_counter() - started,
    }
    return [log_path, write_json(config, args.out / "log.json")]
