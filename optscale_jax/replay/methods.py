"""The replay methods: one table, name -> what it needs, its grids, the function that runs it.

Adding a method is one entry in `METHOD_TABLE`: a `Method` that says which log fields it
reads, which `Setting` fields it varies (and which `ReplayConfig` grid gives their values),
how many progress-bar steps it takes, and a function that returns its `Decisions` for every
setting at once. The run functions get input the replay has validated already, so they
call the policies' private, unvalidated bodies (`policies._esc`, `policies._prefix_fits`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from optscale_jax.replay.orders import Replayed

HYPER_PARAMETERS = ("n", "s_min", "alpha", "m", "w", "threshold", "k")

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

    @property
    def label(self) -> str:
        parts = [
            f"{name}={getattr(self, name):g}"
            for name in HYPER_PARAMETERS
            if getattr(self, name) is not None
        ]
        return " ".join(parts) or "-"

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HYPER_PARAMETERS}


class MethodInputs(NamedTuple):
    """What every run function receives besides its grid.

    Attributes:
        replayed: the ordered log.
        mask: `replayed.mask` as a jax array.
        max_n: cap on samples.
        prior: the OptScalet prior, or None.
        advance: moves the progress bar by a number of steps.
        shared: results one method computes for another (the MLE prefix fits).
    """

    replayed: Replayed
    mask: Any
    max_n: int
    prior: Prior | None
    advance: Callable[[int], Any]
    shared: dict[str, Any]


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
        full_budget: the fixed-N method whose decision at n = max_n is this method's
            full-budget outcome (the reference of the Learn-then-Test losses and the fallback
            when no setting is certified): "bon" for score methods, "sc" for vote methods;
            None for a fixed-N method (its own n = max_n).
        ltt_order: settings -> their data-independent order from safest to cheapest (a
            permutation, `optscale_jax.calibration.grid_order` for OptScale); None: by the
            grid's values, largest first (`optscale_jax.calibration.safety_order`).
    """

    needs: tuple[str, ...]
    grids: tuple[tuple[str, str], ...]
    run: Run
    progress: tuple[str, ...] = ()
    uses_prior: bool = False
    reference: str | None = None
    full_budget: str | None = None
    ltt_order: Callable[[Sequence[Setting]], np.ndarray] | None = None

    def steps(self, grid: Mapping[str, tuple]) -> int:
        """Progress-bar steps of one run on `grid`."""
        return math.prod(len(grid[name]) for name in self.progress)


def method_entry(name: str) -> Method:
    """The table entry of method `name`; ValueError naming `methods` if there is none."""
    if name not in METHOD_TABLE:
        raise ValueError(f"methods: unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHOD_TABLE[name]


# --- fixed N: Best-of-N, votes, the oracle -------------------------------------------------------


def _best_scored(inputs: MethodInputs) -> Any:
    from optscale_jax import policies

    return policies._running_best(inputs.replayed.scores, inputs.mask)


def _leading_votes(inputs: MethodInputs, weighted: bool) -> Any:
    from optscale_jax import policies

    replayed = inputs.replayed
    weights = replayed.scores if weighted else None
    return _by_order_chunks(
        policies._vote_leaders, replayed.answers, replayed.answers, inputs.mask, weights
    )


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
    decision = policies._oracle(inputs.replayed.correct, inputs.mask, np.asarray(ns)[:, None, None])
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
    return _by_order_chunks(policies._esc, answers, answers, inputs.mask, window, inputs.max_n)


def _asc(inputs: MethodInputs, threshold: float) -> Any:
    from optscale_jax import policies

    answers = inputs.replayed.answers
    min_samples = 1
    return _by_order_chunks(
        policies._asc, answers, answers, inputs.mask, threshold, min_samples, inputs.max_n
    )


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


def _by_order_chunks(policy: Callable, answers: np.ndarray, *args: Any) -> Any:
    """Runs a private voting policy (`num_codes` keyword) on all orders at once, or in
    chunks of orders if the tallies would be large; [R, ...] array arguments are sliced,
    the rest passed as they are."""
    import jax

    orders, questions, samples = answers.shape
    codes = max(int(answers.max(initial=-1)) + 1, 1)
    per_order = questions * samples * codes
    chunk = max(1, min(orders, _VOTE_TALLY_BUDGET // per_order))
    if chunk == orders:
        return policy(*args, num_codes=codes)

    def piece(arg, start):
        if getattr(arg, "shape", ())[:1] == (orders,):
            return arg[start : start + chunk]
        return arg

    parts = [
        jax.device_get(policy(*(piece(a, start) for a in args), num_codes=codes))
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


def _prefix_fits(replayed: Replayed, prior: Prior | None) -> Any:
    """Fits of every prefix of every ordered question: MLE, or MAP with `prior`."""
    import jax.numpy as jnp

    from optscale_jax import policies

    scores, mask = jnp.asarray(replayed.scores), jnp.asarray(replayed.mask)
    if prior is None:
        return policies._prefix_fits(scores, mask)
    shape = replayed.mask.shape[:-1]
    prior_mu, prior_sigma, (mu_scale, sigma_scale) = prior
    centre_mu, centre_sigma, scale_mu, scale_sigma = (
        np.broadcast_to(x, shape) for x in (prior_mu, prior_sigma, mu_scale, sigma_scale)
    )
    return policies._prefix_fits(scores, mask, centre_mu, centre_sigma, (scale_mu, scale_sigma))


def _optscale_cells(replayed, fit, s_min, alpha, min_samples, peek, max_n, on_cell):
    """`optscale_decisions` from prefix fits that are already there."""
    import jax.numpy as jnp

    from optscale_jax import policies

    scores, mask = jnp.asarray(replayed.scores), jnp.asarray(replayed.mask)
    cells, samples = policies._optscale_grid(
        fit, mask, s_min, alpha, min_samples, peek, max_n, on_cell
    )
    samples = np.asarray(samples)
    chosen = _at_prefix(np.asarray(policies._running_best(scores, mask)), samples)
    return cells, samples, chosen, fit


def _run_optscale(rule: str, inputs: MethodInputs, grid: Mapping[str, tuple]) -> Decisions:
    """OptScale over its (s_min, alpha, rule) grid: rule "m" (sequential: OptScale0, or
    OptScalet when the inputs carry a prior) or "k" (the released one-fit rule)."""
    fit = _shared_fit(inputs, inputs.prior)
    values = {"m": (), "k": (), rule: grid[rule]}
    cells, samples, chosen, _ = _optscale_cells(
        inputs.replayed, fit, grid["s_min"], grid["alpha"], values["m"], values["k"],
        inputs.max_n, inputs.advance,
    )  # fmt: skip
    params = [{"s_min": s, "alpha": a, rule: value} for s, a, _, value in cells]
    return Decisions(params, samples, chosen, {"fit_status": _status_counts(fit, inputs)})


def _shared_fit(inputs: MethodInputs, prior: Prior | None) -> Any:
    """The prefix fits; one set of MLE fits serves every OptScale0 rule."""
    if prior is not None:
        return _prefix_fits(inputs.replayed, prior)
    if "mle_fits" not in inputs.shared:
        inputs.shared["mle_fits"] = _prefix_fits(inputs.replayed, None)
    return inputs.shared["mle_fits"]


def _status_counts(fit: Any, inputs: MethodInputs) -> dict[str, int]:
    status = np.bincount(np.asarray(fit.status)[inputs.replayed.mask].ravel(), minlength=4)
    names = ("converged", "at_bound", "no_data", "max_steps")
    return {name: int(count) for name, count in zip(names, status, strict=True)}


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
    full = full_budget_setting(settings[0].method, max_n)
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
    ),
    "optscale0-peek": Method(
        needs=("scores",),
        grids=(*_OPTSCALE, ("k", "peek")),
        run=functools.partial(_run_optscale, "k"),
        progress=("s_min", "alpha"),
        full_budget="bon",
        ltt_order=functools.partial(_grid_order, "k"),
    ),
    "optscalet": Method(
        needs=("scores",),
        grids=(*_OPTSCALE, ("m", "min_samples")),
        run=functools.partial(_run_optscale, "m"),
        progress=("s_min", "alpha"),
        uses_prior=True,
        full_budget="bon",
        ltt_order=functools.partial(_grid_order, "m"),
    ),
    "oracle": Method(needs=("correct",), grids=_FIXED_N, run=_run_oracle),
}
METHODS = tuple(METHOD_TABLE)
