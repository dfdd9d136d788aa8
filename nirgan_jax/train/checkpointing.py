"""Orbax checkpoints of a training run: both train states, the frozen SatCLIP encoder, the
Grain iterator, and JSON metadata (config, input-pipeline fingerprint, plateau state),
keeping the latest and the best N by validation L1.

Layout: ``WORKDIR/checkpoints/<step>/{generator,discriminator,satclip,data_iter,metadata}``,
and ``generator_ema`` (the moving average of the generator's weights) if the run keeps one.
Paths may be local or on cloud storage (``gs://...``, ``nirgan_jax.paths``).

A step that cannot be read completely (a truncated, garbled or missing file) raises
``UnreadableCheckpointError``. Training sets such a step aside in
``WORKDIR/checkpoints/unreadable/<step>``, where the checkpoint manager does not look, and
resumes from the newest step that reads; export and fine-tuning pass over it to the next
step they would choose. Nothing is ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from nirgan_jax import errors, paths
from nirgan_jax.errors import ConfigError, NirganError, UsageError

VAL_METRIC = "val_l1"
CHECKPOINTS_DIR = "checkpoints"
UNREADABLE_DIR = "unreadable"  # in CHECKPOINTS_DIR: steps set aside, not a step name
WEIGHT_ITEMS = ("generator", "discriminator", "satclip")
GENERATOR_EMA = "generator_ema"
METADATA_ITEM = "metadata"
DATA_ITER_ITEM = "data_iter"  # Grain's iterator state: a JSON file per process
METRICS_ITEM = "metrics"  # written by the checkpoint manager itself
COMMIT_MARKER = "commit_success.txt"  # what marks a step complete on cloud storage

_T = TypeVar("_T")


class CheckpointNotFoundError(NirganError, FileNotFoundError):
  """No checkpoint (or not the requested one) where one was expected."""


class UnreadableCheckpointError(NirganError):
  """A checkpoint step that cannot be restored completely: a file of one of its items is
  truncated, garbled or missing."""

  def __init__(self, step_dir: epath.Path, reason: str):
    super().__init__(f"{step_dir}: unreadable checkpoint ({reason})")
    self.step_dir = step_dir
    self.step = int(step_dir.name)
    self.reason = reason


@contextlib.contextmanager
def reading(step_dir: epath.Path) -> Iterator[None]:
  """Turns any error of the block (Orbax, TensorStore, Grain and JSON raise many kinds for a
  damaged file) into an ``UnreadableCheckpointError`` of ``step_dir``. A ``NirganError`` (a
  step that does not fit the config) passes through, and so does a storage failure that is
  not the checkpoint's fault (no space, no permission, a read-only filesystem): both would
  refuse every step alike."""
  try:
    yield
  except NirganError:
    raise
  except Exception as e:
    failure = errors.storage_failure(e, environment_only=True)
    if failure is not None:
      raise failure from e
    raise UnreadableCheckpointError(step_dir, errors.brief(e)) from e


@contextlib.contextmanager
def writing(manager: ocp.CheckpointManager) -> Iterator[None]:
  """Turns a failed checkpoint write in the block (a save, or the wait for one in the
  background) that the filesystem refused into one ``StorageError`` naming the checkpoint
  directory: Orbax raises TensorStore's errors or an ``OSError`` without a path. The step
  being written never appears (Orbax renames it into place only once complete)."""
  try:
    yield
  except NirganError:
    raise
  except Exception as e:
    failure = errors.storage_failure(e)
    if failure is None:
      raise
    raise errors.StorageError(f"{manager.directory}: cannot save a checkpoint",
                              failure.errno) from e


def make_manager(directory: str | os.PathLike, keep_best: int) -> ocp.CheckpointManager:
  """A manager that always keeps the latest checkpoint (for resume) and the ``keep_best``
  lowest val L1 ones. ``best_fn`` + ``max_to_keep`` could delete the latest, and
  ``BestN`` keeps the highest values unless ``reverse=True``.

  The manager reads every step's metrics when it opens; a step whose metrics are unreadable
  is set aside first (``set_aside``), with a warning."""
  directory = paths.as_path(directory)
  for step in saved_steps(directory):
    problem = _agreed_problem(_metrics_problem(directory, step), directory / str(step))
    if problem is not None:
      _warn_set_aside(problem, set_aside(directory, step))
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
  return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, g_state, d_state, satclip_params,
         data_iterator, metadata: dict[str, Any], metrics: dict[str, float] | None) -> None:
  """Saves asynchronously. ``satclip_params`` ({} without injection) travel with the run so
  that export never needs the original SatCLIP file again."""
  items = dict(
      generator=ocp.args.StandardSave(g_state.stored()),
      discriminator=ocp.args.StandardSave(d_state.stored()),
      **{DATA_ITER_ITEM: grain.checkpoint.CheckpointSave(data_iterator)},
      metadata=ocp.args.JsonSave(metadata),
  )
  if g_state.ema_params is not None:
    items[GENERATOR_EMA] = ocp.args.StandardSave(g_state.ema_params)
  if satclip_params:
    items["satclip"] = ocp.args.StandardSave(satclip_params)
  with writing(manager):
    manager.save(step, metrics=metrics, args=ocp.args.Composite(**items))


def _abstract(tree: Any) -> Any:
  """``tree`` as ``jax.ShapeDtypeStruct``s with the arrays' shardings: a restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                      if hasattr(x, "sharding") else x, tree)


def _check_fits(item_dir: epath.Path, params: Any) -> None:
  """Raises ``ConfigError`` if the parameters stored in ``item_dir`` differ from ``params`` in
  names or shapes: a run of another model config, which no other step would fit either (Orbax
  would raise the same kinds of error as for a damaged file). Reading the item's metadata
  raises if it is damaged."""
  stored = ocp.StandardCheckpointHandler().metadata(item_dir).tree
  if isinstance(stored, dict) and "params" in stored and "opt_state" in stored:
    stored = stored["params"]  # a train state's
  shapes = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape)
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  stored, expected = shapes(stored), shapes(params)
  differences = sorted(stored.keys() ^ expected.keys()) + sorted(
      k for k in stored.keys() & expected.keys() if stored[k] != expected[k])
  if differences:
    raise ConfigError(f"{item_dir}: was saved by a run of another model config "
                      f"({len(differences)} parameters differ, first {differences[0]}); "
                      "resume with the config the run was started with, or use a new workdir")


def restore(manager: ocp.CheckpointManager, step: int, g_state, d_state, data_iterator,
            satclip_params: Any = None):
  """(g_state, d_state, metadata) of ``step``; the iterator is restored in place.

  ``g_state``/``d_state`` are targets (arrays or ``jax.ShapeDtypeStruct`` with shardings)
  that give the restored arrays their shardings. The step's SatCLIP encoder is read too,
  into ``satclip_params``' shardings, though the run keeps its own: a step restores
  completely or raises ``UnreadableCheckpointError``.
  """
  step_dir = epath.Path(manager.directory) / str(step)
  targets = dict(generator=_abstract(g_state.stored()),
                 discriminator=_abstract(d_state.stored()))
  params = dict(generator=g_state.params, discriminator=d_state.params)
  if g_state.ema_params is not None:
    if not (step_dir / GENERATOR_EMA).is_dir():
      raise ConfigError(f"{manager.directory}/{step}: holds no moving average of the generator "
                        "to resume with optim.ema_decay > 0; resume with the run's "
                        "optim.ema_decay=0, or start a new workdir")
    targets[GENERATOR_EMA] = params[GENERATOR_EMA] = _abstract(g_state.ema_params)
  if satclip_params and (step_dir / "satclip").is_dir():
    targets["satclip"] = params["satclip"] = _abstract(satclip_params)
  with reading(step_dir):
    for item, item_params in params.items():
      _check_fits(step_dir / item, item_params)
    items = {item: ocp.args.StandardRestore(target) for item, target in targets.items()}
    restored = manager.restore(step, args=ocp.args.Composite(
        **{DATA_ITER_ITEM: grain.checkpoint.CheckpointRestore(data_iterator)},
        metadata=ocp.args.JsonRestore(), **items))
    metadata = _checked_metadata(restored.metadata)
  state = lambda target, stored, **fields: target.replace(
      step=stored.step, params=stored.params, opt_state=stored.opt_state, **fields)
  return (state(g_state, restored.generator, ema_params=restored.get(GENERATOR_EMA)),
          state(d_state, restored.discriminator), metadata)


def _checked_metadata(metadata: Any) -> dict[str, Any]:
  if not isinstance(metadata, dict) or "config" not in metadata:
    raise ValueError(f"{METADATA_ITEM} holds no run config")
  return metadata


def restore_metadata(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON metadata of ``step`` alone (config, pipeline fingerprint, reader, plateau)."""
  return _read_metadata(epath.Path(manager.directory) / str(step))


def _read_metadata(step_dir: epath.Path) -> dict[str, Any]:
  with reading(step_dir):
    return _checked_metadata(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        step_dir / METADATA_ITEM))


def _metrics_problem(directory: epath.Path, step: int) -> UnreadableCheckpointError | None:
  """Why the metrics the checkpoint manager wrote for ``step`` cannot be read (None if they
  can, or if the step has none: a step saved on SIGTERM)."""
  step_dir = directory / str(step)
  metrics_file = step_dir / METRICS_ITEM / METRICS_ITEM
  try:
    with reading(step_dir):
      if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict):
          raise ValueError(f"{METRICS_ITEM} is not a JSON object")
  except UnreadableCheckpointError as e:
    return e
  return None


def _val_metric(directory: epath.Path, step: int) -> float | None:
  metrics_file = directory / str(step) / METRICS_ITEM / METRICS_ITEM
  if not metrics_file.exists():
    return None
  value = json.loads(metrics_file.read_text()).get(VAL_METRIC)
  return None if value is None else float(value)


def saved_steps(directory: str | os.PathLike) -> list[int]:
  """The finished steps in an Orbax directory, newest first: folders named by their step (a
  save in progress has a suffix); on cloud storage, which has no rename, those Orbax marked
  complete. Listed without the checkpoint manager, which reads every step's metrics."""
  directory = paths.as_path(directory)
  if not directory.is_dir():
    return []
  cloud = paths.is_cloud(directory)
  return sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()
                 and (not cloud or (p / COMMIT_MARKER).exists())), reverse=True)


# --------------------------------------------------------------------------- unreadable steps


def set_aside(directory: epath.Path, step: int) -> epath.Path:
  """Moves step ``step`` of the Orbax ``directory`` to ``directory/unreadable/<step>`` (a
  free name ``<step>.<n>`` if a step of that number was set aside before); returns where.
  Process 0 moves it, every process waits until it has."""
  directory = epath.Path(directory)
  aside = directory / UNREADABLE_DIR
  destination = aside / str(step)
  n = 1
  while destination.exists():
    destination, n = aside / f"{step}.{n}", n + 1
  if jax.process_index() == 0:
    aside.mkdir(parents=True, exist_ok=True)
    _move_tree(directory / str(step), destination)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"nirgan set aside checkpoint {step}")
  return destination


def _move_tree(source: epath.Path, destination: epath.Path) -> None:
  """Renames ``source`` to ``destination``; on cloud storage, which renames no folders,
  copies every file and then removes ``source``."""
  if not paths.is_cloud(source):
    source.rename(destination)
    return
  for file in _files_under(source):
    target = destination / file.relative_to(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    file.copy(target)
  source.rmtree()


def _files_under(folder: epath.Path) -> Iterator[epath.Path]:
  """Every file below ``folder``, by listing each folder (epath refuses ``rglob`` on a
  bucket)."""
  for path in folder.iterdir():
    if path.is_dir():
      yield from _files_under(path)
    else:
      yield path


def set_aside_steps(directory: str | os.PathLike) -> list[str]:
  """Names of the steps an earlier run set aside in ``directory/unreadable``."""
  aside = paths.as_path(directory) / UNREADABLE_DIR
  return sorted(p.name for p in aside.iterdir()) if aside.is_dir() else []


def _agreed_problem(problem: UnreadableCheckpointError | None, step_dir: epath.Path
                    ) -> UnreadableCheckpointError | None:
  """``problem`` (of ``step_dir``) if this or any other process found one: every process of a
  multi-process run must decide alike, so one found elsewhere stands in for None here."""
  if jax.process_count() == 1:
    return problem
  found = multihost_utils.process_allgather(np.int32(problem is not None))
  if problem is None and np.any(found):
    return UnreadableCheckpointError(step_dir, "unreadable on another process")
  return problem


def _warn_set_aside(problem: UnreadableCheckpointError, destination: epath.Path) -> None:
  logging.warning("checkpoint step %d is unreadable (%s): moved it to %s", problem.step,
                  problem.reason, destination)


def check_own_files(step_dir: epath.Path) -> None:
  """Reads what only this process restores of ``step_dir``, its data iterator state (Grain
  keeps one JSON file per process), without any collective; raises
  ``UnreadableCheckpointError`` if it cannot be read.

  In a multi-process run the processes must agree on a step before restoring it: a process
  that failed inside the restore, on a file of its own, would leave the others waiting in
  Orbax's collectives (or pair theirs with its next one)."""
  state_file = (step_dir / DATA_ITER_ITEM
                / f"process_{jax.process_index()}-of-{jax.process_count()}.json")
  if not state_file.parent.is_dir():
    return  # a step without an iterator state: the restore says so, on every process alike
  with reading(step_dir):
    json.loads(state_file.read_text())


def restore_newest_readable(manager: ocp.CheckpointManager,
                            restore_step: Callable[[int], _T]) -> tuple[int, _T]:
  """(step, ``restore_step(step)``) for the newest step that restores; each newer step that
  raises ``UnreadableCheckpointError`` is set aside with one warning line. Raises
  ``NoReadableCheckpointError`` if none restores. Every process of a run decides alike: a
  step is restored only once every process has read its own files of it
  (``check_own_files``)."""
  directory = epath.Path(manager.directory)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_own_files(directory / str(step))
      problem = None
    except UnreadableCheckpointError as e:
      problem = e
    problem = _agreed_problem(problem, directory / str(step))
    if problem is None:
      try:
        result = restore_step(step)
      except UnreadableCheckpointError as e:
        problem = e
      problem = _agreed_problem(problem, directory / str(step))
    if problem is None:
      return step, result
    _warn_set_aside(problem, set_aside(directory, step))
    manager.reload()
  raise NoReadableCheckpointError(directory)


class NoReadableCheckpointError(NirganError):
  """A run whose every checkpoint was set aside as unreadable: starting it afresh is the
  user's decision."""

  def __init__(self, directory: epath.Path):
    aside = directory / UNREADABLE_DIR
    super().__init__(
        f"{directory}: no checkpoint of this run can be restored (the unreadable ones are "
        f"in {aside}: {', '.join(set_aside_steps(directory))}); to train from scratch here, "
        f"move {aside} elsewhere, or give another --workdir")


# --------------------------------------------------------------------------- export, warm start


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


def _check_which(which: str | int) -> None:
  if which not in ("latest", "best") and not (isinstance(which, int) or str(which).isdigit()):
    raise UsageError(f"step must be 'best', 'latest' or a number, not {which!r}")


def _preference(directory: epath.Path, steps: list[int], which: str) -> list[int]:
  """``steps`` in the order ``which`` prefers them: newest first for "latest"; for "best",
  lowest val L1 first, then the steps without one (or with unreadable metrics), newest
  first."""
  if which == "latest":
    return steps
  metrics = {}
  for step in steps:
    with contextlib.suppress(Exception):  # unreadable: found again when the step is read
      if (value := _val_metric(directory, step)) is not None:
        metrics[step] = value
  return sorted(metrics, key=metrics.get) + [s for s in steps if s not in metrics]


def _restore_on_one_device(item_dir: epath.Path) -> Any:
  """An item restored onto the first local device, whatever mesh saved it."""
  checkpointer = ocp.StandardCheckpointer()
  tree = ocp.StandardCheckpointHandler().metadata(item_dir).tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  return checkpointer.restore(item_dir, target)


def _read_weights(directory: epath.Path, step: int, average: bool
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
  step_dir = directory / str(step)
  params = {}
  with reading(step_dir):
    problem = _metrics_problem(directory, step)
    if problem is not None:
      raise problem
    for item in WEIGHT_ITEMS:
      if (step_dir / item).is_dir():
        restored = _restore_on_one_device(step_dir / item)
        params[item] = jax.tree.map(np.asarray, restored if item == "satclip"
                                    else restored["params"])
      elif item != "satclip":
        raise FileNotFoundError(f"{item}/ is missing")
    if average and (step_dir / GENERATOR_EMA).is_dir():
      params["generator"] = jax.tree.map(np.asarray,
                                         _restore_on_one_device(step_dir / GENERATOR_EMA))
  return params, _read_metadata(step_dir)


def restore_weights(path: str | os.PathLike, which: str | int = "best", average: bool = True
                    ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """(params, metadata, step) of a run's checkpoint, without the optimizer states.

  ``which`` is "latest", "best" (lowest val L1; the latest if no step has metrics) or a step
  number. A step that ``which`` names by number must read; for "latest" and "best", a step
  that does not read is passed over, with a warning, for the next one they would choose.

  ``params`` has "generator" and "discriminator" (and "satclip" if the run injected
  SatCLIP) as numpy trees; ``metadata`` holds the run's config as a dict. The generator is
  the moving average of its weights if the run kept one (``optim.ema_decay``) and
  ``average``, else its weights as trained.
  """
  _check_which(which)
  directory = checkpoints_dir(path)
  steps = saved_steps(directory)
  if not steps:
    aside = set_aside_steps(directory)
    raise CheckpointNotFoundError(f"{directory}: holds no checkpoint" + (
        f" that reads (training set aside steps {', '.join(aside)} in "
        f"{directory / UNREADABLE_DIR})" if aside else ""))
  if which not in ("latest", "best"):
    step = int(which)
    if step not in steps:
      raise CheckpointNotFoundError(f"{directory}: no checkpoint of step {which}; "
                                    f"there are {sorted(steps)}")
    try:
      return (*_read_weights(directory, step, average), step)
    except UnreadableCheckpointError as e:
      readable = [s for s in sorted(steps) if s != step and _reads(directory, s, average)]
      raise UnreadableCheckpointError(e.step_dir, f"{e.reason}; readable steps: "
                                      f"{readable or 'none'}") from e
  for step in _preference(directory, steps, which):
    try:
      return (*_read_weights(directory, step, average), step)
    except UnreadableCheckpointError as e:
      logging.warning("%s; looking for the %s step among the others", e, which)
      last = e
  raise NirganError(f"{directory}: none of its checkpoints can be read (steps "
                    f"{', '.join(map(str, sorted(steps)))}; the last tried: {last})")


def _reads(directory: epath.Path, step: int, average: bool) -> bool:
  try:
    _read_weights(directory, step, average)
  except UnreadableCheckpointError:
    return False
  return True
