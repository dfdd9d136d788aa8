"""A folder of RGBN GeoTIFFs described by an index: the way to train or fine-tune on a
user's own imagery (Sentinel-2 extracts, NAIP, aerial, PlanetScope) and the builder of the
real Sentinel-2 places in ``tests/data/s2_more``.

Layout of ``manual_dir``::

    index.csv        one row per image (columns read by name, any order, others ignored)
    images/<fn>      the GeoTIFFs (``fn`` may also be a path relative to manual_dir)

Columns of ``index.csv``:

    fn                   the file
    red,green,blue,nir   1-based band numbers in that file
    scale,offset         reflectance = (DN - offset) / scale
    lon,lat              optional: the image centre (EPSG:4326); else from the georeference
    gsd_m                optional: pixel size in metres; else from the georeference
    date                 optional: acquisition date (YYYYMMDD or ISO)
    level                optional: processing level (e.g. L1C top of atmosphere, L2A surface)
    sensor               optional: one of the data contract's sensors (default sentinel2)
    nodata               optional: the DN that marks no data (default: the file's, else 0)

Several rows may name one file with different bands (two dates stacked in one GeoTIFF):
each row is an image of its own. A pixel is no-data where any of its four bands is NaN or
equals the nodata value, as in every builder. Images are tiled into ``patch_size`` patches
(default 64, the smallest image in ``tests/data/s2_more``); an image smaller than a patch is
skipped and counted in the build report, never padded. Rows are split by a hash of their
location cell (``data_prep.splits``), so the dates and levels of one place share a split.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import raster, splits
from data_prep.patch_builder import PatchBuilder, PatchBuilderConfig, SourceItem, read_csv
from data_prep.raster import SkipItem
from nirgan_jax import contract, errors

INDEX = "index.csv"
IMAGES = "images"
BAND_COLUMNS = ("red", "green", "blue", "nir")
REQUIRED_COLUMNS = ("fn", *BAND_COLUMNS, "scale", "offset")
DEFAULT_NODATA = 0
DEFAULT_SENSOR = "sentinel2"


@dataclasses.dataclass(frozen=True)
class ImageRow:
  """One row of ``index.csv``: an image (a file and four of its bands) and what is known of it."""

  path: Path
  bands: tuple[int, int, int, int]  # 1-based R, G, B, NIR
  scale: float
  offset: float
  lonlat: tuple[float, float] | None
  gsd_m: float | None
  date: str
  level: str
  sensor: str
  nodata: float | None

  @property
  def name(self) -> str:
    """The image's name in source ids: the file, and its bands when they are not 1-4."""
    if self.bands == (1, 2, 3, 4):
      return self.path.name
    return f"{self.path.name}[{','.join(map(str, self.bands))}]"


def iso_date(text: str) -> str:
  """``YYYYMMDD`` or ISO ``YYYY-MM-DD`` as ISO; "" stays ""."""
  text = text.strip()
  if not text:
    return ""
  for pattern in ("%Y%m%d", "%Y-%m-%d"):
    try:
      return datetime.datetime.strptime(text, pattern).date().isoformat()
    except ValueError:
      pass
  raise ValueError(f"date {text!r} is neither YYYYMMDD nor YYYY-MM-DD")


def parse_row(manual_dir: Path, row: dict[str, str | None]) -> ImageRow:
  """One index row as an ``ImageRow``; a ValueError says what is wrong with it."""
  get = lambda key: (row.get(key) or "").strip()
  fn = get("fn")
  if not fn:
    raise ValueError("no file name in column fn")
  path = manual_dir / fn
  if not path.exists() and (manual_dir / IMAGES / fn).exists():
    path = manual_dir / IMAGES / fn
  try:
    bands = tuple(int(get(key)) for key in BAND_COLUMNS)
  except ValueError as e:
    raise ValueError(f"band numbers {[get(k) for k in BAND_COLUMNS]} are not integers") from e
  if min(bands) < 1:
    raise ValueError(f"band numbers {list(bands)} must be 1 or more (1-based)")
  scale, offset = float(get("scale")), float(get("offset"))
  if not np.isfinite(scale) or scale <= 0 or not np.isfinite(offset):
    raise ValueError(f"scale {get('scale')!r} must be positive and offset {get('offset')!r} "
                     "finite")
  lonlat = None
  if get("lon") or get("lat"):
    lonlat = (float(get("lon")), float(get("lat")))
    if not (-180 <= lonlat[0] <= 180 and -90 <= lonlat[1] <= 90):
      raise ValueError(f"lon, lat {lonlat} out of range")
  gsd_m = float(get("gsd_m")) if get("gsd_m") else None
  if gsd_m is not None and not gsd_m > 0:
    raise ValueError(f"gsd_m {gsd_m} must be positive")
  sensor = get("sensor") or DEFAULT_SENSOR
  if sensor not in contract.SENSORS:
    raise ValueError(f"sensor {sensor!r} is not one of {contract.SENSORS}")
  nodata = float(get("nodata")) if get("nodata") else None
  return ImageRow(path, bands, scale, offset, lonlat, gsd_m, iso_date(get("date")),
                  get("level"), sensor, nodata)


@dataclasses.dataclass(kw_only=True)
class RgbnGeotiffConfig(PatchBuilderConfig):
  patch_size: int = 64


class RgbnGeotiff(PatchBuilder):
  """RGBN GeoTIFFs listed in an index with their band numbers, scale and offset."""

  name = "rgbn_geotiff"
  VERSION = tfds.core.Version(contract.VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  BUILDER_CONFIGS = [RgbnGeotiffConfig(name="default",
                                       description="64 px patches of the indexed images")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Put the GeoTIFFs in manual_dir/{IMAGES}/ and describe them in manual_dir/{INDEX} with the
  columns {','.join(REQUIRED_COLUMNS)} (reflectance = (DN - offset) / scale; optional
  lon,lat,gsd_m,date,level,sensor,nodata); tests/data/s2_more is an example."""
  DESCRIPTION = ("RGBN GeoTIFFs described by an index of band numbers, scale and offset "
                 "(a user's own imagery, or the real Sentinel-2 places of tests/data/s2_more).")
  LICENSE = "as the indexed images' own licences"

  def _discover(self, manual_dir: Path) -> list[SourceItem]:
    index = manual_dir / INDEX
    if not index.is_file():
      raise FileNotFoundError(f"{index}: missing; manual_dir must hold {INDEX} and "
                              f"{IMAGES}/. {self.download_instructions()}")
    _, rows = read_csv(index, REQUIRED_COLUMNS)
    items = []
    for line, row in enumerate(rows, start=2):
      try:
        image = parse_row(manual_dir, row)
      except (TypeError, ValueError) as e:
        self.report.add_skipped(f"{index}:{line}", errors.one_line(e))
        continue
      # Rows without coordinates are split by their georeference when read; the split is
      # needed now, so read the centre from the file (a missing file is skipped later).
      lonlat = image.lonlat or _centre_or_none(image.path)
      split = splits.location_split(*lonlat) if lonlat else "train"
      items.append(SourceItem(str(image.path), split, {"image": image, "line": line}))
    return items

  def _patches(self, item: SourceItem):
    image: ImageRow = item.extra["image"]
    if not image.path.is_file():
      raise SkipItem(f"listed in {INDEX} (line {item.extra['line']}) but missing")
    yield from self._tile_raster(
        image.path, raster.BandLayout(*image.bands), lambda dn: (dn - image.offset) / image.scale,
        sensor=image.sensor, nodata=image.nodata, default_nodata=DEFAULT_NODATA, date=image.date,
        level=image.level, gsd_m=image.gsd_m, source_name=image.name)


def _centre_or_none(path: Path) -> tuple[float, float] | None:
  try:
    with raster.open_raster(path) as src:
      return raster.raster_centre_lonlat(src)
  except SkipItem:
    return None
