"""Landsat-8 OLI patches at 30 m, from two layouts (see the README, "Data preparation").

``rgbn_toa`` (default): a folder (searched recursively) of 4-band GeoTIFFs with bands
R, G, B, NIR (L8 B4, B3, B2, B5) as float top-of-atmosphere reflectance, UTM, 30 m:
the export NIR-GAN's own Landsat set used (GEE ``LANDSAT/LC08/C02/T1_TOA``). No
scaling; NaN or the file's nodata value marks invalid pixels.

``ssl4eo_toa`` / ``ssl4eo_sr``: SSL4EO-L (torchgeo), ``ssl4eo_l_oli_tirs_toa/<location>/
<scene id>/all_bands.tif`` (11 bands) or ``ssl4eo_l_oli_sr/.../all_bands.tif`` (7 bands), or
the same layout under ``ssl4eo_l_oli_tirs_toa_benchmark/`` / ``ssl4eo_l_oli_sr_benchmark/``
(SSL4EO-L's benchmark set: 25,000 scenes of the USA, one date each),
uint8 compressed from reflectance as ``u8 = (refl - 0) / max * 256`` with max 0.4
(TOA) or 0.3 (SR): reflectance = u8 / 256 * max. RGB = B4, B3, B2, NIR = B5 (1-based
4, 3, 2, 5 in both). Pixels with 0 in every band are no-data. The acquisition date
comes from the scene id (``LC08_045030_20190814``).

Neither layout has a split: patches are split by location cell, so the seasonal
scenes of one SSL4EO-L location share a split.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import raster, splits
from data_prep.patch_builder import PatchBuilder, PatchBuilderConfig, SourceItem
from data_prep.raster import BandLayout, SkipItem
from nirgan_jax import contract

LAYOUTS = {
    "rgbn_toa": BandLayout(red=1, green=2, blue=3, nir=4, count=4),
    "ssl4eo_toa": BandLayout(red=4, green=3, blue=2, nir=5, count=11),
    "ssl4eo_sr": BandLayout(red=4, green=3, blue=2, nir=5, count=7),
}
# The pre-training set's folder, then the benchmark set's: a build reads every one present.
SSL4EO_FOLDERS = {
    "ssl4eo_toa": ("ssl4eo_l_oli_tirs_toa", "ssl4eo_l_oli_tirs_toa_benchmark"),
    "ssl4eo_sr": ("ssl4eo_l_oli_sr", "ssl4eo_l_oli_sr_benchmark"),
}
SSL4EO_MAX_REFLECTANCE = {"ssl4eo_toa": 0.4, "ssl4eo_sr": 0.3}
_SCENE_DATE = re.compile(r"_(\d{8})$")


@dataclasses.dataclass(kw_only=True)
class Landsat8Config(PatchBuilderConfig):
  layout: str = "rgbn_toa"


def scene_date(scene_id: str) -> str:
  """ISO date of a Landsat scene id ``LC08_PPPRRR_YYYYMMDD`` ("" if it has none)."""
  match = _SCENE_DATE.search(scene_id)
  if not match:
    return ""
  try:
    return datetime.datetime.strptime(match.group(1), "%Y%m%d").date().isoformat()
  except ValueError:
    return ""


class Landsat8(PatchBuilder):
  """Landsat-8 OLI RGB + NIR patches (30 m)."""

  name = "landsat8"
  VERSION = tfds.core.Version(contract.VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  BUILDER_CONFIGS = [
      Landsat8Config(name="rgbn_toa", layout="rgbn_toa",
                     description="folder of 4-band RGBN float TOA GeoTIFFs (NIR-GAN's export)"),
      Landsat8Config(name="ssl4eo_toa", layout="ssl4eo_toa",
                     description="SSL4EO-L oli_tirs_toa, 11 bands uint8"),
      Landsat8Config(name="ssl4eo_sr", layout="ssl4eo_sr",
                     description="SSL4EO-L oli_sr, 7 bands uint8"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  rgbn_toa: put the 4-band (B4, B3, B2, B5) float TOA GeoTIFFs in manual_dir (any
  sub-folders), e.g. exported from GEE LANDSAT/LC08/C02/T1_TOA.
  ssl4eo_toa / ssl4eo_sr: download SSL4EO-L (Hugging Face torchgeo/ssl4eo_l, or its benchmark
  set torchgeo/ssl4eo-l-benchmark), extract so that manual_dir holds ssl4eo_l_oli_tirs_toa/ or
  ssl4eo_l_oli_sr/ (or ssl4eo_l_oli_tirs_toa_benchmark/, ssl4eo_l_oli_sr_benchmark/)."""
  DESCRIPTION = __doc__
  CITATION = """@inproceedings{stewart2023ssl4eo,
  title={SSL4EO-L: Datasets and Foundation Models for Landsat Imagery},
  author={Stewart, Adam J and Lehmann, Nils and Corley, Isaac A and Wang, Yi and Chang,
          Yi-Chia and Ait Ali Braham, Nassim Ali and Sehgal, Shradha and Robinson, Caleb and
          Banerjee, Arindam}, booktitle={NeurIPS Datasets and Benchmarks}, year={2023}}"""
  LICENSE = "Landsat data: public domain (USGS); SSL4EO-L: CC0-1.0"
  HOMEPAGE = "https://www.usgs.gov/landsat-missions/landsat-8"

  def _discover(self, manual_dir: Path) -> list[SourceItem]:
    layout = self.builder_config.layout
    if layout in SSL4EO_FOLDERS:
      roots = [manual_dir / name for name in SSL4EO_FOLDERS[layout]
               if (manual_dir / name).is_dir()]
      if not roots:
        raise FileNotFoundError(
            f"{manual_dir}: holds neither {' nor '.join(SSL4EO_FOLDERS[layout])}; expected "
            f"<folder>/<location>/<scene>/all_bands.tif under manual_dir")
      paths = [path for root in roots for path in sorted(root.glob("*/*/all_bands.tif"))]
    else:
      paths = sorted(p for p in manual_dir.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
    items = []
    for path in paths:
      try:
        with raster.open_raster(path) as src:
          lon, lat = raster.raster_centre_lonlat(src)
      except SkipItem as e:
        self.report.add_skipped(str(path), e.reason)
        continue
      items.append(SourceItem(str(path), splits.location_split(lon, lat),
                              {"root": manual_dir}))
    return items

  def _patches(self, item: SourceItem):
    path = Path(item.source)
    layout = self.builder_config.layout
    if layout in SSL4EO_FOLDERS:
      top = SSL4EO_MAX_REFLECTANCE[layout]
      yield from self._tile_raster(path, LAYOUTS[layout], lambda u8: u8 / 256.0 * top,
                                   sensor="landsat8", default_nodata=None,
                                   level="SR" if layout == "ssl4eo_sr" else "TOA",
                                   date=scene_date(path.parent.name),
                                   source_name=f"{path.parent.parent.name}/{path.parent.name}",
                                   invalid=lambda dn: np.all(dn == 0, axis=0))
    else:
      yield from self._tile_raster(path, LAYOUTS[layout], lambda toa: toa, sensor="landsat8",
                                   level="TOA",
                                   source_name=str(path.relative_to(item.extra["root"])))
