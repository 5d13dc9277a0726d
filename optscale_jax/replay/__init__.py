"""Replay a logged run with every stopping method, and evaluate it fairly.

Data flow (each arrow one function, each module one step):

    Log -> `permute` (orders: R seeded sample orders per question, arrays [R, Q, K])
        -> `run_methods` (engine: every method of `METHOD_TABLE` (methods) x its settings:
           per question accuracy, samples and cost, averaged over the R orders: `Outcomes`,
           arrays [S, Q])
        -> `make_splits` (splits: dev/test, K folds, or none)
        -> `select_setting` (selection: per method, chosen on the selection questions only)
        -> `bootstrap_ci`, `reference_cost_at_accuracy` (selection: CIs over questions;
           equal-accuracy cost on the reference method's envelope)
        -> `evaluate` (evaluation: result rows, summary, per-question rows).

With `ReplayConfig(select="ltt")` the engine also computes each setting's loss against the
full budget (`run_methods(risks=...)`, `outcome_at`), each method's settings are chosen by
Learn-then-Test along a data-independent order (`ltt_order`, `select_certified`), and the
settings certified on the whole log are written for live runs (certified: `CERTIFIED_SETTING_FILE`,
`read_certified_setting`, `loop_values`).

The budget methods (`BUDGET_METHODS`, run only when named, with `ReplayConfig.budget`) spend
a mean budget per question across the questions (budget: `budget_summary`, `vs_uniform`).

With `ReplayConfig(law=...)` the OptScale methods fit other score laws than the truncated
normal (law_fits: `beta`, `tn-atoms`, `beta-atoms`, `empirical`, or `auto`, the least-AIC
law on the samples seen so far); each (method, law) is a family of its own, chosen and
reported apart (`optscale0[beta]`), and results.csv gains a `law` column.

A log bigger than memory replays block by block (stream: `evaluate_stream`, the methods that
decide per question): each block's orders from `permute_block`, its outcomes written to
disk, the same evaluation on the files (memory-mapped), the same result files.

`ReplayConfig` (config) checks its values once when it is made; OptScalet's prior comes from
`resolve_prior` (priors). All work is batched over permutations and questions; Python loops
run only over methods and hyper-parameter values. OptScale fits every prefix of every
ordered question once (`policies.prefix_fits`), and the (s_min, alpha, m) grid reuses those
fits: log F(s_min) once per s_min, N* per alpha elementwise, the stop per m elementwise.
"""

from optscale_jax.replay.budget import budget_summary, question_groups
from optscale_jax.replay.certified import (
    CERTIFIED_SETTING_FILE,
    loop_values,
    read_certified_setting,
)
from optscale_jax.replay.config import LTT_DEFAULT_SPLIT, SELECTIONS, ReplayConfig
from optscale_jax.replay.engine import check_risks, run_methods
from optscale_jax.replay.evaluation import (
    BUDGET_RESULT_COLUMNS,
    LTT_RESULT_COLUMNS,
    PER_QUESTION_COLUMNS,
    RELEASED_LABEL,
    RESULT_COLUMNS,
    Figures,
    ReplayResult,
    check_log,
    evaluate,
    reference_method,
    top_score_ties,
    with_law_column,
)
from optscale_jax.replay.law_fits import AUTO, DEFAULT_LAW, PRIOR_LAWS, law_choices
from optscale_jax.replay.methods import (
    BUDGET_METHODS,
    BUDGET_PARAMETER,
    BUDGET_UNITS,
    DEFAULT_METHODS,
    HYPER_PARAMETERS,
    LAW_PARAMETER,
    METHOD_TABLE,
    METHODS,
    BudgetOptions,
    Decisions,
    Method,
    MethodInputs,
    Setting,
    full_budget_setting,
    ltt_order,
    optscale_decisions,
)
from optscale_jax.replay.orders import (
    Outcomes,
    Replayed,
    outcome_at,
    outcomes,
    permute,
    permute_block,
)
from optscale_jax.replay.priors import read_prior_file, resolve_prior
from optscale_jax.replay.selection import (
    best_accuracy,
    bon_cost_at_accuracy,
    bootstrap_ci,
    reference_cost_at_accuracy,
    select_certified,
    select_setting,
)
from optscale_jax.replay.splits import Split, make_splits, parse_split
from optscale_jax.replay.stream import LogOutline, evaluate_stream, streams

__all__ = [
    "AUTO",
    "BUDGET_METHODS",
    "BUDGET_PARAMETER",
    "BUDGET_RESULT_COLUMNS",
    "BUDGET_UNITS",
    "CERTIFIED_SETTING_FILE",
    "DEFAULT_LAW",
    "DEFAULT_METHODS",
    "HYPER_PARAMETERS",
    "LAW_PARAMETER",
    "LTT_DEFAULT_SPLIT",
    "LTT_RESULT_COLUMNS",
    "METHODS",
    "METHOD_TABLE",
    "PER_QUESTION_COLUMNS",
    "PRIOR_LAWS",
    "RELEASED_LABEL",
    "RESULT_COLUMNS",
    "SELECTIONS",
    "BudgetOptions",
    "Decisions",
    "Figures",
    "LogOutline",
    "Method",
    "MethodInputs",
    "Outcomes",
    "ReplayConfig",
    "ReplayResult",
    "Replayed",
    "Setting",
    "Split",
    "best_accuracy",
    "bon_cost_at_accuracy",
    "bootstrap_ci",
    "budget_summary",
    "check_log",
    "check_risks",
    "evaluate",
    "evaluate_stream",
    "full_budget_setting",
    "law_choices",
    "loop_values",
    "ltt_order",
    "make_splits",
    "optscale_decisions",
    "outcome_at",
    "outcomes",
    "parse_split",
    "permute",
    "permute_block",
    "question_groups",
    "read_certified_setting",
    "read_prior_file",
    "reference_cost_at_accuracy",
    "reference_method",
    "resolve_prior",
    "run_methods",
    "select_certified",
    "select_setting",
    "streams",
    "top_score_ties",
    "with_law_column",
]
