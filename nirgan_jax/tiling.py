"""Overlapping tiles over a large raster, blended back without seams.

Tiles start at multiples of ``ALIGN`` (the generator's total stride), so a tile sees the same
downsampling phase as a whole-image forward would. Each tile's prediction is weighted by a
separable window that is 0 for the first quarter of the overlap at an inner tile edge (where
the tile lacks context), rises as a raised cosine over the middle half and is 1 beyond; at the
raster's own edges the weight stays 1. Two tiles overlapping by exactly ``overlap`` then have
weights that sum to 1, and in general the blend is the weighted sum divided by the summed
weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

ALIGN = 4


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Start offsets (multiples of ``ALIGN``) of tiles of ``tile`` px, overlapping by at least
  ``overlap``, whose union covers [0, size). The last tile may pass the end by < ``ALIGN`` px
  (and a tile longer than the raster passes it): those pixels are reflect-padded."""
  if tile % ALIGN or overlap % ALIGN or not 0 <= overlap < tile:
    raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {ALIGN} "
                     "with 0 <= overlap < tile")
  if size <= tile:
    return [0]
  stride = tile - overlap
  starts = list(range(0, size - tile, stride))
  last = -(-(size - tile) // ALIGN) * ALIGN  # ceil to ALIGN: ends within ALIGN - 1 of size
  if last > starts[-1]:
    starts.append(last)
  return starts


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
  row: int  # top-left offset in the raster (may extend past its bottom/right edge)
  col: int
  size: int
  weights: np.ndarray  # (size, size) blend window


def tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
  """Every tile of a ``height`` x ``width`` raster, row by row."""
  rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
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
    """Adds a (size, size, C) prediction; yields (first_row, rows) that are final."""
    yield from self._advance_to(t.row)
    r0 = t.row - self._base
    h = min(t.size, self.height - t.row)
    w = min(t.size, self.width - t.col)
    weights = t.weights[:h, :w, None]
    self._sum[r0:r0 + h, t.col:t.col + w] += prediction[:h, :w] * weights
    self._weight[r0:r0 + h, t.col:t.col + w] += weights

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
