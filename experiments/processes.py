"""Where a command runs: `--devices N|all` and the processes of a multi-host run.

`optscale simulate` and `optscale replay` take the same options: `--devices` (devices per
process), and `--coordinator HOST:PORT --num-processes P --process-id I` or
`--distributed` (one process per host, joined with `jax.distributed`; docs/sections/scale.md
has the launch). They say how to compute, not what: no output file records them.
"""

from __future__ import annotations

import argparse
from typing import Any

DEVICE_OPTIONS = ("devices", "distributed", "coordinator", "num_processes", "process_id")
"""The attributes of the parsed arguments that `add_device_arguments` adds."""


def add_device_arguments(parser: argparse.ArgumentParser, devices_help: str) -> None:
    """--devices (help `devices_help`) and the multi-process options, in their own group."""
    group = parser.add_argument_group("devices and processes (same results as one device)")
    group.add_argument("--devices", default=None, metavar="N|all", help=devices_help)
    group.add_argument(
        "--coordinator", default=None, metavar="HOST:PORT", help="process 0's address"
    )
    group.add_argument("--num-processes", type=int, default=None, help="processes, one per host")
    group.add_argument("--process-id", type=int, default=None, help="this process's index")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run with the three values above found by jax "
        "(JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, Kubernetes)",
    )


def several_processes(args: argparse.Namespace) -> bool:
    """The arguments ask for a multi-process run."""
    return args.distributed or any(
        value is not None for value in (args.coordinator, args.num_processes, args.process_id)
    )


def join_and_mesh(args: argparse.Namespace, local: bool = False) -> Any:
    """Joins the processes of a multi-process run (before anything starts jax's backends),
    then returns the question mesh of `--devices`: None (one device, unsharded) unless
    `--devices` is given or several processes run ("all" devices by default then).

    Args:
        args: parsed arguments with the `DEVICE_OPTIONS`.
        local: each process's mesh holds its own devices only (work split by process); a
            mesh of one device is then None, the plain code path (the same results, and the
            compiled programs of a one-process run).
    """
    from optscale_jax import devices

    distributed = several_processes(args)
    if distributed:
        devices.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    if args.devices is None and not distributed:
        return None
    mesh = devices.question_mesh("all" if args.devices is None else args.devices, local=local)
    return None if local and mesh.devices.size == 1 else mesh
