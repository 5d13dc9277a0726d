"""`optscale replay`: replay a logged run with OptScale and every baseline, evaluated fairly.

Example:
    optscale replay --demo --out runs/gpqa
    optscale replay pool.json --format optscale-pool --prompts math500.jsonl --out runs/math
    optscale replay --demo --select ltt --risk disagree --epsilon 0.05 --delta 0.1 --out runs/ltt
    optscale replay --demo --methods bon budget --budget 2 4 8 --objective reach --out runs/budget
    optscale replay --demo --law tn beta-atoms empirical auto --out runs/laws
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys

from optscale_jax.experiments import processes
from optscale_jax.replay import (
    BUDGET_UNITS,
    CERTIFIED_SETTING_FILE,
    DEFAULT_METHODS,
    METHOD_TABLE,
    METHODS,
    PER_QUESTION_COLUMNS,
    ReplayConfig,
)
from optscale_jax.replay.config import LTT_DEFAULT_SPLIT, PROTOCOLS, SELECTIONS
from optscale_jax.replay.stream import DEFAULT_BLOCK_QUESTIONS

FORMATS = ("auto", "jsonl", "parquet", "optscale-pool", "search-and-learn", "gpqa-genrm")
_DEFAULTS = ReplayConfig()
# flag -> (type, help) of the evaluation options; defaults are ReplayConfig's.
_EVALUATION_OPTIONS = {
    "--permutations": (int, "random sample orders per question"),
    "--split": (
        str,
        "dev-test (seeded 50/50; the default), kfold:K (cross-fitting) or none; "
        f"with --select ltt the default is {LTT_DEFAULT_SPLIT}",
    ),
    "--tolerance": (
        float,
        "selection: accept settings this far below the reference's accuracy at max-n "
        "(BoN; SC on a log without scores)",
    ),
    "--verifier-cost-factor": (
        float,
        "verifier cost per generated token (per sample without tokens)",
    ),
    "--bootstrap": (int, "bootstrap resamples of the 95%% CIs"),
    "--seed": (int, "seeds orders, split and bootstrap"),
}


def _field(flag: str) -> str:
    """The ReplayConfig field of a flag: --min-samples -> min_samples."""
    return flag.removeprefix("--").replace("-", "_")


def add_grid_argument(
    parser: argparse.ArgumentParser, flag: str, kind: type, metavar: str, help_text: str
) -> None:
    """A hyper-parameter grid flag (one or more values), defaulting to `ReplayConfig`'s grid."""
    default = getattr(_DEFAULTS, _field(flag))
    default = None if default is None else list(default)
    parser.add_argument(
        flag, type=kind, nargs="+", default=default, metavar=metavar, help=help_text
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `optscale replay` arguments."""
    add_log_arguments(parser)
    _add_method_arguments(parser)
    _add_evaluation_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="read a JSONL or Parquet log in blocks of questions (logs bigger than memory), "
        "writing the per-question outcomes to OUT/outcomes; the per-question methods only "
        "(always on over several processes: each reads its share of the questions)",
    )
    parser.add_argument(
        "--block-questions",
        type=int,
        default=DEFAULT_BLOCK_QUESTIONS,
        help="--stream: questions per block",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="write report.md without the figures (pareto and samples, png and pdf)",
    )
    processes.add_device_arguments(
        parser,
        "shard the replay's per-question work (prefix fits and grid cells of every law, the "
        "votes, best-of-N, the oracle; not the budget allocations) over N devices of each "
        "process, or all of them (same files as one device; default: one device, unsharded; "
        "all with several processes)",
    )


DEMO_HELP = "replay the GPQA-Diamond generative-verifier log shipped with the package"


def add_log_arguments(parser: argparse.ArgumentParser, demo_help: str = DEMO_HELP) -> None:
    """The log and its reader's options (LOG, --demo, --format, ...), as every command that
    reads a log the way `optscale replay` does takes them.

    Args:
        parser: the command's parser.
        demo_help: the help of `--demo` (what the command does with the shipped log).
    """
    parser.add_argument("log", nargs="?", metavar="LOG", help="log file (omit with --demo)")
    parser.add_argument("--demo", action="store_true", help=demo_help)
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


def _add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """The methods, their grids and OptScalet's prior."""
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        metavar="METHOD",
        help="methods to run (default: every one the log supports, but the budget methods, "
        f"which need --budget): {', '.join(METHODS)}",
    )
    parser.add_argument("--max-n", type=int, help="cap on samples per question (default: all)")
    add_grid_argument(
        parser,
        "--fixed-n",
        int,
        "N",
        "N grid of bon/sc/wmv/oracle, ending at --max-n (default: 1..max-n)",
    )
    add_grid_argument(parser, "--s-min", float, "S", "OptScale score thresholds")
    add_grid_argument(parser, "--alpha", float, "A", "OptScale target probabilities")
    add_grid_argument(parser, "--min-samples", int, "M", "OptScale minimum samples m")
    add_grid_argument(parser, "--peek", int, "K", "optscale0-peek: samples before its single fit")
    add_grid_argument(parser, "--window", int, "W", "ESC window sizes")
    add_grid_argument(parser, "--threshold", float, "T", "Adaptive-Consistency stopping thresholds")
    parser.add_argument(
        "--law",
        nargs="+",
        default=list(_DEFAULTS.law),
        metavar="LAW",
        help="score laws the OptScale methods fit, each reported as its own method "
        "(optscale0[beta], ...): tn (the default: the paper's truncated normal), beta, "
        "tn-atoms, beta-atoms, empirical (DKW band), auto (per question and prefix the "
        "least-AIC parametric law); optscalet runs with tn and tn-atoms only (its prior is "
        "a truncated-normal prior). A law other than tn adds a law column to results.csv",
    )
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
    _add_budget_arguments(parser)


def _add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The budget methods' budgets, objective, waves and unit."""
    from optscale_jax.allocation import OBJECTIVES

    add_grid_argument(
        parser,
        "--budget",
        float,
        "B",
        "mean budgets per question of the budget methods (budget, budget-uniform, "
        "budget-elimination, budget-optscale0, budget-oracle)",
    )
    parser.add_argument(
        "--objective",
        default=_DEFAULTS.objective,
        choices=tuple(OBJECTIVES),
        help="budget: reach (expected questions whose best score reaches --budget-s-min) or "
        "best (expected best scores)",
    )
    parser.add_argument(
        "--wave", type=int, help="budget: samples per wave (default: one per question)"
    )
    parser.add_argument(
        "--budget-unit",
        default=_DEFAULTS.budget_unit,
        choices=BUDGET_UNITS,
        help="count --budget in samples or in tokens (the log's token counts)",
    )
    parser.add_argument(
        "--budget-s-min",
        type=float,
        default=_DEFAULTS.budget_s_min,
        help="score threshold of --objective reach and of budget-elimination",
    )


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """Orders, split, protocol, costs, CIs and the seed."""
    for flag, (kind, help_text) in _EVALUATION_OPTIONS.items():
        default = getattr(_DEFAULTS, _field(flag))
        parser.add_argument(flag, type=kind, default=default, help=help_text)
    # None: ReplayConfig picks dev-test, or kfold:4 with --select ltt.
    parser.set_defaults(split=None)
    parser.add_argument(
        "--protocol",
        default=_DEFAULTS.protocol,
        choices=PROTOCOLS,
        help="released: pick the best cell on the test split itself, "
        "as the paper's code did (labelled released-test-selected)",
    )
    _add_ltt_arguments(parser)


def _add_ltt_arguments(parser: argparse.ArgumentParser) -> None:
    """How settings are chosen, and Learn-then-Test's risk, epsilon and delta."""
    from optscale_jax.calibration import RISKS

    parser.add_argument(
        "--select",
        default=_DEFAULTS.select,
        choices=SELECTIONS,
        help="accuracy: the cheapest setting reaching the reference's accuracy at max-n; "
        "ltt: Learn-then-Test, the cheapest setting certified to keep --risk <= --epsilon "
        "with probability >= 1 - --delta (max-n when none is)",
    )
    parser.add_argument(
        "--risk",
        default=_DEFAULTS.risk,
        choices=tuple(RISKS),
        help="--select ltt: disagree (answer differs from the full budget's; needs answers), "
        "regret (best score lost; needs scores) or accuracy-drop (needs labels)",
    )
    parser.add_argument(
        "--epsilon", type=float, default=_DEFAULTS.epsilon, help="--select ltt: target risk"
    )
    parser.add_argument(
        "--delta", type=float, default=_DEFAULTS.delta, help="--select ltt: error level"
    )


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """The ReplayConfig of parsed arguments; it checks itself (ValueError naming the field,
    which the dispatcher turns into the flag)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(ReplayConfig)}
    values["methods"] = args.methods or DEFAULT_METHODS
    return ReplayConfig(
        **{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
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


def format_table(table: list[dict], cost_unit: str, split: str, reference: str = "BoN") -> str:
    """The terminal summary: one line per method with held-out figures.

    Args:
        table: `ReplayResult.table`.
        cost_unit: "tokens" or "samples".
        split: the reported split's name.
        reference: the reference method's name in messages ("BoN", "SC").
    """
    width = max(15, *(len(t["method"]) for t in table))
    header = (
        f"{'method':<{width}} {'setting':<32} {split + ' accuracy [95% CI]':<32}"
        f" {'samples':>8} {'cost (' + cost_unit + ')':>16} {'saving':>8}"
    )
    lines = [header, "-" * len(header)]
    for t in table:
        low, high = t["ci"]
        setting, saving = _setting_and_saving(t)
        lines.append(
            f"{t['method']:<{width}} {setting:<32} {t['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
            f"{'':<13} {t['mean_samples']:>8.2f} {t['mean_cost']:>16.2f} {saving:>8}"
        )
    if not all(t["qualified"] for t in table):
        lines.append(
            f"* no setting reached {reference}@max_n's selection accuracy: the most accurate one"
        )
    return "\n".join(lines)


def _setting_and_saving(line: dict) -> tuple[str, str]:
    """A table line's setting (shortened; ` *` when it did not meet the rule) and saving."""
    saving = "n/a" if line["saving"] is None else f"{100 * line['saving']:+.1f}%"
    setting = line["setting"] if len(line["setting"]) <= 30 else line["setting"][:27] + "..."
    return setting + ("" if line["qualified"] else " *"), saving


def format_ltt_table(table: list[dict], cost_unit: str, split: str, risk: str) -> str:
    """The terminal summary with `--select ltt`: accuracy, the realised risk against epsilon,
    and the cost, one line per method.

    Args:
        table: `ReplayResult.table` of an LTT replay.
        cost_unit: "tokens" or "samples".
        split: the reported split's name.
        risk: the risk's name.
    """
    header = (
        f"{'method':<15} {'setting':<32} {split + ' accuracy':>15} {'epsilon':>8}"
        f" {risk + ' risk [95% CI]':<28} {'cost (' + cost_unit + ')':>16} {'saving':>8}"
    )
    lines = [header, "-" * len(header)]
    for t in table:
        low, high = t["realised_risk_ci"]
        setting, saving = _setting_and_saving(t)
        risk_text = f"{t['realised_risk']:.3f} [{low:.3f}, {high:.3f}]"
        # NaN on a log without labels.
        accuracy = f"{t['accuracy']:.3f}" if math.isfinite(t["accuracy"]) else "n/a"
        lines.append(
            f"{t['method']:<15} {setting:<32} {accuracy:>15} {t['epsilon']:>8g}"
            f" {risk_text:<28} {t['mean_cost']:>16.2f} {saving:>8}"
        )
    if not all(t["qualified"] for t in table):
        lines.append("* no setting certified (in some split): the full budget max_n was used")
    return "\n".join(lines)


def _ltt_lines(summary: dict) -> list[str]:
    """The certified settings on all questions, and a note when too few questions certify."""
    ltt = summary["ltt"]
    lines = [f"note: {ltt['note']}"] if "note" in ltt else []
    deploy = summary["certified_settings"]
    lines.append(
        f"certified on all {deploy['calibration_questions']} questions "
        f"({ltt['risk']} risk <= {ltt['epsilon']:g}, delta {ltt['delta']:g}):"
    )
    for method, entry in deploy["methods"].items():
        verdict = "certified" if entry["certified"] else "not certified: max_n"
        lines.append(
            f"  {method:<15} {entry['setting']:<32} {verdict} (p = {entry['p_value']:.3g})"
        )
    return lines


def terminal_text(summary: dict, table: list[dict]) -> str:
    """What `optscale replay` prints (and report.md shows): the run, one line per method,
    LTT's certified settings, skipped methods and how savings are measured."""
    lines = [
        f"{summary['log']}: {summary['questions']} questions, max_n={summary['max_n']}, "
        f"{summary['permutations']} orders, split={summary['split']}, "
        f"protocol={summary['protocol']}"
    ]
    reference = METHOD_TABLE[summary["reference"]].reference
    split, cost_unit = summary["reported_split"], summary["cost_unit"]
    if "ltt" in summary:
        lines.append(format_ltt_table(table, cost_unit, split, summary["ltt"]["risk"]))
        lines += _ltt_lines(summary)
    else:
        lines.append(format_table(table, cost_unit, split, reference))
    if "vs_uniform" in summary:
        lines += budget_lines(summary)
    skipped = summary["skipped_methods"]
    lines += [f"skipped {method}: {reason}" for method, reason in skipped.items()]
    if "labels_note" in summary:
        lines.append(f"no labels: {summary['labels_note']}")
    else:
        lines.append(
            f"saving = 1 - cost / (cost fixed-N {reference} needs for the same accuracy "
            "on its envelope)"
        )
    return "\n".join(lines)


def budget_lines(summary: dict) -> list[str]:
    """The budget methods per budget on all questions: accuracy and mean samples (cost), and
    budget's accuracy minus uniform Best-of-N's with its paired bootstrap CI."""
    block = summary["budget"]
    unit = block["unit"]
    methods = list(dict.fromkeys(f["method"] for f in block["figures"]))
    vs_uniform = {entry["budget"]: entry for entry in summary["vs_uniform"]}
    lines = [
        f"at equal budget ({unit} per question, all {block['questions']} questions, "
        f"objective {block['objective']}): accuracy (mean {unit})",
        f"{'budget':>8} " + " ".join(f"{m:>22}" for m in methods) + f" {'budget - uniform':>28}",
    ]
    for budget in dict.fromkeys(f["budget"] for f in block["figures"]):
        at = {f["method"]: f for f in block["figures"] if f["budget"] == budget}
        cells = [
            f"{at[m]['accuracy']:.3f} ({_spent(at[m], unit):.4g})" if m in at else "-"
            for m in methods
        ]
        entry = vs_uniform.get(budget)
        difference = (
            f"{entry['difference']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"
            if entry
            else "-"
        )
        lines.append(f"{budget:>8g} " + " ".join(f"{c:>22}" for c in cells) + f" {difference:>28}")
    lines += [f"{m} {note}" for m, note in block["ceilings"].items()]
    return lines


def _spent(figures: dict, unit: str) -> float:
    return figures["mean_samples"] if unit == "samples" else figures["mean_cost"]


def run(args: argparse.Namespace) -> int:
    """Runs the replay and writes results.csv, summary.json and per_question.csv to --out
    (and certified_setting.json with --select ltt), then report.md with the figures.

    Over several processes (`--num-processes`, `--distributed`) the replay streams: each
    process reads and replays its share of LOG's questions, process 0 alone writes and prints.
    """
    config = config_from_args(args)
    out = pathlib.Path(args.out)
    stream = args.stream or processes.several_processes(args)
    if stream and (args.demo or args.log is None):
        raise ValueError(
            "stream reads LOG (a JSONL or Parquet log), not --demo; a replay over several "
            "processes streams"
        )
    log = None if stream else load_log(args)

    import jax

    # Replay is small next to the fits' cost; float64 keeps it identical to the references.
    jax.config.update("jax_enable_x64", True)
    from optscale_jax import replay
    from optscale_jax.experiments.replay_report import write_report
    from optscale_jax.replay.engine import sharded_over

    explicit = args.methods is not None
    # Each process replays its own share on its own devices: a process-local mesh.
    with sharded_over(processes.join_and_mesh(args, local=True)):
        if stream:
            result = _evaluate_stream(args, config, out)
        else:
            result = replay.evaluate(
                log, config, explicit_methods=explicit, progress=not args.no_progress
            )
    if result is None:  # not process 0
        return 0
    written = _write_results(result, out)
    terminal = terminal_text(result.summary, result.table)
    print(terminal)
    written += write_report(out, terminal, config, result.summary, figures=not args.no_figures)
    print(f"wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0


def _evaluate_stream(args: argparse.Namespace, config: ReplayConfig, out: pathlib.Path):
    """`replay.evaluate_stream` of LOG (a JSONL or Parquet log)."""
    from optscale_jax.replay.stream import evaluate_stream

    return evaluate_stream(
        args.log, config, out / "outcomes",
        args.block_questions, args.format, args.methods is not None, not args.no_progress,
    )  # fmt: skip


def _write_results(result, out: pathlib.Path) -> list[pathlib.Path]:
    """results.csv, summary.json, per_question.csv (and certified_setting.json with LTT)."""
    from optscale_jax.io import write_csv, write_json

    written = [
        write_csv(result.rows, out / "results.csv", result.columns),
        write_json(result.summary, out / "summary.json"),
        write_csv(result.per_question, out / "per_question.csv", PER_QUESTION_COLUMNS),
    ]
    if "certified_settings" in result.summary:
        certified = result.summary["certified_settings"]
        written.append(write_json(certified, out / CERTIFIED_SETTING_FILE))
    return written
