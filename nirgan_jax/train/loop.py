"""``train_and_evaluate``: the NIR-GAN training loop (library part of ``nirgan_jax.train``).

Data parallel over every device of every process; resumes automatically from the
latest checkpoint in ``workdir`` (or starts from ``init.checkpoint`` weights); evaluates
and checkpoints every ``eval_every`` steps; logs with CLU to TensorBoard and stdout;
saves and stops on SIGTERM.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from jax.experimental import multihost_utils

from data_prep import contract
from nirgan_jax import checkpointing, figures, gan_step, input_pipeline, model_io, models
from nirgan_jax import mesh as mesh_lib
from nirgan_jax import metrics as metrics_lib
from nirgan_jax.preemption import Preempted, StopSignal
from nirgan_jax.schedules import Plateau

MODEL_INPUTS = ("rgb", "nir", "lonlat")
NONFINITE_MODES = ("skip", "halt")


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or inf and ``train.on_nonfinite`` is "halt"."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails before anything compiles, naming the bad key."""
  checks = [
      ("model.injection.style", config.model.injection.style in models.INJECTION_STYLES),
      ("model.generator.kind", config.model.generator.kind in models.GENERATOR_KINDS),
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
      ("train.image_every", config.train.image_every >= 0),
      ("train.num_images", 0 < config.train.num_images
       <= config.data.batch_size_per_device * jax.device_count()),
      ("init.step", config.init.step in ("best", "latest") or str(config.init.step).isdigit()),
      ("train.on_nonfinite", config.train.on_nonfinite in NONFINITE_MODES),
  ]
  for key, ok in checks:
    if not ok:
      value = config
      for part in key.split("."):
        value = value[part]
      raise ValueError(f"invalid config value {key}={value!r}")


def load_satclip_params(config: ml_collections.ConfigDict, nirgan: gan_step.NIRGAN,
                        rng: jax.Array, init_params: dict[str, Any] | None = None) -> Any:
  """SatCLIP encoder params from ``satclip.checkpoint`` (an original ``.ckpt`` or a model
  directory), else from the ``init.checkpoint`` weights if they hold an encoder, else random
  ones if ``satclip.allow_random_init``; {} without injection."""
  if nirgan.encoder is None:
    return {}
  path = config.satclip.checkpoint
  if not path and init_params and "satclip" in init_params:
    logging.info("SatCLIP encoder from init.checkpoint %s", config.init.checkpoint)
    _check_same_tree("satclip", init_params["satclip"],
                     jax.eval_shape(functools.partial(gan_step.init_location_encoder, nirgan), rng),
                     config.init.checkpoint)
    return jax.tree.map(jnp.asarray, init_params["satclip"])
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


def load_init_weights(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Weights to fine-tune from, by ``init.checkpoint``: a model directory (export or PyTorch
  import), an original NIR-GAN ``.ckpt``, or another run's workdir (step ``init.step``).
  Returns {} when ``init.checkpoint`` is empty."""
  path = config.init.checkpoint
  if not path:
    return {}
  source = Path(path).expanduser()
  if not source.exists():
    raise FileNotFoundError(f"init.checkpoint {path}: no such file or directory")
  if (source / model_io.CONFIG_FILE).is_file():
    params, _ = model_io.load_model_dir(source)
  elif source.is_file():
    from nirgan_jax import import_torch

    params, _ = import_torch.import_nirgan(source, config.model.injection.style,
                                           config.satclip.harmonics)
  else:
    params, _, step = checkpointing.restore_weights(source, config.init.step)
    logging.info("fine-tuning from step %d of %s", step, source)
  if "generator" not in params:
    raise ValueError(f"init.checkpoint {path}: holds no generator weights "
                     f"(it has {sorted(params)})")
  return params


def _check_same_tree(name: str, loaded: Any, expected: Any, path: str) -> None:
  """Raises naming every parameter whose presence or shape differs from the model's."""
  flat_loaded = {jax.tree_util.keystr(k): np.shape(v)
                 for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
  flat_expected = {jax.tree_util.keystr(k): tuple(v.shape)
                   for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  problems = [f"missing {k}" for k in sorted(flat_expected.keys() - flat_loaded.keys())]
  problems += [f"unexpected {k}" for k in sorted(flat_loaded.keys() - flat_expected.keys())]
  problems += [f"{k}: shape {flat_loaded[k]} in the checkpoint, {flat_expected[k]} in the model"
               for k in sorted(flat_loaded.keys() & flat_expected.keys())
               if flat_loaded[k] != flat_expected[k]]
  if problems:
    raise ValueError(f"init.checkpoint {path}: its {name} does not fit this config's "
                     f"{name}: " + "; ".join(problems[:20])
                     + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))


def with_init_params(state: gan_step.TrainState, name: str, params: Any, path: str,
                     mesh) -> gan_step.TrainState:
  """``state`` with its params replaced by ``params`` (fresh optimizer state)."""
  _check_same_tree(name, params, state.params, path)
  params = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), params, state.params)
  return state.replace(params=jax.device_put(params, mesh_lib.replicated(mesh)))


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def evaluate(eval_fn, g_params, satclip_params, dataset, mesh, global_batch: int,
             ) -> dict[str, float]:
  """Mean of every metric over one pass, overall and per sensor (``<metric>/<sensor>``)."""
  means = metrics_lib.GroupedMeans(contract.SENSORS)
  for batch in input_pipeline.eval_batches(dataset, global_batch, jax.process_index(),
                                           jax.process_count()):
    inputs = mesh_lib.shard_batch(mesh, {k: batch[k] for k in MODEL_INPUTS})
    _, metrics = eval_fn(g_params, satclip_params, inputs)
    # Every process sums the whole global batch, so all agree on the result (the plateau
    # schedule and the best checkpoint depend on it).
    labels = mesh_lib.shard_batch(mesh, {k: batch[k] for k in ("mask", "sensor_id")})
    metrics, labels = (jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), t)
        for t in (metrics, labels))
    means.add(metrics, labels["mask"], labels["sensor_id"])
  return {f"val_{k}": v for k, v in means.result().items()}


def prediction_panels(eval_fn, g_params, satclip_params, dataset, mesh, global_batch: int,
                      num_images: int) -> np.ndarray:
  """Panel strips (``figures.PANEL_TITLES``) of the first ``num_images`` eval examples:
  (N, H, W', 3) uint8, the same examples at every step."""
  batch = next(input_pipeline.eval_batches(dataset, global_batch, jax.process_index(),
                                           jax.process_count()))
  inputs = mesh_lib.shard_batch(mesh, {k: batch[k] for k in MODEL_INPUTS + ("mask",)})
  pred, _ = eval_fn(g_params, satclip_params, {k: inputs[k] for k in MODEL_INPUTS})
  rgb, nir, pred, mask = (np.asarray(multihost_utils.process_allgather(x, tiled=True))
                          for x in (inputs["rgb"], inputs["nir"], pred, inputs["mask"]))
  keep = np.flatnonzero(mask)[:num_images]
  return figures.panel_strips(rgb[keep], nir[keep], pred[keep])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the last
  evaluation's metrics. Raises ``Preempted`` after saving if SIGTERM arrives."""
  validate_config(config)
  workdir = checkpointing.as_path(workdir)  # local or gs://
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh_lib.make_data_mesh()
  nirgan = gan_step.NIRGAN.from_config(config)
  init_rng, satclip_rng, step_rng = jax.random.split(
      jax.random.key(config.seed, impl=config.rng_impl), 3)
  image_size = config.data.image_size
  g_state, d_state = gan_step.create_train_states(nirgan, init_rng, image_size, mesh)
  manager = checkpointing.make_manager(workdir / checkpointing.CHECKPOINTS_DIR,
                                       config.train.keep_best)
  resuming = manager.latest_step() is not None
  init_params = {} if resuming else load_init_weights(config)
  satclip_params = jax.device_put(
      load_satclip_params(config, nirgan, satclip_rng, init_params), mesh_lib.replicated(mesh))
  if init_params:
    g_state = with_init_params(g_state, "generator", init_params["generator"],
                               config.init.checkpoint, mesh)
    if "discriminator" in init_params and config.init.discriminator:
      d_state = with_init_params(d_state, "discriminator", init_params["discriminator"],
                                 config.init.checkpoint, mesh)

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

  plateau = Plateau(lr=config.optim.lr, **config.optim.plateau.to_dict())
  start_step = 0
  if resuming:
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

  def save(step, metrics):
    metadata = {"config": json.loads(config.to_json_best_effort()), "pipeline": fingerprint,
                "plateau": plateau.state_dict()}
    checkpointing.save(manager, step, g_state, d_state, satclip_params, train_iter, metadata,
                       metrics)

  history, eval_metrics = [], {}
  with StopSignal() as stop:
    for step in range(start_step + 1, num_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = mesh_lib.shard_batch(mesh, {k: v for k, v in next(train_iter).items()
                                            if k in MODEL_INPUTS})
        g_state, d_state, metrics = train_step(g_state, d_state, satclip_params, batch,
                                               step_rng)
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
      image_every = config.train.image_every
      if image_every and (step % image_every == 0 or step == num_steps):
        writer.write_images(step, {"val/panels": prediction_panels(
            eval_step, g_state.params, satclip_params, eval_data, mesh, global_batch,
            config.train.num_images)})
      if step % config.train.eval_every == 0 or step == num_steps:
        eval_metrics = evaluate(eval_step, g_state.params, satclip_params, eval_data, mesh,
                                global_batch)
        writer.write_scalars(step, eval_metrics)
        lr = plateau.lr
        if plateau.update(eval_metrics[checkpointing.VAL_METRIC]) != lr:
          logging.info("val L1 plateaued: learning rate %g -> %g at step %d", lr, plateau.lr,
                       step)
          g_state = gan_step.with_learning_rate(g_state, plateau.lr)
          d_state = gan_step.with_learning_rate(d_state, plateau.lr)
        save(step, {checkpointing.VAL_METRIC: eval_metrics[checkpointing.VAL_METRIC]})
      if step < num_steps and stop.requested():
        if manager.latest_step() != step:
          save(step, None)
        manager.wait_until_finished()
        writer.flush()
        raise Preempted(step, stop.signal_name)
  manager.wait_until_finished()
  writer.flush()
  return eval_metrics


def _build_missing(specs: list[input_pipeline.SourceSpec]) -> None:
  """Builds generated sources (the demo) that are not built yet; others must be built by
  the user from their raw archives. Process 0 builds while the others wait."""
  from data_prep import build

  if jax.process_index() == 0:
    for spec in sorted({dataclasses.replace(s, split="", weight=0.0) for s in specs},
                       key=lambda s: s.name):
      dataset, _, config_name = spec.name.partition("/")
      if build.BUILDERS[dataset].MANUAL_DOWNLOAD_INSTRUCTIONS:
        continue
      builder, report = build.build(dataset, spec.data_dir, config=config_name or None)
      if report is not None:
        logging.info("built %s in %s", spec.name, builder.data_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("nirgan_jax.training._build_missing")


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
