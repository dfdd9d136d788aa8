"""Flax models of NIR-GAN and builders that read them from a config."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from nirgan_jax.models.baselines import CNNNIR, MLPNIR
from nirgan_jax.models.discriminator import PatchDiscriminator
from nirgan_jax.models.generator import INJECTION_STYLES, Generator
from nirgan_jax.models.layers import count_params
from nirgan_jax.models.satclip import LocationEncoder, spherical_harmonics

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# "resnet" is NIR-GAN's generator; the others are the non-adversarial baselines.
GENERATOR_KINDS = ("resnet", "linear", "mlp", "cnn")


def compute_dtype(config: ml_collections.ConfigDict):
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {name!r}")
  return COMPUTE_DTYPES[name]


def build_generator(config: ml_collections.ConfigDict):
  g, inj = config.model.generator, config.model.injection
  kind = g.get("kind", "resnet")
  if kind not in GENERATOR_KINDS:
    raise ValueError(f"model.generator.kind must be one of {GENERATOR_KINDS}, got {kind!r}")
  if kind != "resnet":
    baseline = config.model.baseline
    if kind == "linear":
      return MLPNIR(depth=1, dtype=compute_dtype(config))
    if kind == "mlp":
      return MLPNIR(hidden=baseline.hidden, depth=baseline.depth, dtype=compute_dtype(config))
    return CNNNIR(hidden=baseline.hidden, depth=baseline.depth,
                  conv_impl=config.model.conv_impl, dtype=compute_dtype(config))
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
      conv_impl=config.model.conv_impl,
      dtype=compute_dtype(config),
  )


def build_discriminator(config: ml_collections.ConfigDict) -> PatchDiscriminator:
  d = config.model.discriminator
  return PatchDiscriminator(ndf=d.ndf, n_layers=d.n_layers, norm=d.norm,
                            conv_impl=config.model.conv_impl, dtype=compute_dtype(config))


def build_location_encoder(config: ml_collections.ConfigDict) -> LocationEncoder:
  s = config.satclip
  return LocationEncoder(legendre_polys=s.legendre_polys, harmonics=s.harmonics,
                         dim_hidden=s.dim_hidden, num_hidden_layers=s.num_hidden_layers,
                         embed_dim=s.embed_dim)


def uses_location(config: ml_collections.ConfigDict) -> bool:
  """Whether the generator takes a SatCLIP embedding (the baselines never do)."""
  return (config.model.injection.style != "none"
          and config.model.generator.get("kind", "resnet") == "resnet")


__all__ = [
    "CNNNIR",
    "GENERATOR_KINDS",
    "INJECTION_STYLES",
    "MLPNIR",
    "Generator",
    "LocationEncoder",
    "PatchDiscriminator",
    "build_discriminator",
    "build_generator",
    "build_location_encoder",
    "compute_dtype",
    "count_params",
    "spherical_harmonics",
    "uses_location",
]
