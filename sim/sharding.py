"""The question axis of a simulation spread over a `devices.question_mesh`, or not at all.

Every study takes `mesh=None`: without a mesh each call below is the plain call, the
one-device code path as it always was. With a mesh:

- `devices.run_on_mesh` sends the elementwise-over-questions parts (fits, N*, a policy
  block) through `devices.run_sharded`: every process simulates the same draws (one seed),
  passes its share of the questions (`devices.process_share`) and receives every
  question's result.
- `constrain` and `replicate` serve the Monte Carlo counts of the coverage study, whose
  draws are made inside the program: jax's partitionable threefry gives every element the
  same random bits whichever device makes it, so the draws are sharded over the mesh
  (`jax.lax.with_sharding_constraint`) and each device draws only its own cells.

Either way the results are bitwise those of one device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from optscale_jax import devices


def constrain(x: jax.Array, mesh: Mesh | None, axis: int | None) -> jax.Array:
    """Inside a jitted program: `x` split over `mesh` along `axis` (None: whole on every
    device); unchanged without a mesh."""
    if mesh is None:
        return x
    spec = P() if axis is None else P(*([None] * axis), devices.QUESTIONS)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Arrays the same on every process, as global arrays whole on every device of `mesh`
    (what a program over several processes takes); unchanged without a mesh."""
    if mesh is None:
        return tree
    whole = NamedSharding(mesh, P())

    def place(x):
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(x)))
        # A process lists its own devices only: the global array is built from every
        # process's (identical) copy.
        return jax.make_array_from_process_local_data(whole, np.asarray(x))

    return jax.tree_util.tree_map(place, tree)
