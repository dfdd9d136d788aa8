"""``train_and_evaluate``: the NIR-GAN training loop (library part of ``nirgan_jax.train``).

Data parallel over every device of every process; resumes automatically from the
newest readable checkpoint in ``workdir`` (or starts from ``init.checkpoint`` weights);
evaluates and checkpoints every ``eval_every`` steps; logs to TensorBoard (``summaries``, no
TensorFlow) and stdout; saves and stops on SIGTERM. One run at a time trains in a workdir
(``workdir_lock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import parameter_overview
from jax.experimental import multihost_utils

from nirgan_jax import errors, evaluation, models, paths
from nirgan_jax.data import pipeline as input_pipeline
from nirgan_jax.data.gsd_shares import GsdShares
from nirgan_jax.train import (
  checkpointing,
  config_checks,
  prefetch,
  summaries,
  warm_start,
  workdir_lock,
)
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train import step as gan_step
from nirgan_jax.train.evaluation import MODEL_INPUTS, evaluate, prediction_panels
from nirgan_jax.train.preemption import Preempted, StopSignal
from nirgan_jax.train.progress import ProgressLog
from nirgan_jax.train.schedules import Plateau
from nirgan_jax.train.state import TrainState, create_train_states, with_learning_rate


class NonFiniteLossError(errors.NirganError, FloatingPointError):
  """A loss became NaN or inf and ``train.on_nonfinite`` is "halt"."""


@dataclasses.dataclass
class Data:
  """The run's input pipelines and the fingerprint that ties a checkpoint to them."""

  train_dataset: Any  # grain.MapDataset of this process's training batches
  eval_data: Any
  fingerprint: dict[str, Any]
  global_batch: int
  reader: dict[str, Any]  # threads and worker processes that read both pipelines
  gsd_shares: GsdShares  # of this process's training examples since the run (re)started
  train_iter: Any = None  # grain.DatasetIterator, checkpointed with the run (``open``)

  def open(self, workers: int) -> None:
    """Starts reading the training data with ``workers`` processes (evaluation too)."""
    self.reader["workers"] = workers
    self.train_iter = input_pipeline.make_iterator(self.train_dataset, **self.reader)


@dataclasses.dataclass
class RunState:
  """Everything a step changes or a checkpoint holds, besides the data iterator."""

  g_state: TrainState
  d_state: TrainState
  satclip_params: Any
  plateau: Plateau
  step: int = 0
  iterator_state: dict[str, Any] | None = None  # the data iterator right after ``step``


def make_data(config: ml_collections.ConfigDict) -> Data:
  data = config.data
  train_specs = input_pipeline.source_specs(data, data.train_split)
  eval_specs = input_pipeline.source_specs(data, data.eval_split)
  input_pipeline.check_weights(train_specs)  # before anything is built
  if data.get("build_missing", False):
    input_pipeline.build_missing(train_specs + eval_specs)
  input_pipeline.check_built(train_specs + eval_specs)
  global_batch = data.batch_size_per_device * jax.device_count()
  reader = dict(read_threads=data.read_threads, prefetch_buffer=data.prefetch_buffer,
                workers=data.workers, per_worker_buffer=data.per_worker_buffer)
  train_dataset = input_pipeline.train_dataset(
      train_specs, data.image_size, global_batch, config.seed, jax.process_index(),
      jax.process_count(), illumination_gain=tuple(data.get("illumination_gain", (1, 1))))
  return Data(train_dataset=train_dataset,
              eval_data=input_pipeline.eval_dataset(eval_specs, data.image_size),
              fingerprint=input_pipeline.pipeline_fingerprint(train_specs, data.image_size,
                                                              global_batch, config.seed),
              global_batch=global_batch, reader=reader,
              gsd_shares=GsdShares([spec.name for spec in train_specs]))


def init_or_restore(config: ml_collections.ConfigDict, nirgan: models.NIRGAN, mesh,
                    manager, data: Data, init_rng: jax.Array, satclip_rng: jax.Array
                    ) -> RunState:
  """The newest readable checkpoint of the workdir if it has one (the data iterator is opened
  with the checkpoint's worker count and restored; newer unreadable steps are set aside),
  else fresh states, fine-tuned from ``init.checkpoint`` if set (the data iterator is opened
  by ``train_loop``)."""
  g_state, d_state = create_train_states(nirgan, init_rng, config.data.image_size, mesh)
  resuming = manager.latest_step() is not None
  directory = paths.as_path(manager.directory)
  if not resuming and checkpointing.set_aside_steps(directory):
    raise checkpointing.NoReadableCheckpointError(directory)
  init_params = {} if resuming else warm_start.load_init_weights(config)
  satclip_params = jax.device_put(
      warm_start.load_satclip_params(config, nirgan, satclip_rng, init_params),
      mesh_lib.replicated(mesh))
  if not resuming:
    if init_params:
      source = config.init.checkpoint
      g_state = warm_start.with_init_params(g_state, "generator", init_params["generator"],
                                            source, mesh)
      if "discriminator" in init_params and config.init.discriminator:
        d_state = warm_start.with_init_params(d_state, "discriminator",
                                              init_params["discriminator"], source, mesh)
    plateau = Plateau(lr=config.optim.lr, **config.optim.plateau.to_dict())
    return RunState(g_state, d_state, satclip_params, plateau)

  def restore(step: int):
    metadata = checkpointing.restore_metadata(manager, step)
    input_pipeline.check_resumable(metadata["pipeline"], data.fingerprint)
    data.open(_resumed_workers(config.data.workers, metadata))
    return checkpointing.restore(manager, step, g_state, d_state, data.train_iter,
                                 satclip_params)

  step, (g_state, d_state, metadata) = checkpointing.restore_newest_readable(manager, restore)
  plateau = Plateau.from_state_dict(metadata["plateau"])  # its lr is in the opt states
  logging.info("resumed from step %d in %s", step, manager.directory)
  return RunState(g_state, d_state, satclip_params, plateau, step)


def _resumed_workers(configured: int | str, metadata: dict[str, Any]) -> int:
  """The worker count a checkpoint's iterator state was saved with: the state of Grain's
  multiprocess iterator depends on it, and another count fails to restore or restores the
  wrong position. Checkpoints from before "auto" record only their config's count."""
  saved = int(metadata.get("reader", metadata["config"]["data"])["workers"])
  logging.info("data.workers=%s: resuming with the checkpoint's %d worker processes",
               configured, saved)
  return saved


def _fresh_workers(config: ml_collections.ConfigDict, data: Data, mesh,
                   step_rate: Callable[[dict[str, jax.Array]], float]) -> int:
  """``data.workers``; for "auto", what ``choose_workers`` makes of this process's pipeline
  rate and ``step_rate`` (steps/s of the compiled step on a sharded batch), the same on
  every process (the checkpoint records one count)."""
  workers = config.data.workers
  if workers != input_pipeline.AUTO_WORKERS:
    return int(workers)
  pipeline_rate = input_pipeline.measure_pipeline_rate(
      data.train_dataset, data.reader["read_threads"], data.reader["prefetch_buffer"])
  host = data.train_dataset[0]
  steps_per_s = step_rate(mesh_lib.shard_batch(mesh, {k: host[k] for k in MODEL_INPUTS}))
  local_batch = data.global_batch // jax.process_count()
  cores = input_pipeline.host_cores()
  chosen = input_pipeline.choose_workers(pipeline_rate, steps_per_s, local_batch, cores)
  chosen = int(multihost_utils.broadcast_one_to_all(np.int32(chosen)))
  logging.info("data.workers=auto: %d worker processes (%d cores); one process reads %.1f "
               "examples/s, the step takes %.1f (%.2f steps/s x %d examples per host)",
               chosen, cores, pipeline_rate, steps_per_s * local_batch, steps_per_s,
               local_batch)
  return chosen


def _step_rate(train_step, run: RunState, batch: dict[str, jax.Array], rng: jax.Array,
               repeats: int = 3) -> float:
  """Steps/s of ``train_step`` on ``batch`` after compiling it, on copies of the run's
  states (the step donates its states)."""
  g_state, d_state = jax.tree.map(jnp.copy, (run.g_state, run.d_state))
  g_state, d_state, metrics = train_step(g_state, d_state, run.satclip_params, batch, rng)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(repeats):
    g_state, d_state, metrics = train_step(g_state, d_state, run.satclip_params, batch, rng)
  jax.block_until_ready(metrics)
  return repeats / (time.perf_counter() - start)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       writer: summaries.MetricWriter | None = None) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the last
  evaluation's metrics. Raises ``Preempted`` after saving if SIGTERM arrives. Metrics go to
  ``writer`` (default: TensorBoard files in ``workdir`` and the log)."""
  config_checks.validate_config(config)
  data = make_data(config)  # first: a source that is not built leaves no workdir behind
  workdir = paths.as_path(workdir)  # local or gs://
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
  with _one_run_per_workdir(workdir):
    return _train_and_evaluate(config, data, workdir, writer)


@contextlib.contextmanager
def _one_run_per_workdir(workdir):
  """Process 0 holds ``workdir`` for every process of the run (``workdir_lock``); if another
  run holds it (or the lock file cannot be written), every process raises before touching
  anything."""
  with contextlib.ExitStack() as stack:
    refusal = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(workdir_lock.hold(workdir))
      except (workdir_lock.WorkdirBusyError, OSError) as e:
        refusal = e
    if jax.process_count() > 1:
      refused = multihost_utils.broadcast_one_to_all(np.int32(refusal is not None))
      if refused and refusal is None:
        refusal = workdir_lock.WorkdirBusyError(
            f"{workdir}: process 0 could not hold it for this run (it says why)")
    if refusal is not None:
      raise refusal
    yield


def _train_and_evaluate(config: ml_collections.ConfigDict, data: Data, workdir,
                        writer: summaries.MetricWriter | None) -> dict[str, float]:
  mesh = mesh_lib.make_data_mesh()
  nirgan = models.NIRGAN.from_config(config)
  init_rng, satclip_rng, step_rng = jax.random.split(
      jax.random.key(config.seed, impl=config.rng_impl), 3)
  manager = checkpointing.make_manager(workdir / checkpointing.CHECKPOINTS_DIR,
                                       config.train.keep_best)
  run = init_or_restore(config, nirgan, mesh, manager, data, init_rng, satclip_rng)
  if writer is None:
    writer = summaries.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if run.step == 0:
    writer.write_hparams(_flat_hparams(config))
    parameter_overview.log_parameter_overview(run.g_state.params, msg="generator")
    parameter_overview.log_parameter_overview(run.d_state.params, msg="discriminator")
  try:
    return train_loop(config, nirgan, mesh, run, data, manager, writer, step_rng)
  finally:
    with checkpointing.writing(manager):
      manager.wait_until_finished()
    writer.flush()


def train_loop(config: ml_collections.ConfigDict, nirgan: models.NIRGAN, mesh,
               run: RunState, data: Data, manager, writer, rng: jax.Array
               ) -> dict[str, float]:
  """Steps ``run`` from ``run.step`` to ``train.num_train_steps``, logging, evaluating and
  checkpointing on the way; returns the last evaluation's metrics. Opens a fresh run's data
  iterator, once the step is compiled ("auto" workers time it)."""
  train_config = config.train
  num_steps = train_config.num_train_steps
  report_progress = ProgressLog(num_steps)
  train_step = gan_step.make_train_step(nirgan, mesh)
  # Every pixel of the crop, SSIM where its window fits (evaluation.Protocol "whole_valid<w>").
  eval_step = gan_step.make_eval_step(nirgan, mesh,
                                      evaluation.Protocol(train_config.eval_ssim_window))
  if data.train_iter is None:
    data.open(_fresh_workers(config, data, mesh,
                             lambda batch: _step_rate(train_step, run, batch, rng)))
  every = lambda period, step: period and (step % period == 0 or step == num_steps)
  batches = prefetch.prefetch_to_device(
      data.train_iter, lambda host: mesh_lib.shard_batch(mesh, {k: host[k] for k in MODEL_INPUTS}),
      config.data.device_prefetch)
  # Step metrics stay on the devices until a log step: nothing on the hot path waits for a
  # step to finish, so reading, copying and computing overlap.
  history, eval_metrics = {}, {}
  period_start = time.perf_counter()
  with StopSignal(check_every=train_config.stop_check_every) as stop:
    for step in range(run.step + 1, num_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = next(batches)
        run.g_state, run.d_state, history[step] = train_step(
            run.g_state, run.d_state, run.satclip_params, batch.device, rng)
      run.step, run.iterator_state = step, batch.iterator_state
      data.gsd_shares.add(batch.host)
      report_progress(step)
      if every(train_config.log_every, step):
        means = _log_metrics(history, train_config.on_nonfinite)
        # Fetching the metrics waited for the period's last step: an exact rate.
        now = time.perf_counter()
        means["steps_per_s"] = len(history) / (now - period_start)
        writer.write_scalars(step, {**{f"train/{k}": v for k, v in means.items()},
                                    **data.gsd_shares.scalars()})
        history, period_start = {}, now
      if every(train_config.image_every, step):
        writer.write_images(step, {"val/panels": prediction_panels(
            eval_step, run.g_state.eval_params, run.satclip_params, data.eval_data, mesh,
            data.global_batch, train_config.num_images)})
      if every(train_config.eval_every, step):
        eval_metrics = evaluate(eval_step, run.g_state.eval_params, run.satclip_params,
                                data.eval_data, mesh, data.global_batch, data.reader)
        writer.write_scalars(step, eval_metrics)
        _update_learning_rate(run, eval_metrics[checkpointing.VAL_METRIC])
        save(config, run, data, manager,
             {checkpointing.VAL_METRIC: eval_metrics[checkpointing.VAL_METRIC]})
      if step < num_steps and stop.requested(step):
        if manager.latest_step() != step:
          save(config, run, data, manager, None)
        raise Preempted(step, stop.signal_name)
  return eval_metrics


def save(config: ml_collections.ConfigDict, run: RunState, data: Data, manager,
         metrics: dict[str, float] | None) -> None:
  metadata = {"config": json.loads(config.to_json_best_effort()),
              "pipeline": data.fingerprint, "reader": data.reader,
              "plateau": run.plateau.state_dict()}
  checkpointing.save(manager, run.step, run.g_state, run.d_state, run.satclip_params,
                     prefetch.IteratorSnapshot(run.iterator_state), metadata, metrics)


def _update_learning_rate(run: RunState, val_l1: float) -> None:
  lr = run.plateau.lr
  if run.plateau.update(val_l1) != lr:
    logging.info("val L1 plateaued: learning rate %g -> %g at step %d", lr, run.plateau.lr,
                 run.step)
    run.g_state = with_learning_rate(run.g_state, run.plateau.lr)
    run.d_state = with_learning_rate(run.d_state, run.plateau.lr)


def _log_metrics(history: dict[int, dict[str, jax.Array]], on_nonfinite: str
                 ) -> dict[str, float]:
  """Means of the steps' metrics since the last log step, fetched in one transfer. Steps
  whose update was skipped for a non-finite loss are named; "halt" stops the run here."""
  steps = sorted(history)
  values = jax.device_get([history[s] for s in steps])
  skipped = [s for s, v in zip(steps, values, strict=True) if v["nonfinite"]]
  if skipped:
    losses = sorted({k for v in values if v["nonfinite"] for k, x in v.items()
                     if not np.isfinite(x)})
    message = (f"non-finite loss in {len(skipped)} step(s) of [{steps[0]}, {steps[-1]}] "
               f"(steps {', '.join(map(str, skipped[:10]))}): {', '.join(losses)}; "
               "those updates were skipped")
    if on_nonfinite == "halt":
      raise NonFiniteLossError(message)
    logging.warning(message)
  return {k: float(np.mean([v[k] for v in values])) for k in values[0]}


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(f"{prefix}.{k}" if prefix else k, v)
    elif isinstance(value, (int, float, str, bool)):
      flat[prefix] = value

  walk("", json.loads(config.to_json_best_effort()))
  return flat
