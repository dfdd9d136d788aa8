"""Checks of a training config's values, run before anything compiles."""

from __future__ import annotations

import jax
import ml_collections

from nirgan_jax import errors, models
from nirgan_jax.data import pipeline
from nirgan_jax.models import layers, satclip
from nirgan_jax.models.generator import SIZE_MULTIPLE
from nirgan_jax.train import losses

NONFINITE_MODES = ("skip", "halt")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails before anything compiles, naming the bad key."""
  checks = [
      ("model.injection.style", config.model.injection.style in models.INJECTION_STYLES),
      ("model.generator.kind", config.model.generator.kind in models.GENERATOR_KINDS),
      ("model.conv_impl", config.model.conv_impl in layers.CONV_IMPLS),
      ("model.generator.norm", config.model.generator.norm in layers.NORMS),
      ("model.generator.padding_type",
       config.model.generator.padding_type in layers.PADDING_MODES),
      ("compute_dtype", config.compute_dtype in models.COMPUTE_DTYPES),
      ("satclip.harmonics", config.satclip.harmonics in satclip.HARMONICS_CONVENTIONS),
      ("loss.gan_mode", config.loss.gan_mode in losses.GAN_MODES),
      ("loss.rs_criterion", config.loss.rs_criterion in losses.RS_CRITERIA),
      ("optim.lr", config.optim.lr > 0),
      ("optim.ema_decay", 0 <= config.optim.ema_decay < 1),
      ("optim.plateau.factor", 0 < config.optim.plateau.factor < 1),
      ("optim.plateau.patience", config.optim.plateau.patience >= 0),
      ("data.image_size",
       config.data.image_size > 0 and config.data.image_size % SIZE_MULTIPLE == 0),
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
      ("train.stop_check_every", config.train.stop_check_every > 0),
      ("data.device_prefetch", config.data.device_prefetch > 0),
      ("data.illumination_gain", _is_gain_range(config.data.get("illumination_gain", (1, 1)))),
      ("model.generator.radiometry_depth",
       config.model.generator.get("radiometry_depth", 0) >= 0),
      ("model.generator.correction_gate (needs radiometry_depth > 0)",
       not config.model.generator.get("correction_gate", False)
       or config.model.generator.get("radiometry_depth", 0) > 0),
      ("data.workers", config.data.workers == pipeline.AUTO_WORKERS
       or str(config.data.workers).isdigit()),
  ]
  for key, ok in checks:
    if not ok:
      value = config
      for part in key.split("."):
        value = value[part]
      raise errors.ConfigError(f"invalid config value {key}={value!r}")


def _is_gain_range(value) -> bool:
  return (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(g, (int, float)) for g in value) and 0 < value[0] <= value[1])
