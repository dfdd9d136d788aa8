"""The networks built from a config's model sections (``models.config``)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from nirgan_jax.models import layers
from nirgan_jax.models.baselines import CNNNIR, MLPNIR
from nirgan_jax.models.discriminator import PatchDiscriminator
from nirgan_jax.models.generator import Generator
from nirgan_jax.models.satclip import LocationEncoder

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# "resnet" is NIR-GAN's generator; the others are the non-adversarial baselines.
GENERATOR_KINDS = ("resnet", "linear", "mlp", "cnn")


def compute_dtype(config: ml_collections.ConfigDict):
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {name!r}")
  return COMPUTE_DTYPES[name]


class LayerFactories(NamedTuple):
  """Layer constructors with the convolution back end and compute dtype already set."""

  conv: layers.ModuleDef
  conv_transpose: layers.ModuleDef
  dense: layers.ModuleDef


# Cached so that equal configs give the very same partials: flax modules compare and hash
# by their fields, and functools.partial compares by identity.
@functools.cache
def _layer_factories(conv_impl: str, dtype: Any) -> LayerFactories:
  return LayerFactories(
      conv=functools.partial(layers.Conv, impl=conv_impl, dtype=dtype),
      conv_transpose=functools.partial(layers.ConvTranspose, impl=conv_impl, dtype=dtype),
      dense=functools.partial(nn.Dense, dtype=dtype),
  )


def layer_factories(config: ml_collections.ConfigDict) -> LayerFactories:
  """The layers of every network, with the config's ``conv_impl`` and compute dtype."""
  return _layer_factories(config.model.conv_impl, compute_dtype(config))


def build_generator(config: ml_collections.ConfigDict):
  g, inj = config.model.generator, config.model.injection
  kind = g.get("kind", "resnet")
  if kind not in GENERATOR_KINDS:
    raise ValueError(f"model.generator.kind must be one of {GENERATOR_KINDS}, got {kind!r}")
  factories = layer_factories(config)
  if kind != "resnet":
    baseline = config.model.baseline
    if kind == "linear":
      return MLPNIR(depth=1, dense=factories.dense)
    if kind == "mlp":
      return MLPNIR(hidden=baseline.hidden, depth=baseline.depth, dense=factories.dense)
    return CNNNIR(hidden=baseline.hidden, depth=baseline.depth, conv=factories.conv)
  return Generator(
      ngf=g.ngf,
      n_blocks=g.n_blocks,
      norm=g.norm,
      padding_type=g.padding_type,
      dropout_rate=g.dropout_rate,
      injection_style=inj.style,
      injection_map_size=inj.map_size,
      injection_scale_init=inj.scale_init,
      learn_injection_scale=inj.learn_scale,
      post_correction=inj.post_correction,
      concat_factor=inj.concat_factor,
      # Absent from model directories exported before the radiometry path existed.
      radiometry_depth=g.get("radiometry_depth", 0),
      radiometry_hidden=g.get("radiometry_hidden", 32),
      correction_gate=g.get("correction_gate", False),
      conv=factories.conv,
      conv_transpose=factories.conv_transpose,
      dense=factories.dense,
  )


def build_discriminator(config: ml_collections.ConfigDict) -> PatchDiscriminator:
  d = config.model.discriminator
  return PatchDiscriminator(ndf=d.ndf, n_layers=d.n_layers, norm=d.norm,
                            conv=layer_factories(config).conv)


def build_location_encoder(config: ml_collections.ConfigDict) -> LocationEncoder:
  s = config.satclip
  return LocationEncoder(legendre_polys=s.legendre_polys, harmonics=s.harmonics,
                         dim_hidden=s.dim_hidden, num_hidden_layers=s.num_hidden_layers,
                         embed_dim=s.embed_dim)


def uses_location(config: ml_collections.ConfigDict) -> bool:
  """Whether the generator takes a SatCLIP embedding (the baselines never do)."""
  return (config.model.injection.style != "none"
          and config.model.generator.get("kind", "resnet") == "resnet")
