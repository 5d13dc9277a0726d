"""`optscale diagnose`: does each score law fit a log? Per question: fit, AIC, bootstrap test.

Example:
    optscale diagnose --demo --out runs/diagnose
    optscale diagnose pool.json --format optscale-pool --prompts math500.jsonl --out runs/diag
    optscale plot diagnose --in runs/diagnose --out runs/diagnose

Every law of `--laws` (default: the parametric laws of `optscale_jax.laws.LAWS`) is fitted to
every question of LOG (any format `optscale replay` reads; the log needs verifier scores),
tested with the Cramer-von Mises statistic and a parametric-bootstrap p-value (`--bootstrap`
refits per question, all questions in one batched call per law;
`optscale_jax.laws.goodness_of_fit`), and compared by AIC. Writes to `--out`:

* `diagnose.csv`: one row per (question, law), columns `DIAGNOSE_COLUMNS`: `n` scores,
  `loglik` (the total log-likelihood of the question's scores at the fitted parameters),
  `aic` = 2 k - 2 loglik, the CvM statistic `gof_stat` and its p-value `gof_p`, and the
  fitted point masses `mass0`, `mass1` at 0 and 1. A continuous law (tn, beta) cannot
  produce an exact 0 or 1: where a question has one, its loglik is `-inf` and its AIC `inf`.
* `summary.json`: per law the fraction of questions rejected at 5% (`gof_p <= 0.05`), the
  fraction where it has the best AIC (the least finite AIC; a tie goes to the law listed
  first; a question where every AIC is inf has no best law: `no_best_aic`), and the count
  of each fit status; the questions whose scores are all equal (`all_equal_ids`: a
  documented degenerate fit, status AT_BOUND, never NaN; equal scores inside (0, 1) are
  ties, which a continuous part gives with probability 0, so every law is rejected there,
  while the atom laws fit all-0 or all-1 scores exactly, p = 1); the verdict; the settings.
* `pit.csv`: one row per (question, law, score), columns
  `optscale_jax.figures.registry.DIAGNOSE_PIT_COLUMNS`: the score and its randomised
  probability integral transform under the question's fit (`optscale_jax.laws.pit`), uniform
  on [0, 1] under the true law. It is all `optscale plot diagnose` draws.

The verdict (printed and in summary.json) reads like "the truncated normal is rejected for
100% of questions (beta 100%, tn-atoms 75%, beta-atoms 47%); beta-atoms has the best AIC
for 81%". Every random draw is seeded by `--seed`, per law, so a law's results do not
depend on which other laws are run.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, NamedTuple

import numpy as np

from optscale_jax.experiments.replay_cli import add_log_arguments, load_log

DIAGNOSE_COLUMNS = ("id", "n", "law", "loglik", "aic", "gof_stat", "gof_p", "mass0", "mass1")
REJECTION_LEVEL = 0.05
DEFAULT_BOOTSTRAP = 99
# How the verdict names a law (others by their table name).
_LAW_TITLES = {"tn": "the truncated normal"}


class LawDiagnosis(NamedTuple):
    """One law on every question of the log, as numpy arrays of shape [Q] (pit: [Q, K]).

    Attributes:
        n: scores per question.
        loglik: total log-likelihood of the question's scores at the fit.
        aic: 2 num_params - 2 loglik.
        gof_stat: Cramer-von Mises statistic.
        gof_p: its parametric-bootstrap p-value.
        mass0: fitted point mass at 0.
        mass1: fitted point mass at 1.
        status: `FitStatus` of the fit.
        pit: randomised PIT of every score (NaN where no score).
    """

    n: np.ndarray
    loglik: np.ndarray
    aic: np.ndarray
    gof_stat: np.ndarray
    gof_p: np.ndarray
    mass0: np.ndarray
    mass1: np.ndarray
    status: np.ndarray
    pit: np.ndarray


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the `optscale diagnose` arguments."""
    add_log_arguments(
        parser,
        demo_help="diagnose the GPQA-Diamond generative-verifier log shipped with the package",
    )
    parser.add_argument(
        "--laws",
        nargs="+",
        metavar="LAW",
        help="laws to fit and test (default: tn beta tn-atoms beta-atoms)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        metavar="B",
        help=f"bootstrap refits per question for the p-values (default {DEFAULT_BOOTSTRAP}; "
        "memory ~ B x questions x samples floats)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap and the PIT")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_laws(names: list[str] | None) -> tuple[str, ...]:
    """The laws to diagnose: the parametric laws named (default all of them), in order.

    Raises:
        ValueError: naming `laws`, for an unknown law, a repeated one, or the empirical
            law (no likelihood comparable by AIC, no goodness-of-fit test).
    """
    from optscale_jax import laws

    if names is None:
        return laws.PARAMETRIC_LAWS
    resolved = tuple(law.name for law in laws.get_laws(names, "laws"))
    for name in resolved:
        if name not in laws.PARAMETRIC_LAWS:
            raise ValueError(
                f"laws: the {name} law has no likelihood to compare and no goodness-of-fit "
                f"test (choose from {', '.join(laws.PARAMETRIC_LAWS)})"
            )
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"laws: a law is named twice in {' '.join(resolved)}")
    return resolved


def _check_bootstrap(value: int) -> int:
    if value < 1:
        raise ValueError(f"bootstrap must be an integer >= 1, got {value}")
    return value


def diagnose_law(name: str, scores: np.ndarray, mask: np.ndarray, num_boot: int, seed: int):
    """Fits `name` to every question, tests it and transforms every score (`LawDiagnosis`).

    The random key is `seed` folded with the law's position in `LAWS`, split into the
    bootstrap's key and the PIT's.
    """
    import jax

    from optscale_jax import laws

    fit = laws.fit_all(scores, mask, laws=[name])[name]
    key = jax.random.fold_in(jax.random.key(seed), list(laws.LAWS).index(name))
    gof_key, pit_key = jax.random.split(key)
    test = laws.goodness_of_fit(name, fit.params, scores, mask, key=gof_key, num_boot=num_boot)
    pit = laws.pit(name, fit.params, scores, mask, key=pit_key)
    return LawDiagnosis(
        n=np.asarray(fit.n).astype(np.int64),
        loglik=np.asarray(fit.loglik, np.float64),
        aic=np.asarray(fit.aic, np.float64),
        gof_stat=np.asarray(test.statistic, np.float64),
        gof_p=np.asarray(test.p_value, np.float64),
        mass0=np.asarray(fit.mass0, np.float64),
        mass1=np.asarray(fit.mass1, np.float64),
        status=np.asarray(fit.status).astype(np.int64),
        pit=np.asarray(pit, np.float64),
    )


def best_aic(results: dict[str, LawDiagnosis]) -> np.ndarray:
    """[Q] index (in `results`' order) of the law with the least AIC; -1 where all are inf.

    A tie goes to the law listed first (`argmin`).
    """
    aic = np.stack([result.aic for result in results.values()])
    best = np.argmin(aic, axis=0)
    return np.where(np.isfinite(aic.min(axis=0)), best, -1)


def law_summary(results: dict[str, LawDiagnosis]) -> dict[str, dict[str, Any]]:
    """Per law: the fraction rejected at REJECTION_LEVEL, with the best AIC, fit statuses."""
    from optscale_jax.laws import FitStatus

    best = best_aic(results)
    summary = {}
    for i, (name, result) in enumerate(results.items()):
        statuses = np.bincount(result.status, minlength=len(FitStatus))
        summary[name] = {
            "rejected": float(np.mean(result.gof_p <= REJECTION_LEVEL)),
            "best_aic": float(np.mean(best == i)),
            "fit_status": {status.name: int(statuses[status]) for status in FitStatus},
        }
    return summary


def verdict(per_law: dict[str, dict[str, Any]]) -> str:
    """One sentence: the truncated normal's (else the first law's) rejection rate, the
    others', and the law with the best AIC most often (with two laws or more; a tie goes to
    the law listed first)."""
    lead = "tn" if "tn" in per_law else next(iter(per_law))
    text = (
        f"{_LAW_TITLES.get(lead, lead)} is rejected for {_percent(per_law[lead]['rejected'])} "
        "of questions"
    )
    others = [f"{name} {_percent(v['rejected'])}" for name, v in per_law.items() if name != lead]
    if others:
        text += f" ({', '.join(others)})"
    winner = max(per_law, key=lambda name: per_law[name]["best_aic"])
    if per_law[winner]["best_aic"] == 0:
        text += "; no law has a finite AIC (exact 0s or 1s need an atom law)"
    elif len(per_law) > 1:
        text += f"; {winner} has the best AIC for {_percent(per_law[winner]['best_aic'])}"
    return text


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _all_equal(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[Q] True where a question has scores and they are all the same."""
    high = np.where(mask, scores, -np.inf).max(axis=1)
    low = np.where(mask, scores, np.inf).min(axis=1)
    return mask.any(axis=1) & (high == low)


def _csv_number(value: float) -> float | str:
    """A float cell; infinities written as `inf` / `-inf` (not left empty)."""
    value = float(value)
    return value if np.isfinite(value) else str(value)


def diagnose_rows(ids: list[str], results: dict[str, LawDiagnosis]) -> list[dict[str, Any]]:
    """The rows of diagnose.csv, question by question, laws in order."""
    fields = ("loglik", "aic", "gof_stat", "gof_p", "mass0", "mass1")
    return [
        {
            "id": question_id,
            "n": int(result.n[q]),
            "law": name,
            **{field: _csv_number(getattr(result, field)[q]) for field in fields},
        }
        for q, question_id in enumerate(ids)
        for name, result in results.items()
    ]


def pit_rows(ids: list[str], scores, mask, results: dict[str, LawDiagnosis]) -> list[dict]:
    """The rows of pit.csv: every present score of every question under every law."""
    questions, samples = np.nonzero(mask)
    return [
        {
            "id": ids[q],
            "law": name,
            "sample": int(j),
            "score": float(scores[q, j]),
            "pit": float(result.pit[q, j]),
        }
        for name, result in results.items()
        for q, j in zip(questions.tolist(), samples.tolist(), strict=True)
    ]


def terminal_text(summary: dict[str, Any]) -> str:
    """What `optscale diagnose` prints: the run, one line per law, the verdict."""
    settings = summary["settings"]
    lines = [
        f"{summary['log']}: {summary['questions']} questions, {summary['scores']} scores, "
        f"bootstrap B={settings['bootstrap']}, seed {settings['seed']}",
        f"{'law':<12} {'rejected at 5%':>15} {'best AIC':>9} {'fits at bound':>14}",
    ]
    for name, entry in summary["laws"].items():
        lines.append(
            f"{name:<12} {100 * entry['rejected']:>14.0f}% {100 * entry['best_aic']:>8.0f}%"
            f" {entry['fit_status']['AT_BOUND']:>14}"
        )
    if summary["all_equal_ids"]:
        lines.append(
            f"{len(summary['all_equal_ids'])} question(s) with all scores equal: degenerate "
            "fits (status AT_BOUND)"
        )
    if 1.0 / (settings["bootstrap"] + 1) > REJECTION_LEVEL:
        lines.append(
            f"note: with B={settings['bootstrap']} the least p-value is "
            f"{1 / (settings['bootstrap'] + 1):.3f} > {REJECTION_LEVEL}: nothing can be rejected"
        )
    lines.append(summary["verdict"])
    return "\n".join(lines)


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    # Shown only past 2 s: a small log finishes without a bar.
    return tqdm(total=total, unit="law", desc="diagnose", file=sys.stderr, delay=2.0,
                disable=disable, dynamic_ncols=True)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Diagnoses the log and writes diagnose.csv, summary.json and pit.csv to --out."""
    names = check_laws(args.laws)
    num_boot = _check_bootstrap(args.bootstrap)
    log = load_log(args)
    if log.scores is None:
        raise ValueError(
            f"LOG {log.source}: has no scores (a log for voting only); diagnose fits score laws "
            "to verifier scores"
        )
    import jax

    # Fits in float64, the log's precision, as `optscale replay` does.
    jax.config.update("jax_enable_x64", True)

    results = {}
    with _progress(len(names), args.no_progress) as bar:
        for name in names:
            bar.set_postfix_str(name)
            results[name] = diagnose_law(name, log.scores, log.mask, num_boot, args.seed)
            bar.update()
    summary = _summary(log, results, args, names)
    written = _write(pathlib.Path(args.out), log, results, summary)
    print(terminal_text(summary))
    print(f"wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    print(f"figures: optscale plot diagnose --in {args.out} --out {args.out}", file=sys.stderr)
    return 0


def _summary(log, results: dict[str, LawDiagnosis], args, names) -> dict[str, Any]:
    per_law = law_summary(results)
    all_equal = _all_equal(log.scores, log.mask)
    return {
        "log": log.source,
        "questions": log.num_questions,
        "scores": int(log.mask.sum()),
        "laws": per_law,
        "no_best_aic": float(np.mean(best_aic(results) < 0)),
        "all_equal_ids": [log.ids[q] for q in np.flatnonzero(all_equal)],
        "verdict": verdict(per_law),
        "settings": {
            "laws": list(names),
            "bootstrap": args.bootstrap,
            "seed": args.seed,
            "level": REJECTION_LEVEL,
            "format": "gpqa-genrm" if args.demo else args.format,
            "demo": args.demo,
        },
    }


def _write(out: pathlib.Path, log, results, summary) -> list[pathlib.Path]:
    from optscale_jax.figures.registry import DIAGNOSE_PIT_COLUMNS
    from optscale_jax.io import write_csv, write_json

    return [
        write_csv(diagnose_rows(log.ids, results), out / "diagnose.csv", DIAGNOSE_COLUMNS),
        write_json(summary, out / "summary.json"),
        write_csv(
            pit_rows(log.ids, log.scores, log.mask, results), out / "pit.csv", DIAGNOSE_PIT_COLUMNS
        ),
    ]
