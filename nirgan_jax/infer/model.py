"""A trained generator ready to predict: from an exported (or imported) model directory, or
straight from an original NIR-GAN PyTorch ``.ckpt``, local or on cloud storage. Used by
predict, evaluate and timeseries; needs none of the training code."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import export as jax_export

from nirgan_jax import errors, models, paths
from nirgan_jax.infer import model_dir


@dataclasses.dataclass
class Model:
  """``model(rgb (B,H,W,3) in [0, 1], lonlat (B,2)) -> nir (B,H,W,1)`` as numpy float32.

  Jitted once per input shape: callers that loop keep the batch shape fixed.
  """

  config: ml_collections.ConfigDict
  params: dict[str, Any]
  source: str

  def __post_init__(self):
    self._predict = {pad: jax.jit(inference_fn(self.config, pad)) for pad in (True, False)}
    self._g_params = jax.tree.map(jnp.asarray, self.params["generator"])
    self._satclip_params = jax.tree.map(jnp.asarray, self.params.get("satclip", {}))

  @property
  def uses_location(self) -> bool:
    return models.uses_location(self.config)

  @property
  def pad(self) -> int:
    """Context (px) the generator was trained to see around a patch (reflect padding)."""
    return self.config.pad

  def __call__(self, rgb: np.ndarray, lonlat: np.ndarray | None = None,
               pad: bool = True) -> np.ndarray:
    """``pad=False``: ``rgb`` already carries its context, no reflect padding is added."""
    rgb = np.asarray(rgb, np.float32)
    if lonlat is None:
      if self.uses_location:
        raise ValueError(f"{self.source} injects SatCLIP: pass lon/lat for each image")
      lonlat = np.zeros((rgb.shape[0], 2), np.float32)
    out = self._predict[pad](self._g_params, self._satclip_params, rgb,
                             np.asarray(lonlat, np.float32))
    return np.asarray(out)


def load_model(path: str | os.PathLike, conv_impl: str | None = "auto",
               inject_style: str = "multiply", compute_dtype: str | None = None) -> Model:
  """A model directory (export, ``import_torch``) or an original NIR-GAN ``.ckpt``.

  ``conv_impl`` replaces the one the model was trained with ("auto": the fastest on this
  platform; None keeps it), and ``compute_dtype`` ("float32" or "bfloat16") the precision of
  its convolutions (None keeps the model's; parameters and instance norms stay float32).
  ``inject_style`` applies to ``.ckpt`` files only.
  """
  path = paths.as_path(path)
  if not path.exists():
    raise model_dir.ModelDirError(f"{path}: no such model directory or checkpoint")
  if path.is_dir():
    params, config = model_dir.load_model_dir(path)
  else:
    from nirgan_jax.infer import import_torch

    params, config = import_torch.import_nirgan(path, inject_style)
  if "generator" not in params:
    raise model_dir.ModelDirError(f"{path}: holds no generator (it has {sorted(params)})")
  config = ml_collections.ConfigDict(config.to_dict())
  check_model(path, config, params)
  if conv_impl is not None:
    config.model.conv_impl = conv_impl
  if compute_dtype is not None:
    config.compute_dtype = compute_dtype
    models.compute_dtype(config)  # a ValueError for an unknown one
  return Model(config, params, str(path))


def check_model(path: str | os.PathLike, config: ml_collections.ConfigDict,
                params: dict[str, Any]) -> None:
  """Refuses, naming ``path``, a config that is not a model's or parameters that do not fit
  it: the inference function is traced on them (nothing is compiled), so that they fail
  here, not with a traceback half-way through a prediction."""
  probe = (jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
           jax.ShapeDtypeStruct((1, 2), jnp.float32))
  try:
    no_satclip = models.uses_location(config) and "satclip" not in params
    if not no_satclip:
      jax.eval_shape(inference_fn(config), params["generator"], params.get("satclip", {}),
                     *probe)
  except (AttributeError, KeyError, TypeError, ValueError, flax.errors.FlaxError) as e:
    raise model_dir.ModelDirError(f"{path}: its config and parameters do not make a model "
                                 f"({errors.one_line(e)})") from e
  if no_satclip:
    raise model_dir.ModelDirError(
        f"{path}: the generator injects SatCLIP but no SatCLIP encoder is stored with it; "
        "export it from a training run, or import the NIR-GAN checkpoint that embeds it")


def inference_fn(config: ml_collections.ConfigDict, pad: bool = True
                 ) -> Callable[..., jax.Array]:
  """``f(g_params, satclip_params, rgb (B,H,W,3), lonlat (B,2)) -> nir (B,H,W,1)``, pure.

  With ``pad=False`` the input is not reflect-padded by ``config.pad`` first: for callers
  that feed real context around what they keep (tiled prediction).
  """
  nirgan = models.NIRGAN.from_config(config)

  def predict(g_params, satclip_params, rgb, lonlat):
    return nirgan.generate(g_params, rgb, nirgan.embed(satclip_params, lonlat),
                           pad=None if pad else 0)

  return predict


def load_exported(directory: str | os.PathLike) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``f(rgb (B,H,W,3), lonlat (B,2)) -> nir (B,H,W,1)`` from a model directory's serialized
  program and its parameters: needs neither the model code nor the config."""
  directory = paths.as_path(directory)
  path = directory / model_dir.EXPORTED_FILE
  if not path.is_file():
    raise model_dir.ModelDirError(
        f"{directory}: no {model_dir.EXPORTED_FILE} (export with --jax_export)")
  exported = jax_export.deserialize(bytearray(path.read_bytes()))
  params, _ = model_dir.load_model_dir(directory)
  g_params, satclip_params = params["generator"], params.get("satclip", {})

  def predict(rgb, lonlat):
    return exported.call(g_params, satclip_params, jnp.asarray(rgb, jnp.float32),
                         jnp.asarray(lonlat, jnp.float32))

  return predict
