"""``train_and_evaluate``: the NIR-GAN training loop (library part of ``nirgan_jax.train``).

Data parallel over every device of every process; resumes automatically from the
latest checkpoint in ``workdir``; evaluates and checkpoints every ``eval_every``
steps; logs with CLU to TensorBoard and stdout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from data_prep import contract
from nirgan_jax import checkpointing, gan_step, input_pipeline, model_io, models
from nirgan_jax import mesh as mesh_lib
from nirgan_jax.schedules import Plateau

MODEL_INPUTS = ("rgb", "nir", "lonlat")
NONFINITE_MODES = ("skip", "halt")


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or inf and ``train.on_nonfinite`` is "halt"."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails before anything compiles, naming the bad key."""
  checks = [
      ("model.injection.style", config.model.injection.style in models.INJECTION_STYLES),
      ("model.conv_impl", config.model.conv_impl in models.layers.CONV_IMPLS),
      ("model.generator.norm", config.model.generator.norm in models.layers.NORMS),
      ("model.generator.padding_type",
       config.model.generator.padding_type in models.layers.PADDING_MODES),
      ("compute_dtype", config.compute_dtype in models.COMPUTE_DTYPES),
      ("satclip.harmonics", config.satclip.harmonics in models.satclip.HARMONICS_CONVENTIONS),
      ("loss.gan_mode", config.loss.gan_mode in ("lsgan", "vanilla")),
      ("loss.rs_criterion", config.loss.rs_criterion in ("l1", "l2")),
      ("optim.lr", config.optim.lr > 0),
      ("optim.plateau.factor", 0 < config.optim.plateau.factor < 1),
      ("optim.plateau.patience", config.optim.plateau.patience >= 0),
      ("data.image_size", config.data.image_size > 0 and config.data.image_size % 4 == 0),
      ("data.batch_size_per_device", config.data.batch_size_per_device > 0),
      ("pad", 0 <= config.pad < config.data.image_size),
      ("train.num_train_steps", config.train.num_train_steps > 0),
      ("train.eval_every", config.train.eval_every > 0),
      ("train.log_every", config.train.log_every > 0),
      ("train.on_nonfinite", config.train.on_nonfinite in NONFINITE_MODES),
  ]
  for key, ok in checks:
    if not ok:
      value = config
      for part in key.split("."):
        value = value[part]
      raise ValueError(f"invalid config value {key}={value!r}")


def load_satclip_params(config: ml_collections.ConfigDict, nirgan: gan_step.NIRGAN,
                        rng: jax.Array) -> Any:
  """SatCLIP encoder params from ``satclip.checkpoint`` (an original ``.ckpt`` or a model
  directory), or random ones if ``satclip.allow_random_init``; {} without injection."""
  if nirgan.encoder is None:
    return {}
  path = config.satclip.checkpoint
  if not path:
    if not config.satclip.allow_random_init:
      raise ValueError("SatCLIP injection is on but satclip.checkpoint is empty: pass "
                       "--config.satclip.checkpoint=SATCLIP.ckpt (or a converted model "
                       "directory), or --config.satclip.allow_random_init=True for tests "
                       "and demos (the location prior is then meaningless)")
    logging.warning("SatCLIP encoder randomly initialised (satclip.allow_random_init)")
    return gan_step.init_location_encoder(nirgan, rng)
  if Path(path).is_dir():
    params, saved = model_io.load_model_dir(path)
  else:
    from nirgan_jax import import_torch

    params, saved = import_torch.import_satclip(path)
  for key in ("legendre_polys", "harmonics", "dim_hidden", "num_hidden_layers", "embed_dim"):
    if saved.satclip[key] != config.satclip[key]:
      raise ValueError(f"satclip.{key}={config.satclip[key]!r} but {path} has "
                       f"{saved.satclip[key]!r}")
  return jax.tree.map(jnp.asarray, params["satclip"])


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def evaluate(eval_fn, g_params, satclip_params, dataset, mesh, global_batch: int,
             ) -> dict[str, float]:
  """Mean of every metric over one pass, overall and per sensor (``<metric>/<sensor>``)."""
  sums: dict[str, float] = {}
  counts: dict[str, float] = {}
  for batch in input_pipeline.eval_batches(dataset, global_batch, jax.process_index(),
                                           jax.process_count()):
    mask, sensors = batch["mask"], batch["sensor_id"]
    _, metrics = eval_fn(g_params, satclip_params,
                         mesh_lib.shard_batch(mesh, {k: batch[k] for k in MODEL_INPUTS}))
    metrics = {k: np.asarray(jax.device_get(v)).reshape(-1) for k, v in metrics.items()}
    for name, values in metrics.items():
      for group, weight in [("", mask)] + [
          (f"/{sensor}", mask * (sensors == i)) for i, sensor in enumerate(contract.SENSORS)]:
        if weight.sum() == 0:
          continue
        sums[name + group] = sums.get(name + group, 0.0) + float((values * weight).sum())
        counts[name + group] = counts.get(name + group, 0.0) + float(weight.sum())
  return {f"val_{k}": sums[k] / counts[k] for k in sums}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the last
  evaluation's metrics."""
  validate_config(config)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh_lib.make_data_mesh()
  nirgan = gan_step.NIRGAN.from_config(config)
  init_rng, satclip_rng, step_rng = jax.random.split(
      jax.random.key(config.seed, impl=config.rng_impl), 3)
  satclip_params = jax.device_put(load_satclip_params(config, nirgan, satclip_rng),
                                  mesh_lib.replicated(mesh))
  image_size = config.data.image_size
  g_state, d_state = gan_step.create_train_states(nirgan, init_rng, image_size, mesh)

  data = config.data
  train_specs = input_pipeline.source_specs(data, data.train_split)
  eval_specs = input_pipeline.source_specs(data, data.eval_split)
  if data.get("build_missing", False):
    _build_missing(train_specs + eval_specs)
  global_batch = data.batch_size_per_device * jax.device_count()
  train_iter = input_pipeline.make_iterator(
      input_pipeline.train_dataset(train_specs, image_size, global_batch, config.seed,
                                   jax.process_index(), jax.process_count()),
      data.read_threads, data.prefetch_buffer, data.workers, data.per_worker_buffer)
  eval_data = input_pipeline.eval_dataset(eval_specs, image_size)
  fingerprint = input_pipeline.pipeline_fingerprint(train_specs, image_size, global_batch,
                                                    config.seed)

  manager = checkpointing.make_manager(workdir / "checkpoints", config.train.keep_best)
  plateau = Plateau(lr=config.optim.lr, **config.optim.plateau.to_dict())
  start_step = 0
  if manager.latest_step() is not None:
    start_step = manager.latest_step()
    g_state, d_state, metadata = checkpointing.restore(manager, start_step, g_state, d_state,
                                                       train_iter)
    input_pipeline.check_resumable(metadata["pipeline"], fingerprint)
    plateau = Plateau.from_state_dict(metadata["plateau"])  # its lr is in the opt states
    logging.info("resumed from step %d in %s", start_step, workdir)

  writer = metric_writers.create_default_writer(str(workdir),
                                                just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
    parameter_overview.log_parameter_overview(g_state.params, msg="generator")
    parameter_overview.log_parameter_overview(d_state.params, msg="discriminator")
  num_steps = config.train.num_train_steps
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)]
  train_step = gan_step.make_train_step(nirgan, mesh)
  eval_step = gan_step.make_eval_step(nirgan, mesh, config.train.eval_ssim_window)

  history, eval_metrics = [], {}
  for step in range(start_step + 1, num_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = mesh_lib.shard_batch(mesh, {k: v for k, v in next(train_iter).items()
                                          if k in MODEL_INPUTS})
      g_state, d_state, metrics = train_step(g_state, d_state, satclip_params, batch, step_rng)
    if float(metrics["nonfinite"]):
      bad = sorted(k for k, v in jax.device_get(metrics).items() if not np.isfinite(v))
      message = f"non-finite loss at step {step}: {', '.join(bad)}; update skipped"
      if config.train.on_nonfinite == "halt":
        raise NonFiniteLossError(message)
      logging.warning(message)
    history.append(metrics)
    for hook in hooks:
      hook(step)
    if step % config.train.log_every == 0 or step == num_steps:
      writer.write_scalars(step, {f"train/{k}": v for k, v in _mean_metrics(history).items()})
      history = []
    if step % config.train.eval_every == 0 or step == num_steps:
      eval_metrics = evaluate(eval_step, g_state.params, satclip_params, eval_data, mesh,
                              global_batch)
      writer.write_scalars(step, eval_metrics)
      lr = plateau.lr
      if plateau.update(eval_metrics[checkpointing.VAL_METRIC]) != lr:
        logging.info("val L1 plateaued: learning rate %g -> %g at step %d", lr, plateau.lr, step)
        g_state = gan_step.with_learning_rate(g_state, plateau.lr)
        d_state = gan_step.with_learning_rate(d_state, plateau.lr)
      metadata = {"config": json.loads(config.to_json_best_effort()), "pipeline": fingerprint,
                  "plateau": plateau.state_dict()}
      checkpointing.save(manager, step, g_state, d_state, train_iter, metadata,
                         {checkpointing.VAL_METRIC: eval_metrics[checkpointing.VAL_METRIC]})
  manager.wait_until_finished()
  writer.flush()
  return eval_metrics


def _build_missing(specs: list[input_pipeline.SourceSpec]) -> None:
  """Builds generated sources (the demo) that are not built yet; others must be built by
  the user from their raw archives."""
  from data_prep import build

  for spec in {dataclasses.replace(s, split="", weight=0.0) for s in specs}:
    dataset, _, config_name = spec.name.partition("/")
    if build.BUILDERS[dataset].MANUAL_DOWNLOAD_INSTRUCTIONS:
      continue
    builder, report = build.build(dataset, spec.data_dir, config=config_name or None)
    if report is not None:
      logging.info("built %s in %s", spec.name, builder.data_dir)


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
