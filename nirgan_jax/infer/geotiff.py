"""GeoTIFF input: opening rasters with errors that name the file, and ``GeoTiffSource``, the
``tiled.ImageSource`` of a raster's RGB bands (or of a window of them) as reflectance.

Stored values DN become reflectance as (DN - offset) / scale (``Radiometry``): from
``--scale``/``--offset`` if either is given; else from the bands' GDAL scale/offset metadata
(reflectance = DN * gdal_scale + gdal_offset), as Sentinel-2 L2A products of processing baseline
04.00 and later declare it (DN = 10000 * reflectance + 1000); else by dtype, 255 for uint8,
the data contract's 10000 for (u)int16 (Sentinel-2 style DN) and 1 for float, offset 0. A
pixel is valid where
every RGB band's mask says so and its values are finite (NaN in a float raster is nodata even
without a declared nodata value). A tile's lon/lat comes from the raster's CRS, or is one
fixed point for rasters without one.
"""

from __future__ import annotations

import dataclasses
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


# Remote rasters, read through GDAL's virtual file systems in byte ranges (a COG's tiles).
_REMOTE_SCHEMES = {"gs://": "/vsigs/", "s3://": "/vsis3/", "http://": "/vsicurl/http://",
                   "https://": "/vsicurl/https://"}
# GDAL settings for reading them: no listing of the remote folder on open.
READ_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def remote_path(name: str) -> str | None:
  """The GDAL path of a remote raster: ``/vsi...`` as given; ``gs://``, ``s3://`` and
  ``http(s)://`` URLs mapped to ``/vsigs/``, ``/vsis3/`` and ``/vsicurl/``. None for a local
  path."""
  if name.startswith("/vsi"):
    return name
  for scheme, prefix in _REMOTE_SCHEMES.items():
    if name.startswith(scheme):
      return prefix + name.removeprefix(scheme)
  return None


def raster_name(path: str | Path) -> str:
  """The file name of a local path or of a remote raster's GDAL path."""
  return str(path).rstrip("/").rsplit("/", 1)[-1]


def open_raster(path: str | Path) -> rasterio.DatasetReader:
  """The raster at ``path`` (local, or a remote raster's GDAL path), opened; a missing,
  unreadable or incomplete one is refused."""
  if isinstance(path, Path) and not path.exists():
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


def check_values(path: Path, dataset: rasterio.DatasetReader, scale: float | None,
                 bands: Sequence[int] = (1, 2, 3)) -> None:
  """Refuses values that cannot be read as reflectance: complex numbers, or integers of a type
  without a default scale (int8, 32-bit) unless ``scale`` or the bands' GDAL metadata give
  one."""
  dtype = dataset.dtypes[0]
  if dtype.startswith("complex"):
    raise RasterError(f"{path}: holds complex values ({dtype}), not reflectance")
  if (scale is None and dtype not in DEFAULT_SCALES and not dtype.startswith("float")
      and not _declares_scaling(dataset, bands)):
    raise RasterError(f"{path}: {dtype} values have no default reflectance scale; pass --scale")


@dataclasses.dataclass(frozen=True)
class Radiometry:
  """How the stored values DN of some bands become reflectance: (DN - offset) / scale."""

  scale: np.ndarray  # (bands,)
  offset: np.ndarray  # (bands,)
  origin: str  # "--scale/--offset", "GDAL metadata" or "dtype"

  def reflectance(self, data: np.ndarray) -> np.ndarray:
    """(bands, ...) stored values as float32 reflectance."""
    shape = (-1,) + (1,) * (data.ndim - 1)
    return ((data.astype(np.float32) - self.offset.reshape(shape))
            / self.scale.reshape(shape)).astype(np.float32)


def radiometry(dataset: rasterio.DatasetReader, bands: Sequence[int],
               scale: float | None = None, offset: float | None = None) -> Radiometry:
  """The ``Radiometry`` of ``bands`` (1-based): ``scale``/``offset`` if either is given (the
  other then defaults to the dtype's scale or 0); else the bands' GDAL scale/offset metadata if
  any declares some; else the dtype's scale, offset 0."""
  n = len(bands)
  if scale is None and offset is None and _declares_scaling(dataset, bands):
    gdal_scales = np.array([dataset.scales[b - 1] for b in bands], np.float64)
    gdal_offsets = np.array([dataset.offsets[b - 1] for b in bands], np.float64)
    if not np.all(np.isfinite(gdal_scales) & (gdal_scales != 0) & np.isfinite(gdal_offsets)):
      raise RasterError(f"{dataset.name}: bands {list(bands)} declare GDAL scales "
                        f"{gdal_scales.tolist()} and offsets {gdal_offsets.tolist()}, which "
                        "map no value to reflectance; pass --scale and --offset")
    # DN * gdal_scale + gdal_offset = reflectance  <=>  (DN - offset) / scale
    return Radiometry(1.0 / gdal_scales, -gdal_offsets / gdal_scales, "GDAL metadata")
  default = DEFAULT_SCALES.get(dataset.dtypes[0], 1.0)
  origin = "dtype" if scale is None and offset is None else "--scale/--offset"
  return Radiometry(np.full(n, default if scale is None else scale, np.float64),
                    np.full(n, 0.0 if offset is None else offset, np.float64), origin)


def _declares_scaling(dataset: rasterio.DatasetReader, bands: Sequence[int]) -> bool:
  """Whether any of ``bands`` has a GDAL scale other than 1 or an offset other than 0."""
  return any(dataset.scales[b - 1] != 1.0 or dataset.offsets[b - 1] != 0.0 for b in bands
             if 0 < b <= dataset.count)


class GeoTiffSource:
  """Bands ``bands`` (1-based red, green, blue) of an open raster as reflectance (``scale``
  and ``offset`` as ``radiometry`` takes them), over ``window`` (default: the whole raster),
  read on demand. ``lonlat`` fixes every tile's location; without it locations come from the
  raster's CRS."""

  def __init__(self, dataset: rasterio.DatasetReader, bands: Sequence[int] = (1, 2, 3),
               scale: float | None = None, window: Window | None = None,
               lonlat: tuple[float, float] | None = None, offset: float | None = None):
    self.dataset = dataset
    self.bands = list(bands)
    self.radiometry = radiometry(dataset, self.bands, scale, offset)
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
    """(h, w, 3) float32 reflectance of the stored values: neither clipped nor NaN-free."""
    data = self._read(self.dataset.read, rows, cols)
    return np.moveaxis(self.radiometry.reflectance(data), 0, -1)

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
