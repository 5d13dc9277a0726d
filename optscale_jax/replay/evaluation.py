"""`evaluate`: replay every method, choose each one's setting fairly, and report it.

The steps, each one function: `check_log` (what the log supports) -> `permute` ->
`run_methods` -> `_choose_settings` (per method and split, on the selection questions) ->
`_setting_rows` (every setting on every question set) and `_held_out` (the chosen settings
on the reported questions) -> `_add_savings` (equal-accuracy cost on the reference method's
envelope) -> `_summary`. Every row of results.csv is made by `_result_row`.

A log without labels (no `correct`, no `gold`) replays only with `select="ltt"` and a
label-free risk (disagree, regret): its accuracy is NaN (empty in results.csv, null in
summary.json), and savings at equal accuracy are not computed.

With `select="ltt"` the settings are chosen by Learn-then-Test (`_choose_certified`: the
cheapest setting certified to keep `risk` below `epsilon` with probability 1 - delta, the
full budget n = max_n when none is), every figure gains the realised risk with its
bootstrap CI, each method's summary entry its `guarantee`, and the summary the settings LTT
certifies on every question of the log (`certified_settings`, the ones to deploy).

With a budget method (`budget`, its baselines and ceiling), results.csv gains the `budget`
column (`BUDGET_RESULT_COLUMNS`), and the summary the figures of every budget method on all
questions per budget (`budget`) and `vs_uniform` (budget: `budget_summary`).

With a score law other than tn (`ReplayConfig.law`), every (OptScale method, law) is a
family of its own (`Setting.family`, e.g. `optscale0[beta]`): chosen, summarised and written
apart (the `method` column of results.csv and per_question.csv holds the family), and
results.csv gains the `law` column (`with_law_column`; empty on the other methods' rows).
OptScalet runs only with the laws its truncated-normal prior is a prior of (tn, tn-atoms):
its other families are skipped, or an error when the methods were named.

The reference method (the first of the table's fixed-N references that the log supports:
Best-of-N, or self-consistency on a log without scores) gives the selection rule's target
(its accuracy at max_n) and the curve that savings are measured against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from optscale_jax.replay.budget import (
    CEILING_NOTE,
    budget_summary,
    check_budget_log,
    question_groups,
    with_compared,
)
from optscale_jax.replay.config import ReplayConfig
from optscale_jax.replay.engine import _run_methods, check_risks
from optscale_jax.replay.law_fits import PRIOR_LAWS
from optscale_jax.replay.methods import (
    BUDGET_PARAMETER,
    HYPER_PARAMETERS,
    LAW_PARAMETER,
    METHOD_TABLE,
    Setting,
    ltt_order,
    method_entry,
    method_laws,
)
from optscale_jax.replay.orders import Outcomes, permute
from optscale_jax.replay.priors import resolve_prior
from optscale_jax.replay.selection import (
    best_accuracy,
    bootstrap_ci,
    reference_cost_at_accuracy,
    select_certified,
    select_setting,
)
from optscale_jax.replay.splits import Split, make_splits, parse_split

RESULT_COLUMNS = (
    "method",
    "split",
    "setting",
    "max_n",
    *HYPER_PARAMETERS,
    "prior",
    "accuracy",
    "ci_low",
    "ci_high",
    "mean_samples",
    "mean_cost",
    "cost_ci_low",
    "cost_ci_high",
    "cost_unit",
    "selected",
)
LTT_RESULT_COLUMNS = (*RESULT_COLUMNS, "risk", "risk_ci_low", "risk_ci_high")
"""results.csv with `select="ltt"`: the realised loss of each row and its bootstrap CI."""
_AFTER_PARAMETERS = RESULT_COLUMNS.index(HYPER_PARAMETERS[-1]) + 1
BUDGET_RESULT_COLUMNS = (
    *RESULT_COLUMNS[:_AFTER_PARAMETERS],
    BUDGET_PARAMETER,
    *RESULT_COLUMNS[_AFTER_PARAMETERS:],
)
"""results.csv when a budget method runs: its rows carry their mean budget per question."""
PER_QUESTION_COLUMNS = ("method", "split", "question", "samples", "cost", "correct")
RELEASED_LABEL = "released-test-selected"
NO_LABELS_NOTE = (
    "the log has no labels (no `correct`, no `gold`): accuracy is not reported (empty in "
    "results.csv, null in summary.json) and savings at equal accuracy are not computed"
)
_REPORTED_SPLIT = {"dev-test": "test", "none": "all", "kfold": "crossfit"}


@dataclasses.dataclass
class ReplayResult:
    """What `evaluate` returns: the three result files' contents and the terminal table;
    `columns` are results.csv's (`LTT_RESULT_COLUMNS` with `select="ltt"`)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    per_question: list[dict[str, Any]]
    table: list[dict[str, Any]]
    columns: tuple[str, ...] = RESULT_COLUMNS


class Figures(NamedTuple):
    """Accuracy and cost of one setting (or pooled settings) on some questions, with CIs;
    the mean loss of the LTT risk with its CI (NaN without `select="ltt"`)."""

    accuracy: float
    ci_low: float
    ci_high: float
    mean_samples: float
    mean_cost: float
    cost_ci_low: float
    cost_ci_high: float
    risk: float = math.nan
    risk_ci_low: float = math.nan
    risk_ci_high: float = math.nan


class _Pick(NamedTuple):
    """One method's choice on one split: the setting, whether it met the rule (reached the
    accuracy target, or was certified by LTT), and its LTT p-value (None without LTT)."""

    index: int
    qualified: bool
    p_value: float | None = None


class _Pooled(NamedTuple):
    """A method's chosen settings per question, each question from the split reporting it
    (NaN where no split reports it): arrays [Q], and the reported questions."""

    correct: np.ndarray
    samples: np.ndarray
    cost: np.ndarray
    loss: np.ndarray
    questions: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    """What the evaluation steps share: the replay's outcomes and how to read them."""

    log: Any
    config: ReplayConfig
    reference: str
    max_n: int
    splits: list[Split]
    settings: list[Setting]
    out: Outcomes
    rows_of: dict[str, np.ndarray]
    prior: Sequence[Any] | None
    prior_label: str | None
    boot_seed: int

    @property
    def kind(self) -> str:
        return parse_split(self.config.split)[0]

    @property
    def released(self) -> bool:
        return self.config.protocol == "released"

    @property
    def ltt(self) -> bool:
        return self.config.select == "ltt"

    @property
    def labelled(self) -> bool:
        """The log says which samples are right (else accuracy is unknown)."""
        return self.log.correct is not None

    @property
    def losses(self) -> np.ndarray:
        """[S, Q] losses of the LTT risk."""
        return self.out.losses[self.config.risk]

    @property
    def spends_budget(self) -> bool:
        """A budget method ran."""
        return any(METHOD_TABLE[setting.method].spends_budget for setting in self.settings)

    def method_of(self, family: str) -> str:
        """The method of a family (`Setting.family`: a method, or a method with its law)."""
        return self.settings[int(self.rows_of[family][0])].method

    @property
    def report_name(self) -> str:
        return RELEASED_LABEL if self.released else _REPORTED_SPLIT[self.kind]

    @property
    def cost_unit(self) -> str:
        return "tokens" if self.log.tokens is not None else "samples"

    @property
    def reference_title(self) -> str:
        return METHOD_TABLE[self.reference].reference

    @property
    def reference_at_max_n(self) -> int:
        rows = self.rows_of[self.reference]
        return int(rows[[self.settings[i].n for i in rows].index(self.max_n)])


# --- checks against the log ----------------------------------------------------------------------


def check_log(
    log: Any, methods: Iterable[str], explicit: bool
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Methods the log supports; ValueError for an explicitly requested one it does not."""
    kept, skipped = [], {}
    for method in methods:
        lacking = _lacking(log, method)
        if lacking is None:
            kept.append(method)
            continue
        skipped[method] = f"the log has no {lacking}"
        if explicit:
            raise ValueError(f"methods: {method} needs what the log lacks: {skipped[method]}")
    return tuple(kept), skipped


def _check_labels(log: Any, config: ReplayConfig) -> None:
    """A log without labels has no accuracy: only Learn-then-Test can choose on it."""
    if log.correct is None and config.select != "ltt":
        raise ValueError(
            f"select: the log has no labels (no `correct`, no `gold`): use select='ltt' with "
            f"a label-free risk (disagree or regret), not select={config.select!r}"
        )


def _with_laws(
    log: Any, config: ReplayConfig, methods: Sequence[str], skipped: dict[str, str], explicit: bool
) -> tuple[str, ...]:
    """The methods that run with the score laws of `config.law`: OptScalet only with a law
    its truncated-normal prior is a prior of (`law_fits.PRIOR_LAWS`); the families it cannot
    run are skipped (added to `skipped`), or, when the methods were named, an error.

    Raises:
        ValueError: naming `law`: a law named on a log without scores, or OptScalet named
            with a law that has no prior.
    """
    if config.law_column and log.scores is None:
        raise ValueError(
            f"law: the score laws ({', '.join(config.law)}) are fitted to scores, and the log "
            "has none"
        )
    kept = []
    for method in methods:
        laws = method_laws(method, config.law)
        fits_laws = METHOD_TABLE[method].takes_law
        for law in (law for law in config.law if fits_laws and law not in laws):
            reason = (
                f"no prior for the {law} law: {method}'s priors are truncated-normal (mu, sigma) "
                f"priors, priors of {' and '.join(PRIOR_LAWS)} only"
            )
            if explicit:
                raise ValueError(f"law: {reason} (use optscale0 with {law})")
            skipped[Setting(method, law=law).family] = reason
        if laws:
            kept.append(method)
    return tuple(kept)


def _lacking(log: Any, method: str) -> str | None:
    """The first log field that `method` needs and the log lacks, or None."""
    return next((need for need in method_entry(method).needs if getattr(log, need) is None), None)


def reference_method(log: Any) -> str:
    """The reference of the selection rule and the savings: the first fixed-N reference
    method of the table that the log supports (bon; sc on a log without scores)."""
    for name, method in METHOD_TABLE.items():
        if method.reference is not None and _lacking(log, name) is None:
            return name
    references = [name for name, method in METHOD_TABLE.items() if method.reference]
    raise ValueError(f"methods: the log supports no reference method ({', '.join(references)})")


def _check_reference(log: Any, methods: Sequence[str]) -> str:
    reference = reference_method(log)
    if reference not in methods:
        raise ValueError(
            f"methods must include {reference}: "
            "the selection rule and the savings are relative to it"
        )
    return reference


def _max_n(log: Any, config: ReplayConfig) -> int:
    """The cap: `config.max_n`, at most the longest question; the fixed-N grid ends there."""
    longest = np.asarray(log.mask).shape[1]
    # No question has more than `longest` samples: a larger cap changes nothing.
    max_n = longest if config.max_n is None else min(int(config.max_n), longest)
    if max(config.grid("fixed_n", max_n)) != max_n:
        raise ValueError(f"fixed_n: the grid must end at max_n ({max_n})")
    return max_n


# --- evaluate ------------------------------------------------------------------------------------


def evaluate(
    log: Any, config: ReplayConfig, explicit_methods: bool = False, progress: bool = True
) -> ReplayResult:
    """Replays every method over R orders and evaluates it under the configured protocol.

    Args:
        log: an `optscale_jax.logs.Log`.
        config: the replay configuration (checked when it was made).
        explicit_methods: the user named the methods (unsupported ones are an error rather
            than skipped).
        progress: show progress bars.

    Returns:
        ReplayResult.
    """
    run, skipped, diagnostics = _replay(log, config, explicit_methods, progress)
    return evaluate_run(run, skipped, diagnostics)


def evaluate_run(
    run: _Evaluation, skipped: dict[str, str], diagnostics: dict[str, Any]
) -> ReplayResult:
    """The evaluation of replayed outcomes: selection, result rows, summary, per question.

    Args:
        run: the replay's outcomes and how to read them (`_replay`, or the streamed replay's).
        skipped: skipped methods -> why.
        diagnostics: the methods' diagnostics.

    Returns:
        ReplayResult.
    """
    config = run.config
    choices = _choose_settings(run)
    rows = _setting_rows(run, choices)
    held_out, pooled_rows, per_question = _held_out_results(run, choices)
    _add_savings(run, held_out)
    summary = _summary(run, held_out, skipped, diagnostics)
    columns = RESULT_COLUMNS
    if run.spends_budget:
        summary["budget"], summary["vs_uniform"] = budget_summary(
            run.settings, run.out, run.config, run.boot_seed
        )
        columns = BUDGET_RESULT_COLUMNS
    elif run.ltt:
        summary["certified_settings"] = certified_settings(run)
        columns = LTT_RESULT_COLUMNS
    if config.law_column:
        columns = with_law_column(columns)
    table = _table(run, held_out)
    return ReplayResult(rows + pooled_rows, summary, per_question, table, columns)


def with_law_column(columns: tuple[str, ...]) -> tuple[str, ...]:
    """results.csv's columns with `law` after `method` (a replay that names a law other
    than tn; rows of methods without a law leave it empty)."""
    at = columns.index("method") + 1
    return (*columns[:at], LAW_PARAMETER, *columns[at:])


def _replay(
    log: Any, config: ReplayConfig, explicit_methods: bool, progress: bool
) -> tuple[_Evaluation, dict[str, str], dict[str, Any]]:
    """Checks the log, draws the orders and splits, runs every method x setting.

    Returns:
        (the evaluation's shared state, skipped methods -> why, diagnostics).
    """
    plan = prepare(log, config, explicit_methods)
    risks, max_n, methods, skipped, reference = plan[:5]
    order_seed, boot_seed, splits = plan[5:]
    prior = prior_label = None
    if any(METHOD_TABLE[m].uses_prior for m in methods):
        *prior, prior_label = resolve_prior(
            log, config.prior, [s.select for s in splits], [s.report for s in splits],
            tuple(config.prior_scale),
        )  # fmt: skip
    replayed = permute(log, config.permutations, order_seed, config.verifier_cost_factor)
    groups = question_groups(splits, len(log.ids))
    settings, out, diagnostics = _run_methods(
        replayed, config, max_n, prior, progress, methods, risks, groups
    )
    diagnostics["questions_with_tied_top_answers"] = top_score_ties(log)
    run = evaluation_state(
        log, config, reference, max_n, splits, settings, out, prior, prior_label, boot_seed
    )
    return run, skipped, diagnostics


def prepare(log: Any, config: ReplayConfig, explicit_methods: bool) -> tuple:
    """Checks the log against the config; draws the seeds and the splits.

    Args:
        log: a `Log`, or any object with its fields (`ids`, `mask` of K columns, and each
            optional field None or not): the checks read which fields exist and K only.
        config: the replay configuration.
        explicit_methods: as in `evaluate`.

    Returns:
        (risks, max_n, methods, skipped, reference, order_seed, boot_seed, splits).
    """
    risks = (config.risk,) if config.select == "ltt" else ()
    check_risks(log, risks, "risk")
    _check_labels(log, config)
    max_n = _max_n(log, config)
    check_budget_log(log, config, config.methods, max_n)
    methods, skipped = check_log(log, with_compared(config.methods), explicit_methods)
    if not methods:
        raise ValueError("methods: no method can run on this log")
    reference = _check_reference(log, methods)
    methods = _with_laws(log, config, methods, skipped, explicit_methods)
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    order_seed, split_seed, boot_seed = (int(s.generate_state(1)[0]) for s in seeds)
    splits = make_splits(len(log.ids), config.split, split_seed)
    return risks, max_n, methods, skipped, reference, order_seed, boot_seed, splits


def evaluation_state(
    log: Any,
    config: ReplayConfig,
    reference: str,
    max_n: int,
    splits: list[Split],
    settings: list[Setting],
    out: Outcomes,
    prior: Sequence[Any] | None,
    prior_label: str | None,
    boot_seed: int,
) -> _Evaluation:
    """What the evaluation steps share, with each family's rows of the settings."""
    families = dict.fromkeys(setting.family for setting in settings)
    rows_of = {f: np.array([i for i, s in enumerate(settings) if s.family == f]) for f in families}
    return _Evaluation(
        log, config, reference, max_n, splits, settings, out, rows_of, prior, prior_label,
        boot_seed,
    )  # fmt: skip


# --- selection -----------------------------------------------------------------------------------


def _choose_settings(run: _Evaluation) -> dict[str, list[_Pick]]:
    """Per method, per split: the chosen setting and whether it met the rule."""
    return {
        method: [_choose(run, rows, split) for split in run.splits]
        for method, rows in run.rows_of.items()
    }


def _choose(run: _Evaluation, rows: np.ndarray, split: Split) -> _Pick:
    """One method's setting for one split: held out, the cheapest reaching the reference's
    accuracy at max_n on the selection questions (or certified by LTT); released, the best
    on the test split."""
    if run.ltt:
        return _choose_certified(run, rows, split.select)
    questions = split.report if run.released else split.select
    accuracy = run.out.correct[rows][:, questions].mean(-1)
    cost = run.out.cost[rows][:, questions].mean(-1)
    if run.released:
        return _Pick(int(rows[best_accuracy(accuracy, cost)]), True)
    target = float(run.out.correct[run.reference_at_max_n, questions].mean())
    index, qualified = select_setting(accuracy, cost, target, run.config.tolerance)
    return _Pick(int(rows[index]), qualified)


def _choose_certified(run: _Evaluation, rows: np.ndarray, questions: np.ndarray) -> _Pick:
    """LTT on `questions`: the cheapest certified setting of one method, else n = max_n."""
    order = ltt_order([run.settings[i] for i in rows], run.max_n)
    losses = run.losses[rows][:, questions]
    cost = run.out.cost[rows][:, questions].mean(-1)
    pick = select_certified(losses, cost, order, run.config.epsilon, run.config.delta)
    return _Pick(int(rows[pick.index]), pick.certified, pick.p_value)


def _selection_note(run: _Evaluation, picks: list[_Pick]) -> str:
    qualified = all(pick.qualified for pick in picks)
    if run.ltt:
        config = run.config
        target = (
            f"{config.risk} risk <= {config.epsilon:g} with probability >= {1 - config.delta:g}"
        )
        if qualified:
            return f"Learn-then-Test: the cheapest setting certified ({target})"
        certified = sum(pick.qualified for pick in picks)
        return (
            f"Learn-then-Test certified no setting ({target}) in {len(picks) - certified} of "
            f"{len(picks)} split(s): fell back to the full budget n={run.max_n} there"
        )
    if run.released:
        return "best accuracy on the test split itself (released protocol, not held out)"
    target = f"fixed-N {run.reference_title}'s accuracy at max_n on the selection questions"
    if qualified:
        return f"cheapest setting reaching {target}"
    return f"no setting reached {target}: the most accurate one was taken"


# --- result rows ---------------------------------------------------------------------------------


def _result_row(
    run: _Evaluation,
    method: str,
    split: str,
    setting: str,
    params: dict[str, Any],
    figures: Figures,
    selected: bool,
) -> dict[str, Any]:
    """One row of results.csv (`RESULT_COLUMNS`, `LTT_RESULT_COLUMNS` with LTT)."""
    row = {
        "method": method,
        "split": split,
        "setting": setting,
        "max_n": run.max_n,
        **params,
        "prior": run.prior_label if METHOD_TABLE[run.method_of(method)].uses_prior else None,
        "accuracy": figures.accuracy,
        "ci_low": figures.ci_low,
        "ci_high": figures.ci_high,
        "mean_samples": figures.mean_samples,
        "mean_cost": figures.mean_cost,
        "cost_ci_low": figures.cost_ci_low,
        "cost_ci_high": figures.cost_ci_high,
        "cost_unit": run.cost_unit,
        "selected": selected,
    }
    if run.config.law_column:
        row.setdefault(LAW_PARAMETER, None)  # empty for a method without a law
    if run.ltt:
        row |= {
            "risk": figures.risk,
            "risk_ci_low": figures.risk_ci_low,
            "risk_ci_high": figures.risk_ci_high,
        }
    return row


def _question_sets(run: _Evaluation) -> list[tuple[str, np.ndarray]]:
    """The named question sets that every setting is reported on."""
    first = run.splits[0]
    if run.kind == "dev-test":
        return [("dev", first.select), ("test", first.report)]
    if run.kind == "none":
        return [("all", first.report)]
    everything = np.arange(len(run.log.ids))
    return [("all", everything)] + [(split.name, split.report) for split in run.splits]


def _setting_rows(run: _Evaluation, choices: dict[str, list[_Pick]]) -> list[dict]:
    """Every setting on every question set; with held-out dev-test, the chosen ones are
    marked selected on the test set."""
    marked = set()
    if not run.released and run.kind == "dev-test":
        marked = {picks[0].index for picks in choices.values()}
    rows = []
    for name, questions in _question_sets(run):
        figures = _setting_figures(run, questions)
        for i, setting in enumerate(run.settings):
            selected = name == "test" and i in marked
            rows.append(
                _result_row(
                    run, setting.family, name, setting.label, setting.params(), figures[i], selected
                )
            )
    return rows


def _setting_figures(run: _Evaluation, questions: np.ndarray) -> list[Figures]:
    """Figures of every setting on `questions` (one bootstrap, paired across settings)."""
    index = np.arange(len(run.settings))
    resamples, seed = run.config.bootstrap, run.boot_seed
    accuracy = np.full((3, len(index)), math.nan)
    if run.labelled:
        accuracy = bootstrap_ci(run.out.correct[index][:, questions], resamples, seed)
    cost = bootstrap_ci(run.out.cost[index][:, questions], resamples, seed)
    risk = np.full((3, len(index)), math.nan)
    if run.ltt:
        risk = bootstrap_ci(run.losses[index][:, questions], resamples, seed)
    return [
        Figures(
            *(float(x[i]) for x in accuracy),
            float(run.out.samples[i, questions].mean()) if len(questions) else math.nan,
            *(float(x[i]) for x in cost),
            *(float(x[i]) for x in risk),
        )
        for i in index
    ]


# --- held-out figures ----------------------------------------------------------------------------


def _held_out_results(
    run: _Evaluation, choices: dict[str, list[_Pick]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per method, the chosen settings on the reported questions.

    Returns:
        (summary entry per method, result rows of the pooled folds or the released
        protocol's pick, per-question rows).
    """
    held_out, rows, per_question = {}, [], []
    for method, picks in choices.items():
        pooled = _pool(run, picks)
        figures = _pooled_figures(run, pooled)
        entry = held_out[method] = _held_out(run, picks, pooled, figures)
        if run.kind == "kfold" or run.released:
            rows.append(
                _result_row(
                    run, method, run.report_name, entry["setting"], entry["params"], figures, True
                )
            )
        per_question += _question_rows_of(run, method, picks, pooled)
    return held_out, rows, per_question


def _pool(run: _Evaluation, picks: list[_Pick]) -> _Pooled:
    """Each split's chosen setting on the questions that split reports."""
    num = len(run.log.ids)
    correct, samples, cost, loss = (np.full(num, np.nan) for _ in range(4))
    for pick, split in zip(picks, run.splits, strict=True):
        i, q = pick.index, split.report
        correct[q], samples[q], cost[q] = (
            run.out.correct[i, q],
            run.out.samples[i, q],
            run.out.cost[i, q],
        )
        if run.ltt:
            loss[q] = run.losses[i, q]
    return _Pooled(correct, samples, cost, loss, np.flatnonzero(~np.isnan(samples)))


def _pooled_figures(run: _Evaluation, pooled: _Pooled) -> Figures:
    def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
        stats = bootstrap_ci(values[pooled.questions][None], run.config.bootstrap, run.boot_seed)
        return tuple(float(v[0]) for v in stats)

    samples = float(pooled.samples[pooled.questions].mean())
    accuracy = mean_ci(pooled.correct) if run.labelled else (math.nan,) * 3
    risk = mean_ci(pooled.loss) if run.ltt else ()
    return Figures(*accuracy, samples, *mean_ci(pooled.cost), *risk)


def _held_out(
    run: _Evaluation,
    picks: list[_Pick],
    pooled: _Pooled,
    figures: Figures,
) -> dict[str, Any]:
    """A method's summary entry: its chosen setting(s) and held-out figures."""
    chosen = [run.settings[pick.index] for pick in picks]
    labels = [s.label for s in chosen]
    params = {
        name: getattr(chosen[0], name) if len({getattr(s, name) for s in chosen}) == 1 else None
        for name in chosen[0].params()
    }
    qualified = all(pick.qualified for pick in picks)
    entry = {
        "setting": labels[0] if len(set(labels)) == 1 else " | ".join(labels),
        "params": params,
        "split": run.report_name,
        "questions": len(pooled.questions),
        "accuracy": figures.accuracy,
        "ci": [figures.ci_low, figures.ci_high],
        "mean_samples": figures.mean_samples,
        "mean_cost": figures.mean_cost,
        "cost_ci": [figures.cost_ci_low, figures.cost_ci_high],
        "selection": _selection_note(run, picks),
        "qualified": qualified,
    }
    if METHOD_TABLE[chosen[0].method].ceiling:
        entry["ceiling"] = CEILING_NOTE
    if run.ltt:
        entry["realised_risk"] = figures.risk
        entry["realised_risk_ci"] = [figures.risk_ci_low, figures.risk_ci_high]
        entry["guarantee"] = _guarantee(run, picks)
    return entry


def _guarantee(run: _Evaluation, picks: list[_Pick]) -> dict[str, Any]:
    """What LTT promised for a method: over the splits, the fewest calibration questions,
    whether every split certified its setting, and the largest p-value; then per split."""
    config = run.config
    per_split = [
        {
            "split": split.name,
            "setting": run.settings[pick.index].label,
            "calibration_questions": len(split.select),
            "certified": pick.qualified,
            "p_value": pick.p_value,
        }
        for pick, split in zip(picks, run.splits, strict=True)
    ]
    return {
        "risk": config.risk,
        "epsilon": config.epsilon,
        "delta": config.delta,
        "calibration_questions": min(len(split.select) for split in run.splits),
        "certified": all(pick.qualified for pick in picks),
        "p_value": max(pick.p_value for pick in picks),
        "splits": per_split,
    }


def certified_settings(run: _Evaluation) -> dict[str, Any]:
    """The settings LTT certifies on every question of the log: the ones to deploy.

    The held-out figures check the procedure; these settings come from running it on all
    the calibration data, and carry the guarantee for new questions exchangeable with the
    log's. This is the content of `certified_setting.json` (`optscale sample --setting`).
    """
    everything = np.arange(len(run.log.ids))
    methods = {}
    for method, rows in run.rows_of.items():
        pick = _choose_certified(run, rows, everything)
        setting = run.settings[pick.index]
        methods[method] = {
            "setting": setting.label,
            "params": setting.params(),
            "certified": pick.qualified,
            "p_value": pick.p_value,
        }
    config = run.config
    return {
        "log": str(run.log.source),
        "risk": config.risk,
        "epsilon": config.epsilon,
        "delta": config.delta,
        "calibration_questions": len(everything),
        "max_n": run.max_n,
        "methods": methods,
    }


def _question_rows_of(
    run: _Evaluation, method: str, picks: list[_Pick], pooled: _Pooled
) -> list[dict[str, Any]]:
    """Per-question rows of the chosen setting (dev-test: on dev and test; else the pooled
    held-out folds)."""
    ids = run.log.ids
    if run.kind != "dev-test":
        return _question_rows(method, run.report_name, ids, pooled.questions, *pooled[:3])
    i = picks[0].index
    split = run.splits[0]
    figures = (run.out.correct[i], run.out.samples[i], run.out.cost[i])
    return [
        row
        for name, questions in (("dev", split.select), ("test", split.report))
        for row in _question_rows(method, name, ids, questions, *figures)
    ]


def _question_rows(method, split_name, ids, questions, correct, samples, cost):
    return [
        {
            "method": method,
            "split": split_name,
            "question": ids[q],
            "samples": float(samples[q]),
            "cost": float(cost[q]),
            "correct": float(correct[q]),
        }
        for q in questions
    ]


# --- equal-accuracy savings and the summary ------------------------------------------------------


def _reference_curve(run: _Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy [N], cost [N]) of the reference method over its N grid, on the reported
    questions (all questions for k folds)."""
    questions = run.splits[0].report if run.kind != "kfold" else np.arange(len(run.log.ids))
    rows = run.rows_of[run.reference]
    accuracy = run.out.correct[rows][:, questions].mean(-1)
    cost = run.out.cost[rows][:, questions].mean(-1)
    return accuracy, cost


def _add_savings(run: _Evaluation, held_out: dict[str, dict[str, Any]]) -> None:
    """Adds to each method's entry the reference's cost at its accuracy and the saving
    (None without labels: there is no accuracy to match)."""
    accuracy, cost = _reference_curve(run)
    for figures in held_out.values():
        if not run.labelled:
            figures[f"{run.reference}_cost_at_accuracy"] = None
            figures["saving"] = None
            figures[f"{run.reference}_reaches_accuracy"] = None
            continue
        needed = reference_cost_at_accuracy(cost, accuracy, figures["accuracy"])
        figures[f"{run.reference}_cost_at_accuracy"] = needed
        figures["saving"] = _clean(
            (1.0 - figures["mean_cost"] / needed) if needed and math.isfinite(needed) else None
        )
        figures[f"{run.reference}_reaches_accuracy"] = bool(math.isfinite(needed))


def _clean(x: float | None) -> float | None:
    """Rounds away float noise (a method compared with itself saves exactly 0)."""
    return None if x is None else round(float(x), 12) + 0.0


def _summary(
    run: _Evaluation,
    held_out: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    diagnostics: dict[str, Any],
) -> dict[str, Any]:
    """summary.json."""
    config = run.config
    accuracy, cost = _reference_curve(run)
    summary = {
        "log": str(run.log.source),
        "questions": len(run.log.ids),
        "max_n": run.max_n,
        "max_n_requested": config.max_n,
        "permutations": config.permutations,
        "split": config.split,
        "protocol": RELEASED_LABEL if run.released else "heldout",
        "reported_split": run.report_name,
        "selection_rule": _selection_rule(run),
        "reference": run.reference,
        "seed": config.seed,
        "bootstrap": config.bootstrap,
        "cost_unit": run.cost_unit,
        "verifier_cost_factor": config.verifier_cost_factor,
        "prior": run.prior_label,
        "prior_means": _prior_means(run.prior),
        f"{run.reference}_curve": {
            "split": run.report_name if run.kind != "kfold" else "all",
            "n": [run.settings[i].n for i in run.rows_of[run.reference]],
            "accuracy": accuracy.tolist(),
            "envelope": np.maximum.accumulate(accuracy).tolist(),
            "mean_cost": cost.tolist(),
        },
        "methods": held_out,
        "skipped_methods": skipped,
        "diagnostics": diagnostics,
    }
    if run.kind == "none":
        # The note has read so since the first release; the files keep their wording.
        summary["note"] = "--split none: settings were chosen and reported on the same questions"
    if not run.labelled:
        summary["labels"] = False
        summary["labels_note"] = NO_LABELS_NOTE
    if run.ltt:
        summary["ltt"] = _ltt_summary(run)
    if config.law_column:
        summary["law"] = list(config.law)
    return summary


def _selection_rule(run: _Evaluation) -> str:
    config = run.config
    if run.ltt:
        return (
            f"Learn-then-Test: per method the cheapest setting certified {config.risk} risk "
            f"<= {config.epsilon:g} with probability >= {1 - config.delta:g} on the selection "
            "questions (fixed-sequence testing along a data-independent order, "
            f"Hoeffding-Bentkus p-values); the full budget n={run.max_n} when none is"
        )
    if run.released:
        return "best accuracy on the test split itself (the released code's protocol)"
    return (
        f"cheapest setting with selection accuracy >= fixed-N {run.reference_title} "
        f"at n={run.max_n} - {config.tolerance}"
    )


def _ltt_summary(run: _Evaluation) -> dict[str, Any]:
    """LTT's parameters, and a note when a split has too few questions to certify anything."""
    from optscale_jax.calibration import min_calibration_questions

    config = run.config
    needed = int(min_calibration_questions(config.epsilon, config.delta))
    fewest = min(len(split.select) for split in run.splits)
    entry = {
        "risk": config.risk,
        "epsilon": config.epsilon,
        "delta": config.delta,
        "min_calibration_questions": needed,
        "calibration_questions": fewest,
    }
    if fewest < needed:
        entry["note"] = (
            f"{fewest} selection questions: LTT needs at least {needed} to certify anything "
            f"at epsilon={config.epsilon:g}, delta={config.delta:g}, so every method falls back "
            f"to n={run.max_n} (use more questions, or --split kfold:K with more folds)"
        )
    return entry


def _prior_means(prior: Sequence[Any] | None) -> dict[str, float] | None:
    if prior is None:
        return None
    names = ("mu", "sigma", "mu_scale", "sigma_scale")
    values = (prior[0], prior[1], *prior[2])
    return {name: float(np.mean(v)) for name, v in zip(names, values, strict=True)}


def _table(run: _Evaluation, held_out: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The terminal table: one line per method (with LTT: its risk, CI and epsilon too)."""
    keys = ("setting", "accuracy", "ci", "mean_samples", "mean_cost", "saving", "qualified")
    if run.ltt:
        keys += ("realised_risk", "realised_risk_ci")
    table = [{"method": m, **{k: f[k] for k in keys}} for m, f in held_out.items()]
    if run.ltt:
        for line in table:
            line["epsilon"] = run.config.epsilon
    return table


# --- diagnostics ---------------------------------------------------------------------------------


def top_score_ties(log: Any) -> float | None:
    """Fraction of questions where two or more different answers share the top score.

    Then best-of-n's choice among them rests on the tie rule (the sample order).

    Args:
        log: a Log with scores and answers (else None is returned).

    Returns:
        The fraction, or None.
    """
    if log.scores is None or log.answers is None:
        return None
    mask = np.asarray(log.mask)
    top = np.max(np.where(mask, log.scores, -np.inf), axis=1, keepdims=True)
    at_top = np.sort(np.where(mask & (log.scores == top), log.answers, -1), axis=1)
    distinct = (np.diff(at_top, axis=1) != 0) & (at_top[:, 1:] >= 0)
    distinct_count = distinct.sum(1) + (at_top[:, 0] >= 0)
    return float(np.mean(distinct_count >= 2))
