"""Overlapping tiles over a large raster, blended back without seams.

The raster is seen as if reflect-padded by ``margin`` px on every side (the context the
generator was trained with at patch edges); tiles of ``tile`` px cover that padded extent and
are fed to the generator as they are, so inside the raster a tile's context is real
neighbouring pixels, not a reflection. Tiles start at ``-margin`` plus multiples of ``ALIGN``
(the generator's total stride): every tile sees the downsampling phase of one whole-image
forward. Each tile's prediction is weighted by a separable window that is 0 for the first
quarter of the overlap at an inner tile edge (where the tile lacks context), rises as a
raised cosine over the middle half and is 1 beyond; at the raster's own edges the weight
stays 1. Two tiles overlapping by exactly ``overlap`` have weights that sum to 1; in general
the blend is the weighted sum divided by the summed weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from nirgan_jax.models.generator import SIZE_MULTIPLE

ALIGN = SIZE_MULTIPLE


def tile_starts(size: int, tile: int, overlap: int, margin: int = 0) -> list[int]:
  """Start offsets of tiles of ``tile`` px, overlapping by at least ``overlap``, that cover
  [-margin, size + margin); each is ``-margin`` plus a multiple of ``ALIGN``. The last tile
  may pass the padded extent by < ``ALIGN`` px (and a tile longer than it passes it)."""
  if tile % ALIGN or overlap % ALIGN or not 0 <= overlap < tile or margin < 0:
    raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {ALIGN} "
                     f"with 0 <= overlap < tile, and margin ({margin}) >= 0")
  span = size + 2 * margin
  if span <= tile:
    return [-margin]
  stride = tile - overlap
  starts = list(range(0, span - tile, stride))
  last = -(-(span - tile) // ALIGN) * ALIGN  # ceil to ALIGN: ends within ALIGN - 1 of span
  if last > starts[-1]:
    starts.append(last)
  return [s - margin for s in starts]


def edge_ramp(overlap: int) -> np.ndarray:
  """Weights for the ``overlap`` px next to an inner tile edge: 0, raised cosine, 1."""
  d = np.arange(overlap, dtype=np.float64) + 0.5
  quarter = overlap / 4
  t = np.clip((d - quarter) / (overlap / 2), 0.0, 1.0) if overlap else d
  return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def window_1d(length: int, overlap: int, inner_start: bool, inner_end: bool) -> np.ndarray:
  """Blend weights along one axis of a tile; ``inner_*``: that edge has a neighbouring tile."""
  weights = np.ones(length, np.float32)
  if overlap:
    ramp = edge_ramp(overlap)
    if inner_start:
      weights[:overlap] = np.minimum(weights[:overlap], ramp)
    if inner_end:
      weights[length - overlap:] = np.minimum(weights[length - overlap:], ramp[::-1])
  return weights


@dataclasses.dataclass(frozen=True)
class Tile:
  row: int  # top-left offset in the raster (may lie outside it: the reflected border)
  col: int
  size: int
  weights: np.ndarray  # (size, size) blend window


def tiles(height: int, width: int, tile: int, overlap: int, margin: int = 0) -> list[Tile]:
  """Every tile of a ``height`` x ``width`` raster seen with ``margin`` px of reflected
  border, row by row."""
  rows = tile_starts(height, tile, overlap, margin)
  cols = tile_starts(width, tile, overlap, margin)
  out = []
  for i, r in enumerate(rows):
    wr = window_1d(tile, overlap, i > 0, i < len(rows) - 1)
    for j, c in enumerate(cols):
      wc = window_1d(tile, overlap, j > 0, j < len(cols) - 1)
      out.append(Tile(r, c, tile, np.outer(wr, wc)))
  return out


class StripBlender:
  """Accumulates weighted tile predictions row of tiles by row of tiles and hands out each
  band of rows as soon as no later tile can touch it, so memory is one tile-high strip of the
  raster's width, not the whole raster."""

  def __init__(self, height: int, width: int, tile: int, channels: int = 1):
    self.height, self.width, self.tile = height, width, tile
    self._base = 0  # raster row of the buffer's first row
    self._sum = np.zeros((tile, width, channels), np.float64)
    self._weight = np.zeros((tile, width, 1), np.float64)

  def add(self, t: Tile, prediction: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Adds a (size, size, C) prediction; yields (first_row, rows) that are final. The parts
    of the tile outside the raster are dropped."""
    yield from self._advance_to(t.row)
    top, left = max(t.row, 0), max(t.col, 0)
    bottom, right = min(t.row + t.size, self.height), min(t.col + t.size, self.width)
    if bottom <= top or right <= left:
      return
    inside = (slice(top - t.row, bottom - t.row), slice(left - t.col, right - t.col))
    weights = t.weights[inside][..., None]
    rows = slice(top - self._base, bottom - self._base)
    self._sum[rows, left:right] += prediction[inside] * weights
    self._weight[rows, left:right] += weights

  def finish(self) -> Iterator[tuple[int, np.ndarray]]:
    yield from self._advance_to(self.height)

  def _advance_to(self, row: int) -> Iterator[tuple[int, np.ndarray]]:
    """Emits the rows above ``row`` (no tile starting at or after ``row`` reaches them)."""
    done = min(row, self.height) - self._base
    if done <= 0:
      return
    with np.errstate(invalid="ignore", divide="ignore"):
      blended = (self._sum[:done] / self._weight[:done]).astype(np.float32)
    yield self._base, blended
    self._sum = np.roll(self._sum, -done, axis=0)
    self._weight = np.roll(self._weight, -done, axis=0)
    self._sum[-done:] = 0
    self._weight[-done:] = 0
    self._base += done
