"""WorldStrat: SPOT-6/7 high-resolution and Sentinel-2 L2A low-resolution imagery of
~4,000 areas of interest (AOIs), as the README's "Data preparation" describes.

Layout of ``manual_dir`` (the Zenodo archive, extracted)::

    metadata.csv                          one row per (AOI, revisit n): AOI name in the first
                                          column (unnamed, or "tile"), n, lon, lat,
                                          lowres_date, highres_date, ...
    stratified_train_val_test_split.csv   tile -> split (train / val / test), optional
    hr_dataset/12bit/<AOI>/<AOI>_ps.tiff  pansharpened SPOT RGBN, 1.5 m, uint16 12-bit DN,
                                          beside _pan.tiff, _rgbn.tiff, _rgb.png (unused);
                                          hr_dataset/8bit/ (8-bit conversions) is ignored,
                                          and hr_dataset/<AOI>/ (no 12bit/) is read too
    lr_dataset/<AOI>/L2A/<AOI>-<n>-L2A_data.tiff   12 bands B01..B12 (no B10), 10 m, EPSG:4326,
                                          beside -CLM, -CLP, -SCL, -dataMask (unused);
                                          lr_dataset/<AOI>/L1C/ is not read

Config ``hr`` converts the ``_ps.tiff`` images. They carry no geotransform, so the
AOI's lon/lat from ``metadata.csv`` places them: each patch centre is offset from
the AOI point by its distance from the image centre, assuming a north-up image of
1.5 m pixels centred on the AOI (exact for the centre patch, approximate elsewhere).
Values are stored as DN, i.e. reflectance = DN / 10000, as NIR-GAN and WorldStrat
treat them. Config ``lr`` converts every L2A revisit: RGB = B04, B03, B02 and NIR =
B08; float files hold reflectance, integer files DN / 10000. Splits come from the
archive's stratified split file ("val" -> validation), else from the location.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import tensorflow_datasets as tfds

from data_prep import raster, splits
from data_prep.patch_builder import PatchBuilder, PatchBuilderConfig, SourceItem, read_csv
from data_prep.raster import BandLayout
from nirgan_jax import contract

HR_BANDS = BandLayout(red=1, green=2, blue=3, nir=4, count=4)
L2A_BANDS = BandLayout(red=4, green=3, blue=2, nir=8, count=12)
HR_GSD_M = 1.5
SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
_METRES_PER_DEGREE_LAT = 110_574.0
_METRES_PER_DEGREE_LON_EQUATOR = 111_320.0


@dataclasses.dataclass(kw_only=True)
class WorldStratConfig(PatchBuilderConfig):
  resolution: str = "hr"  # hr | lr


@dataclasses.dataclass(frozen=True)
class Revisit:
  lon: float
  lat: float
  lowres_date: str
  highres_date: str


def read_metadata(path: Path) -> dict[str, dict[int, Revisit]]:
  """AOI -> revisit n -> coordinates and dates."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing; WorldStrat's metadata.csv gives every AOI's "
                            f"coordinates")
  out: dict[str, dict[int, Revisit]] = {}
  fields, rows = read_csv(path, ("lon", "lat"))
  aoi_column = "tile" if "tile" in fields else fields[0]
  for row in rows:
    try:
      lon, lat = float(row["lon"]), float(row["lat"])
      n = int(float(row.get("n") or 1))
    except (TypeError, ValueError):  # a short row has None in its missing columns
      continue  # reported when the AOI's files are converted
    if math.isfinite(lon) and math.isfinite(lat):
      out.setdefault(row[aoi_column], {})[n] = Revisit(
          lon, lat, (row.get("lowres_date") or "")[:10], (row.get("highres_date") or "")[:10])
  return out


def read_split_file(path: Path) -> dict[str, str]:
  if not path.is_file():
    return {}
  return {row["tile"]: SPLIT_NAMES.get((row.get("split") or "").strip().lower(), "")
          for row in read_csv(path)[1] if row.get("tile")}


def offset_lonlat(lon: float, lat: float, east_m: float, south_m: float) -> tuple[float, float]:
  """The point ``east_m`` east and ``south_m`` south of (lon, lat) (local flat approximation)."""
  new_lat = lat - south_m / _METRES_PER_DEGREE_LAT
  new_lon = lon + east_m / (_METRES_PER_DEGREE_LON_EQUATOR * math.cos(math.radians(lat)))
  return new_lon, new_lat


class WorldStrat(PatchBuilder):
  """WorldStrat SPOT-6/7 (hr) or Sentinel-2 L2A (lr) RGB + NIR patches."""

  name = "worldstrat"
  VERSION = tfds.core.Version(contract.VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  # An AOI is about 1,054 px of SPOT (158 px of Sentinel-2): one patch per scene, as large as
  # it allows, so that SPOT can also be shown at up to 6 m (1,024 native px for 256 px).
  BUILDER_CONFIGS = [
      WorldStratConfig(name="hr", resolution="hr", patch_size=1024,
                       description="SPOT-6/7 pansharpened RGBN, 1.5 m (_ps.tiff), 1024 px"),
      WorldStratConfig(name="lr", resolution="lr", patch_size=128,
                       description="Sentinel-2 L2A revisits, 10 m (B04, B03, B02, B08), 128 px"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download WorldStrat (Zenodo record 6810792, or its re-upload 15382551) and extract it
  so that manual_dir holds metadata.csv, stratified_train_val_test_split.csv (optional),
  hr_dataset/ and lr_dataset/."""
  DESCRIPTION = __doc__
  CITATION = """@inproceedings{cornebise2022worldstrat,
  title={Open High-Resolution Satellite Imagery: The WorldStrat Dataset -- With Application
         to Super-Resolution}, author={Cornebise, Julien and Or{\\v{s}}oli{\\'c}, Ivan and
         Kalaitzis, Freddie}, booktitle={NeurIPS Datasets and Benchmarks Track}, year={2022}}"""
  LICENSE = "CC BY-NC 4.0 (SPOT imagery: Airbus DS, research use); Sentinel-2: Copernicus"
  HOMEPAGE = "https://worldstrat.github.io"

  def _discover(self, manual_dir: Path) -> list[SourceItem]:
    metadata = read_metadata(manual_dir / "metadata.csv")
    split_of = read_split_file(manual_dir / "stratified_train_val_test_split.csv")
    if self.builder_config.resolution == "hr":
      hr_root = manual_dir / "hr_dataset"
      paths = sorted(hr_root.glob("12bit/*/*_ps.tif*")) + sorted(hr_root.glob("*/*_ps.tif*"))
    else:
      paths = sorted((manual_dir / "lr_dataset").glob("*/L2A/*-L2A_data.tif*"))
    items = []
    for path in paths:
      aoi = path.parent.name if self.builder_config.resolution == "hr" else path.parent.parent.name
      revisits = metadata.get(aoi)
      if not revisits:
        self.report.add_skipped(str(path), f"AOI {aoi!r} has no coordinates in metadata.csv")
        continue
      revisit_n = 1
      if self.builder_config.resolution == "lr":
        try:
          revisit_n = int(path.name.split("-")[-2])
        except ValueError:
          self.report.add_skipped(str(path), "no revisit number in the file name")
          continue
      revisit = revisits.get(revisit_n) or revisits[min(revisits)]
      split = split_of.get(aoi) or splits.location_split(revisit.lon, revisit.lat)
      items.append(SourceItem(str(path), split, {"aoi": aoi, "revisit": revisit}))
    return items

  def _patches(self, item: SourceItem):
    path = Path(item.source)
    revisit: Revisit = item.extra["revisit"]
    name = f"{item.extra['aoi']}/{path.name}"
    if self.builder_config.resolution == "lr":
      with raster.open_raster(path) as src:
        is_float = src.dtypes[0].startswith("float")
      scale = (lambda x: x) if is_float else (lambda dn: dn / contract.REFLECTANCE_SCALE)
      yield from self._tile_raster(path, L2A_BANDS, scale, sensor="sentinel2", level="L2A",
                                   date=revisit.lowres_date, source_name=name)
      return
    with raster.open_raster(path) as src:
      height, width = src.height, src.width

    def locate(window):
      east = (window.col_off + window.width / 2 - width / 2) * HR_GSD_M
      south = (window.row_off + window.height / 2 - height / 2) * HR_GSD_M
      return offset_lonlat(revisit.lon, revisit.lat, east, south)

    yield from self._tile_raster(path, HR_BANDS, lambda dn: dn / contract.REFLECTANCE_SCALE,
                                 sensor="spot6", date=revisit.highres_date, source_name=name,
                                 locate=locate, gsd_m=HR_GSD_M)
