"""The NIR-GAN generator: pix2pix ResNet generator with SatCLIP location injection.

Layer for layer this is the reference NIR-GAN's ``ResnetGenerator_inject``:

    ReflectPad3 Conv7(3->ngf) IN ReLU
    Conv3/2(ngf->2ngf) IN  <-- SatCLIP map injected here (before the ReLU)  ReLU
    Conv3/2(2ngf->4ngf) IN ReLU
    n_blocks x ResnetBlock(4ngf)
    ConvT3/2(4ngf->2ngf) IN ReLU, ConvT3/2(2ngf->ngf) IN ReLU
    ReflectPad3 Conv7(ngf->1) [+ radiometry path] tanh [* post_correction]

The radiometry path (``radiometry_depth`` > 0, off in the reference architecture) is a
per-pixel map of the input RGB (linear, or a small MLP) added to the output before its
activation. Instance normalisation after the first convolution removes each image's
absolute level and contrast, so without it a uniformly bright scene (snow, desert, cloud)
and a dark one look alike to the rest of the network; with it, the ResNet learns a
spatial correction of a per-pixel radiometric estimate. Being per-pixel, it keeps tiled
prediction seamless. With ``correction_gate`` the ResNet's output is multiplied by a learnt
scalar that starts at 0, so training starts from the per-pixel estimate alone and lets the
spatial correction in only as far as it lowers the loss.

The original resizes the 128x128 embedding map to ``(W, H)`` of the feature map,
which only works for square inputs; here it goes to ``(H, W)``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from nirgan_jax.models import layers
from nirgan_jax.models.baselines import MLPNIR

INJECTION_STYLES = ("multiply", "add", "concat", "none")
N_DOWNSAMPLING = 2
# The generator halves the image N_DOWNSAMPLING times and doubles it back: its input sides must
# be multiples of this (tiles, exported shapes, training crops).
SIZE_MULTIPLE = 2**N_DOWNSAMPLING


class ResnetBlock(nn.Module):
  """pad, conv3, norm, ReLU, [dropout], pad, conv3, norm, plus the skip connection."""

  features: int
  norm: str = "instance"
  padding_type: str = "reflect"
  dropout_rate: float = 0.0
  conv: layers.ModuleDef = layers.Conv

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    conv = functools.partial(self.conv, self.features, 3, padding=1,
                             padding_type=self.padding_type)
    y = nn.relu(layers.normalize(conv(name="conv_0")(x), self.norm))
    if self.dropout_rate > 0:
      y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = layers.normalize(conv(name="conv_1")(y), self.norm)
    return x + y


class LocationInjection(nn.Module):
  """Turns a SatCLIP embedding into a spatial map: Dense(embed -> S*S), reshaped S x S."""

  map_size: int = 128

  @nn.compact
  def __call__(self, embedding: jax.Array) -> jax.Array:
    flat = nn.Dense(self.map_size * self.map_size, kernel_init=layers.weight_init,
                    bias_init=layers.bias_init, name="dense")(embedding.astype(jnp.float32))
    # Row-major, like torch's ``view(-1, 1, S, S)``.
    return flat.reshape(embedding.shape[0], self.map_size, self.map_size, 1)


class Generator(nn.Module):
  """RGB (B, H, W, 3) in [0, 1] (+ optional SatCLIP embedding (B, E)) -> NIR (B, H, W, 1).

  ``conv``, ``conv_transpose`` and ``dense`` make the layers; partials of them set the
  convolution back end and compute dtype (``builders.layer_factories``).
  ``radiometry_depth``: 0 for the reference network, 1 adds a per-pixel linear map of the
  RGB to the output before its tanh, >= 2 an MLP of that many layers, ``radiometry_hidden``
  wide. ``correction_gate``: the ResNet's output (the correction of the radiometry path) is
  scaled by a learnt scalar initialised at 0.
  """

  ngf: int = 64
  n_blocks: int = 9
  output_channels: int = 1
  norm: str = "instance"
  padding_type: str = "reflect"
  dropout_rate: float = 0.0
  injection_style: str = "multiply"
  injection_map_size: int = 128
  injection_scale_init: float = 0.01
  learn_injection_scale: bool = True
  post_correction: bool = False
  concat_factor: float = 1.0
  radiometry_depth: int = 0
  radiometry_hidden: int = 32
  correction_gate: bool = False
  conv: layers.ModuleDef = layers.Conv
  conv_transpose: layers.ModuleDef = layers.ConvTranspose
  dense: layers.ModuleDef = nn.Dense

  def _inject(self, x: jax.Array, embed_map: jax.Array) -> jax.Array:
    e = layers.resize_bilinear(embed_map, x.shape[1], x.shape[2]).astype(x.dtype)
    if self.learn_injection_scale:
      scale = self.param("injection_scale", nn.initializers.constant(self.injection_scale_init),
                         (), jnp.float32)
    else:
      scale = jnp.asarray(self.injection_scale_init, jnp.float32)
    scale = scale.astype(x.dtype)
    if self.injection_style == "multiply":
      return x * (1 + scale * e)
    return x + scale * e

  @nn.compact
  def __call__(self, rgb: jax.Array, embedding: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    if self.injection_style not in INJECTION_STYLES:
      raise ValueError(
          f"injection_style must be one of {INJECTION_STYLES}, got {self.injection_style!r}")
    uses_location = self.injection_style != "none"
    if uses_location and embedding is None:
      raise ValueError(f"injection_style={self.injection_style!r} needs a SatCLIP embedding")

    x = rgb
    radiometry = None
    if self.radiometry_depth > 0:
      radiometry = MLPNIR(hidden=self.radiometry_hidden, depth=self.radiometry_depth,
                          dense=self.dense, name="radiometry")(rgb)
    embed_map = None
    if uses_location:
      embed_map = LocationInjection(self.injection_map_size, name="injection")(embedding)
    if self.injection_style == "concat":
      channel = layers.resize_bicubic(embed_map, x.shape[1], x.shape[2]) * self.concat_factor
      x = jnp.concatenate([x, channel], axis=-1)  # conv_in casts to the compute dtype

    x = self.conv(self.ngf, 7, padding=3, padding_type=self.padding_type, name="conv_in")(x)
    x = nn.relu(layers.normalize(x, self.norm))

    for i in range(N_DOWNSAMPLING):
      x = self.conv(self.ngf * 2 ** (i + 1), 3, stride=2, padding=1, name=f"down_{i}")(x)
      x = layers.normalize(x, self.norm)
      if i == 0 and self.injection_style in ("multiply", "add"):
        x = self._inject(x, embed_map)
      x = nn.relu(x)

    for i in range(self.n_blocks):
      x = ResnetBlock(self.ngf * 2 ** N_DOWNSAMPLING, norm=self.norm,
                      padding_type=self.padding_type, dropout_rate=self.dropout_rate,
                      conv=self.conv, name=f"block_{i}")(x, deterministic=deterministic)

    for i in range(N_DOWNSAMPLING):
      features = self.ngf * 2 ** (N_DOWNSAMPLING - i - 1)
      x = self.conv_transpose(features, 3, stride=2, padding=1, output_padding=1,
                              name=f"up_{i}")(x)
      x = nn.relu(layers.normalize(x, self.norm))

    x = self.conv(self.output_channels, 7, padding=3, padding_type=self.padding_type,
                  name="conv_out")(x).astype(jnp.float32)
    if self.correction_gate:
      if radiometry is None:
        raise ValueError("correction_gate needs the radiometry path (radiometry_depth > 0)")
      x = x * self.param("correction_gate", nn.initializers.zeros, (), jnp.float32)
    if radiometry is not None:
      x = x + radiometry
    x = jnp.tanh(x)
    if self.post_correction:
      x = x * self.param("post_correction", nn.initializers.ones, (), jnp.float32)
    return x
