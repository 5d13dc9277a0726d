"""Runs the methods of the table on an ordered log: every method x setting -> `Outcomes`.

Inside `sharded_over(mesh)` the per-question work of every replay run in this context
(`evaluate`, `evaluate_stream`) shards its question axis over the mesh: the prefix fits
and grid cells of every score law, the votes (sc, wmv, esc, asc), best-of-N's running best
and the oracle; not the budget methods' allocations, which share a budget across
questions. The results, and so every file, are bitwise those of one device.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from optscale_jax.replay.config import ReplayConfig
from optscale_jax.replay.law_fits import DEFAULT_LAW
from optscale_jax.replay.methods import (
    LAW_PARAMETER,
    METHOD_TABLE,
    BudgetOptions,
    Decisions,
    MethodInputs,
    Prior,
    Setting,
    full_budget_setting,
    method_laws,
)
from optscale_jax.replay.orders import Outcomes, Replayed, outcome_at, outcomes

# A context, not a config field: the mesh is how to compute, not what (no file records it).
_MESH: contextvars.ContextVar[Any] = contextvars.ContextVar("replay_mesh", default=None)


@contextlib.contextmanager
def sharded_over(mesh: Any) -> Iterator[None]:
    """Replays run inside shard their question axis over `mesh` (a
    `devices.question_mesh`; None: one device, the plain code path)."""
    token = _MESH.set(mesh)
    try:
        yield
    finally:
        _MESH.reset(token)


def run_methods(
    replayed: Replayed,
    config: ReplayConfig,
    max_n: int,
    prior: Prior | None = None,
    progress: bool = True,
    methods: Sequence[str] | None = None,
    risks: Sequence[str] = (),
    groups: np.ndarray | None = None,
) -> tuple[list[Setting], Outcomes, dict[str, Any]]:
    """Every method x setting of `config` on the ordered log.

    Args:
        replayed: the ordered log.
        config: grids (and, unless `methods` is given, the methods).
        max_n: cap on samples.
        prior: for OptScalet, per question (mu, sigma) centres `[Q]` and the prior scales.
        progress: show a tqdm bar on stderr.
        methods: the methods to run (None: `config.methods`); the log must support them.
        risks: names of `optscale_jax.calibration.RISKS` to compute (`Outcomes.losses`).
            With risks, every method's family also holds its full-budget setting
            (n = max_n, the losses' reference and Learn-then-Test's fallback).
        groups: int `[Q]`, the question set each question is reported in: the budget
            methods spend their budget within each set (None: one set).

    A method that fits a score law (`Method.takes_law`) runs once per law of `config.law`
    it can fit (`method_laws`); its settings carry the law when `config.law_column`.

    Returns:
        (settings, outcomes with arrays [S, Q], diagnostics such as fit status counts).

    Raises:
        ValueError: naming `risks` for an unknown risk or one the log cannot give.
    """
    check_risks(replayed, risks, "risks")
    return _run_methods(replayed, config, max_n, prior, progress, methods, tuple(risks), groups)


def check_risks(replayed: Any, risks: Sequence[str], name: str) -> None:
    """Each risk is known and the log (or ordered log) has the field its loss reads.

    Raises:
        ValueError: starting with `name`, e.g. "risk: disagree needs answers ...".
    """
    from optscale_jax.calibration import RISKS

    for risk in risks:
        if risk not in RISKS:
            raise ValueError(f"{name}: unknown risk {risk!r} (choose from {', '.join(RISKS)})")
        needs = RISKS[risk].needs
        if getattr(replayed, needs) is None:
            what = {"answers": "answers", "scores": "scores", "correct": "labels (correct)"}
            raise ValueError(f"{name}: {risk} needs {what[needs]}, and the log has none")


def _run_methods(
    replayed: Replayed,
    config: ReplayConfig,
    max_n: int,
    prior: Prior | None,
    progress: bool,
    methods: Sequence[str] | None,
    risks: tuple[str, ...],
    groups: np.ndarray | None = None,
) -> tuple[list[Setting], Outcomes, dict[str, Any]]:
    """`run_methods` on checked input."""
    import jax.numpy as jnp
    from tqdm import tqdm

    table = {name: METHOD_TABLE[name] for name in (config.methods if methods is None else methods)}
    grids = {
        name: {field: config.grid(source, max_n) for field, source in method.grids}
        for name, method in table.items()
    }
    laws = {name: method_laws(name, config.law) for name in table}
    steps = sum(method.steps(grids[name]) * len(laws[name]) for name, method in table.items())
    bar = tqdm(total=steps, desc="replay", unit="step", disable=not progress, leave=False)
    budget = BudgetOptions(
        config.objective, config.wave, config.budget_unit, config.budget_s_min,
        seed=config.seed, groups=groups,
    )  # fmt: skip
    inputs = MethodInputs(
        replayed, jnp.asarray(replayed.mask), max_n, prior, bar.update, {}, budget,
        mesh=_MESH.get(),
    )  # fmt: skip
    settings: list[Setting] = []
    parts: list[Outcomes] = []
    diagnostics: dict[str, Any] = {}
    for name, method in table.items():
        for law in laws[name]:
            family = Setting(name, law=_tag(law, config)).family
            bar.set_postfix_str(family)
            method_inputs = inputs._replace(
                prior=prior if method.uses_prior else None, law=law or DEFAULT_LAW
            )
            decisions = method.run(method_inputs, grids[name])
            part = None
            if risks:
                full = _full_budget(name, inputs)
                decisions = _with_full_budget(name, decisions, full, max_n)
                part = _losses(replayed, decisions, full, risks)
            law_param = {} if _tag(law, config) is None else {LAW_PARAMETER: law}
            settings += [Setting(name, **params, **law_param) for params in decisions.params]
            parts.append(
                outcomes(replayed, decisions.samples, decisions.chosen)._replace(losses=part)
            )
            diagnostics |= {
                f"{family}_{key}": value for key, value in decisions.diagnostics.items()
            }
    bar.close()
    return settings, _merge(parts, risks), diagnostics


def _tag(law: str | None, config: ReplayConfig) -> str | None:
    """The law a setting carries: its law when the replay names one other than tn
    (`ReplayConfig.law_column`), else None (the settings of a replay without a law)."""
    return law if config.law_column else None


def _merge(parts: list[Outcomes], risks: tuple[str, ...]) -> Outcomes:
    """The methods' outcomes stacked along the settings axis."""
    merged = [np.concatenate([getattr(p, f) for p in parts]) for f in Outcomes._fields[:3]]
    losses = {risk: np.concatenate([p.losses[risk] for p in parts]) for risk in risks}
    return Outcomes(*merged, losses=losses if risks else None)


def _full_budget(name: str, inputs: MethodInputs) -> Decisions:
    """The decision of the method's full budget (its `full_budget` method at n = max_n),
    computed once per full-budget method and kept in `inputs.shared`."""
    full_name = METHOD_TABLE[name].full_budget or name
    key = f"full_budget_{full_name}"
    if key not in inputs.shared:
        quiet = inputs._replace(advance=lambda steps: None, prior=None)
        inputs.shared[key] = METHOD_TABLE[full_name].run(quiet, {"n": (inputs.max_n,)})
    return inputs.shared[key]


def _with_full_budget(name: str, decisions: Decisions, full: Decisions, max_n: int) -> Decisions:
    """The method's decisions with its full-budget setting appended, unless it has one."""
    full_params = full_budget_setting(name, max_n).params()
    if any(Setting(name, **params).params() == full_params for params in decisions.params):
        return decisions
    return decisions._replace(
        params=[*decisions.params, {"n": max_n}],
        samples=np.concatenate([decisions.samples, full.samples]),
        chosen=np.concatenate([decisions.chosen, full.chosen]),
    )


def _losses(
    replayed: Replayed, decisions: Decisions, full: Decisions, risks: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Per risk, each setting's loss against the full budget on the same order: [S, Q]."""
    from optscale_jax.calibration import RISKS

    losses = {}
    for risk in risks:
        needs, loss = RISKS[risk]
        at_stop = outcome_at(replayed, needs, decisions.samples, decisions.chosen)
        at_full = outcome_at(replayed, needs, full.samples, full.chosen)
        losses[risk] = loss(at_stop, at_full)
    return losses
