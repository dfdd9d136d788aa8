"""Prediction of an image of any size in overlapping tiles, read window by window.

An image is anything that follows ``ImageSource``: its size, a ``read`` of one window as
reflectance and validity, and the lon/lat of points in it. ``ArraySource`` holds an image
in memory; ``geotiff.GeoTiffSource`` reads one from a GeoTIFF (or a window of it).
``predict_tiles`` feeds the tiles of ``tile_grid`` (which see the image as reflect-padded by the
model's ``pad`` at its own edges) to the generator in fixed-size batches and hands back the
blended NIR band by band of rows, so memory is one strip of tiles whatever the image height.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from nirgan_jax.infer import tile_grid

if TYPE_CHECKING:
  from nirgan_jax.infer.model import Model

TILE = 256  # the training patch size: the SatCLIP map is stretched over a tile
OVERLAP = 32
BATCH_SIZE = 4

# write_rows(first_row, (n, width) float32 NIR, NaN where the input is not valid)
RowWriter = Callable[[int, np.ndarray], None]


class ImageSource(Protocol):
  """An RGB image read window by window."""

  @property
  def height(self) -> int: ...

  @property
  def width(self) -> int: ...

  def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """The window ``rows`` x ``cols`` (inside the image): (h, w, 3) float32 reflectance in
    [0, 1] without NaN, and the (h, w) bool mask of valid pixels."""
    ...

  def lonlat(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 2) float32 lon/lat (degrees) of the points at fractional pixel offsets ``rows``,
    ``cols`` from the image's top-left corner."""
    ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """An image in memory: ``rgb`` (H, W, 3) reflectance; ``valid`` (H, W) bool, by default
  where every channel is finite; ``location`` the lon/lat of every tile (needed only by a
  model that injects SatCLIP)."""

  rgb: np.ndarray
  valid: np.ndarray | None = None
  location: tuple[float, float] | None = None

  def __post_init__(self):
    if self.rgb.ndim != 3 or self.rgb.shape[-1] != 3:
      raise ValueError(f"rgb must be (H, W, 3), got {self.rgb.shape}")
    valid = np.isfinite(self.rgb).all(axis=-1) if self.valid is None else self.valid
    if valid.shape != self.rgb.shape[:2]:
      raise ValueError(f"valid must be {self.rgb.shape[:2]}, got {valid.shape}")
    object.__setattr__(self, "valid", np.asarray(valid, bool))

  @property
  def height(self) -> int:
    return self.rgb.shape[0]

  @property
  def width(self) -> int:
    return self.rgb.shape[1]

  def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(self.rgb[rows, cols], np.float32)
    return np.clip(np.nan_to_num(rgb), 0.0, 1.0), self.valid[rows, cols]

  def lonlat(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if self.location is None:
      raise ValueError("the model injects SatCLIP: give the ArraySource a location (lon, lat)")
    return np.tile(np.asarray(self.location, np.float32), (len(rows), 1))


def image_tiles(model: Model, height: int, width: int, tile: int = TILE,
                overlap: int = OVERLAP) -> list[tile_grid.Tile]:
  """The tiles ``predict_tiles`` runs over an image of this size, row by row."""
  # The generator's training context (config.pad) comes from the neighbouring pixels inside
  # the image and from reflection outside it, so tiles go through the generator unpadded.
  return tile_grid.tiles(height, width, tile, overlap, model.pad)


def read_tile(source: ImageSource, t: tile_grid.Tile) -> tuple[np.ndarray, np.ndarray]:
  """(size, size, 3) reflectance, reflect-padded where the tile lies outside the image, and
  the (size, size) validity mask (False outside the image)."""
  top, left = max(t.row, 0), max(t.col, 0)
  bottom, right = min(t.row + t.size, source.height), min(t.col + t.size, source.width)
  rgb, valid = source.read(slice(top, bottom), slice(left, right))
  pad = ((top - t.row, t.row + t.size - bottom), (left - t.col, t.col + t.size - right))
  if any(p for side in pad for p in side):
    mode = "reflect" if min(rgb.shape[:2]) > 1 else "edge"
    rgb = np.pad(rgb, pad + ((0, 0),), mode=mode)
    valid = np.pad(valid, pad, constant_values=False)
  return rgb, valid


def tile_lonlat(source: ImageSource, batch: list[tile_grid.Tile]) -> np.ndarray:
  """(B, 2) lon/lat of the centre of the part of each tile that lies inside the image."""
  rows = [(max(t.row, 0) + min(t.row + t.size, source.height)) / 2 for t in batch]
  cols = [(max(t.col, 0) + min(t.col + t.size, source.width)) / 2 for t in batch]
  return np.asarray(source.lonlat(np.asarray(rows), np.asarray(cols)), np.float32)


def _batches(items: list, size: int) -> Iterator[list]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def _pad_batch(array: np.ndarray, batch_size: int) -> np.ndarray:
  # A fixed batch shape: one compilation for every image and the last, short batch.
  return np.concatenate([array, np.zeros((batch_size - len(array), *array.shape[1:]),
                                         array.dtype)])


def predict_tiles(model: Model, source: ImageSource, write_rows: RowWriter, tile: int = TILE,
                  overlap: int = OVERLAP, batch_size: int = BATCH_SIZE, progress=None) -> int:
  """Predicts NIR over ``source``; ``write_rows(first_row, (n, width) float32)`` receives each
  finished band of rows, top to bottom (the generator's raw output, NaN where the input is
  not valid). ``progress.update(n)`` (e.g. a tqdm bar) is told of every batch of tiles.
  Returns the number of valid pixels."""
  blender = tile_grid.StripBlender(source.height, source.width, tile, channels=2)
  valid_pixels = 0
  for batch in _batches(image_tiles(model, source.height, source.width, tile, overlap),
                        batch_size):
    pairs = [read_tile(source, t) for t in batch]
    rgb = _pad_batch(np.stack([rgb for rgb, _ in pairs]), batch_size)
    lonlat = _pad_batch(tile_lonlat(source, batch), batch_size) if model.uses_location else None
    nir = model(rgb, lonlat, pad=False)
    for t, (_, valid), pred in zip(batch, pairs, nir, strict=False):
      stacked = np.concatenate([pred, valid[..., None].astype(np.float32)], axis=-1)
      for first, rows in blender.add(t, stacked):
        valid_pixels += _emit(write_rows, first, rows)
    if progress is not None:
      progress.update(len(batch))
  for first, rows in blender.finish():
    valid_pixels += _emit(write_rows, first, rows)
  return valid_pixels


def _emit(write_rows: RowWriter, first: int, rows: np.ndarray) -> int:
  # Channel 1 is the blended validity: a pixel is valid where every tile saw it valid.
  nir, valid = rows[..., 0], rows[..., 1] > 0.999
  write_rows(first, np.where(valid, nir, np.nan).astype(np.float32))
  return int(valid.sum())


def predict_image(model: Model, source: ImageSource, tile: int = TILE, overlap: int = OVERLAP,
                  batch_size: int = BATCH_SIZE, progress=None) -> np.ndarray:
  """``predict_tiles`` into memory: the (H, W) float32 NIR, NaN where the input is not
  valid (the generator's raw output, not clipped)."""
  nir = np.full((source.height, source.width), np.nan, np.float32)

  def write_rows(first: int, rows: np.ndarray) -> None:
    nir[first:first + rows.shape[0]] = rows

  predict_tiles(model, source, write_rows, tile, overlap, batch_size, progress)
  return nir
