"""`optscale simulate {coverage,adaptive,misspec,log,estimator,calibration}`: Monte Carlo studies.

Examples:
    optscale simulate coverage --seed 0 --out runs/sim
    optscale simulate coverage --law tn beta beta-atoms empirical --seed 0 --out runs/sim-laws
    optscale simulate adaptive --population math --questions 300 --seed 0 --out runs/sim
    optscale simulate misspec --rho 0 0.2 0.5 0.8 --seed 0 --out runs/sim
    optscale simulate log --questions 500 --samples 64 --population math --seed 0 --out runs/log
    optscale simulate estimator --questions 2000 --prior-noise 0.05,0.1,0.2 --seed 0 --out runs/est
    optscale simulate calibration --seed 0 --out runs/ltt
    optscale simulate adaptive --questions 2000 --seed 0 --out runs/sim --devices all

`coverage --law L ...` fits each law L to pilots of every question's scores drawn from each
true law of `--families` and reports the realised coverage of the fitted law's N*
(`optscale_jax.sim.studies.law_coverage_study`; columns `LAW_COVERAGE_COLUMNS`: `family` the
true law, `law` the fitted one). coverage, adaptive and misspec write `<study>.csv` (one row per cell) and `<study>.json` (the
configuration, the elapsed time and the rows); `log` writes `log.jsonl` (the replay schema)
and `log.json`; `estimator` writes `estimator.csv` and `estimator.json` (its configuration).

coverage, adaptive, misspec, estimator, calibration and budget take `--devices N|all` (the questions
sharded over the devices, `optscale_jax.sim.sharding`; default one device, unsharded) and
`--coordinator HOST:PORT --num-processes P --process-id I` or `--distributed` (one process
per host, `jax.distributed`; process 0 writes). The files equal one device's, except
`elapsed_seconds`; docs/sections/scale.md has the launch.

Each subcommand is one entry of `STUDIES`; `run` runs any of them the same way: read the
inputs, simulate under a progress bar, write the files. The simulator (`optscale_jax.sim`) is
imported inside the functions, so `optscale --help` stays fast.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from optscale_jax.experiments import processes

Progress = Callable[[int], Any]
_DEVICES_HELP = (
    "shard the questions over N devices of each process, or all of them "
    "(default: one device, unsharded; all with several processes)"
)


class Study(NamedTuple):
    """One `optscale simulate` subcommand.

    Attributes:
        help: one line for `--help`.
        add_arguments: adds the subcommand's options to its parser.
        prepare: args -> the study's inputs (a population, a configuration).
        unit: what the progress bar counts.
        total: (args, inputs) -> the length of the progress bar.
        simulate: (args, inputs, progress) -> the result; calls progress(steps) as it goes.
        write: (args, inputs, result, started) -> the files written.
        sharded: whether the study takes `--devices` and the multi-process options (its
            question axis is spread over `args._mesh`).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Any]
    unit: str
    total: Callable[[argparse.Namespace, Any], int]
    simulate: Callable[[argparse.Namespace, Any, Progress], Any]
    write: Callable[[argparse.Namespace, Any, Any, float], list[pathlib.Path]]
    sharded: bool = False


class _Table(NamedTuple):
    """Rows of a study and the columns of its CSV."""

    rows: list[dict[str, Any]]
    columns: tuple[str, ...]


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `optscale simulate` subcommands (the entries of `STUDIES`) and their arguments."""
    subparsers = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, study in STUDIES.items():
        study_parser = subparsers.add_parser(name, help=study.help)
        study.add_arguments(study_parser)
        if study.sharded:
            processes.add_device_arguments(study_parser, _DEVICES_HELP)


def run(args: argparse.Namespace) -> int:
    """Runs the chosen study, writes its files and prints their paths; returns the exit code.

    Over several processes (`--num-processes`, `--distributed`) every process simulates its
    share of the questions and process 0 alone writes and prints.
    """
    import jax

    args._mesh = processes.join_and_mesh(args) if STUDIES[args.study].sharded else None
    # `estimator` has no --float32: it runs in float32 whatever the process-wide flag.
    jax.config.update("jax_enable_x64", not getattr(args, "float32", False))
    started = time.perf_counter()
    study = STUDIES[args.study]
    inputs = study.prepare(args)
    writer = jax.process_index() == 0
    with _progress(study.total(args, inputs), study.unit, args.study, writer) as bar:
        result = study.simulate(args, inputs, bar.update)
    for path in study.write(args, inputs, result, started) if writer else ():
        print(path)
    return 0


def _progress(total: int, unit: str, description: str, shown: bool = True):
    from tqdm import tqdm

    # The study checks its arguments before its first step: with a short delay, an input
    # error prints no empty bar ahead of its message.
    return tqdm(
        total=total, unit=unit, desc=description, file=sys.stderr, dynamic_ncols=True,
        delay=0.1, disable=not shown,
    )  # fmt: skip


def _one_step(args: argparse.Namespace, inputs: Any) -> int:
    return 1


# --------------------------------------------------------------------------- arguments


def _population_arguments(parser: argparse.ArgumentParser, default: str | None, questions: int):
    for name, grid_values, meaning in (("mu", [0.3, 0.5, 0.7], "locations"),
                                       ("sigma", [0.1, 0.2, 0.4], "scales")):  # fmt: skip
        parser.add_argument(
            f"--{name}",
            type=float,
            nargs="+",
            default=grid_values,
            metavar=name.upper(),
            help=f"grid population: {meaning}",
        )
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


def _coverage_arguments(parser: argparse.ArgumentParser) -> None:
    _population_arguments(parser, default=None, questions=50)
    parser.add_argument("--s-min", type=float, nargs="+", default=[0.7, 0.9], metavar="S")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.9, 0.95, 0.99], metavar="A")
    parser.add_argument(
        "--rho",
        type=float,
        nargs="+",
        default=None,
        metavar="RHO",
        help=f"copula correlations (0 = i.i.d.; default {' '.join(map(str, _COVERAGE_RHOS))}, "
        "with --law 0 only)",
    )
    parser.add_argument("--trials", type=int, default=100_000, help="trials per cell")
    parser.add_argument("--max-n", type=int, default=1_000_000, help="cap of N*")
    _law_coverage_arguments(parser)
    _common_arguments(parser)


_COVERAGE_RHOS = (0.0, 0.2, 0.5, 0.8)
# The options of `coverage --law`, left out of coverage.json's config without --law.
_LAW_COVERAGE_OPTIONS = ("law", "families", "pilot", "pilots", "atom_mass")


def _law_coverage_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("coverage of fitted score laws (--law)")
    group.add_argument(
        "--law",
        nargs="+",
        default=None,
        metavar="LAW",
        help="fit these score laws (tn, beta, tn-atoms, beta-atoms, empirical) to pilots "
        "drawn from each true law of --families; N* from the fitted law",
    )
    group.add_argument(
        "--families",
        nargs="+",
        default=None,
        metavar="FAMILY",
        help="true laws with --law: truncnorm, beta, tn-atoms, beta-atoms (default all)",
    )
    group.add_argument("--pilot", type=int, default=16, help="scores each fit sees (--law)")
    group.add_argument("--pilots", type=int, default=200, help="pilots per question (--law)")
    _atom_mass_argument(group, "--law")


def _atom_mass_argument(parser, option: str) -> None:
    parser.add_argument(
        "--atom-mass",
        type=float,
        nargs=2,
        default=[0.05, 0.2],
        metavar=("MASS0", "MASS1"),
        help=f"point masses at 0 and 1 of the atom families ({option})",
    )


def _adaptive_arguments(parser: argparse.ArgumentParser) -> None:
    _population_arguments(parser, default="math", questions=200)
    _policy_arguments(parser)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.0], metavar="RHO")
    parser.add_argument(
        "--prior-noise",
        type=float,
        nargs="+",
        default=[0.05, 0.2],
        metavar="X",
        help="OptScalet variants: sd of the prior centres' error (true value + noise)",
    )
    parser.add_argument(
        "--prior-scale",
        type=float,
        nargs=2,
        default=[0.1, 0.1],
        metavar=("MU", "SIGMA"),
        help="prior standard deviations on (mu, sigma)",
    )
    _common_arguments(parser)


def _misspec_arguments(parser: argparse.ArgumentParser) -> None:
    _population_arguments(parser, default="math", questions=200)
    _policy_arguments(parser)
    parser.add_argument(
        "--families",
        nargs="+",
        default=["truncnorm", "beta", "saturated", "bimodal"],
        metavar="FAMILY",
        help="truth families at rho = 0: truncnorm, beta, saturated, zero-inflated, bimodal",
    )
    parser.add_argument("--rho", type=float, nargs="+", default=[0.0, 0.2, 0.5, 0.8], metavar="RHO")
    parser.add_argument(
        "--weight", type=float, default=0.1, help="weight of the mixtures' extra component"
    )
    parser.add_argument(
        "--shift", type=float, default=0.3, help="bimodal: second mode at mu - shift"
    )
    _common_arguments(parser)


def _log_arguments(parser: argparse.ArgumentParser) -> None:
    _population_arguments(parser, default="math", questions=500)
    parser.add_argument("--samples", type=int, default=64, help="samples per question (K)")
    parser.add_argument("--rho", type=float, default=0.0, help="copula correlation of the samples")
    parser.add_argument(
        "--median-tokens", type=float, default=600.0, help="median tokens per sample"
    )
    parser.add_argument(
        "--prior-noise",
        type=float,
        default=0.05,
        help="sd of the prior centres' error written as `prior` (negative: no prior)",
    )
    parser.add_argument(
        "--link-slope", type=float, default=12.0, help="P(correct|s) logistic slope"
    )
    parser.add_argument(
        "--link-midpoint", type=float, default=0.8, help="score with P(correct) = 1/2"
    )
    parser.add_argument(
        "--family",
        default="truncnorm",
        help="true score law: truncnorm (default), beta (the question's score mean and sd), "
        "tn-atoms or beta-atoms (with point masses --atom-mass at 0 and 1)",
    )
    _atom_mass_argument(parser, "--family")
    _common_arguments(parser)


def _estimator_arguments(parser: argparse.ArgumentParser) -> None:
    from optscale_jax.sim.estimator_study import DEFAULT_NS, DEFAULT_PRIOR_NOISES

    parser.add_argument(
        "--out", required=True, type=pathlib.Path, help="output directory (estimator.csv, .json)"
    )
    parser.add_argument("--questions", type=int, default=2000, help="simulated questions")
    parser.add_argument("--ns", default=",".join(map(str, DEFAULT_NS)), help="sample counts n")
    parser.add_argument(
        "--prior-noise",
        default=",".join(map(str, DEFAULT_PRIOR_NOISES)),
        help="std of the MAP prior centre around the truth, one MAP series per value",
    )
    parser.add_argument("--prior-scale", default="0.1,0.1", help="MAP prior std (mu,sigma)")
    parser.add_argument("--mu-range", default="0.3,0.9", help="true mu ~ uniform(low,high)")
    parser.add_argument("--sigma-range", default="0.05,0.4", help="true sigma ~ uniform(low,high)")
    parser.add_argument("--seed", type=int, default=0)


# --------------------------------------------------------------------------- inputs


def _population(args: argparse.Namespace):
    """The questions: the --mu x --sigma grid, `math` or a table (resampled to --questions)."""
    from optscale_jax.sim import populations

    if args.questions < 0:
        raise ValueError(f"questions must be >= 0, got {args.questions}")
    spec = args.population or "grid"
    if spec == "grid":
        return populations.grid(args.mu, args.sigma)
    population = populations.load(spec)
    if args.questions:
        population = populations.resample(population, args.questions, args.seed)
    return population


def _log_population(args: argparse.Namespace):
    if args.samples < 1:
        raise ValueError(f"samples must be >= 1, got {args.samples}")
    return _population(args)


def _numbers(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _pair(text: str, name: str) -> tuple[float, float]:
    numbers = _numbers(text, name)
    if len(numbers) != 2:
        raise ValueError(f"{name}: expected two numbers")
    return numbers[0], numbers[1]


def _estimator_config(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `estimator_study`, from the comma-separated options."""
    return {
        "questions": args.questions,
        "ns": [int(x) for x in _numbers(args.ns, "ns")],
        "prior_noises": _numbers(args.prior_noise, "prior_noise"),
        "prior_scale": _pair(args.prior_scale, "prior_scale"),
        "mu_range": _pair(args.mu_range, "mu_range"),
        "sigma_range": _pair(args.sigma_range, "sigma_range"),
        "seed": args.seed,
    }


# --------------------------------------------------------------------------- simulations


def _coverage_population(args: argparse.Namespace):
    """The population, and the coverage options resolved: --rho's default, --law's checks."""
    if args.law is None:
        args.rho = list(_COVERAGE_RHOS) if args.rho is None else args.rho
        if args.families is not None:
            raise ValueError("families: only with --law")
        return _population(args)
    from optscale_jax.sim import studies

    args.rho = [0.0] if args.rho is None else args.rho
    if any(rho != 0.0 for rho in args.rho):
        raise ValueError(
            f"rho: the --law coverage study draws i.i.d. scores (0 only), got {args.rho}"
        )
    args.families = list(studies.LAW_FAMILIES) if args.families is None else args.families
    return _population(args)


def _coverage_total(args: argparse.Namespace, population) -> int:
    if args.law is not None:
        return len(args.families) * len(args.law)
    # i.i.d. and copula cells run as two groups, each over every trial.
    return args.trials * ((0.0 in args.rho) + any(r > 0 for r in args.rho))


def _coverage(args: argparse.Namespace, population, progress: Progress) -> _Table:
    from optscale_jax.sim import studies

    if args.law is not None:
        rows = studies.law_coverage_study(
            population, args.families, args.law, args.s_min, args.alpha, pilot=args.pilot,
            trials=args.pilots, max_n=args.max_n, atom_masses=tuple(args.atom_mass),
            seed=args.seed, progress=progress,
        )  # fmt: skip
        return _Table(rows, studies.LAW_COVERAGE_COLUMNS)
    rows = studies.coverage_study(
        population.mu,
        population.sigma,
        args.s_min,
        args.alpha,
        args.rho,
        trials=args.trials,
        max_n=args.max_n,
        seed=args.seed,
        progress=progress,
        mesh=args._mesh,
    )
    return _Table(rows, studies.COVERAGE_COLUMNS)


def _policy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments both policy studies take from `_policy_arguments` and the seed."""
    return {
        "paths": args.paths,
        "max_n": args.max_n,
        "peek": args.peek,
        "min_samples": args.min_samples,
        "seed": args.seed,
        "mesh": args._mesh,
    }


def _adaptive_total(args: argparse.Namespace, population) -> int:
    return len(population) * len(args.rho)


def _adaptive(args: argparse.Namespace, population, progress: Progress) -> _Table:
    from optscale_jax.sim import studies

    rows = studies.adaptive_study(
        population,
        args.s_min,
        args.alpha,
        args.rho,
        prior_noises=args.prior_noise,
        prior_scale=tuple(args.prior_scale),
        progress=progress,
        **_policy_options(args),
    )
    return _Table(rows, studies.POLICY_COLUMNS)


def _misspec_total(args: argparse.Namespace, population) -> int:
    from optscale_jax.sim import studies

    return len(population) * len(studies.misspec_runs(args.families, args.rho))


def _misspec(args: argparse.Namespace, population, progress: Progress) -> _Table:
    from optscale_jax.sim import studies

    rows = studies.misspec_study(
        population,
        args.s_min,
        args.alpha,
        args.families,
        args.rho,
        weight=args.weight,
        shift=args.shift,
        progress=progress,
        **_policy_options(args),
    )
    return _Table(rows, studies.POLICY_COLUMNS)


def _log(args: argparse.Namespace, population, progress: Progress):
    from optscale_jax.sim import studies
    from optscale_jax.sim.logs import synthetic_log

    if args.family not in studies.LAW_FAMILIES:
        raise ValueError(f"family: unknown {args.family!r}; choose from {studies.LAW_FAMILIES}")
    law = None  # the truncated normal of (mu, sigma): the default, as before
    if args.family != "truncnorm":
        law = studies.law_truth(args.family, population, args.atom_mass, seed=args.seed)
    log = synthetic_log(
        population.mu,
        population.sigma,
        args.samples,
        args.seed,
        law=law,
        rho=args.rho,
        ids=[f"sim-{q:05d}" for q in range(len(population))],
        median_tokens=args.median_tokens,
        link_slope=args.link_slope,
        link_midpoint=args.link_midpoint,
        prior_noise=None if args.prior_noise < 0 else args.prior_noise,
    )
    progress(1)
    return log


def _estimator(args: argparse.Namespace, config: dict[str, Any], progress: Progress) -> _Table:
    from optscale_jax.sim.estimator_study import COLUMNS, estimator_study

    rows = estimator_study(**config, mesh=args._mesh)
    progress(1)
    return _Table(rows, COLUMNS)


def _calibration_arguments(parser: argparse.ArgumentParser) -> None:
    from optscale_jax.sim import calibration_study as study

    _population_arguments(parser, default="math", questions=0)
    for flag, kind, default, help_text in (
        ("--rho", float, study.DEFAULT_RHOS, "copula correlations of the truncated-normal truths"),
        ("--families", str, study.DEFAULT_FAMILIES, "further i.i.d. truths (e.g. beta)"),
        ("--n-cals", int, study.DEFAULT_N_CALS, "calibration set sizes"),
        ("--risks", str, study.DEFAULT_RISKS, "risks LTT controls"),
        ("--epsilons", float, study.DEFAULT_EPSILONS, "target risks"),
        ("--deltas", float, study.DEFAULT_DELTAS, "error levels"),
        ("--s-min", float, study.DEFAULT_S_MINS, "OptScale0 thresholds"),
        ("--alpha", float, study.DEFAULT_ALPHAS, "OptScale0 targets"),
    ):
        parser.add_argument(flag, type=kind, nargs="*", default=list(default), help=help_text)
    parser.add_argument("--trials", type=int, default=200, help="calibration draws per cell")
    parser.add_argument("--paths", type=int, default=4, help="sample paths per question")
    parser.add_argument("--max-n", type=int, default=64, help="samples per path, the full budget")
    _common_arguments(parser)


def _calibration_total(args: argparse.Namespace, population) -> int:
    from optscale_jax.sim.calibration_study import truths

    return len(truths(args.rho, args.families))


def _calibration(args: argparse.Namespace, population, progress: Progress) -> _Table:
    from optscale_jax.sim import calibration_study as study

    rows = study.calibration_study(
        population, args.rho, args.families, args.n_cals, args.risks, args.epsilons,
        args.deltas, trials=args.trials, paths=args.paths, max_n=args.max_n,
        s_mins=args.s_min, alphas=args.alpha, seed=args.seed, progress=progress,
        mesh=args._mesh,
    )  # fmt: skip
    return _Table(rows, study.CALIBRATION_COLUMNS)


# --------------------------------------------------------------------------- files


def _config(args: argparse.Namespace) -> dict:
    # Without --law, coverage.json's config is what it was before the option existed.
    hidden = processes.DEVICE_OPTIONS + (
        _LAW_COVERAGE_OPTIONS if getattr(args, "law", "") is None else ()
    )
    return {
        key: (str(value) if isinstance(value, pathlib.Path) else value)
        for key, value in vars(args).items()
        if not key.startswith("_") and key not in hidden
    }


def _write_table(args: argparse.Namespace, table: _Table, record: dict, elapsed: float):
    """`<study>.csv` from the rows and `<study>.json` from `record`."""
    from optscale_jax.io import write_csv, write_json

    csv_path = write_csv(table.rows, args.out / f"{args.study}.csv", columns=table.columns)
    json_path = write_json(record, args.out / f"{args.study}.json")
    print(f"{args.study}: {len(table.rows)} rows in {elapsed:.1f} s", file=sys.stderr)
    return [csv_path, json_path]


def _write_rows(args: argparse.Namespace, population, table: _Table, started: float):
    elapsed = time.perf_counter() - started
    record = {
        "study": args.study,
        "config": _config(args),
        "elapsed_seconds": elapsed,
        "rows": table.rows,
    }
    return _write_table(args, table, record, elapsed)


def _write_estimator(args: argparse.Namespace, config: dict, table: _Table, started: float):
    record = {"study": "estimator", "dtype": "float32", **config}
    return _write_table(args, table, record, time.perf_counter() - started)


def _write_log(args: argparse.Namespace, population, log, started: float):
    from optscale_jax.io import write_json
    from optscale_jax.logs import write_jsonl

    log_path = write_jsonl(log, args.out / "log.jsonl")
    config = _config(args) | {
        "questions_written": len(population),
        "source_population": population.name,
        "elapsed_seconds": time.perf_counter() - started,
    }
    return [log_path, write_json(config, args.out / "log.json")]


def _budget_arguments(parser: argparse.ArgumentParser) -> None:
    from optscale_jax.sim import budget_study as study

    parser.add_argument(
        "--populations", nargs="+", default=list(study.POPULATIONS), metavar="NAME",
        help=f"populations to simulate (from {', '.join(study.POPULATIONS)})",
    )  # fmt: skip
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=list(study.DEFAULT_BUDGETS), metavar="B",
        help="mean samples per question",
    )  # fmt: skip
    parser.add_argument("--questions", type=int, default=500, help="questions per population")
    parser.add_argument("--orders", type=int, default=4, help="simulated orders per question")
    parser.add_argument("--samples", type=int, default=64, help="scores per order, the cap")
    parser.add_argument("--wave", type=int, default=None, help="allocation wave (default Q/4)")
    _common_arguments(parser)


def _no_inputs(args: argparse.Namespace) -> None:
    """The budget study builds its populations itself (one per name, seeded)."""
    return None


def _budget_total(args: argparse.Namespace, inputs: Any) -> int:
    return len(args.populations) * len(args.budgets)


def _budget(args: argparse.Namespace, inputs: Any, progress: Progress) -> _Table:
    from optscale_jax.sim import budget_study as study

    rows = study.budget_study(
        args.populations, args.budgets, questions=args.questions, orders=args.orders,
        samples=args.samples, wave=args.wave, seed=args.seed, progress=progress,
        mesh=args._mesh,
    )  # fmt: skip
    return _Table(rows, study.BUDGET_COLUMNS)


# Subcommand -> what it needs and does; adding a study is one entry (and its functions).
STUDIES: dict[str, Study] = {
    "coverage": Study(
        "realised coverage of N* with the true parameters (exact maximum), or from fitted laws",
        _coverage_arguments, _coverage_population, "trials", _coverage_total, _coverage,
        _write_rows, sharded=True,
    ),
    "adaptive": Study(
        "OptScale0 / peek / OptScalet on simulated paths vs equal-cost fixed N",
        _adaptive_arguments, _population, "questions", _adaptive_total, _adaptive, _write_rows,
        sharded=True,
    ),
    "misspec": Study(
        "the policies with a truncated-normal model under Beta/mixture/rho truth",
        _misspec_arguments, _population, "questions", _misspec_total, _misspec, _write_rows,
        sharded=True,
    ),
    "log": Study(
        "a synthetic log in the replay schema (log.jsonl)",
        _log_arguments, _log_population, "log", _one_step, _log, _write_log,
    ),
    "estimator": Study(
        "RMSE and bias of the MLE and MAP fits of (mu, sigma) against n (estimator.csv)",
        _estimator_arguments, _estimator_config, "study", _one_step, _estimator,
        _write_estimator, sharded=True,
    ),
    "calibration": Study(
        "Learn-then-Test's violation rate vs delta, and OptScale0's nominal promise",
        _calibration_arguments, _population, "truths", _calibration_total, _calibration,
        _write_rows, sharded=True,
    ),
    "budget": Study(
        "one total budget: reach rate of uniform, elimination, OptScale0 and the allocations",
        _budget_arguments, _no_inputs, "budgets", _budget_total, _budget, _write_rows,
        sharded=True,
    ),
}  # fmt: skip
