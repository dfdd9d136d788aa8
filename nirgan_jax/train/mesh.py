"""The 1-D data-parallel device mesh and the shardings the step uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all devices of all processes (or the given ones) with one axis, "data".

  Auto axis types: plain data parallelism reshapes the sharded batch dimension,
  which JAX 0.10's default Explicit axes reject.
  """
  devices = list(devices) if devices is not None else jax.devices()
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over "data", everything else whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def shard_batch(mesh: Mesh, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's rows into global arrays sharded over "data".

  Every process passes its own ``global_batch / process_count`` rows; the global
  batch must divide evenly over the devices of the mesh.
  """
  sharding = batch_sharded(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    global_rows = value.shape[0] * jax.process_count()
    if global_rows % mesh.size:
      raise ValueError(f"global batch of {global_rows} rows ('{key}') does not divide over "
                       f"{mesh.size} devices")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
