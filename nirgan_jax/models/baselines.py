"""Non-adversarial baselines that map RGB to NIR, after the original's Linear_NIR, MLP_NIR and
CNN_NIR: a per-pixel linear regression, a per-pixel MLP and a small CNN. They share the
generator's call signature, so training (``configs/baselines.py``), export, predict and
evaluate treat them as generators; they ignore the location embedding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nirgan_jax.models import layers


class MLPNIR(nn.Module):
  """A per-pixel MLP: ``depth`` Dense layers, ReLU between, ``hidden`` units wide. With
  ``depth=1`` it is the linear regression NIR = w . RGB + b (4 parameters)."""

  hidden: int = 64
  depth: int = 3
  dense: layers.ModuleDef = nn.Dense

  @nn.compact
  def __call__(self, rgb: jax.Array, embedding: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    del embedding, deterministic
    x = rgb
    for i in range(self.depth - 1):
      x = nn.relu(self.dense(self.hidden, name=f"dense_{i}")(x))
    return self.dense(1, name="dense_out")(x).astype(jnp.float32)


class CNNNIR(nn.Module):
  """A small fully convolutional net: ``depth`` 3x3 convs (reflect padding), ReLU between,
  ``hidden`` channels; receptive field 2 * depth + 1 px."""

  hidden: int = 64
  depth: int = 3
  conv: layers.ModuleDef = layers.Conv

  @nn.compact
  def __call__(self, rgb: jax.Array, embedding: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    del embedding, deterministic
    x = rgb
    for i in range(self.depth):
      last = i == self.depth - 1
      x = self.conv(1 if last else self.hidden, 3, padding=1, padding_type="reflect",
                    name="conv_out" if last else f"conv_{i}")(x)
      if not last:
        x = nn.relu(x)
    return x.astype(jnp.float32)
