"""Per-example transforms of the input pipeline (numpy, channels last).

The multi-scale idea of NIR-GAN: an example stored at its native ground sampling
distance may be shown at a coarser one. Coarsening is exact area averaging (each
output pixel is the mean of the input area it covers, for any factor >= 1, integer
or not), so a 2.5 m NAIP patch seen at 10 m looks like a 10 m sensor would see it,
without the aliasing of strided subsampling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from nirgan_jax import contract

# A coarse pixel is valid if its area-averaged native validity (in float64) is at least
# 1 - this: far above float64 rounding, far below the least weight a native pixel under a
# coarse one has (1 / window^2, over 1e-8 for any window up to 10,000 px).
VALID_TOLERANCE = 1e-9


def area_weights(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) matrix averaging input cells over each output cell's footprint.

  Output cell i covers input coordinates [i * f, (i + 1) * f) with f = size_in / size_out;
  each input cell [j, j + 1) contributes its overlap length / f.
  """
  if size_out > size_in:
    raise ValueError(f"area resampling only coarsens: {size_in} -> {size_out}")
  f = size_in / size_out
  starts = np.arange(size_out)[:, None] * f
  ends = starts + f
  cells = np.arange(size_in)[None, :]
  overlap = np.clip(np.minimum(ends, cells + 1) - np.maximum(starts, cells), 0.0, None)
  return overlap / f


@functools.lru_cache(maxsize=64)
def area_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
  """``area_weights`` by its nonzero entries: (size_out, taps) input indices and weights, the
  few input cells under each output cell (``ceil(f) + 1`` at most), padded with weight 0.
  Cached (a pipeline resamples the same few sizes again and again), so read-only."""
  weights = area_weights(size_in, size_out)
  nonzero = weights > 0
  counts = nonzero.sum(axis=1)
  # Each row's nonzero cells are contiguous: its first one and the next count - 1.
  tap = np.arange(counts.max())
  used = tap < counts[:, None]
  indices = np.where(used, np.argmax(nonzero, axis=1)[:, None] + tap, 0)
  tap_weights = np.where(used, np.take_along_axis(weights, indices, axis=1), 0.0)
  indices.flags.writeable = tap_weights.flags.writeable = False
  return indices, tap_weights


def _resample_axis(image: np.ndarray, axis: int, size_out: int) -> np.ndarray:
  """Area averaging along one axis, as a sum over the few cells under each output cell."""
  indices, weights = area_taps(image.shape[axis], size_out)
  weights = np.ascontiguousarray(weights.T, image.dtype)  # (taps, size_out)
  shape = [1] * image.ndim
  shape[axis] = size_out
  if axis == image.ndim - 2:
    # Columns: each weight repeated over the channels, so that the multiply is one long loop
    # (broadcast over them, NumPy's innermost loop would be the 3 RGB channels alone).
    weights = np.repeat(weights[..., None], image.shape[-1], axis=-1)
    shape[-1] = image.shape[-1]
  out = None
  for tap in range(indices.shape[1]):
    term = np.take(image, indices[:, tap], axis=axis) * weights[tap].reshape(shape)
    out = term if out is None else out + term
  return out


def area_resample(image: np.ndarray, factor: float, dtype=np.float32) -> np.ndarray:
  """(H, W, C) -> (round(H / factor), round(W / factor), C) by area averaging, in ``dtype``.

  Whole blocks (integer factors) are block means; other factors sum the input cells under
  each output cell (two at 1.5x) with their overlap weights, rows then columns: a banded
  version of ``area_weights`` rows @ image @ columns, equal to it to float rounding (1e-7
  relative in float32) and with no BLAS, so its bits do not depend on the machine's threads.
  """
  if factor < 1:
    raise ValueError(f"factor must be >= 1 (coarsening), got {factor}")
  height, width = image.shape[:2]
  out_h, out_w = max(1, round(height / factor)), max(1, round(width / factor))
  if (out_h, out_w) == (height, width):
    return image.astype(dtype)
  image = image.astype(dtype, copy=False)
  if float(factor).is_integer() and height % factor == 0 and width % factor == 0:
    return block_mean(image, int(factor))  # whole blocks
  return _resample_axis(_resample_axis(image, 0, out_h), 1, out_w)


# Up to this factor, block_mean adds a block's pixels in the order NumPy's mean over the
# block axes does (checked bit for bit, float32 and float64, factors 2 to 8).
SEQUENTIAL_BLOCK_MAX = 8


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
  """(H, W, C) -> (H / factor, W / factor, C): the mean of each factor x factor block, in
  ``image``'s dtype, bit-identical to ``reshape(...).mean(axis=(1, 3))`` and about 5x faster:
  NumPy reduces two short strided axes slowly, while whole-image adds run at memory speed.
  Each channel is summed on its own: over interleaved channels NumPy's innermost loop would
  be C values long (3x slower for RGB)."""
  height, width, channels = image.shape
  blocks = image.reshape(height // factor, factor, width // factor, factor, channels)
  if factor > SEQUENTIAL_BLOCK_MAX:
    return blocks.mean(axis=(1, 3), dtype=image.dtype)
  means = np.empty((height // factor, width // factor, channels), image.dtype)
  for channel in range(channels):
    total = blocks[:, 0, :, 0, channel].copy()  # contiguous: adds into it run fastest
    for row in range(factor):
      for col in range(factor):
        if row or col:
          total += blocks[:, row, :, col, channel]
    means[..., channel] = total
  means /= image.dtype.type(factor * factor)
  return means


def area_resample_valid(images: Sequence[np.ndarray], valid: np.ndarray,
                        factor: float) -> tuple[list[np.ndarray], np.ndarray]:
  """Coarsens each (H, W, C) of ``images`` (the bands of one example) and their (H, W, 1) 0/1
  ``valid`` mask by area averaging.

  A coarse pixel is valid only if every native pixel under it is (its area-averaged mask is
  1, to float rounding). Its value is the mean over the valid native pixels under it (0
  where there are none), so no-data never enters a mean and every value is finite.
  """
  if valid.all():
    images = [area_resample(image, factor) for image in images]
    return images, np.ones((*images[0].shape[:2], 1), np.float32)
  cover = area_resample(valid, factor, np.float64)
  safe_cover, covered, keep = np.maximum(cover, 1e-12), cover > 0, valid > 0
  means = [np.where(covered, area_resample(np.where(keep, image, 0.0), factor) / safe_cover,
                    0.0).astype(np.float32) for image in images]
  return means, (cover >= 1.0 - VALID_TOLERANCE).astype(np.float32)


def native_window(size: int, factor: float) -> int:
  """Native pixels a ``size`` px example at ``factor`` times the native gsd is cut from."""
  return math.ceil(size * factor - 1e-6)  # 256 x (0.3 / 0.1) is 768, not 769


def crop(image: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
  """The ``size`` x ``size`` window at (top, left); refuses a window that leaves the image
  (every pixel of an example is real: nothing is padded)."""
  height, width = image.shape[:2]
  if not (0 <= top <= height - size and 0 <= left <= width - size):
    raise ValueError(f"a {size} px window at ({top}, {left}) leaves the {height}x{width} image")
  return image[top:top + size, left:left + size]


def random_crop_offsets(rng: np.random.Generator, height: int, width: int,
                        size: int) -> tuple[int, int]:
  return (int(rng.integers(0, max(0, height - size) + 1)),
          int(rng.integers(0, max(0, width - size) + 1)))


def dihedral(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
  """One of the 8 symmetries of the square: ``k`` quarter turns, then an optional flip."""
  image = np.rot90(image, k, axes=(0, 1))
  return image[:, ::-1] if flip else image


def illumination_gain(rng: np.random.Generator, bands: Sequence[np.ndarray], valid: np.ndarray,
                      low: float, high: float) -> float:
  """A brightness factor for all four bands of an example (``bands``: its arrays of them,
  e.g. RGB and NIR), as a change of illumination (sun elevation, haze, terrain shading) would
  apply: log-uniform in [``low``, ``high``], lowered where needed so that no valid reflectance
  passes 1. One factor on every band leaves NDVI, NDWI and every other normalised difference
  unchanged; clipping would not.
  """
  gain = math.exp(rng.uniform(math.log(low), math.log(high)))
  # The same maximum as np.max(where=valid > 0, initial=0), which is 10x slower.
  everywhere = valid.all()
  brightest = max(float(np.max(band) if everywhere else np.max(np.where(valid > 0, band, 0.0)))
                  for band in bands)
  return min(gain, 1.0 / brightest) if brightest > 0 else gain


def to_reflectance(stored: np.ndarray) -> np.ndarray:
  """Stored uint16 (x 10000) or float DN -> float32 reflectance clipped to [0, 1], NaN-free."""
  stored = np.asarray(stored)
  reflectance = stored.astype(np.float32) / np.float32(contract.REFLECTANCE_SCALE)
  if not np.issubdtype(stored.dtype, np.integer):  # only floats can hold NaN or inf
    reflectance = np.nan_to_num(reflectance, nan=0.0, posinf=1.0, neginf=0.0)
  return np.clip(reflectance, 0.0, 1.0, out=reflectance)


def coarser_gsds(native_gsd: float, derived_gsd: tuple[float, ...]) -> list[float]:
  """The ``derived_gsd`` an example of ``native_gsd`` can be shown at (coarser ones only)."""
  return [float(g) for g in derived_gsd if g > native_gsd and math.isfinite(g)]


def choose_gsd(rng: np.random.Generator, native_gsd: float, derived_gsd: tuple[float, ...],
               prob_native: float) -> float:
  """The ground sampling distance to show an example at: native with ``prob_native``, else
  one of the coarser ``derived_gsd`` uniformly."""
  coarser = coarser_gsds(native_gsd, derived_gsd)
  if not coarser or rng.random() < prob_native:
    return native_gsd
  return coarser[int(rng.integers(0, len(coarser)))]


def gsd_probabilities(native_gsd: float, derived_gsd: tuple[float, ...],
                      prob_native: float) -> dict[float, float]:
  """The probability ``choose_gsd`` gives each ground sampling distance."""
  coarser = coarser_gsds(native_gsd, derived_gsd)
  if not coarser:
    return {float(native_gsd): 1.0}
  return {float(native_gsd): prob_native,
          **{g: (1.0 - prob_native) / len(coarser) for g in coarser}}
