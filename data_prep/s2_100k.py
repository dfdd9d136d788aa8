"""SatCLIP's S2-100K: 100,000 Sentinel-2 L2A patches (256 px, 12 bands, UTM, 10 m).

Layout of ``manual_dir`` (as published)::

    index.csv              columns fn, lon, lat (read by name)
    images/patch_<N>.tif   12 bands uint16 B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12

RGB = B04, B03, B02 and NIR = B08. Reflectance = (DN - offset) / 10000 with
``offset`` 0 (config ``default``, what SatCLIP and NIR-GAN do) or 1000 (config
``boa_offset``, for scenes of processing baseline >= 04.00, from 2022-01-25 on,
which store reflectance with a +1000 DN offset). S2-100K records no acquisition
date per patch, so the offset is a choice for the whole build. DN 0 is
Sentinel-2's no-data value. The archive has no split: patches are split by a hash
of their location cell (``data_prep.splits``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from data_prep import raster, splits
from data_prep.patch_builder import PatchBuilder, PatchBuilderConfig, SourceItem, read_csv
from data_prep.raster import SkipItem
from nirgan_jax import contract

L2A_BANDS = raster.BandLayout(red=4, green=3, blue=2, nir=8, count=12)
S2_NODATA = 0


@dataclasses.dataclass(kw_only=True)
class S2100kConfig(PatchBuilderConfig):
  boa_offset: int = 0  # DN subtracted before / 10000


class S2100k(PatchBuilder):
  """S2-100K (SatCLIP) as NIR-GAN patches."""

  name = "s2_100k"
  VERSION = tfds.core.Version(contract.VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  BUILDER_CONFIGS = [
      S2100kConfig(name="default", description="reflectance = DN / 10000 (as SatCLIP)"),
      S2100kConfig(name="boa_offset", boa_offset=1000,
                   description="reflectance = (DN - 1000) / 10000 (baseline >= 04.00)"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download S2-100K (SatCLIP; Hugging Face dataset torchgeo/s2-100k or the SatCLIP
  README's link), extract every shard so that manual_dir holds index.csv and
  images/patch_<N>.tif."""
  DESCRIPTION = ("S2-100K: 100,000 Sentinel-2 L2A patches sampled uniformly over the "
                 "landmass (Klemmer et al., SatCLIP). RGB = B04, B03, B02; NIR = B08; 10 m.")
  CITATION = """@article{klemmer2023satclip,
  title={SatCLIP: Global, General-Purpose Location Embeddings with Satellite Imagery},
  author={Klemmer, Konstantin and Rolf, Esther and Robinson, Caleb and Mackey, Lester and
          Ru{\\ss}wurm, Marc}, journal={arXiv preprint arXiv:2311.17179}, year={2023}}"""
  LICENSE = "MIT (dataset); Copernicus Sentinel data, free and open licence"
  HOMEPAGE = "https://github.com/microsoft/satclip"

  def _discover(self, manual_dir: Path) -> list[SourceItem]:
    index = manual_dir / "index.csv"
    if not index.is_file():
      raise FileNotFoundError(f"{index}: missing; manual_dir must hold index.csv and images/. "
                              f"{self.download_instructions()}")
    items = []
    _, rows = read_csv(index, ("fn", "lon", "lat"))
    for line, row in enumerate(rows, start=2):
      path = manual_dir / "images" / Path(row["fn"] or "").name
      try:
        lon, lat = float(row["lon"]), float(row["lat"])
        split = splits.location_split(lon, lat)
      except (TypeError, ValueError):  # a short row has None in its missing columns
        self.report.add_skipped(f"{index}:{line}", f"bad coordinates {row['lon']!r}, "
                                f"{row['lat']!r}")
        continue
      items.append(SourceItem(str(path), split, {"lon": lon, "lat": lat}))
    return items

  def _patches(self, item: SourceItem):
    path = Path(item.source)
    if not path.is_file():
      raise SkipItem("listed in index.csv but missing")
    offset = self.builder_config.boa_offset
    yield from self._tile_raster(path, L2A_BANDS,
                                 lambda dn: (dn - offset) / contract.REFLECTANCE_SCALE,
                                 sensor="sentinel2", default_nodata=S2_NODATA, level="L2A")
