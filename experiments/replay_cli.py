"""`optscale replay`: replay a logged run with OptScale and every baseline, evaluated fairly.

Example:
    optscale replay --demo --out runs/gpqa
    optscale replay pool.json --format optscale-pool --prompts math500.jsonl --out runs/math
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

from optscale_jax.replay import METHODS, PER_QUESTION_COLUMNS, RESULT_COLUMNS, ReplayConfig

FORMATS = ("auto", "jsonl", "parquet", "optscale-pool", "search-and-learn", "gpqa-genrm")
_DEFAULTS = ReplayConfig()


def add_grid_argument(
    parser: argparse.ArgumentParser, flag: str, kind: type, metavar: str, help_text: str
) -> None:
    """A hyper-parameter grid flag (one or more values), defaulting to `ReplayConfig`'s grid."""
    default = list(getattr(_DEFAULTS, flag.removeprefix("--").replace("-", "_")))
    parser.add_argument(
        flag, type=kind, nargs="+", default=default, metavar=metavar, help=help_text
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `optscale replay` arguments."""
    parser.add_argument("log", nargs="?", metavar="LOG", help="log file (omit with --demo)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="replay the GPQA-Diamond generative-verifier log shipped with the package",
    )
    parser.add_argument("--format", default="auto", choices=FORMATS, help="log format")
    parser.add_argument("--prompts", help="optscale-pool: prompts file with the gold answers")
    parser.add_argument(
        "--prompt-match",
        choices=("position", "id"),
        help="optscale-pool: match pool entries to prompts by position (default) or id",
    )
    parser.add_argument(
        "--score-key",
        choices=("scores", "last_scores"),
        help="optscale-pool: which per-completion scores to use (default: scores)",
    )
    parser.add_argument(
        "--step-aggregation",
        choices=("last", "min", "mean", "prod"),
        help="search-and-learn: how step scores become one score",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        metavar="METHOD",
        help=f"methods to run (default: every one the log supports): {', '.join(METHODS)}",
    )
    parser.add_argument("--max-n", type=int, help="cap on samples per question (default: all)")
    parser.add_argument(
        "--fixed-n",
        type=int,
        nargs="+",
        metavar="N",
        help="N grid of bon/sc/wmv/oracle, ending at --max-n (default: 1..max-n)",
    )
    add_grid_argument(parser, "--s-min", float, "S", "OptScale score thresholds")
    add_grid_argument(parser, "--alpha", float, "A", "OptScale target probabilities")
    add_grid_argument(parser, "--min-samples", int, "M", "OptScale minimum samples m")
    add_grid_argument(parser, "--peek", int, "K", "optscale0-peek: samples before its single fit")
    add_grid_argument(parser, "--window", int, "W", "ESC window sizes")
    add_grid_argument(parser, "--threshold", float, "T", "Adaptive-Consistency stopping thresholds")
    parser.add_argument(
        "--prior",
        help="OptScalet prior: 'log' (the log's prior field), 'eb' (empirical Bayes on the "
        "selection questions), a JSONL file of {id, mu, sigma}, or 'MU,SIGMA' "
        "(default: log if every question has one, else eb)",
    )
    parser.add_argument(
        "--prior-scale",
        type=float,
        nargs=2,
        default=list(_DEFAULTS.prior_scale),
        metavar=("MU_SCALE", "SIGMA_SCALE"),
        help="standard deviations of the priors on mu and sigma",
    )
    parser.add_argument(
        "--permutations",
        type=int,
        default=_DEFAULTS.permutations,
        help="random sample orders per question",
    )
    parser.add_argument(
        "--split",
        default=_DEFAULTS.split,
        help="dev-test (seeded 50/50), kfold:K (cross-fitting) or none",
    )
    parser.add_argument(
        "--protocol",
        default="heldout",
        choices=("heldout", "released"),
        help="released: pick the best cell on the test split itself, "
        "as the paper's code did (labelled released-test-selected)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="selection: accept settings this far below BoN@max-n accuracy",
    )
    parser.add_argument(
        "--verifier-cost-factor",
        type=float,
        default=0.0,
        help="verifier cost per generated token (per sample without tokens)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=_DEFAULTS.bootstrap,
        help="bootstrap resamples of the 95%% CIs",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds orders, split and bootstrap")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """The ReplayConfig of parsed arguments, validated (ValueError naming the flag)."""
    from optscale_jax import validation

    def positive(values, flag):
        for v in values:
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")

    if args.max_n is not None:
        validation.check_max_n(args.max_n, "--max-n")
    validation.check_unit(args.s_min, "--s-min")
    validation.check_open_unit(args.alpha, "--alpha")
    validation.check_open_unit(args.threshold, "--threshold")
    positive(args.min_samples, "--min-samples")
    positive(args.peek, "--peek")
    positive(args.window, "--window")
    positive([args.permutations], "--permutations")
    positive([args.bootstrap], "--bootstrap")
    if args.fixed_n is not None:
        positive(args.fixed_n, "--fixed-n")
        if sorted(set(args.fixed_n)) != list(args.fixed_n):
            raise ValueError("--fixed-n must be strictly increasing")
    for flag, value in (
        ("--tolerance", args.tolerance),
        ("--verifier-cost-factor", args.verifier_cost_factor),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag} must be finite and >= 0, got {value}")
    if not all(math.isfinite(s) and s > 0 for s in args.prior_scale):
        raise ValueError(f"--prior-scale must be two positive numbers, got {args.prior_scale}")
    from optscale_jax.replay import parse_split

    parse_split(args.split)
    return ReplayConfig(
        methods=tuple(args.methods or METHODS),
        max_n=args.max_n,
        fixed_n=tuple(args.fixed_n) if args.fixed_n else None,
        s_min=tuple(args.s_min),
        alpha=tuple(args.alpha),
        min_samples=tuple(args.min_samples),
        peek=tuple(args.peek),
        window=tuple(args.window),
        threshold=tuple(args.threshold),
        prior=args.prior,
        prior_scale=tuple(args.prior_scale),
        permutations=args.permutations,
        split=args.split,
        protocol=args.protocol,
        tolerance=args.tolerance,
        verifier_cost_factor=args.verifier_cost_factor,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )


def load_log(args: argparse.Namespace):
    """The Log named by LOG / --demo and the reader options."""
    from optscale_jax.logs import read_log

    if args.demo:
        if args.log is not None:
            raise ValueError("give either LOG or --demo, not both")
        from optscale_jax import datasets

        return read_log(datasets.data_path(datasets.GPQA_GENRM), format="gpqa-genrm")
    if args.log is None:
        raise ValueError("LOG is required (or --demo)")
    options = {
        "prompts": args.prompts,
        "prompt_match": args.prompt_match,
        "score_key": args.score_key,
        "step_aggregation": args.step_aggregation,
    }
    return read_log(
        args.log, format=args.format, **{k: v for k, v in options.items() if v is not None}
    )


def format_table(table: list[dict], cost_unit: str, split: str) -> str:
    """The terminal summary: one line per method with held-out figures."""
    header = (
        f"{'method':<15} {'setting':<32} {split + ' accuracy [95% CI]':<32}"
        f" {'samples':>8} {'cost (' + cost_unit + ')':>16} {'saving':>8}"
    )
    lines = [header, "-" * len(header)]
    for t in table:
        low, high = t["ci"]
        saving = "n/a" if t["saving"] is None else f"{100 * t['saving']:+.1f}%"
        setting = t["setting"] if len(t["setting"]) <= 30 else t["setting"][:27] + "..."
        setting += "" if t["qualified"] else " *"
        lines.append(
            f"{t['method']:<15} {setting:<32} {t['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
            f"{'':<13} {t['mean_samples']:>8.2f} {t['mean_cost']:>16.2f} {saving:>8}"
        )
    if not all(t["qualified"] for t in table):
        lines.append("* no setting reached BoN@max_n's selection accuracy: the most accurate one")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Runs the replay and writes results.csv, summary.json and per_question.csv to --out."""
    config = config_from_args(args)
    log = load_log(args)

    import jax

    # Replay is small next to the fits' cost; float64 keeps it identical to the references.
    jax.config.update("jax_enable_x64", True)
    from optscale_jax import replay
    from optscale_jax.io import write_csv, write_json

    result = replay.evaluate(
        log, config, explicit_methods=args.methods is not None, progress=not args.no_progress
    )
    out = pathlib.Path(args.out)
    write_csv(result.rows, out / "results.csv", RESULT_COLUMNS)
    write_json(result.summary, out / "summary.json")
    write_csv(result.per_question, out / "per_question.csv", PER_QUESTION_COLUMNS)
    summary = result.summary
    print(
        f"{summary['log']}: {summary['questions']} questions, max_n={summary['max_n']}, "
        f"{summary['permutations']} orders, split={summary['split']}, "
        f"protocol={summary['protocol']}"
    )
    print(format_table(result.table, summary["cost_unit"], summary["reported_split"]))
    for method, reason in summary["skipped_methods"].items():
        print(f"skipped {method}: {reason}")
    print("saving = 1 - cost / (cost fixed-N BoN needs for the same accuracy on its envelope)")
    print(
        f"wrote {out / 'results.csv'}, {out / 'summary.json'}, {out / 'per_question.csv'}",
        file=sys.stderr,
    )
    return 0
