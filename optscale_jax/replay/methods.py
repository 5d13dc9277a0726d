"""The replay methods: one table, name -> what it needs, its grids, the function that runs it.

Adding a method is one entry in `METHOD_TABLE`: a `Method` that says which log fields it
reads, which `Setting` fields it varies (and which `ReplayConfig` grid gives their values),
how many progress-bar steps it takes, and a function that returns its `Decisions` for every
setting at once. The run functions get input the replay has validated already, so they
call the policies' private, unvalidated bodies (`policies._esc`, `policies._prefix_fits`, ...).
With `MethodInputs.mesh` they call them through `policies._on_mesh`, which shards the
question axis (axis 1 of every `[R, Q, ...]` array) over the devices, bitwise the same;
the budget methods' allocations are not sharded.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from optscale_jax import devices
from optscale_jax.replay.law_fits import DEFAULT_LAW, PRIOR_LAWS
from optscale_jax.replay.orders import Replayed

HYPER_PARAMETERS = ("n", "s_min", "alpha", "m", "w", "threshold", "k")
BUDGET_PARAMETER = "budget"
"""The setting of the budget methods: mean budget per question (samples, or tokens with
`budget_unit="tokens"`). Only their settings carry it (their results.csv rows a `budget`
column), so the files of the other methods stay as they were."""
BUDGET_UNITS = ("samples", "tokens")
LAW_PARAMETER = "law"
"""The score law of the OptScale methods' settings (`ReplayConfig.law`). Settings carry it,
and results.csv has a `law` column, only when a law other than tn is named (the files of a
replay without `law` stay as they were); the other methods' rows leave it empty."""

# Per question prior centres (mu [Q], sigma [Q]) and prior scales ((mu_scale, sigma_scale)).
Prior = tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One method with one choice of hyper-parameters (None where one does not apply)."""

    method: str
    n: int | None = None
    s_min: float | None = None
    alpha: float | None = None
    m: int | None = None
    w: int | None = None
    threshold: float | None = None
    k: int | None = None
    budget: float | None = None
    law: str | None = None

    @property
    def family(self) -> str:
        """The method as chosen and reported: its name, with its score law when it carries
        one (`optscale0[beta]`). Each family gets its own setting and summary entry."""
        return self.method if self.law is None else f"{self.method}[{self.law}]"

    @property
    def label(self) -> str:
        parts = [
            f"{name}={getattr(self, name):g}"
            for name in (*HYPER_PARAMETERS, BUDGET_PARAMETER)
            if getattr(self, name) is not None
        ]
        return " ".join(parts) or "-"

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (None where one does not apply), and the budget and the score
        law if it has them."""
        params = {name: getattr(self, name) for name in HYPER_PARAMETERS}
        if self.budget is not None:
            params[BUDGET_PARAMETER] = self.budget
        if self.law is not None:
            params[LAW_PARAMETER] = self.law
        return params


class MethodInputs(NamedTuple):
    """What every run function receives besides its grid.

    Attributes:
        replayed: the ordered log.
        mask: `replayed.mask` as a jax array.
        max_n: cap on samples.
        prior: the OptScalet prior, or None.
        advance: moves the progress bar by a number of steps.
        shared: results one method computes for another (the MLE prefix fits).
        budget: how the budget methods spend their budget (None: as `BudgetOptions()`).
        law: the score law a `takes_law` method fits (a name of `law_fits.law_choices()`).
        mesh: a `devices.question_mesh` that the per-question computations (prefix fits
            of every law, grid cells, votes, running best, oracle) shard their question
            axis over (bitwise the same results), or None: one device.
    """

    replayed: Replayed
    mask: Any
    max_n: int
    prior: Prior | None
    advance: Callable[[int], Any]
    shared: dict[str, Any]
    budget: BudgetOptions | None = None
    law: str = DEFAULT_LAW
    mesh: Any = None


class BudgetOptions(NamedTuple):
    """How the budget methods spend a mean budget per question.

    Attributes:
        objective: the allocation's objective ("reach" or "best", `optscale_jax.allocation`).
        wave: samples per wave of the allocation (None: one per question of the set).
        unit: "samples" or "tokens" (the replay's cost of a sample: tokens x (1 + verifier
            cost factor)).
        s_min: score threshold of `reach` and of the elimination rule.
        m0: samples every question starts with in the allocation.
        seed: seed of the tie rules.
        groups: int `[Q]`, the question set each question is reported in (dev and test, or
            the folds); the budget is spent within each set, so the mean of every reported
            set stays within it. None: one set.
    """

    objective: str = "reach"
    wave: int | None = None
    unit: str = "samples"
    s_min: float = 0.8
    m0: int = 2
    seed: int = 0
    groups: np.ndarray | None = None


class Decisions(NamedTuple):
    """A method's decisions for each of its S settings, on every order and question.

    Attributes:
        params: per setting, its hyper-parameters (`Setting` field -> value).
        samples: int `[S, R, Q]` samples drawn.
        chosen: int `[S, R, Q]` index (in the drawn order) of the returned sample.
        diagnostics: figures for the summary (the engine prefixes their keys with the name).
    """

    params: list[dict[str, Any]]
    samples: np.ndarray
    chosen: np.ndarray
    diagnostics: Mapping[str, Any] = {}


Run = Callable[[MethodInputs, Mapping[str, tuple]], Decisions]


@dataclasses.dataclass(frozen=True)
class Method:
    """One entry of the method table.

    Attributes:
        needs: the `Log` fields it reads ("scores", "answers", "correct").
        grids: its hyper-parameters: (`Setting` field, the `ReplayConfig` grid of its values).
        run: (inputs, grid: `Setting` field -> values) -> Decisions for every setting.
        progress: the `Setting` fields whose grid sizes multiply to its progress-bar steps.
        uses_prior: it takes the per-question prior (reported next to its results).
        reference: its name in messages ("BoN") if it can be the reference of the selection
            rule and of the savings (a fixed-N method); the first method of the table with a
            reference name that a log supports is that log's reference.
        spends_budget: its settings are mean budgets per question (the `budget` grid): it is
            run only when asked for, and spends at most the budget in every reported set.
        compared_with: the method whose accuracy at the same budget the summary subtracts
            from this one's (`vs_uniform`); it is run along with this one.
        ceiling: it knows each sample's correctness: a bound, not a method.
        budget_units: the units its budget can be counted in (`BUDGET_UNITS`).
        full_budget: the fixed-N method whose decision at n = max_n is this method's
            full-budget outcome (the reference of the Learn-then-Test losses and the fallback
            when no setting is certified): "bon" for score methods, "sc" for vote methods;
            None for a fixed-N method (its own n = max_n).
        ltt_order: settings -> their data-independent order from safest to cheapest (a
            permutation, `optscale_jax.calibration.grid_order` for OptScale); None: by the
            grid's values, largest first (`optscale_jax.calibration.safety_order`).
        takes_law: it fits a score law (`ReplayConfig.law`): it runs once per law, each law
            a family of its own (`Setting.family`).
    """

    needs: tuple[str, ...]
    grids: tuple[tuple[str, str], ...]
    run: Run
    progress: tuple[str, ...] = ()
    uses_prior: bool = False
    reference: str | None = None
    spends_budget: bool = False
    compared_with: str | None = None
    ceiling: bool = False
    budget_units: tuple[str, ...] = BUDGET_UNITS
    full_budget: str | None = None
    ltt_order: Callable[[Sequence[Setting]], np.ndarray] | None = None
    takes_law: bool = False

    def steps(self, grid: Mapping[str, tuple]) -> int:
        """Progress-bar steps of one run on `grid`."""
        return math.prod(len(grid[name]) for name in self.progress)


def method_laws(name: str, laws: Sequence[str]) -> tuple[str | None, ...]:
    """The laws method `name` runs with: each of `laws` that it can fit (OptScalet: those
    its prior is a prior of, `law_fits.PRIOR_LAWS`); (None,) for a method without a law."""
    method = METHOD_TABLE[name]
    if not method.takes_law:
        return (None,)
    return tuple(law for law in laws if not method.uses_prior or law in PRIOR_LAWS)


def method_entry(name: str) -> Method:
    """The table entry of method `name`; ValueError naming `methods` if there is none."""
    if name not in METHOD_TABLE:
        raise ValueError(f"methods: unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHOD_TABLE[name]


# --- fixed N: Best-of-N, votes, the oracle -------------------------------------------------------


def _best_scored(inputs: MethodInputs) -> Any:
    return _running_best(inputs.replayed.scores, inputs.mask, inputs.mesh)


def _running_best(scores: Any, mask: Any, mesh: Any) -> Any:
    """`policies._running_best` of `[R, Q, K]` scores, the questions sharded over `mesh`."""
    from optscale_jax import policies

    return devices.run_on_mesh(policies._running_best, scores, mask, mesh=mesh, axis=1)


def _leading_votes(inputs: MethodInputs, weighted: bool) -> Any:
    from optscale_jax import policies

    replayed = inputs.replayed
    weights = replayed.scores if weighted else None
    return _by_order_chunks(
        policies._vote_leaders, replayed.answers, inputs.mesh,
        replayed.answers, inputs.mask, weights,
    )  # fmt: skip


def _run_fixed_n(
    leaders: Callable[[MethodInputs], Any], inputs: MethodInputs, grid: Mapping[str, tuple]
) -> Decisions:
    """A fixed-N method from its choice after every prefix (`leaders`), for every N."""
    ns = grid["n"]
    per_prefix = np.asarray(leaders(inputs))
    available = inputs.replayed.mask.sum(-1)
    samples = np.minimum(np.asarray(ns)[:, None, None], available[None])
    inputs.advance(1)
    return Decisions([{"n": n} for n in ns], samples, _at_prefix(per_prefix, samples))


def _run_oracle(inputs: MethodInputs, grid: Mapping[str, tuple]) -> Decisions:
    from optscale_jax import policies

    ns = grid["n"]
    decision = devices.run_on_mesh(
        policies._oracle, inputs.replayed.correct, inputs.mask, mesh=inputs.mesh, axis=1,
        out_axis=2, replicated=(np.asarray(ns)[:, None, None],),
    )  # fmt: skip
    inputs.advance(1)
    return Decisions([{"n": n} for n in ns], decision.samples, decision.chosen)


def _at_prefix(per_prefix: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """`per_prefix[..., samples - 1]` for `samples` with extra leading axes (0 -> index 0)."""
    index = np.maximum(samples - 1, 0)[..., None]
    shape = (*samples.shape, per_prefix.shape[-1])
    return np.take_along_axis(np.broadcast_to(per_prefix, shape), index, -1)[..., 0]


# --- adaptive voting: ESC, Adaptive-Consistency --------------------------------------------------


def _esc(inputs: MethodInputs, window: int) -> Any:
    from optscale_jax import policies

    answers = inputs.replayed.answers
    return _by_order_chunks(
        policies._esc, answers, inputs.mesh, answers, inputs.mask, window, inputs.max_n
    )


def _asc(inputs: MethodInputs, threshold: float) -> Any:
    from optscale_jax import policies

    answers = inputs.replayed.answers
    min_samples = 1
    return _by_order_chunks(
        policies._asc, answers, inputs.mesh,
        answers, inputs.mask, threshold, min_samples, inputs.max_n,
    )  # fmt: skip


def _run_each(
    stop: Callable[[MethodInputs, Any], Any],
    name: str,
    inputs: MethodInputs,
    grid: Mapping[str, tuple],
) -> Decisions:
    """A stopping rule with one hyper-parameter `name`, run once per value."""
    decisions = []
    for value in grid[name]:
        decisions.append(stop(inputs, value))
        inputs.advance(1)
    return Decisions(
        [{name: value} for value in grid[name]],
        np.stack([np.asarray(d.samples) for d in decisions]),
        np.stack([np.asarray(d.chosen) for d in decisions]),
    )


# Vote tallies are [R, Q, K, answer codes]; above this many entries, orders go in chunks.
_VOTE_TALLY_BUDGET = 2**25


def _by_order_chunks(policy: Callable, answers: np.ndarray, mesh: Any, *args: Any) -> Any:
    """Runs a private voting policy (`num_codes` keyword) on all orders at once, or in
    chunks of orders if the tallies would be large, the questions sharded over `mesh`
    unless it is None. `args` are the policy's [R, Q, ...] arrays (sliced by order, split
    by question), then its other arguments (passed whole)."""
    import jax

    orders, questions, samples = answers.shape
    codes = max(int(answers.max(initial=-1)) + 1, 1)
    per_order = questions * samples * codes
    chunk = max(1, min(orders, _VOTE_TALLY_BUDGET // per_order))
    split = sum(getattr(arg, "shape", ())[:1] == (orders,) for arg in args)
    run = devices.bound(policy, num_codes=codes)

    def call(arrays):
        return devices.run_on_mesh(run, *arrays, mesh=mesh, axis=1, replicated=args[split:])

    if chunk == orders:
        return call(args[:split])
    parts = [
        jax.device_get(call([arg[start : start + chunk] for arg in args[:split]]))
        for start in range(0, orders, chunk)
    ]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


# --- OptScale ------------------------------------------------------------------------------------


def optscale_decisions(
    replayed: Replayed,
    s_min: Sequence[float],
    alpha: Sequence[float],
    min_samples: Sequence[int] = (1,),
    peek: Sequence[int] = (),
    max_n: int | None = None,
    prior: Prior | None = None,
    on_cell: Callable[[int], None] | None = None,
) -> tuple[list[tuple[float, float, str, int]], np.ndarray, np.ndarray, Any]:
    """OptScale over a (s_min, alpha) x (m | peek) grid: one batched prefix fit, no refits.

    Args:
        replayed: the ordered log (must have scores).
        s_min: thresholds.
        alpha: target probabilities.
        min_samples: m values of the sequential rule (empty: none).
        peek: k values of the released one-fit rule (empty: none).
        max_n: cap.
        prior: OptScalet: per question prior centres (mu [Q], sigma [Q]) and prior scales
            ((mu_scale [Q], sigma_scale [Q])); None for OptScale0 (MLE).
        on_cell: called with the number of (s_min, alpha) cells done, after each s_min.

    Returns:
        (cells, samples [cells, R, Q], chosen [cells, R, Q], prefix fits): see
        `optscale_jax.policies.optscale_grid`; chosen is the best-scored drawn sample.
    """
    from optscale_jax import policies

    if replayed.scores is None:
        raise ValueError("replayed: OptScale needs scores, and the log has none")
    policies._check_grid(replayed.mask, s_min, alpha, min_samples, peek, max_n)
    if prior is not None:
        policies._check_prior(prior[0], prior[1], prior[2])
    fit = _prefix_fits(replayed, prior)
    return _optscale_cells(replayed, fit, s_min, alpha, min_samples, peek, max_n, on_cell)


def _prefix_fits(replayed: Replayed, prior: Prior | None, mesh: Any = None) -> Any:
    """Fits of every prefix of every ordered question: MLE, or MAP with `prior`; the
    question axis sharded over `mesh` unless it is None."""
    import jax.numpy as jnp

    from optscale_jax import policies

    scores, mask = jnp.asarray(replayed.scores), jnp.asarray(replayed.mask)
    arrays: tuple = (scores, mask)
    if prior is not None:
        shape = replayed.mask.shape[:-1]
        prior_mu, prior_sigma, (mu_scale, sigma_scale) = prior
        centre_mu, centre_sigma, scale_mu, scale_sigma = (
            np.broadcast_to(x, shape) for x in (prior_mu, prior_sigma, mu_scale, sigma_scale)
        )
        arrays += (centre_mu, centre_sigma, (scale_mu, scale_sigma))
    # [R, Q, ...] arrays: the questions are axis 1 of every input and output.
    return devices.run_on_mesh(policies._prefix_fits, *arrays, mesh=mesh, axis=1)


def _optscale_cells(replayed, fit, s_min, alpha, min_samples, peek, max_n, on_cell, mesh=None):
    """`optscale_decisions` from prefix fits that are already there; the grid's question
    axis sharded over `mesh` unless it is None."""
    from optscale_jax import policies

    cells, samples = policies._optscale_grid(
        fit, replayed.mask, s_min, alpha, min_samples, peek, max_n, on_cell, mesh, axis=1
    )
    samples = np.asarray(samples)
    chosen = _at_prefix(np.asarray(_running_best(replayed.scores, replayed.mask, mesh)), samples)
    return cells, samples, chosen, fit


def _run_optscale(rule: str, inputs: MethodInputs, grid: Mapping[str, tuple]) -> Decisions:
    """OptScale over its (s_min, alpha, rule) grid: rule "m" (sequential: OptScale0, or
    OptScalet when the inputs carry a prior) or "k" (the released one-fit rule), with the
    inputs' score law (tn: the core's fits and grid, as without a law)."""
    values = {"m": (), "k": (), rule: grid[rule]}
    if inputs.law == DEFAULT_LAW:
        fit = _shared_fit(inputs, inputs.prior)
        cells, samples, chosen, _ = _optscale_cells(
            inputs.replayed, fit, grid["s_min"], grid["alpha"], values["m"], values["k"],
            inputs.max_n, inputs.advance, inputs.mesh,
        )  # fmt: skip
        diagnostics = {}
    else:
        fit = _law_fits(inputs, inputs.law, inputs.prior)
        cells, samples, chosen = _law_cells(inputs, fit, grid, values)
        diagnostics = {} if fit.choice is None else {"law_chosen": _chosen(fit, inputs)}
    params = [{"s_min": s, "alpha": a, rule: value} for s, a, _, value in cells]
    diagnostics = {"fit_status": _status_counts(fit, inputs), **diagnostics}
    return Decisions(params, samples, chosen, diagnostics)


def _law_cells(inputs: MethodInputs, fit: Any, grid: Mapping[str, tuple], values: dict) -> tuple:
    """(cells, samples [cells, R, Q], chosen [cells, R, Q]) of OptScale under a law's
    `law_fits.PrefixFits`: the stop at n >= max(m, N*_n), N* from the law's log P(X < s_min)."""
    from optscale_jax import policies

    cells, samples = policies._optscale_grid_of_log_miss(
        functools.partial(fit.log_miss, mesh=inputs.mesh), inputs.mask, grid["s_min"],
        grid["alpha"], values["m"], values["k"], inputs.max_n, inputs.advance, inputs.mesh,
        axis=1,
    )  # fmt: skip
    samples = np.asarray(samples)
    chosen = _at_prefix(np.asarray(_best_scored(inputs)), samples)
    return cells, samples, chosen


def _law_fits(inputs: MethodInputs, law: str, prior: Prior | None) -> Any:
    """`law_fits.PrefixFits` of `law` (auto: of every parametric law, and the choice);
    without a prior they are kept in `inputs.shared` for every rule and for auto."""
    from optscale_jax import laws
    from optscale_jax.replay import law_fits

    key = f"law_fits_{law}"
    if prior is None and key in inputs.shared:
        return inputs.shared[key]
    scores = np.asarray(inputs.replayed.scores)
    if law == law_fits.AUTO:
        each = [_law_fits(inputs, name, None) for name in laws.PARAMETRIC_LAWS]
        fit = law_fits.auto_prefix_fits(each, scores, inputs.mask, inputs.mesh)
    elif law == DEFAULT_LAW:
        fit = law_fits.tn_prefix_fits(_shared_fit(inputs, prior))
    else:
        fit = law_fits.law_prefix_fits(law, scores, inputs.mask, prior, inputs.mesh)
    if prior is None:
        inputs.shared[key] = fit
    return fit


def _chosen(fit: Any, inputs: MethodInputs) -> dict[str, int]:
    from optscale_jax.replay import law_fits

    return law_fits.chosen_counts(fit, inputs.replayed.mask)


def _shared_fit(inputs: MethodInputs, prior: Prior | None) -> Any:
    """The prefix fits; one set of MLE fits serves every OptScale0 rule."""
    if prior is not None:
        return _prefix_fits(inputs.replayed, prior, inputs.mesh)
    if "mle_fits" not in inputs.shared:
        inputs.shared["mle_fits"] = _prefix_fits(inputs.replayed, None, inputs.mesh)
    return inputs.shared["mle_fits"]


def _status_counts(fit: Any, inputs: MethodInputs) -> dict[str, int]:
    status = np.bincount(np.asarray(fit.status)[inputs.replayed.mask].ravel(), minlength=4)
    names = ("converged", "at_bound", "no_data", "max_steps")
    return {name: int(count) for name, count in zip(names, status, strict=True)}


# --- a fixed total budget: the allocation and its baselines -------------------------------------


def _budget_options(inputs: MethodInputs) -> BudgetOptions:
    return inputs.budget if inputs.budget is not None else BudgetOptions()


def _in_set(inputs: MethodInputs, questions: np.ndarray, field: str) -> np.ndarray:
    """A `Replayed` field on the questions of one set, cut at max_n: `[R, Qs, max_n]` (no
    method draws beyond the cap, and the smaller arrays compile and run faster)."""
    return getattr(inputs.replayed, field)[:, questions, : inputs.max_n]


def _unit_costs(inputs: MethodInputs, questions: np.ndarray) -> np.ndarray:
    """Each sample's cost in tokens (the replay's cost: tokens x (1 + verifier cost factor))."""
    cumulative = _in_set(inputs, questions, "cumulative_cost")
    mask = _in_set(inputs, questions, "mask")
    return np.where(mask, np.diff(cumulative, axis=-1, prepend=0.0), 0.0)


def _budget_samples(
    per_set: Callable, inputs: MethodInputs, budgets: Sequence[float]
) -> np.ndarray:
    """Samples `[B, R, Q]` of a budget method at every budget: `per_set(inputs, questions,
    budget)` gives `[R, Qs]` on the questions of one reported set, which spend the budget
    among themselves."""
    groups = _budget_options(inputs).groups
    shape = inputs.replayed.mask.shape[:2]
    groups = np.zeros(shape[1], np.int64) if groups is None else np.asarray(groups)
    samples = np.zeros((len(budgets), *shape), np.int64)
    for index, budget in enumerate(budgets):
        for group in np.unique(groups):
            questions = np.flatnonzero(groups == group)
            samples[index][:, questions] = np.asarray(per_set(inputs, questions, budget))
        inputs.advance(1)
    return samples


def _run_budget(per_set: Callable, inputs: MethodInputs, grid: Mapping[str, tuple]) -> Decisions:
    """A budget method that returns the best-scored sample it drew, at every budget."""
    samples = _budget_samples(per_set, inputs, grid["budget"])
    chosen = _at_prefix(np.asarray(_best_scored(inputs)), samples)
    return Decisions([{"budget": budget} for budget in grid["budget"]], samples, chosen)


def _allocated(inputs: MethodInputs, questions: np.ndarray, budget: float) -> Any:
    """The wave allocation (`optscale_jax.allocation.replay_allocation`) on one set."""
    from optscale_jax import allocation

    options = _budget_options(inputs)
    tokens = options.unit == "tokens"
    return allocation.replay_allocation(
        _in_set(inputs, questions, "scores"), _in_set(inputs, questions, "mask"), budget,
        m0=options.m0, wave=options.wave, objective=options.objective, s_min=options.s_min,
        cost=_unit_costs(inputs, questions) if tokens else None, seed=options.seed,
    )  # fmt: skip


def _uniform(inputs: MethodInputs, questions: np.ndarray, budget: float) -> np.ndarray:
    """Fixed-N Best-of-N at the budget: N = floor(budget) samples, or in tokens the largest N
    whose mean cost on the set fits the budget (per order)."""
    from optscale_jax import allocation

    mask = _in_set(inputs, questions, "mask")
    if _budget_options(inputs).unit == "samples":
        return np.asarray(allocation.uniform_samples(mask, math.floor(budget)))
    available = mask.sum(-1)
    draws = np.arange(1, mask.shape[-1] + 1)[:, None, None]
    drawn = np.minimum(draws, available)  # [N, R, Qs]
    cumulative = _in_set(inputs, questions, "cumulative_cost")
    spent = np.where(drawn > 0, _at_prefix(cumulative, drawn), 0.0).mean(-1)  # [N, R]
    # The mean cost does not fall as N grows: the fitting N are 1..largest.
    largest = np.sum(spent <= budget * (1.0 + 1e-12), axis=0)
    return np.minimum(largest[:, None], available)


def _eliminated(inputs: MethodInputs, questions: np.ndarray, budget: float) -> Any:
    """The elimination rule (`optscale_jax.allocation.elimination_samples`) on one set."""
    from optscale_jax import allocation

    options = _budget_options(inputs)
    return allocation.elimination_samples(
        _in_set(inputs, questions, "scores"), _in_set(inputs, questions, "mask"), budget,
        options.s_min, seed=options.seed,
    )  # fmt: skip


def _oracle_budget(inputs: MethodInputs, questions: np.ndarray, budget: float) -> Any:
    """The ceiling (`optscale_jax.allocation.oracle_samples`) on one set."""
    from optscale_jax import allocation

    return allocation.oracle_samples(
        _in_set(inputs, questions, "correct"), _in_set(inputs, questions, "mask"), budget,
        seed=_budget_options(inputs).seed,
    )  # fmt: skip


def _run_budget_oracle(inputs: MethodInputs, grid: Mapping[str, tuple]) -> Decisions:
    """The ceiling: each solvable question draws up to its first correct sample, returned."""
    samples = _budget_samples(_oracle_budget, inputs, grid["budget"])
    chosen = np.maximum(samples - 1, 0)
    return Decisions([{"budget": budget} for budget in grid["budget"]], samples, chosen)


def _run_budget_optscale(inputs: MethodInputs, grid: Mapping[str, tuple]) -> Decisions:
    """OptScale0 at each budget: with the largest cap on samples per question at which a
    cell of its (s_min, alpha, m) grid spends no more than the budget in any reported set
    (mean samples, or tokens), the cell of that cap that spends the most.

    The cap is max_n when a cell fits uncapped; a smaller cap is what lets OptScale0 run at a
    budget below what it draws on its own (questions whose fits never reach s_min draw up
    to the cap). The caps are in the diagnostics (`caps`: budget -> cap).
    """
    fit = _shared_fit(inputs, None)
    cells, samples, _, _ = _optscale_cells(
        inputs.replayed, fit, grid["s_min"], grid["alpha"], grid["m"], (), inputs.max_n, None
    )
    samples = np.asarray(samples)
    params, picked, caps = [], [], {}
    for budget in grid["budget"]:
        cap, cell = _largest_fitting_cap(inputs, samples, budget)
        picked.append(np.minimum(samples[cell], cap))
        s_min, alpha, _, m = cells[cell]
        params.append({"budget": budget, "s_min": s_min, "alpha": alpha, "m": m})
        caps[f"{budget:g}"] = cap
        inputs.advance(1)
    picked = np.stack(picked)
    chosen = _at_prefix(np.asarray(_best_scored(inputs)), picked)
    return Decisions(params, picked, chosen, {"caps": caps})


def _largest_fitting_cap(inputs: MethodInputs, samples: np.ndarray, budget: float) -> tuple:
    """(cap, cell): bisection on the cap (a cell's spend does not fall as the cap grows), then
    the cell of largest spend whose spend in every reported set fits `budget`."""
    groups = _budget_options(inputs).groups
    groups = np.zeros(samples.shape[-1], np.int64) if groups is None else np.asarray(groups)
    sets = [groups == group for group in np.unique(groups)]

    def spends(cap):
        spent = _cost_in_unit(inputs, np.minimum(samples, cap))  # [C, R, Q]
        per_set = np.stack([spent[..., members].mean((-2, -1)) for members in sets], -1)
        return np.all(per_set <= budget * (1.0 + 1e-12), axis=-1), spent.mean((-2, -1))

    low, high = 1, int(samples.max(initial=1))  # the cap `high` changes nothing
    if not spends(high)[0].any():
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if spends(middle)[0].any() else (low, middle)
        high = low
    fits, spent = spends(high)
    if not fits.any():  # a budget below one sample's cost (tokens): the cheapest cell
        return high, int(np.argmin(spent))
    return high, int(np.argmax(np.where(fits, spent, -np.inf)))


def _cost_in_unit(inputs: MethodInputs, samples: np.ndarray) -> np.ndarray:
    """What drawing `samples` `[..., R, Q]` costs in the budget's unit, per question."""
    if _budget_options(inputs).unit == "samples":
        return samples.astype(np.float64)
    cost = _at_prefix(inputs.replayed.cumulative_cost, samples)
    return np.where(samples > 0, cost, 0.0)


# --- Learn-then-Test orders ---------------------------------------------------------------------


def _grid_order(rule: str, settings: Sequence[Setting]) -> np.ndarray:
    """OptScale's (s_min, alpha, m or k) settings by nominal sample count, largest first."""
    from optscale_jax import calibration

    s_min, alpha, draws = (
        np.array([getattr(s, field) for s in settings]) for field in ("s_min", "alpha", rule)
    )
    return calibration.grid_order(s_min, alpha, draws)


def full_budget_setting(method: str, max_n: int) -> Setting:
    """The setting that draws the full budget: n = max_n (LTT's reference and fallback)."""
    return Setting(method, n=max_n)


def ltt_order(settings: Sequence[Setting], max_n: int) -> np.ndarray:
    """One method's settings from safest to cheapest, fixed before any loss is seen.

    The full-budget setting (n = max_n) comes first; the others follow the method's
    `ltt_order` rule, or by their grid values, largest first (N, window, threshold: a later
    stop is safer). The order of fixed-sequence testing must not depend on the losses it
    tests; these rules read only the settings.

    Args:
        settings: the settings of one method (as `run_methods` lists them).
        max_n: the cap.

    Returns:
        int64 permutation of 0..len(settings)-1, the `order` of `calibration.ltt_select`.
    """
    from optscale_jax import calibration

    entry = method_entry(settings[0].method)
    # The family's own full-budget setting (with its law, when the settings carry one).
    full = dataclasses.replace(full_budget_setting(settings[0].method, max_n), law=settings[0].law)
    first = np.array([i for i, s in enumerate(settings) if s == full], np.int64)
    rest = np.array([i for i, s in enumerate(settings) if s != full], np.int64)
    if rest.size:
        kept = [settings[i] for i in rest]
        if entry.ltt_order is not None:
            rest = rest[entry.ltt_order(kept)]
        else:
            keys = [[getattr(s, field) for s in kept] for field, _ in entry.grids]
            rest = rest[calibration.safety_order(*keys)]
    return np.concatenate([first, rest])


# --- the table -----------------------------------------------------------------------------------

_FIXED_N = (("n", "fixed_n"),)
_OPTSCALE = (("s_min", "s_min"), ("alpha", "alpha"))
_BUDGET = (("budget", "budget"),)


def _spends_budget(run: Run, needs=("scores",), grids=_BUDGET, **fields: Any) -> Method:
    """The table entry of a budget method: a progress step per budget."""
    return Method(needs, grids, run, progress=("budget",), spends_budget=True, **fields)


METHOD_TABLE: dict[str, Method] = {
    "bon": Method(
        needs=("scores",),
        grids=_FIXED_N,
        run=functools.partial(_run_fixed_n, _best_scored),
        reference="BoN",
    ),
    "sc": Method(
        needs=("answers",),
        grids=_FIXED_N,
        run=functools.partial(_run_fixed_n, functools.partial(_leading_votes, weighted=False)),
        reference="SC",
    ),
    "wmv": Method(
        needs=("scores", "answers"),
        grids=_FIXED_N,
        run=functools.partial(_run_fixed_n, functools.partial(_leading_votes, weighted=True)),
    ),
    "esc": Method(
        needs=("answers",),
        grids=(("w", "window"),),
        run=functools.partial(_run_each, _esc, "w"),
        progress=("w",),
        full_budget="sc",
    ),
    "asc": Method(
        needs=("answers",),
        grids=(("threshold", "threshold"),),
        run=functools.partial(_run_each, _asc, "threshold"),
        progress=("threshold",),
        full_budget="sc",
    ),
    "optscale0": Method(
        needs=("scores",),
        grids=(*_OPTSCALE, ("m", "min_samples")),
        run=functools.partial(_run_optscale, "m"),
        progress=("s_min", "alpha"),
        full_budget="bon",
        ltt_order=functools.partial(_grid_order, "m"),
        takes_law=True,
    ),
    "optscale0-peek": Method(
        needs=("scores",),
        grids=(*_OPTSCALE, ("k", "peek")),
        run=functools.partial(_run_optscale, "k"),
        progress=("s_min", "alpha"),
        full_budget="bon",
        ltt_order=functools.partial(_grid_order, "k"),
        takes_law=True,
    ),
    "optscalet": Method(
        needs=("scores",),
        grids=(*_OPTSCALE, ("m", "min_samples")),
        run=functools.partial(_run_optscale, "m"),
        progress=("s_min", "alpha"),
        uses_prior=True,
        full_budget="bon",
        ltt_order=functools.partial(_grid_order, "m"),
        takes_law=True,
    ),
    "oracle": Method(needs=("correct",), grids=_FIXED_N, run=_run_oracle),
    "budget": _spends_budget(
        functools.partial(_run_budget, _allocated), compared_with="budget-uniform"
    ),
    "budget-uniform": _spends_budget(functools.partial(_run_budget, _uniform)),
    "budget-elimination": _spends_budget(
        functools.partial(_run_budget, _eliminated), budget_units=("samples",)
    ),
    "budget-optscale0": _spends_budget(
        _run_budget_optscale, grids=(*_BUDGET, *_OPTSCALE, ("m", "min_samples"))
    ),
    "budget-oracle": _spends_budget(
        _run_budget_oracle, needs=("correct",), ceiling=True, budget_units=("samples",)
    ),
}
METHODS = tuple(METHOD_TABLE)
DEFAULT_METHODS = tuple(name for name, method in METHOD_TABLE.items() if not method.spends_budget)
"""The methods a replay runs when none are named: the budget methods need a budget."""
BUDGET_METHODS = tuple(name for name, method in METHOD_TABLE.items() if method.spends_budget)
