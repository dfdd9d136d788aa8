"""Orbax checkpoints of a training run: both train states, the frozen SatCLIP encoder, the
Grain iterator, and JSON metadata (config, input-pipeline fingerprint, plateau state),
keeping the latest and the best N by validation L1.

Layout: ``WORKDIR/checkpoints/<step>/{generator,discriminator,satclip,data_iter,metadata}``,
and ``generator_ema`` (the moving average of the generator's weights) if the run keeps one.
Paths may be local or on cloud storage (``gs://...``, ``nirgan_jax.paths``).
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from nirgan_jax import paths
from nirgan_jax.errors import ConfigError, NirganError, UsageError, one_line

VAL_METRIC = "val_l1"
CHECKPOINTS_DIR = "checkpoints"
WEIGHT_ITEMS = ("generator", "discriminator", "satclip")
GENERATOR_EMA = "generator_ema"


class CheckpointNotFoundError(NirganError, FileNotFoundError):
  """No checkpoint (or not the requested one) where one was expected."""


def make_manager(directory: str | os.PathLike, keep_best: int) -> ocp.CheckpointManager:
  """A manager that always keeps the latest checkpoint (for resume) and the ``keep_best``
  lowest val L1 ones. ``best_fn`` + ``max_to_keep`` could delete the latest, and
  ``BestN`` keeps the highest values unless ``reverse=True``."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=1),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[VAL_METRIC], reverse=True,
                                    n=keep_best, keep_checkpoints_without_metrics=False),
  ])
  # best_fn is what makes the manager write each step's metrics to disk (without it they
  # live only in memory and a resumed run forgets which old checkpoints were best).
  # cleanup_tmp_directories: a save killed half-way leaves a temporary step directory; it is
  # removed when the next run opens the manager, so nothing unfinished looks like a step.
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, best_fn=lambda m: m[VAL_METRIC], best_mode="min",
      create=True, cleanup_tmp_directories=True,
      # The parameter items are written in background threads while training goes on; a
      # step directory appears only once complete (Orbax's atomic rename).
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(paths.as_path(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, g_state, d_state, satclip_params,
         data_iterator, metadata: dict[str, Any], metrics: dict[str, float] | None) -> None:
  """Saves asynchronously. ``satclip_params`` ({} without injection) travel with the run so
  that export never needs the original SatCLIP file again."""
  items = dict(
      generator=ocp.args.StandardSave(g_state.stored()),
      discriminator=ocp.args.StandardSave(d_state.stored()),
      data_iter=grain.checkpoint.CheckpointSave(data_iterator),
      metadata=ocp.args.JsonSave(metadata),
  )
  if g_state.ema_params is not None:
    items[GENERATOR_EMA] = ocp.args.StandardSave(g_state.ema_params)
  if satclip_params:
    items["satclip"] = ocp.args.StandardSave(satclip_params)
  manager.save(step, metrics=metrics, args=ocp.args.Composite(**items))


def restore(manager: ocp.CheckpointManager, step: int, g_state, d_state, data_iterator):
  """(g_state, d_state, metadata) of ``step``; the iterator is restored in place.

  ``g_state``/``d_state`` are targets (arrays or ``jax.ShapeDtypeStruct`` with shardings)
  that give the restored arrays their shardings.
  """
  abstract = lambda tree: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      if hasattr(x, "sharding") else x, tree)
  items = dict(
      generator=ocp.args.StandardRestore(abstract(g_state.stored())),
      discriminator=ocp.args.StandardRestore(abstract(d_state.stored())),
      data_iter=grain.checkpoint.CheckpointRestore(data_iterator),
      metadata=ocp.args.JsonRestore(),
  )
  if g_state.ema_params is not None:
    if not (epath.Path(manager.directory) / str(step) / GENERATOR_EMA).is_dir():
      raise ConfigError(f"{manager.directory}/{step}: holds no moving average of the generator "
                        "to resume with optim.ema_decay > 0; resume with the run's "
                        "optim.ema_decay=0, or start a new workdir")
    items[GENERATOR_EMA] = ocp.args.StandardRestore(abstract(g_state.ema_params))
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  state = lambda target, stored, **fields: target.replace(
      step=stored.step, params=stored.params, opt_state=stored.opt_state, **fields)
  return (state(g_state, restored.generator, ema_params=restored.get(GENERATOR_EMA)),
          state(d_state, restored.discriminator), restored.metadata)


def restore_metadata(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON metadata of ``step`` alone (config, pipeline fingerprint, reader, plateau)."""
  return manager.restore(step, args=ocp.args.Composite(
      metadata=ocp.args.JsonRestore())).metadata


def checkpoints_dir(path: str | os.PathLike) -> epath.Path:
  """The Orbax directory of a run: ``path`` itself or ``path/checkpoints``."""
  path = paths.as_path(path)
  if (path / CHECKPOINTS_DIR).is_dir():
    return path / CHECKPOINTS_DIR
  if path.is_dir() and any(p.name.isdigit() for p in path.iterdir()):
    return path
  raise CheckpointNotFoundError(f"{path}: no training checkpoints here (expected a workdir "
                                f"with {CHECKPOINTS_DIR}/<step>/ or a checkpoints directory)")


def open_read_only(path: str | os.PathLike) -> ocp.CheckpointManager:
  # save_interval_steps and create as read_only forces them (else Orbax warns that it does).
  options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False,
                                         best_fn=lambda m: m[VAL_METRIC], best_mode="min")
  return ocp.CheckpointManager(checkpoints_dir(path), options=options)


def resolve_step(manager: ocp.CheckpointManager, which: str | int) -> int:
  """``"latest"``, ``"best"`` (lowest val L1; the latest if no step has metrics) or a step."""
  steps = manager.all_steps()
  if not steps:
    raise CheckpointNotFoundError(f"{manager.directory}: holds no checkpoint")
  if which == "latest":
    return manager.latest_step()
  if which == "best":
    best = manager.best_step()  # None when no step has metrics
    return manager.latest_step() if best is None else best
  if isinstance(which, int) or str(which).isdigit():
    if int(which) not in steps:
      raise CheckpointNotFoundError(f"{manager.directory}: no checkpoint of step {which}; "
                                    f"there are {sorted(steps)}")
    return int(which)
  raise UsageError(f"step must be 'best', 'latest' or a number, not {which!r}")


def _restore_on_one_device(item_dir: epath.Path) -> Any:
  """An item restored onto the first local device, whatever mesh saved it."""
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(item_dir).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  return checkpointer.restore(item_dir, target)


def restore_weights(path: str | os.PathLike, which: str | int = "best", average: bool = True
                    ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """(params, metadata, step) of a run's checkpoint, without the optimizer states.

  ``params`` has "generator" and "discriminator" (and "satclip" if the run injected
  SatCLIP) as numpy trees; ``metadata`` holds the run's config as a dict. The generator is
  the moving average of its weights if the run kept one (``optim.ema_decay``) and
  ``average``, else its weights as trained.
  """
  manager = open_read_only(path)
  step = resolve_step(manager, which)
  step_dir = epath.Path(manager.directory) / str(step)
  params = {}
  try:
    for item in WEIGHT_ITEMS:
      if (step_dir / item).is_dir():
        restored = _restore_on_one_device(step_dir / item)
        params[item] = jax.tree.map(np.asarray, restored if item == "satclip"
                                    else restored["params"])
    if average and (step_dir / GENERATOR_EMA).is_dir():
      params["generator"] = jax.tree.map(np.asarray,
                                         _restore_on_one_device(step_dir / GENERATOR_EMA))
    return params, restore_metadata(manager, step), step
  except Exception as e:  # Orbax raises a variety of types for damaged checkpoints.
    raise NirganError(f"{step_dir}: unreadable checkpoint ({one_line(e)})") from e
