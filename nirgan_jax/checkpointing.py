"""Orbax checkpoints of a training run: both train states, the Grain iterator, and JSON
metadata (config, input-pipeline fingerprint), keeping the latest and the best N by
validation L1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

VAL_METRIC = "val_l1"


def make_manager(directory: str | Path, keep_best: int) -> ocp.CheckpointManager:
  """A manager that always keeps the latest checkpoint (for resume) and the ``keep_best``
  lowest val L1 ones. ``best_fn`` + ``max_to_keep`` could delete the latest, and
  ``BestN`` keeps the highest values unless ``reverse=True`` (JAX_NOTES)."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=1),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[VAL_METRIC], reverse=True,
                                    n=keep_best, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, g_state, d_state, data_iterator,
         metadata: dict[str, Any], metrics: dict[str, float] | None) -> None:
  manager.save(step, metrics=metrics, args=ocp.args.Composite(
      generator=ocp.args.StandardSave(g_state),
      discriminator=ocp.args.StandardSave(d_state),
      data_iter=grain.checkpoint.CheckpointSave(data_iterator),
      metadata=ocp.args.JsonSave(metadata),
  ))


def restore(manager: ocp.CheckpointManager, step: int, g_state, d_state, data_iterator):
  """(g_state, d_state, metadata) of ``step``; the iterator is restored in place.

  ``g_state``/``d_state`` are targets (arrays or ``jax.ShapeDtypeStruct`` with shardings)
  that give the restored arrays their shardings.
  """
  abstract = lambda tree: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      if hasattr(x, "sharding") else x, tree)
  restored = manager.restore(step, args=ocp.args.Composite(
      generator=ocp.args.StandardRestore(abstract(g_state)),
      discriminator=ocp.args.StandardRestore(abstract(d_state)),
      data_iter=grain.checkpoint.CheckpointRestore(data_iterator),
      metadata=ocp.args.JsonRestore(),
  ))
  return restored.generator, restored.discriminator, restored.metadata
