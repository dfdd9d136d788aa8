"""The three networks of NIR-GAN as one static bundle: generator, PatchGAN discriminator and
the frozen SatCLIP location encoder, with the pad/crop and embedding logic that training and
inference share."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from nirgan_jax.models import builders, layers
from nirgan_jax.models.config import MODEL_SECTIONS
from nirgan_jax.models.discriminator import PatchDiscriminator
from nirgan_jax.models.satclip import LocationEncoder

# The step also reads the loss and optimizer sections; freezing only these keeps the bundle
# hashable, and a change elsewhere (data, logging) does not retrace the step.
STEP_SECTIONS = MODEL_SECTIONS + ("loss", "optim")


@dataclasses.dataclass(frozen=True)
class NIRGAN:
  """The three networks of NIR-GAN and the config that built them (static, hashable)."""

  config: ml_collections.FrozenConfigDict
  generator: nn.Module
  discriminator: PatchDiscriminator
  encoder: LocationEncoder | None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> NIRGAN:
    frozen = ml_collections.FrozenConfigDict(
        {key: config[key] for key in STEP_SECTIONS if key in config})
    encoder = builders.build_location_encoder(config) if builders.uses_location(config) else None
    return cls(frozen, builders.build_generator(config), builders.build_discriminator(config),
               encoder)

  def embed(self, satclip_params: Any, lonlat: jax.Array) -> jax.Array | None:
    """SatCLIP embedding of each (lon, lat); frozen, so no gradient flows into it."""
    if self.encoder is None:
      return None
    return jax.lax.stop_gradient(self.encoder.apply(satclip_params, lonlat))

  def generate(self, g_params: Any, rgb: jax.Array, embedding: jax.Array | None, *,
               dropout_rng: jax.Array | None = None, pad: int | None = None) -> jax.Array:
    """Pad, run G, crop: (B, H, W, 3) -> (B, H, W, 1) float32.

    ``pad`` defaults to ``config.pad``; tiled inference passes 0 and brings its own context.
    Dropout (if the config enables it) is active only when ``dropout_rng`` is given.
    """
    pad = self.config.pad if pad is None else pad
    x = layers.pad_spatial(rgb, pad, "reflect")
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    out = self.generator.apply({"params": g_params}, x, embedding,
                               deterministic=dropout_rng is None, rngs=rngs)
    h, w = rgb.shape[1:3]
    return out[:, pad:pad + h, pad:pad + w, :]

  def discriminate(self, d_params: Any, rgb: jax.Array, nir: jax.Array) -> jax.Array:
    return self.discriminator.apply({"params": d_params}, jnp.concatenate([rgb, nir], axis=-1))


def init_location_encoder(nirgan: NIRGAN, rng: jax.Array) -> Any:
  """Randomly initialised SatCLIP params (tests and demos; real runs import a checkpoint)."""
  if nirgan.encoder is None:
    return {}
  return nirgan.encoder.init(rng, jnp.zeros((1, 2), jnp.float32))
