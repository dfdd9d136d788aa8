"""The 70x70 PatchGAN discriminator of pix2pix (``NLayerDiscriminator``).

conv4/2(in->ndf) LReLU; (n_layers-1) x [conv4/2 IN LReLU]; conv4/1 IN LReLU; conv4/1(->1).
Every conv pads 1 with zeros. Input is concat(RGB, NIR).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nirgan_jax.models import layers

_LEAK = 0.2
_KERNEL, _PADDING = 4, 1


def _strides(n_layers: int) -> list[int]:
  return [2] * n_layers + [1, 1]


def receptive_fields(size: int, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
  """Along one axis of ``size`` input pixels: (start, stop) of the input pixels each patch
  logit sees, clipped to the image (70 px wide inside it at n_layers 3)."""
  lengths = [size]
  for stride in _strides(n_layers):
    lengths.append((lengths[-1] + 2 * _PADDING - _KERNEL) // stride + 1)
  start = stop = np.arange(lengths[-1])
  for stride in reversed(_strides(n_layers)):
    start, stop = start * stride - _PADDING, stop * stride - _PADDING + _KERNEL - 1
  return np.clip(start, 0, size), np.clip(stop + 1, 0, size)


class PatchDiscriminator(nn.Module):
  """``conv`` makes the layers; a partial of it sets the back end and compute dtype."""

  ndf: int = 64
  n_layers: int = 3
  norm: str = "instance"
  conv: layers.ModuleDef = layers.Conv

  def _conv(self, features, stride, name):
    return self.conv(features, _KERNEL, stride=stride, padding=_PADDING, name=name)

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    """(B, H, W, C) -> patch logits (B, H', W', 1) in float32."""
    x = nn.leaky_relu(self._conv(self.ndf, 2, "conv_0")(image), _LEAK)
    mult = 1
    for n in range(1, self.n_layers + 1):
      mult = min(2**n, 8)
      stride = 2 if n < self.n_layers else 1
      x = self._conv(self.ndf * mult, stride, f"conv_{n}")(x)
      x = nn.leaky_relu(layers.normalize(x, self.norm), _LEAK)
    x = self._conv(1, 1, f"conv_{self.n_layers + 1}")(x)
    return x.astype(jnp.float32)
