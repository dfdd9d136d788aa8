"""GeoTIFF input: opening rasters with errors that name the file, and ``GeoTiffSource``, the
``tiled.ImageSource`` of a raster's RGB bands (or of a window of them) as reflectance.

Stored values are divided by a scale to get reflectance: by default 255 for uint8, the data
contract's 10000 for (u)int16 (Sentinel-2 style DN) and 1 for float. A pixel is valid where
every RGB band's mask says so and its values are finite (NaN in a float raster is nodata even
without a declared nodata value). A tile's lon/lat comes from the raster's CRS, or is one
fixed point for rasters without one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio import warp
from rasterio.enums import Interleaving
from rasterio.windows import Window

from nirgan_jax import contract, errors
from nirgan_jax.errors import NirganError

DEFAULT_SCALES = {"uint8": 255.0, "uint16": contract.REFLECTANCE_SCALE,
                  "int16": contract.REFLECTANCE_SCALE}


class RasterError(NirganError):
  """A raster that is missing, unreadable or unusable; the message names the file."""


def open_raster(path: Path) -> rasterio.DatasetReader:
  """The raster at ``path``, opened; a missing, unreadable or incomplete one is refused."""
  if not path.exists():
    raise RasterError(f"{path}: no such file")
  try:
    dataset = rasterio.open(path)
  except rasterio.errors.RasterioIOError as e:
    raise RasterError(f"{path}: not a readable raster ({errors.one_line(e)})") from e
  except UnicodeEncodeError as e:  # rasterio passes names to GDAL as UTF-8
    raise RasterError(f"{path}: the file name is not valid UTF-8, which GDAL cannot open; "
                      "rename the file") from e
  problem = unstored_pixels(dataset)
  if problem:
    dataset.close()
    raise RasterError(f"{path}: {problem}")
  return dataset


def unstored_pixels(src) -> str | None:
  """Why the GeoTIFF ``src`` does not hold every block of pixels its header declares, or None:
  a block ending past the end of the file (a truncated file), or one absent without a nodata
  value to stand for it (a header declaring more pixels than the file stores, which GDAL
  would read as zeros). Sparse GeoTIFFs leave out nodata blocks on purpose."""
  if src.driver != "GTiff" or not os.path.isfile(src.name):  # e.g. a /vsisubfile/ member
    return None
  size = os.path.getsize(src.name)
  rows, cols = src.block_shapes[0]
  bands = range(1, src.count + 1) if src.interleaving == Interleaving.band else [1]
  for band in bands:
    for y in range(-(-src.height // rows)):
      for x in range(-(-src.width // cols)):
        offset = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
        if offset is None:
          if src.nodata is None:
            return (f"holds no pixels for block ({x}, {y}) of its {src.width}x{src.height} px "
                    "(truncated, or its header declares more than it stores)")
          continue
        end = int(offset) + int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band))
        if end > size:
          return f"truncated: its pixels run to byte {end}, the file ends at byte {size}"
  return None


def unreadable(path: str | Path, error: rasterio.errors.RasterioIOError) -> RasterError:
  """The error for pixels of ``path`` that GDAL fails to decode (rasterio's own message only
  points to its cause)."""
  return RasterError(f"{path}: unreadable pixels ({errors.one_line(error.__cause__ or error)})")


def check_values(path: Path, dataset: rasterio.DatasetReader, scale: float | None) -> None:
  """Refuses values that cannot be read as reflectance: complex numbers, or integers of a type
  without a default scale (int8, 32-bit) unless ``scale`` gives one."""
  dtype = dataset.dtypes[0]
  if dtype.startswith("complex"):
    raise RasterError(f"{path}: holds complex values ({dtype}), not reflectance")
  if scale is None and dtype not in DEFAULT_SCALES and not dtype.startswith("float"):
    raise RasterError(f"{path}: {dtype} values have no default reflectance scale; pass --scale")


def input_scale(dataset: rasterio.DatasetReader, scale: float | None = None) -> float:
  """Stored value / scale = reflectance: ``scale``, or the default for the raster's dtype."""
  return scale if scale is not None else DEFAULT_SCALES.get(dataset.dtypes[0], 1.0)


class GeoTiffSource:
  """Bands ``bands`` (1-based red, green, blue) of an open raster as reflectance, over
  ``window`` (default: the whole raster), read on demand. ``lonlat`` fixes every tile's
  location; without it locations come from the raster's CRS."""

  def __init__(self, dataset: rasterio.DatasetReader, bands: Sequence[int] = (1, 2, 3),
               scale: float | None = None, window: Window | None = None,
               lonlat: tuple[float, float] | None = None):
    self.dataset = dataset
    self.bands = list(bands)
    self.scale = input_scale(dataset, scale)
    self.window = window if window is not None else Window(0, 0, dataset.width, dataset.height)
    self.fixed_lonlat = lonlat

  @property
  def height(self) -> int:
    return int(self.window.height)

  @property
  def width(self) -> int:
    return int(self.window.width)

  @property
  def crs(self):
    return self.dataset.crs

  @property
  def transform(self) -> rasterio.Affine:
    """The window's geotransform."""
    return self.dataset.window_transform(self.window)

  def _raster_window(self, rows: slice, cols: slice) -> Window:
    return Window(self.window.col_off + cols.start, self.window.row_off + rows.start,
                  cols.stop - cols.start, rows.stop - rows.start)

  def _read(self, read, rows: slice, cols: slice) -> np.ndarray:
    """``read`` (the dataset's ``read`` or ``read_masks``) of the bands over a window."""
    try:
      return read(self.bands, window=self._raster_window(rows, cols))
    except rasterio.errors.RasterioIOError as e:
      raise unreadable(self.dataset.name, e) from e

  def reflectance(self, rows: slice, cols: slice) -> np.ndarray:
    """(h, w, 3) float32 stored values / scale, as stored: neither clipped nor NaN-free."""
    data = self._read(self.dataset.read, rows, cols)
    return np.moveaxis(data.astype(np.float32) / self.scale, 0, -1)

  def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    masks = self._read(self.dataset.read_masks, rows, cols)
    reflectance = self.reflectance(rows, cols)
    # A float raster may mark nodata with NaN without declaring a nodata value.
    valid = masks.all(axis=0) & np.isfinite(reflectance).all(axis=-1)
    return np.clip(np.nan_to_num(reflectance), 0.0, 1.0), valid

  def lonlat(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if self.fixed_lonlat is not None:
      return np.tile(np.asarray(self.fixed_lonlat, np.float32), (len(rows), 1))
    if self.crs is None:
      raise RasterError(f"{self.dataset.name}: has no CRS, so tile locations are unknown")
    xs, ys = rasterio.transform.xy(self.dataset.transform, np.asarray(rows) + self.window.row_off,
                                   np.asarray(cols) + self.window.col_off, offset="ul")
    lons, lats = warp.transform(self.crs, "EPSG:4326", np.atleast_1d(xs), np.atleast_1d(ys))
    return np.stack([lons, lats], axis=-1).astype(np.float32)
