"""`ReplayConfig`: everything that defines a replay, checked once when it is made."""

from __future__ import annotations

import dataclasses
import math
import numbers

from optscale_jax.replay.law_fits import DEFAULT_LAW, check_laws
from optscale_jax.replay.methods import BUDGET_UNITS, DEFAULT_METHODS, METHOD_TABLE, method_entry
from optscale_jax.replay.splits import parse_split

PROTOCOLS = ("heldout", "released")
SELECTIONS = ("accuracy", "ltt")
"""How each method's setting is chosen: the cheapest reaching the reference's accuracy, or
Learn-then-Test (the cheapest certified to keep `risk` below `epsilon` with prob. 1 - delta)."""
DEFAULT_SPLIT = "dev-test"
LTT_DEFAULT_SPLIT = "kfold:4"
"""The split of `select="ltt"` when none is given: 3/4 of the questions calibrate each fold
(LTT certifies nothing on fewer than `calibration.min_calibration_questions` questions, 45 at
epsilon 0.05, delta 0.1; a 50/50 split of the 64-question demo log leaves 32)."""


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Everything that defines a replay (hyper-parameter grids are tuples of values).

    The values are checked when the config is made (ValueError naming the field); what
    depends on the log (which methods it supports, the cap) is checked by `evaluate`.

    Attributes:
        methods: methods to run (subset of `METHODS`; default `DEFAULT_METHODS`, the ones
            that need no budget).
        max_n: cap on samples per question (None: the longest question).
        fixed_n: N grid of the fixed-N methods (None: 1..max_n).
        s_min: OptScale score thresholds.
        alpha: OptScale target probabilities.
        min_samples: OptScale minimum samples m.
        peek: samples seen before the single fit of `optscale0-peek`.
        window: ESC window sizes.
        threshold: Adaptive-Consistency stopping thresholds.
        prior: OptScalet prior: "log", "eb", a JSONL path of {id, mu, sigma}, or "mu,sigma";
            None picks "log" when every question has one, else "eb".
        prior_scale: standard deviations of the Gaussian priors on (mu, sigma); the "eb"
            prior brings its own.
        permutations: sample orders per question.
        split: "dev-test", "kfold:K" or "none"; None: "dev-test", or `LTT_DEFAULT_SPLIT`
            with `select="ltt"` (the field holds the resolved value).
        protocol: "heldout" (select on dev) or "released" (best cell on the test split).
        tolerance: selection rule slack below the reference method's accuracy at max_n.
        select: "accuracy" (the cheapest setting reaching the reference's accuracy at max_n)
            or "ltt" (Learn-then-Test, `optscale_jax.calibration`).
        risk: the risk LTT controls: a name of `optscale_jax.calibration.RISKS`.
        epsilon: LTT's target risk, in (0, 1).
        delta: LTT's error level, in (0, 1).
        verifier_cost_factor: verifier cost per generated token (or per sample).
        bootstrap: bootstrap resamples for the CIs.
        seed: seeds the orders, the split and the bootstrap (an integer >= 0).
        budget: mean budgets per question of the budget methods (`BUDGET_METHODS`).
        objective: the allocation's objective, "reach" or "best" (`optscale_jax.allocation`).
        wave: samples per wave of the allocation (None: one per question of the set).
        budget_unit: "samples" or "tokens" (the log's tokens x (1 + verifier_cost_factor)).
        budget_s_min: score threshold of `reach` and of the elimination rule.
        law: the score laws the OptScale methods fit (`law_fits`): names of
            `optscale_jax.laws.LAWS` or "auto"; each law is a method family of its own
            (`optscale0[beta]`). The default, tn alone, is the replay without a law.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    max_n: int | None = None
    fixed_n: tuple[int, ...] | None = None
    s_min: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    alpha: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
    min_samples: tuple[int, ...] = (1, 2, 4)
    peek: tuple[int, ...] = (2, 4, 8)
    window: tuple[int, ...] = (2, 3, 4, 5, 8)
    threshold: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    prior: str | None = None
    prior_scale: tuple[float, float] = (0.1, 0.1)
    permutations: int = 10
    split: str | None = None
    protocol: str = "heldout"
    tolerance: float = 0.0
    select: str = "accuracy"
    risk: str = "disagree"
    epsilon: float = 0.05
    delta: float = 0.1
    verifier_cost_factor: float = 0.0
    bootstrap: int = 2000
    seed: int = 0
    budget: tuple[float, ...] = ()
    objective: str = "reach"
    wave: int | None = None
    budget_unit: str = "samples"
    budget_s_min: float = 0.8
    law: tuple[str, ...] = (DEFAULT_LAW,)

    def __post_init__(self) -> None:
        if self.split is None:
            split = LTT_DEFAULT_SPLIT if self.select == "ltt" else DEFAULT_SPLIT
            object.__setattr__(self, "split", split)
        _check_methods(self)
        _check_grids(self)
        _check_evaluation(self)
        _check_budget(self)
        check_laws(self.law, "law")

    @property
    def law_column(self) -> bool:
        """A law other than tn is named: the OptScale settings carry their law (results.csv
        a `law` column, the families are labelled `optscale0[law]`)."""
        return tuple(self.law) != (DEFAULT_LAW,)

    @property
    def spends_budget(self) -> bool:
        """A budget method is among the methods."""
        return any(METHOD_TABLE[method].spends_budget for method in self.methods)

    def grid(self, name: str, max_n: int) -> tuple:
        """The values of the grid field `name`; `fixed_n` unset (or empty) is 1..max_n."""
        if name == "fixed_n" and not self.fixed_n:
            return tuple(range(1, max_n + 1))
        return tuple(getattr(self, name))


def _check_methods(config: ReplayConfig) -> None:
    for method in config.methods:
        for _, grid in method_entry(method).grids:
            if grid != "fixed_n" and not len(getattr(config, grid)):
                raise ValueError(f"{grid} must have at least one value (used by {method})")


def _check_grids(config: ReplayConfig) -> None:
    from optscale_jax import validation

    if config.max_n is not None:
        validation.check_max_n(config.max_n, "max_n")
    validation.check_unit(config.s_min, "s_min")
    validation.check_open_unit(config.alpha, "alpha")
    validation.check_open_unit(config.threshold, "threshold")
    for name in ("min_samples", "peek", "window"):
        validation.check_max_n(getattr(config, name), name)
    if config.fixed_n is not None:
        validation.check_max_n(config.fixed_n, "fixed_n")
        if sorted(set(config.fixed_n)) != list(config.fixed_n):
            raise ValueError("fixed_n must be strictly increasing")


def _check_evaluation(config: ReplayConfig) -> None:
    from optscale_jax import validation

    for name in ("permutations", "bootstrap"):
        validation.check_max_n(getattr(config, name), name)
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    for name in ("tolerance", "verifier_cost_factor"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if len(config.prior_scale) != 2 or not all(
        math.isfinite(s) and s > 0 for s in config.prior_scale
    ):
        raise ValueError(f"prior_scale must be two positive numbers, got {config.prior_scale}")
    kind, _ = parse_split(config.split)
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected heldout or released, got {config.protocol!r}")
    _check_selection(config)
    if config.protocol == "released" and kind == "kfold":
        raise ValueError(
            "protocol released selects on the test split: split must be dev-test or none"
        )


def _check_selection(config: ReplayConfig) -> None:
    from optscale_jax import validation
    from optscale_jax.calibration import RISKS

    if config.select not in SELECTIONS:
        raise ValueError(f"select: expected accuracy or ltt, got {config.select!r}")
    if config.risk not in RISKS:
        raise ValueError(f"risk: unknown risk {config.risk!r} (choose from {', '.join(RISKS)})")
    validation.check_open_unit(config.epsilon, "epsilon")
    validation.check_open_unit(config.delta, "delta")
    if config.select == "ltt" and config.protocol == "released":
        raise ValueError(
            "select ltt certifies on the selection questions: protocol must be heldout"
        )


def _check_budget(config: ReplayConfig) -> None:
    """The budget methods' options (what depends on the log is checked by `evaluate`)."""
    from optscale_jax import allocation, validation

    budgets = config.budget
    if len(budgets):
        validation.check_finite(budgets, "budget")
    if any(b <= 0 for b in budgets):
        raise ValueError(f"budget must be > 0, got {list(budgets)}")
    if config.objective not in allocation.OBJECTIVES:
        raise ValueError(
            f"objective: unknown objective {config.objective!r} "
            f"(choose from {', '.join(allocation.OBJECTIVES)})"
        )
    wave = config.wave
    integer = isinstance(wave, numbers.Integral) and not isinstance(wave, bool)
    if wave is not None and not (integer and wave >= 1):
        raise ValueError(f"wave must be an integer >= 1, got {wave!r}")
    if config.budget_unit not in BUDGET_UNITS:
        raise ValueError(
            f"budget_unit: expected {' or '.join(BUDGET_UNITS)}, got {config.budget_unit!r}"
        )
    validation.check_unit(config.budget_s_min, "budget_s_min")
    if config.spends_budget and config.select == "ltt":
        raise ValueError(
            "select: the budget methods are compared at equal budget by accuracy: use "
            "select='accuracy' with them"
        )
