"""Downstream study: which prior helps OptScalet on a semi-synthetic MATH500 log?

Each MATH500 question gets a truncated-normal score law moment-matched to its real PRM score
mean and standard deviation (`optscale_jax.prior.moments_to_truncnorm`);
`optscale_jax.sim.logs.synthetic_log` draws a log from those laws. The log is replayed (`optscale_jax.replay.evaluate`, the engine of
`optscale replay`: seeded dev/test split, settings chosen on dev, reported on test) with

* OptScale0 (no prior, refit after every sample),
* OptScalet with the learned prior (the predictor's score moments, moment-matched to
  truncated-normal parameters; trained on MATH train only),
* OptScalet with the empirical-Bayes prior (fitted on the dev questions' scores),
* OptScalet with the constant prior (the training medians, moment-matched),
* OptScalet with the released predictor's values used as (mu, sigma) as the paper's code does,
* OptScalet with the oracle prior (each question's true law; a reference, not a method),

and fixed-N Best-of-N as the reference. Written: `prior_study.csv` (one row per method and
prior: held-out accuracy, CI, samples and cost per question, the chosen setting) and
`prior_study.json` (the configuration and the same rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import numpy as np

from optscale_jax import prior
from optscale_jax.datasets import MATH500_PRM_STATS, MATH_TRAIN_PRM_STATS, data_path
from optscale_jax.io import read_jsonl, write_csv, write_json
from optscale_jax.replay import ReplayConfig, evaluate
from optscale_jax.sim.logs import synthetic_log

STUDY_COLUMNS = (
    "method",
    "prior",
    "selection",
    "accuracy",
    "ci_low",
    "ci_high",
    "mean_samples",
    "mean_cost",
    "saving",
    "setting",
    "questions",
    "k",
    "seed",
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the study's arguments."""
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--model", help="a saved predictor (default: train one, saved to OUT/model)"
    )
    parser.add_argument(
        "--k", type=int, default=32, help="samples per question in the synthetic log"
    )
    parser.add_argument("--permutations", type=int, default=5, help="sample orders per question")
    parser.add_argument(
        "--s-min", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.98], help="OptScale thresholds"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        nargs="+",
        default=[0.5, 0.7, 0.9, 0.95, 0.99],
        help="OptScale targets",
    )
    parser.add_argument(
        "--prior-scale", type=float, nargs=2, default=[0.1, 0.1], help="scales of the non-EB priors"
    )
    parser.add_argument(
        "--fixed-setting",
        type=float,
        nargs=2,
        default=[0.95, 0.9],
        metavar=("S_MIN", "ALPHA"),
        help="also report every prior at this one setting (m = 1), on the test split",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the log, the orders and the split"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _check(args: argparse.Namespace) -> None:
    if args.k < 2:
        raise ValueError(f"--k: must be >= 2, got {args.k}")
    if args.permutations < 1:
        raise ValueError(f"--permutations: must be >= 1, got {args.permutations}")
    if not all(0 <= s <= 1 for s in args.s_min):
        raise ValueError(f"--s-min: values must be in [0, 1], got {args.s_min}")
    if not all(0 < a < 1 for a in args.alpha):
        raise ValueError(f"--alpha: values must be in (0, 1), got {args.alpha}")
    s_fixed, alpha_fixed = args.fixed_setting
    if not (0 <= s_fixed <= 1 and 0 < alpha_fixed < 1):
        raise ValueError(
            f"--fixed-setting: S_MIN in [0, 1], ALPHA in (0, 1), got {args.fixed_setting}"
        )
    if not all(s > 0 for s in args.prior_scale):
        raise ValueError(f"--prior-scale: values must be > 0, got {args.prior_scale}")


def prior_tables(records, predictor, train_records) -> dict[str, tuple]:
    """Per-question (mu, sigma) of each fixed prior, aligned with `records`.

    Args:
        records: MATH500 PRM-statistics records (with the released predictor's values).
        predictor: the learned predictor.
        train_records: the training records (for the constant medians).

    Returns:
        {"learned" | "constant" | "released": (mu [Q], sigma [Q])} as float64 arrays.
    """
    mean, std = prior.predict_prior(predictor, records)
    train_mu, train_sigma = prior.prm_targets(train_records)
    median = prior.moments_to_truncnorm(np.median(train_mu), np.median(train_sigma))
    return {
        "learned": prior.moments_to_truncnorm(mean, std),
        "constant": (
            np.full(len(records), float(median[0])),
            np.full(len(records), float(median[1])),
        ),
        "released": (
            np.array([float(r["released_predictor_mu"]) for r in records]),
            # Three released sigmas are negative; floored at the core's lower sigma bound.
            np.maximum([float(r["released_predictor_sigma"]) for r in records], 1e-3),
        ),
    }


def run(args: argparse.Namespace) -> int:
    """Builds the log, replays every prior, writes the tables."""
    _check(args)
    out = pathlib.Path(args.out)
    records = read_jsonl(data_path(MATH500_PRM_STATS))
    train_path = data_path(MATH_TRAIN_PRM_STATS)
    train_records = read_jsonl(train_path)
    true_mu, true_sigma = prior.moments_to_truncnorm(*prior.prm_targets(records))
    ids = [prior.question_id(r, str(i)) for i, r in enumerate(records)]
    log = synthetic_log(true_mu, true_sigma, args.k, args.seed, ids=ids, prior_noise=None)

    predictor = _learned_predictor(args, out, train_records, str(train_path))
    tables = prior_tables(records, predictor, train_records)
    # Reference: the true laws' parameters, unknowable in practice.
    tables["oracle"] = (true_mu, true_sigma)
    specs = {"none": None, "eb": "eb"}
    for name, (mu, sigma) in tables.items():
        specs[name] = str(prior.write_prior_file(ids, mu, sigma, out / "priors" / f"{name}.jsonl"))

    common = {"questions": len(ids), "k": args.k, "seed": args.seed}
    rows = _replay_rows(log, specs, args, common)
    write_csv(rows, out / "prior_study.csv", columns=STUDY_COLUMNS)
    write_json(_study_summary(args, rows), out / "prior_study.json")
    for row in rows:
        label = row["method"] + (f"[{row['prior']}]" if row["prior"] else "")
        print(
            f"{label:22s} {row['selection']:12s} accuracy {row['accuracy']:.3f}  "
            f"samples/question {row['mean_samples']:.2f}  ({row['setting']})"
        )
    return 0


def _learned_predictor(
    args: argparse.Namespace, out: pathlib.Path, train_records, train_source: str
) -> prior.PriorPredictor:
    """--model, else a predictor trained with the default settings and saved to OUT/model."""
    if args.model:
        return prior.load_prior(args.model)
    predictor = prior.train_prior_from_records(
        train_records, config=prior.ModelConfig(), progress=not args.quiet, source=train_source
    )
    prior.save_prior(predictor, out / "model")
    return predictor


def _replay_rows(log, specs: dict[str, str | None], args: argparse.Namespace, common) -> list:
    """Replays the log with each prior spec; the study rows of every method and prior."""
    s_fixed, alpha_fixed = args.fixed_setting
    base = ReplayConfig(
        s_min=tuple(sorted({*args.s_min, s_fixed})),
        alpha=tuple(sorted({*args.alpha, alpha_fixed})),
        min_samples=(1, 2),
        prior_scale=tuple(args.prior_scale),
        permutations=args.permutations,
        seed=args.seed,
        bootstrap=200,
    )
    rows = []
    for name, spec in specs.items():
        methods = ("bon", "optscale0") if spec is None else ("bon", "optscalet")
        print(f"replaying with prior {name}", file=sys.stderr)
        result = evaluate(
            log, dataclasses.replace(base, methods=methods, prior=spec), progress=not args.quiet
        )
        for method, figures in result.summary["methods"].items():
            if method == "bon" and rows:
                continue  # the same reference every time
            label = name if method == "optscalet" else ""
            ci = figures.get("ci") or [None, None]
            rows.append(
                _study_row(
                    method, label, "dev-selected", figures, ci, figures.get("saving"), common
                )
            )
            if method == "bon":
                continue
            fixed = _fixed_setting_result(result.rows, method, s_fixed, alpha_fixed)
            if fixed is not None:
                ci = [fixed["ci_low"], fixed["ci_high"]]
                rows.append(_study_row(method, label, "fixed", fixed, ci, None, common))
    return rows


def _fixed_setting_result(result_rows, method: str, s_min: float, alpha: float) -> dict | None:
    """The test-split result row of `method` at (s_min, alpha, m = 1), if the grid has it."""
    for row in result_rows:
        if (
            row["method"] == method
            and row["split"] == "test"
            and row.get("m") == 1
            and np.isclose(row.get("s_min"), s_min)
            and np.isclose(row.get("alpha"), alpha)
        ):
            return row
    return None


def _study_row(method, label, selection, figures, ci, saving, common) -> dict:
    """One `STUDY_COLUMNS` row from a method's figures (summary or result row)."""
    return {
        "method": method,
        "prior": label,
        "selection": selection,
        "accuracy": figures["accuracy"],
        "ci_low": ci[0],
        "ci_high": ci[1],
        "mean_samples": figures["mean_samples"],
        "mean_cost": figures["mean_cost"],
        "saving": saving,
        "setting": figures["setting"],
        **common,
    }


def _study_summary(args: argparse.Namespace, rows: list[dict]) -> dict:
    """The configuration of the study and its rows (`prior_study.json`)."""
    return {
        "log": "MATH500 PRM statistics, moment-matched truncated normals, optscale_jax.sim.logs.synthetic_log",
        "k": args.k,
        "permutations": args.permutations,
        "s_min": args.s_min,
        "alpha": args.alpha,
        "prior_scale": args.prior_scale,
        "fixed_setting": {
            "s_min": args.fixed_setting[0],
            "alpha": args.fixed_setting[1],
            "m": 1,
        },
        "seed": args.seed,
        "rows": rows,
    }
