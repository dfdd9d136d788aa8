"""Building blocks shared by the generator and the discriminator (NHWC).

Two convolution back ends compute the same function:

* ``xla``: ``lax.conv_general_dilated``, the right choice on GPU and TPU.
* ``matmul``: the convolution written as matrix products over shifted views of
  the input. XLA's CPU convolution kernels run far below the CPU's matmul peak,
  while its dot kernels reach it, so on CPU this is several times faster.

``impl="auto"`` picks ``matmul`` on CPU and ``xla`` elsewhere. Parameters
are laid out identically for both (kernel ``(kh, kw, in, out)``), so a
checkpoint trained with one back end runs with the other.

Networks take their layers as factories (``ModuleDef``), e.g.
``functools.partial(Conv, impl="xla", dtype=jnp.bfloat16)``, so the back end and
compute dtype are chosen once where the network is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CONV_IMPLS = ("auto", "xla", "matmul")
PADDING_MODES = {"reflect": "reflect", "replicate": "edge", "zero": "constant"}
NORMS = ("instance", "none")

# A layer class, or a functools.partial of one with some fields already set.
ModuleDef = Callable[..., nn.Module]

# pix2pix initialises every conv and Dense weight with N(0, 0.02) and every bias with 0.
weight_init = nn.initializers.normal(stddev=0.02)
bias_init = nn.initializers.zeros

# Choices of the matmul back end, measured on a 2-core AVX2 CPU (see benchmarks/):
# im2col (one matmul over all taps) wins while the patch matrix stays small; above this
# many input features per output pixel, per-tap matmuls avoid the copy.
_IM2COL_MAX_FEATURES = 512
# With few output channels, one matmul on the input to all taps' outputs, then shifted
# sums, replaces many skinny matmuls (the generator's 7x7 64->1 output conv: 33x faster).
_OUTPUT_SIDE_MAX_CHANNELS = 8
# Winograd F(2x2, 3x3) pays for its transforms from this many input channels on.
_WINOGRAD_MIN_CHANNELS = 32


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


def _linear_combination(coefficients, terms):
  """sum_i c_i * t_i, skipping zero coefficients (a Winograd transform row)."""
  out = None
  for c, t in zip(coefficients, terms, strict=True):
    if c == 0:
      continue
    t = t if c == 1 else (-t if c == -1 else c * t)
    out = t if out is None else out + t
  return out


# Winograd F(2x2, 3x3) (Lavin & Gray, 2016): Y = A^T [(G g G^T) * (B^T d B)] A per 4x4 tile.
_WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def conv3x3_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """VALID 3x3 stride-1 cross-correlation with 2.25x fewer multiplies than direct.

  The 16 transformed tile positions become one batched matmul over channels; the
  input and output transforms are additions only. Rounding differs from the direct
  sum at the 1e-6 relative level, like any change of summation order.
  """
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  out_h, out_w = h - 2, w - 2
  tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
  x = jnp.pad(x, ((0, 0), (0, 2 * tiles_h + 2 - h), (0, 2 * tiles_w + 2 - w), (0, 0)))
  # d[i][j]: element (i, j) of every 4x4 input tile (tiles overlap by 2).
  d = [[x[:, i:i + 2 * tiles_h:2, j:j + 2 * tiles_w:2, :] for j in range(4)] for i in range(4)]
  cols = [[_linear_combination(_WINOGRAD_BT[a], [d[i][j] for i in range(4)]) for j in range(4)]
          for a in range(4)]
  v = jnp.stack([_linear_combination(_WINOGRAD_BT[c], cols[a])
                 for a in range(4) for c in range(4)]).reshape(16, b * tiles_h * tiles_w, cin)
  g = jnp.asarray(_WINOGRAD_G, kernel.dtype)
  u = jnp.einsum("ai,ijcd,bj->abcd", g, kernel, g).reshape(16, cin, cout)
  m = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, b, tiles_h, tiles_w, cout)
  rows = [[_linear_combination(_WINOGRAD_AT[p], [m[a, c] for a in range(4)]) for c in range(4)]
          for p in range(2)]
  y = [[_linear_combination(_WINOGRAD_AT[q], rows[p]) for q in range(2)] for p in range(2)]
  y = jnp.stack([jnp.stack(y[p], axis=3) for p in range(2)], axis=2)  # (b, th, 2, tw, 2, c)
  return y.reshape(b, 2 * tiles_h, 2 * tiles_w, cout)[:, :out_h, :out_w, :]


@jax.custom_vjp
def _conv_output_side(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 conv as one matmul to every tap's output, then a sum of shifted views.

  Autodiff of this formulation scatters into a (..., taps, cout) tensor and runs
  ~25x slower than the forward; the hand-written VJP below uses matmuls instead.
  """
  kh, kw, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  out_h, out_w = h - kh + 1, w - kw + 1
  per_tap = jnp.dot(x, kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout))
  per_tap = per_tap.reshape(b, h, w, kh * kw, cout)
  out = None
  for dy in range(kh):
    for dx in range(kw):
      term = per_tap[:, dy:dy + out_h, dx:dx + out_w, dy * kw + dx, :]
      out = term if out is None else out + term
  return out


def _conv_output_side_fwd(x, kernel):
  return _conv_output_side(x, kernel), (x, kernel)


def _conv_output_side_bwd(residuals, cotangent):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  # Zero-padded so that ct_full[q + (kh-1-dy, kw-1-dx)] = cotangent[q - (dy, dx)].
  ct_full = jnp.pad(cotangent, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  # d/dx: "full" correlation of the cotangent with the flipped kernel (few input
  # channels, so conv2d_matmul takes its im2col path).
  grad_x = conv2d_matmul(ct_full, kernel[::-1, ::-1].transpose(0, 1, 3, 2))
  # d/dkernel[dy, dx, c, o] = sum_q x[q, c] * cotangent[q - (dy, dx), o]: one matmul
  # between x and the cotangent shifted once per tap.
  shifted = jnp.concatenate(
      [ct_full[:, kh - 1 - dy:kh - 1 - dy + h, kw - 1 - dx:kw - 1 - dx + w, :]
       for dy in range(kh) for dx in range(kw)], axis=-1)
  grad_k = jnp.einsum("bhwc,bhwt->tc", x, shifted).reshape(kh, kw, cout, cin)
  return grad_x.astype(x.dtype), grad_k.transpose(0, 1, 3, 2).astype(kernel.dtype)


_conv_output_side.defvjp(_conv_output_side_fwd, _conv_output_side_bwd)


def conv2d_matmul(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """VALID cross-correlation as matrix products; same result as ``conv2d_xla``.

  Picks, by shape, the fastest of: Winograd F(2x2, 3x3) (3x3 stride 1, wide
  channels), output-side accumulation (few output channels), im2col (few input
  features) or one matmul per kernel tap.
  """
  kh, kw, cin, cout = kernel.shape
  _, h, w, _ = x.shape
  if stride == 1 and kh == kw == 3 and cin >= _WINOGRAD_MIN_CHANNELS:
    return conv3x3_winograd(x, kernel)
  if stride == 1 and cout <= _OUTPUT_SIDE_MAX_CHANNELS and cout < cin:
    return _conv_output_side(x, kernel)
  out_h = (h - kh) // stride + 1
  out_w = (w - kw) // stride + 1
  if kh * kw * cin <= _IM2COL_MAX_FEATURES:
    # Two-stage im2col (kernel columns, then rows): fewer, larger copies than one per tap.
    b = x.shape[0]
    cols = jnp.concatenate(
        [lax.slice(x, (0, 0, dx, 0), (b, h, dx + (out_w - 1) * stride + 1, cin),
                   (1, 1, stride, 1)) for dx in range(kw)], axis=-1)
    patches = jnp.concatenate(
        [lax.slice(cols, (0, dy, 0, 0), (b, dy + (out_h - 1) * stride + 1, out_w, kw * cin),
                   (1, stride, 1, 1)) for dy in range(kh)], axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout))
  out = None
  for dy in range(kh):
    for dx in range(kw):
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


def _kernel_param(module: nn.Module, in_features: int) -> jax.Array:
  """A square (k, k, in, out) float32 kernel, cast to the module's compute dtype."""
  shape = (module.kernel_size, module.kernel_size, in_features, module.features)
  return module.param("kernel", weight_init, shape, jnp.float32).astype(module.dtype)


def _add_bias(module: nn.Module, y: jax.Array) -> jax.Array:
  if not module.use_bias:
    return y
  return y + module.param("bias", bias_init, (module.features,), jnp.float32).astype(module.dtype)


class Conv(nn.Module):
  """Square-kernel conv with explicit padding, N(0, 0.02) weights and zero bias."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  padding_type: str = "zero"
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _kernel_param(self, x.shape[-1])
    x = pad_spatial(x.astype(self.dtype), self.padding, self.padding_type)
    fn = conv2d_matmul if resolve_conv_impl(self.impl) == "matmul" else conv2d_xla
    return _add_bias(self, fn(x, kernel, self.stride))


class ConvTranspose(nn.Module):
  """PyTorch-equivalent ``ConvTranspose2d`` (kernel stored as ``(kh, kw, in, out)``)."""

  features: int
  kernel_size: int
  stride: int
  padding: int
  output_padding: int
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _kernel_param(self, x.shape[-1])
    fn = (conv_transpose2d_matmul if resolve_conv_impl(self.impl) == "matmul"
          else conv_transpose2d_xla)
    y = fn(x.astype(self.dtype), kernel, self.stride, self.padding, self.output_padding)
    return _add_bias(self, y)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """``F.interpolate(mode="bilinear", align_corners=False)``: half-pixel centres, no antialias."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear",
                          antialias=False)


def resize_bicubic(x: jax.Array, height: int, width: int) -> jax.Array:
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bicubic",
                          antialias=False)


def count_params(params) -> int:
  return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
