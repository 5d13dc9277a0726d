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

`ReplayConfig` (config) checks its values once when it is made; OptScalet's prior comes from
`resolve_prior` (priors). All work is batched over permutations and questions; Python loops
run only over methods and hyper-parameter values. OptScale fits every prefix of every
ordered question once (`policies.prefix_fits`), and the (s_min, alpha, m) grid reuses those
fits: log F(s_min) once per s_min, N* per alpha elementwise, the stop per m elementwise.
"""

from optscale_jax.replay.certified import (
    CERTIFIED_SETTING_FILE,
    loop_values,
    read_certified_setting,
)
from optscale_jax.replay.config import LTT_DEFAULT_SPLIT, SELECTIONS, ReplayConfig
from optscale_jax.replay.engine import check_risks, run_methods
from optscale_jax.replay.evaluation import (
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
)
from optscale_jax.replay.methods import (
    HYPER_PARAMETERS,
    METHOD_TABLE,
    METHODS,
    Decisions,
    Method,
    MethodInputs,
    Setting,
    full_budget_setting,
    ltt_order,
    optscale_decisions,
)
from optscale_jax.replay.orders import Outcomes, Replayed, outcome_at, outcomes, permute
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

__all__ = [
    "CERTIFIED_SETTING_FILE",
    "HYPER_PARAMETERS",
    "LTT_DEFAULT_SPLIT",
    "LTT_RESULT_COLUMNS",
    "METHODS",
    "METHOD_TABLE",
    "PER_QUESTION_COLUMNS",
    "RELEASED_LABEL",
    "RESULT_COLUMNS",
    "SELECTIONS",
    "Decisions",
    "Figures",
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
    "check_log",
    "check_risks",
    "evaluate",
    "full_budget_setting",
    "loop_values",
    "ltt_order",
    "make_splits",
    "optscale_decisions",
    "outcome_at",
    "outcomes",
    "parse_split",
    "permute",
    "read_certified_setting",
    "read_prior_file",
    "reference_cost_at_accuracy",
    "reference_method",
    "resolve_prior",
    "run_methods",
    "select_certified",
    "select_setting",
    "top_score_ties",
]
