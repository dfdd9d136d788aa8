"""Weights a run starts from: the frozen SatCLIP encoder (``satclip.checkpoint``) and, in a
fresh workdir, the networks to fine-tune (``init.checkpoint``)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nirgan_jax import errors, models, paths
from nirgan_jax.infer import import_torch, model_dir
from nirgan_jax.train import checkpointing
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train.state import TrainState

# SatCLIP's released location encoders (the configs' legendre_polys=10 is the "L10" family).
SATCLIP_WEIGHTS = "https://huggingface.co/microsoft/SatCLIP-ResNet18-L10"


def load_satclip_params(config: ml_collections.ConfigDict, nirgan: models.NIRGAN,
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
                     jax.eval_shape(functools.partial(models.init_location_encoder, nirgan), rng),
                     config.init.checkpoint)
    return jax.tree.map(jnp.asarray, init_params["satclip"])
  if not path:
    if not config.satclip.allow_random_init:
      raise errors.ConfigError(
          "SatCLIP injection is on but satclip.checkpoint is empty: pass "
          "--config.satclip.checkpoint=SATCLIP.ckpt (or a converted model directory), e.g. "
          f"satclip-resnet18-l10.ckpt from {SATCLIP_WEIGHTS} (SatCLIP's released weights; "
          ".ckpt files need pip install 'nirgan-jax[torch]'), or "
          "--config.satclip.allow_random_init=True for tests and demos (the location prior is "
          "then meaningless)")
    logging.warning("SatCLIP encoder randomly initialised (satclip.allow_random_init)")
    return models.init_location_encoder(nirgan, rng)
  source = paths.as_path(path)
  if source.is_dir():
    params, saved = model_dir.load_model_dir(source)
  else:
    params, saved = import_torch.import_satclip(source)
  for key in ("legendre_polys", "harmonics", "dim_hidden", "num_hidden_layers", "embed_dim"):
    if saved.satclip[key] != config.satclip[key]:
      raise errors.ConfigError(f"satclip.{key}={config.satclip[key]!r} but {path} has "
                       f"{saved.satclip[key]!r}")
  return jax.tree.map(jnp.asarray, params["satclip"])


def load_init_weights(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Weights to fine-tune from, by ``init.checkpoint``: a model directory (export or PyTorch
  import), an original NIR-GAN ``.ckpt``, or another run's workdir (step ``init.step``).
  Returns {} when ``init.checkpoint`` is empty."""
  path = config.init.checkpoint
  if not path:
    return {}
  source = paths.as_path(path)
  if not source.exists():
    raise checkpointing.CheckpointNotFoundError(
        f"init.checkpoint {path}: no such file or directory")
  if (source / model_dir.CONFIG_FILE).is_file():
    params, _ = model_dir.load_model_dir(source)
  elif source.is_file():
    params, _ = import_torch.import_nirgan(source, config.model.injection.style,
                                           config.satclip.harmonics)
  else:
    params, _, step = checkpointing.restore_weights(source, config.init.step)
    logging.info("fine-tuning from step %d of %s", step, source)
  if "generator" not in params:
    raise errors.ConfigError(f"init.checkpoint {path}: holds no generator weights "
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
    raise errors.ConfigError(f"init.checkpoint {path}: its {name} does not fit this config's "
                     f"{name}: " + "; ".join(problems[:20])
                     + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))


def with_init_params(state: TrainState, name: str, params: Any, path: str,
                     mesh) -> TrainState:
  """``state`` with its params (and their moving average) replaced by ``params``, its optimizer
  state fresh."""
  _check_same_tree(name, params, state.params, path)
  params = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), params, state.params)
  return state.with_params(jax.device_put(params, mesh_lib.replicated(mesh)))
