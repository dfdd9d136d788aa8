"""Building blocks shared by the generator and the discriminator (NHWC).

Two convolution back ends compute the same function:

* ``xla``: ``lax.conv_general_dilated``, the right choice on GPU and TPU.
* ``matmul``: the convolution written as matrix products over shifted views of
  the input. XLA's CPU convolution kernels run far below the CPU's matmul peak,
  while its dot kernels reach it, so on CPU this is several times faster.

``conv_impl="auto"`` picks ``matmul`` on CPU and ``xla`` elsewhere. Parameters
are laid out identically for both (kernel ``(kh, kw, in, out)``), so a
checkpoint trained with one back end runs with the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "matmul")
PADDING_MODES = {"reflect": "reflect", "replicate": "edge", "zero": "constant"}
NORMS = ("instance", "none")

# pix2pix initialises every conv and Dense weight with N(0, 0.02) and every bias with 0.
weight_init = nn.initializers.normal(stddev=0.02)
bias_init = nn.initializers.zeros

# im2col (one matmul over all taps) wins while the patch matrix stays small; above
# this many input features per output pixel, per-tap matmuls avoid the copy.
_IM2COL_MAX_FEATURES = 512


def resolve_conv_impl(conv_impl: str) -> str:
  """Maps ``auto`` to the back end that is fastest on the default platform."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  if conv_impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return conv_impl


def pad_spatial(x: jax.Array, pad: int | Sequence[int], padding_type: str) -> jax.Array:
  """Pads H and W of an NHWC tensor like PyTorch's Reflection/Replication/ZeroPad2d.

  ``pad`` is either one int for all four sides or ``(top, bottom, left, right)``.
  """
  if padding_type not in PADDING_MODES:
    raise ValueError(f"padding_type must be one of {tuple(PADDING_MODES)}, got {padding_type!r}")
  top, bottom, left, right = (pad,) * 4 if isinstance(pad, int) else pad
  if not (top or bottom or left or right):
    return x
  return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                 mode=PADDING_MODES[padding_type])


def instance_norm(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
  """PyTorch's ``InstanceNorm2d(affine=False)``: per-sample, per-channel, biased variance.

  Statistics are computed in float32 whatever the compute dtype.
  """
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
  return ((x32 - mean) * lax.rsqrt(var + epsilon)).astype(x.dtype)


def normalize(x: jax.Array, norm: str) -> jax.Array:
  if norm == "instance":
    return instance_norm(x)
  if norm == "none":
    return x
  raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _strided_window(x: jax.Array, dy: int, dx: int, out_h: int, out_w: int, stride: int):
  """The view of ``x`` seen by kernel tap (dy, dx) for every output pixel."""
  b, _, _, c = x.shape
  return lax.slice(
      x,
      (0, dy, dx, 0),
      (b, dy + (out_h - 1) * stride + 1, dx + (out_w - 1) * stride + 1, c),
      (1, stride, stride, 1),
  )


def conv2d_matmul(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """VALID cross-correlation as matrix products; same result as ``conv2d_xla``."""
  kh, kw, cin, cout = kernel.shape
  _, h, w, _ = x.shape
  out_h = (h - kh) // stride + 1
  out_w = (w - kw) // stride + 1
  taps = [(dy, dx) for dy in range(kh) for dx in range(kw)]
  if kh * kw * cin <= _IM2COL_MAX_FEATURES:
    patches = jnp.concatenate(
        [_strided_window(x, dy, dx, out_h, out_w, stride) for dy, dx in taps], axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout))
  out = None
  for dy, dx in taps:
    term = jnp.dot(_strided_window(x, dy, dx, out_h, out_w, stride), kernel[dy, dx])
    out = term if out is None else out + term
  return out


def conv2d_xla(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_transpose2d_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                         output_padding: int) -> jax.Array:
  """PyTorch ``ConvTranspose2d`` semantics: ``y[s*i + k - p] += x[i] @ kernel[k]``."""
  kh, kw = kernel.shape[:2]
  pads = [(kh - 1 - padding, kh - 1 - padding + output_padding),
          (kw - 1 - padding, kw - 1 - padding + output_padding)]
  return lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1), padding=pads,
      lhs_dilation=(stride, stride), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _phase_taps(kernel_size: int, stride: int, padding: int, phase: int):
  """Kernel taps feeding output positions ``s*a + phase``, with the input offset of each.

  From ``o = s*i + k - p``: tap ``k`` contributes to phase ``r`` when
  ``(r + p - k) % s == 0``, reading input ``i = a + (r + p - k) // s``.
  """
  return [(k, (phase + padding - k) // stride)
          for k in range(kernel_size) if (phase + padding - k) % stride == 0]


def conv_transpose2d_matmul(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                            output_padding: int) -> jax.Array:
  """Transposed convolution by sub-pixel phases: each output phase is a sum of matmuls.

  Unlike the dilate-then-convolve formulation, no multiply touches an inserted zero.
  """
  b, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  out_h = (h - 1) * stride - 2 * padding + kh + output_padding
  out_w = (w - 1) * stride - 2 * padding + kw + output_padding
  rows = -(-out_h // stride)  # phase grid size, before cropping to out_h
  cols = -(-out_w // stride)
  # Zero margins make every input position outside [0, h) x [0, w) read as 0.
  margin = max(kh, kw) + 1
  xp = jnp.pad(x, ((0, 0), (margin, margin + rows), (margin, margin + cols), (0, 0)))

  phases = []
  for ry in range(stride):
    row = []
    for rx in range(stride):
      acc = jnp.zeros((b, rows, cols, cout), jnp.result_type(x, kernel))
      for ky, oy in _phase_taps(kh, stride, padding, ry):
        for kx, ox in _phase_taps(kw, stride, padding, rx):
          window = lax.slice(xp, (0, margin + oy, margin + ox, 0),
                             (b, margin + oy + rows, margin + ox + cols, xp.shape[-1]))
          acc = acc + jnp.dot(window, kernel[ky, kx])
      row.append(acc)
    phases.append(jnp.stack(row, axis=3))  # (b, rows, cols, s, c)
  out = jnp.stack(phases, axis=2)  # (b, rows, s, cols, s, c)
  out = out.reshape(b, rows * stride, cols * stride, cout)
  return out[:, :out_h, :out_w, :]


class Conv(nn.Module):
  """Square-kernel conv with explicit padding, N(0, 0.02) weights and zero bias."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  padding_type: str = "zero"
  use_bias: bool = True
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", weight_init,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    x = pad_spatial(x.astype(self.dtype), self.padding, self.padding_type)
    kernel = kernel.astype(self.dtype)
    if resolve_conv_impl(self.conv_impl) == "matmul":
      y = conv2d_matmul(x, kernel, self.stride)
    else:
      y = conv2d_xla(x, kernel, self.stride)
    if self.use_bias:
      y = y + self.param("bias", bias_init, (self.features,), jnp.float32).astype(self.dtype)
    return y


class ConvTranspose(nn.Module):
  """PyTorch-equivalent ``ConvTranspose2d`` (kernel stored as ``(kh, kw, in, out)``)."""

  features: int
  kernel_size: int
  stride: int
  padding: int
  output_padding: int
  use_bias: bool = True
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", weight_init,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    fn = (conv_transpose2d_matmul if resolve_conv_impl(self.conv_impl) == "matmul"
          else conv_transpose2d_xla)
    y = fn(x, kernel, self.stride, self.padding, self.output_padding)
    if self.use_bias:
      y = y + self.param("bias", bias_init, (self.features,), jnp.float32).astype(self.dtype)
    return y


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """``F.interpolate(mode="bilinear", align_corners=False)``: half-pixel centres, no antialias."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear",
                          antialias=False)


def resize_bicubic(x: jax.Array, height: int, width: int) -> jax.Array:
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bicubic",
                          antialias=False)


def count_params(params) -> int:
  return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
