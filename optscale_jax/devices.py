"""The question axis sharded over every device, and over every host with `jax.distributed`.

Every batched computation of the library is elementwise over questions (a fit, N*, a
stopping rule of one question never looks at another), so spreading questions over
devices needs no communication: a 1-D `jax.sharding.Mesh` named "questions", each
device runs the unchanged batched function on its own contiguous block
(`jax.shard_map`), and the blocks are gathered back in order. Results are bitwise
those of one device.

Across hosts the same mesh spans the devices of every process (`initialize_distributed`,
one process per host); each process holds only its share of the questions
(`process_share`: contiguous blocks by process index), and `run_sharded` gathers the
results with jax's own `multihost_utils.process_allgather`: every process receives them,
process 0 writes them. Work that each process finishes on its own share (a streamed
replay) runs on a process-local mesh (`question_mesh(..., local=True)`) and exchanges its
results with `process_allgather` and `allgather_json` when it chooses.

Example:
    >>> import numpy as np
    >>> from optscale_jax import devices, fit_mle
    >>> mesh = devices.question_mesh("all")
    >>> scores = np.random.default_rng(0).uniform(size=(13, 8))
    >>> fit = devices.run_sharded(fit_mle, scores, mesh=mesh)  # numpy Fit of 13 questions
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "QUESTIONS",
    "allgather_json",
    "initialize_distributed",
    "pad_questions",
    "place_questions",
    "process_share",
    "process_shares",
    "question_mesh",
    "question_sharding",
    "run_on_mesh",
    "run_sharded",
]

QUESTIONS = "questions"
"""Name of the mesh axis that the question axis of every array is sharded over."""

_ADDRESS = re.compile(r"^\S+:\d+$")


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins this process to a multi-host run (`jax.distributed.initialize`); call it first.

    Launch one process per host, each with the same coordinator and count and its own id;
    after this call `jax.devices()` lists the devices of every host and `question_mesh`
    spans them all. Arguments left None are found by jax (`JAX_COORDINATOR_ADDRESS`, or a
    SLURM, Open MPI or Kubernetes job). On CPU hosts the processes talk through gloo.

    Args:
        coordinator: "host:port" of process 0, reachable from every host.
        num_processes: number of processes (>= 1), one per host.
        process_id: index of this process, in [0, num_processes).

    Raises:
        ValueError: naming the argument that is malformed.
    """
    if coordinator is not None and not _ADDRESS.match(str(coordinator)):
        raise ValueError(f"coordinator must be 'host:port', got {coordinator!r}")
    if num_processes is not None and (not _is_int(num_processes) or num_processes < 1):
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    if process_id is not None:
        if not _is_int(process_id) or process_id < 0:
            raise ValueError(f"process_id must be an integer >= 0, got {process_id!r}")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(
                f"process_id must be < num_processes ({num_processes}), got {process_id}"
            )
    jax.distributed.initialize(coordinator, num_processes, process_id)


def question_mesh(devices: int | str = "all", local: bool = False) -> Mesh:
    """A 1-D mesh named `QUESTIONS` over `devices` devices of every process.

    Devices are ordered by process, so each process's devices hold one contiguous block of
    the question axis (its `process_share`).

    Args:
        devices: devices per process, an integer in [1, jax.local_device_count()], or "all".
        local: this process's devices only: `run_sharded` then computes what this process
            passes and exchanges nothing with the other processes.

    Returns:
        The mesh.

    Raises:
        ValueError: naming `devices` if it is not "all" or a valid count.
    """
    available = jax.local_device_count()
    if devices == "all":
        count = available
    elif isinstance(devices, str) and devices.isdigit():
        count = int(devices)
    elif _is_int(devices):
        count = int(devices)
    else:
        raise ValueError(f"devices must be a positive integer or 'all', got {devices!r}")
    if not 1 <= count <= available:
        raise ValueError(f"devices must be in [1, {available}] (devices of this host), got {count}")
    by_process: dict[int, list] = {}
    listed = jax.local_devices() if local else jax.devices()
    for device in sorted(listed, key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(device.process_index, []).append(device)
    chosen = [d for process in sorted(by_process) for d in by_process[process][:count]]
    return Mesh(np.array(chosen), (QUESTIONS,))


def question_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """`NamedSharding(mesh, P(..., QUESTIONS))`: axis `axis` split into contiguous blocks."""
    return NamedSharding(mesh, _spec(axis))


def process_share(num_questions: int) -> slice:
    """The questions this process holds: `process_shares(num_questions)[jax.process_index()]`."""
    return process_shares(num_questions)[jax.process_index()]


def process_shares(num_questions: int) -> list[slice]:
    """Every process's questions: contiguous blocks in process order whose sizes differ by
    at most one (process p holds [p Q // P, (p + 1) Q // P)), so each has one when Q >= P.

    Args:
        num_questions: total number of questions Q (>= 0).

    Returns:
        slice(start, stop) per process, in process order.
    """
    if not _is_int(num_questions) or num_questions < 0:
        raise ValueError(f"num_questions must be an integer >= 0, got {num_questions!r}")
    count = jax.process_count()
    bounds = [p * num_questions // count for p in range(count + 1)]
    return [slice(start, stop) for start, stop in itertools.pairwise(bounds)]


def allgather_json(value: Any) -> list[Any]:
    """Every process's `value` (JSON-able: counts, ids, flags), in process order, on every
    process: jax's `process_allgather` of the encoded text. One process: `[value]`.

    Every process must call it at the same point of the run, as any collective.
    """
    encoded = json.dumps(value, default=_json_plain)
    if jax.process_count() == 1:
        return [json.loads(encoded)]
    text = np.frombuffer(encoded.encode(), np.uint8).astype(np.int32)
    lengths = [int(n) for n in multihost_utils.process_allgather(np.int64(text.size))]
    padded = np.pad(text, (0, max(lengths) - text.size))
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [
        json.loads(row[:length].astype(np.uint8).tobytes())
        for row, length in zip(gathered, lengths, strict=True)
    ]


def pad_questions(tree: Any, size: int, axis: int = 0) -> Any:
    """Every array of `tree` padded along its question axis to `size` entries.

    Padding entries repeat the last question (zeros if there is none), so they are valid
    inputs that take no unusual path; their results are dropped by the caller.

    Args:
        tree: pytree of arrays with the same length <= size along `axis`.
        size: length after padding.
        axis: the question axis.

    Returns:
        The padded pytree of numpy arrays.
    """

    def pad(x):
        x = np.asarray(x)
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, size - x.shape[axis])
        return np.pad(x, widths, mode="edge" if x.shape[axis] else "constant")

    return jax.tree_util.tree_map(pad, tree)


def place_questions(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
    """This process's questions of `tree` as global arrays sharded over the question axis.

    Args:
        tree: pytree of arrays whose length along `axis` is the same on every process and
            a multiple of the mesh's devices on this process (see `pad_questions`).
        mesh: a `question_mesh`.
        axis: the question axis.

    Returns:
        The pytree of `jax.Array`s with `question_sharding(mesh, axis)`, the processes'
        questions concatenated in process order.
    """
    sharding = question_sharding(mesh, axis)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def run_sharded(
    fn: Callable[..., Any],
    *arrays: Any,
    mesh: Mesh,
    axis: int | Sequence[int] = 0,
    out_axis: int | tuple | None = None,
    replicated: tuple = (),
) -> Any:
    """fn(*arrays, *replicated) with the question axis sharded over `mesh`, gathered back.

    `fn` must be elementwise over the question axis of its arguments and outputs, as the
    library's batched fits, N* and stopping rules are; each device runs it on its own
    block, so results are bitwise those of one device. It is traced, so input checks of
    public functions are skipped: validate before. Pass the same `fn` object across calls
    (not a fresh lambda or partial) to reuse its compiled program.

    Several processes (`initialize_distributed`) on a mesh spanning them: each passes its
    own share of the questions (`process_share`) and all receive every question's result,
    in order. On a process-local mesh each process gets back its own questions' results.

    Args:
        fn: the batched function.
        *arrays: pytrees of arrays with the same number of questions (this process's),
            e.g. `[Q, K]` scores (axis 0) or `[R, Q, K]` ordered ones (axis 1).
        mesh: a `question_mesh`.
        axis: the question axis of every array, or one axis per argument of `arrays`.
        out_axis: the question axis of every output array (default: `axis` if one int), or
            a tuple of them matching the output's structure down to some depth, as vmap's
            `out_axes` (e.g. `(3, 1)` for an output `(stats, curves)`).
        replicated: arguments without a question axis (thresholds, grids), passed whole to
            every device after `arrays`; the same on every process. Being traced, a new
            value reuses the compiled program, where a new `functools.partial` would not.

    Returns:
        fn's output pytree as numpy arrays over all questions of all processes.

    Raises:
        ValueError: naming `arrays`, `axis` or `out_axis` if they do not fit together.
    """
    axes = _argument_axes(axis, out_axis, len(arrays))
    out_axis = axes[0] if out_axis is None else out_axis
    local_devices = len(mesh.local_devices)
    counts = _process_counts(_question_count(arrays, axes), mesh)
    # Every process pads to one common block, a multiple of its devices.
    block = max(1, math.ceil(max(counts) / local_devices)) * local_devices
    placed = [
        place_questions(pad_questions(tree, block, a), mesh, a)
        for tree, a in zip(arrays, axes, strict=True)
    ]
    whole = NamedSharding(mesh, P())
    shared = jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(whole, np.asarray(x)), replicated
    )
    program = _sharded_program(fn, mesh, axes, len(replicated), out_axis)
    out = program(*placed, *shared)
    if mesh.is_multi_process:
        gathered = multihost_utils.process_allgather(out, tiled=True)
    else:
        gathered = jax.device_get(out)
    keep = np.concatenate([p * block + np.arange(c) for p, c in enumerate(counts)])
    return jax.tree_util.tree_map(
        lambda a, part: jax.tree_util.tree_map(lambda x: np.take(np.asarray(x), keep, a), part),
        out_axis,
        gathered,
    )


def _json_plain(value: Any) -> Any:
    """numpy scalars and arrays as the Python values JSON holds."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def run_on_mesh(
    fn: Callable[..., Any],
    *arrays: Any,
    mesh: Mesh | None,
    axis: int | Sequence[int] = 0,
    out_axis: int | tuple | None = None,
    replicated: tuple = (),
) -> Any:
    """fn(*arrays, *replicated), its question axis sharded over `mesh` unless it is None.

    The arrays hold every question of the run: without a mesh this is the plain call (fn's
    own output); on a mesh of this process's devices, `run_sharded`; on a mesh spanning
    several processes, every process holds the same arrays and passes its `process_share`
    to `run_sharded`. Either way every process gets every question's result, as numpy
    arrays bitwise equal to the plain call's. Bind static arguments of `fn` with `bound`, so
    that the same object comes back and its compiled program is reused.

    Args:
        fn, axis, out_axis, replicated: as in `run_sharded`.
        *arrays: pytrees holding every question.
        mesh: a `question_mesh`, or None.
    """
    if mesh is None:
        return fn(*arrays, *replicated)
    if mesh.is_multi_process:
        axes = _argument_axes(axis, out_axis, len(arrays))
        share = process_share(_question_count(arrays, axes))
        arrays = tuple(
            jax.tree_util.tree_map(
                lambda x, a=a: np.asarray(x)[(slice(None),) * a + (share,)], tree
            )
            for tree, a in zip(arrays, axes, strict=True)
        )
    return run_sharded(fn, *arrays, mesh=mesh, axis=axis, out_axis=out_axis, replicated=replicated)


bound = functools.lru_cache(maxsize=64)(functools.partial)
"""`functools.partial`, one object per (function, bound arguments): `run_on_mesh` and
`run_sharded` reuse the compiled program of a function bound again to the same values."""


def _argument_axes(axis, out_axis, num_arrays: int) -> tuple[int, ...]:
    """The question axis of each argument (`run_sharded`'s `axis`), checked."""
    if num_arrays == 0:
        raise ValueError("arrays: at least one array with a question axis is needed")
    axes = (axis,) * num_arrays if _is_int(axis) else tuple(axis)
    if len(axes) != num_arrays or not all(_is_int(a) and a >= 0 for a in axes):
        raise ValueError(f"axis must be an integer >= 0 or one per array, got {axis!r}")
    if out_axis is None and len(set(axes)) > 1:
        raise ValueError("out_axis must be given when the arrays' question axes differ")
    out_axes = jax.tree_util.tree_leaves(out_axis)
    if out_axis is not None and not (out_axes and all(_is_int(a) and a >= 0 for a in out_axes)):
        raise ValueError(f"out_axis must be integers >= 0, got {out_axis!r}")
    return tuple(int(a) for a in axes)


def _question_count(arrays: tuple, axes: tuple[int, ...]) -> int:
    """The number of questions, the same along the question axis of every array."""
    lengths = {
        np.shape(x)[a] if np.ndim(x) > a else None
        for tree, a in zip(arrays, axes, strict=True)
        for x in jax.tree_util.tree_leaves(tree)
    }
    if len(lengths) != 1 or None in lengths:
        raise ValueError(f"arrays must share one length along their question axis, got {lengths}")
    return lengths.pop()


def _process_counts(local_count: int, mesh: Mesh) -> list[int]:
    """The question count of every process of `mesh`, in process order."""
    if not mesh.is_multi_process:
        return [local_count]
    return [int(c) for c in multihost_utils.process_allgather(np.int64(local_count))]


def _spec(axis: int) -> P:
    return P(*([None] * axis), QUESTIONS)


@functools.lru_cache(maxsize=64)
def _sharded_program(fn, mesh: Mesh, axes: tuple[int, ...], num_replicated: int, out_axis):
    """jit(shard_map(fn)): the arguments split on `axes`, the outputs on `out_axis`, then
    `num_replicated` arguments whole on every device; cached."""
    # No collectives run inside (fn is elementwise over questions), so the check of
    # replicated vs varying values has nothing to protect; it would also reject the
    # solver's lax.cond with constant branches.
    program = jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=tuple(_spec(a) for a in axes) + (P(),) * num_replicated,
        out_specs=jax.tree_util.tree_map(_spec, out_axis),
        check_vma=False,
    )
    return jax.jit(program)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
