"""Per-example transforms of the input pipeline (numpy, channels last).

The multi-scale idea of NIR-GAN: an example stored at its native ground sampling
distance may be shown at a coarser one. Coarsening is exact area averaging (each
output pixel is the mean of the input area it covers, for any factor >= 1, integer
or not), so a 2.5 m NAIP patch seen at 10 m looks like a 10 m sensor would see it,
without the aliasing of strided subsampling.
"""

from __future__ import annotations

import math

import numpy as np

from data_prep import contract


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


def area_resample(image: np.ndarray, factor: float) -> np.ndarray:
  """(H, W, C) -> (round(H / factor), round(W / factor), C) by area averaging, float32."""
  if factor < 1:
    raise ValueError(f"factor must be >= 1 (coarsening), got {factor}")
  height, width = image.shape[:2]
  out_h, out_w = max(1, round(height / factor)), max(1, round(width / factor))
  if (out_h, out_w) == (height, width):
    return image.astype(np.float32)
  if float(factor).is_integer() and height % factor == 0 and width % factor == 0:
    f = int(factor)  # whole blocks: the same means, several times faster
    blocks = image.astype(np.float32).reshape(out_h, f, out_w, f, image.shape[-1])
    return blocks.mean(axis=(1, 3), dtype=np.float32)
  rows = area_weights(height, out_h).astype(np.float32)
  cols = area_weights(width, out_w).astype(np.float32)
  return np.einsum("ih,hwc,jw->ijc", rows, image.astype(np.float32), cols, optimize=True)


def crop_or_pad(image: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
  """A ``size`` x ``size`` window at (top, left); sides shorter than ``size`` are first
  reflect-padded (symmetrically) up to it."""
  height, width = image.shape[:2]
  pad_h, pad_w = max(0, size - height), max(0, size - width)
  if pad_h or pad_w:
    image = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                           (0, 0)), mode="reflect" if min(height, width) > 1 else "edge")
  return image[top:top + size, left:left + size]


def random_crop_offsets(rng: np.random.Generator, height: int, width: int,
                        size: int) -> tuple[int, int]:
  return (int(rng.integers(0, max(0, height - size) + 1)),
          int(rng.integers(0, max(0, width - size) + 1)))


def dihedral(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
  """One of the 8 symmetries of the square: ``k`` quarter turns, then an optional flip."""
  image = np.rot90(image, k, axes=(0, 1))
  return image[:, ::-1] if flip else image


def to_reflectance(stored: np.ndarray) -> np.ndarray:
  """Stored uint16 (x 10000) or float DN -> float32 reflectance clipped to [0, 1], NaN-free."""
  stored = np.asarray(stored)
  reflectance = stored.astype(np.float32) / np.float32(contract.REFLECTANCE_SCALE)
  if not np.issubdtype(stored.dtype, np.integer):  # only floats can hold NaN or inf
    reflectance = np.nan_to_num(reflectance, nan=0.0, posinf=1.0, neginf=0.0)
  return np.clip(reflectance, 0.0, 1.0, out=reflectance)


def choose_gsd(rng: np.random.Generator, native_gsd: float, derived_gsd: tuple[float, ...],
               prob_native: float) -> float:
  """The ground sampling distance to show an example at: native with ``prob_native``, else
  one of the coarser ``derived_gsd`` uniformly."""
  coarser = [g for g in derived_gsd if g > native_gsd and math.isfinite(g)]
  if not coarser or rng.random() < prob_native:
    return native_gsd
  return float(coarser[int(rng.integers(0, len(coarser)))])
