"""GeoTIFF reading shared by the converters: bands, validity, tiling, patch centres.

Band order, dtype, CRS and transform always come from the file. Anything that
makes an input unusable raises ``SkipItem`` with a reason for the build report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from rasterio.windows import Window

from nirgan_jax.infer.geotiff import unstored_pixels

GEOGRAPHIC = "EPSG:4326"


class SkipItem(Exception):
  """An input (file, archive member or patch) that cannot be converted, and why."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class BandLayout:
  """1-based band indices of R, G, B and NIR, and the band count the file must have (None: any
  count that holds the four)."""

  red: int
  green: int
  blue: int
  nir: int
  count: int | None = None

  @property
  def indexes(self) -> list[int]:
    return [self.red, self.green, self.blue, self.nir]


def open_raster(path: str | Path):
  """``rasterio.open`` that turns an unreadable or incomplete file into ``SkipItem``."""
  try:
    src = rasterio.open(path)
  except rasterio.errors.RasterioIOError as e:
    raise SkipItem(f"not a readable raster ({_first_line(e)})") from e
  problem = unstored_pixels(src)
  if problem:
    src.close()
    raise SkipItem(f"unreadable pixels ({problem})")
  return src


def check_band_count(src, layout: BandLayout) -> None:
  if layout.count is None:
    if max(layout.indexes) > src.count:
      raise SkipItem(f"bands {layout.indexes} asked for, the file has {src.count}")
  elif src.count != layout.count:
    raise SkipItem(f"has {src.count} bands, expected {layout.count}")


def read_bands(src, indexes: list[int], window: Window | None = None) -> np.ndarray:
  """(C, H, W) array of the given 1-based bands; a truncated or corrupt file raises SkipItem."""
  try:
    return src.read(indexes, window=window)
  except (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError) as e:
    raise SkipItem(f"unreadable pixels ({_first_line(e.__cause__ or e)})") from e


def invalid_mask(bands: np.ndarray, nodata: float | None,
                 extra_invalid: np.ndarray | None = None) -> np.ndarray:
  """(H, W) bool: pixels where any band of (C, H, W) ``bands`` is NaN or equals ``nodata``
  (or ``extra_invalid`` is set)."""
  invalid = np.zeros(bands.shape[1:], bool) if extra_invalid is None else extra_invalid.copy()
  if np.issubdtype(bands.dtype, np.floating):
    invalid |= np.isnan(bands).any(axis=0)
  if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
    invalid |= (bands == nodata).any(axis=0)
  return invalid


def tile_starts(length: int, patch: int, stride: int) -> list[int]:
  """Window offsets along ``[0, length)``, ``stride`` apart.

  What the strides leave over is covered by one more window flush with the edge, unless it
  is at most a quarter patch: then the windows are centred and the thin borders dropped,
  so that a 1,054 px scene gives one 1,024 px patch, not four that overlap by 97 %.
  """
  if length < patch:
    return []
  starts = list(range(0, length - patch + 1, stride))
  left_over = length - patch - starts[-1]
  if left_over > patch // 4:
    return starts + [length - patch]
  return [start + left_over // 2 for start in starts]


def tile_windows(height: int, width: int, patch: int, stride: int) -> Iterator[Window]:
  for row in tile_starts(height, patch, stride):
    for col in tile_starts(width, patch, stride):
      yield Window(col, row, patch, patch)


def has_georeference(src) -> bool:
  return src.crs is not None and not src.transform.is_identity


def window_centre_lonlat(src, window: Window) -> tuple[float, float]:
  """(lon, lat) in EPSG:4326 of the centre of ``window`` (x/y order, like always_xy)."""
  if not has_georeference(src):
    raise SkipItem("no georeferencing (CRS or geotransform missing)")
  x, y = src.window_transform(window) @ (window.width / 2.0, window.height / 2.0)
  if src.crs.to_string() == GEOGRAPHIC:
    return float(x), float(y)
  lons, lats = rasterio.warp.transform(src.crs, GEOGRAPHIC, [x], [y])
  lon, lat = float(lons[0]), float(lats[0])
  if not (np.isfinite(lon) and np.isfinite(lat)):
    raise SkipItem(f"patch centre does not project to EPSG:4326 from {src.crs}")
  return lon, lat


def raster_centre_lonlat(src) -> tuple[float, float]:
  return window_centre_lonlat(src, Window(0, 0, src.width, src.height))


def ground_sampling_distance(src) -> float:
  """Pixel size in metres (geographic CRSs converted at the raster's latitude)."""
  if not has_georeference(src):
    raise SkipItem("no georeferencing (CRS or geotransform missing)")
  size = abs(src.transform.a)
  if src.crs.is_geographic:
    _, lat = raster_centre_lonlat(src)
    return float(size * 111_320.0 * np.cos(np.deg2rad(lat)))
  return float(size * src.crs.linear_units_factor[1])


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
