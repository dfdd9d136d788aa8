"""A procedurally generated, physically plausible demo dataset in the data contract.

Each patch is a small landscape at one of four sensors' resolutions (Landsat-8
30 m, Sentinel-2 10 m, SPOT-6 6 m, NAIP 2.5 m): parcels from a jittered Voronoi
tessellation whose size is fixed in metres (so it scales with the pixel size),
each parcel a land cover with a reflectance spectrum for R, G, B and NIR, plus
lakes and rivers from low-frequency noise, within-parcel texture and sensor
noise. Vegetation is a linear mixture of a leaf and a soil spectrum with a
per-parcel cover fraction, so NIR relates to RGB as it does in real imagery
(high NDVI for dense crops and forest, near zero for soil and urban, negative for
water and snow). Generated deterministically from ``seed`` with no download.
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage, spatial, stats

from data_prep import splits
from data_prep.patch_builder import Patch, PatchBuilder, PatchBuilderConfig, SourceItem
from nirgan_jax import contract

# Mean surface reflectance (R, G, B, NIR) of pure materials, typical values of
# spectral libraries at the centres of the broad bands.
LEAF = np.array([0.035, 0.075, 0.030, 0.48])
SOIL = np.array([0.220, 0.170, 0.120, 0.28])
MATERIALS = {
    "forest": np.array([0.030, 0.050, 0.025, 0.30]),
    "water": np.array([0.025, 0.045, 0.060, 0.012]),
    "urban": np.array([0.150, 0.140, 0.130, 0.20]),
    "snow": np.array([0.820, 0.840, 0.860, 0.70]),
    "rock": np.array([0.180, 0.175, 0.160, 0.22]),
}
# Land-cover mix of each landscape type: (cover, probability); "crop" parcels mix
# LEAF and SOIL with a random vegetation fraction.
LANDSCAPES = {
    "agriculture": [("crop", 0.7), ("forest", 0.15), ("urban", 0.05), ("bare", 0.10)],
    "forest": [("forest", 0.75), ("crop", 0.15), ("bare", 0.10)],
    "urban": [("urban", 0.6), ("crop", 0.25), ("forest", 0.10), ("bare", 0.05)],
    "arid": [("bare", 0.65), ("rock", 0.25), ("crop", 0.10)],
    "snow": [("snow", 0.6), ("rock", 0.3), ("forest", 0.1)],
}
LATITUDES = {"agriculture": (-45, 60), "forest": (-40, 65), "urban": (-40, 60),
             "arid": (-35, 45), "snow": (55, 78)}
SENSORS = (("landsat8", 30.0), ("sentinel2", 10.0), ("spot6", 6.0), ("naip", 2.5))
PARCEL_SIZE_M = (150.0, 700.0)
WATER_SHARE = {"agriculture": 0.08, "forest": 0.12, "urban": 0.06, "arid": 0.02, "snow": 0.1}


@dataclasses.dataclass(kw_only=True)
class DemoConfig(PatchBuilderConfig):
  num_examples: int = 400
  seed: int = 0


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Zero-mean, unit-std noise varying over about ``size / cells`` pixels."""
  cells = max(2, cells)
  coarse = rng.standard_normal((cells + 1, cells + 1))
  field = ndimage.zoom(coarse, size / cells, order=1)[:size, :size]
  return (field - field.mean()) / (field.std() + 1e-9)


def parcels(rng: np.random.Generator, size: int, parcel_px: float) -> tuple[np.ndarray, int]:
  """Label map of a jittered-grid Voronoi tessellation with parcels ~``parcel_px`` wide."""
  n = max(1, int(np.ceil(size / parcel_px)))
  grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
          + rng.uniform(0.1, 0.9, (n * n, 2))) * (size / n)
  yy, xx = np.mgrid[0:size, 0:size]
  _, labels = spatial.cKDTree(grid).query(np.stack([yy.ravel(), xx.ravel()], -1))
  return labels.reshape(size, size), n * n


def landscape(rng: np.random.Generator, kind: str, size: int, gsd: float) -> np.ndarray:
  """(size, size, 4) float reflectance R, G, B, NIR of one landscape."""
  parcel_px = rng.uniform(*PARCEL_SIZE_M) / gsd
  labels, count = parcels(rng, size, parcel_px)
  covers, probs = zip(*LANDSCAPES[kind], strict=True)
  choice = rng.choice(len(covers), size=count, p=np.array(probs) / sum(probs))

  spectra = np.empty((count, 4))
  for i, c in enumerate(choice):
    cover = covers[c]
    if cover == "crop":
      fraction = rng.beta(4, 1.5)  # mostly vigorous, some sparse
      spectra[i] = fraction * LEAF + (1 - fraction) * SOIL
    elif cover == "bare":
      spectra[i] = SOIL * rng.uniform(0.7, 1.3)
    else:
      spectra[i] = MATERIALS[cover] * rng.uniform(0.85, 1.15)
  image = spectra[labels]

  # Within-parcel texture: brightness varies together, NIR a little independently.
  texture_scale = max(2, int(size / max(parcel_px / 4, 4)))
  image *= 1 + 0.08 * smooth_noise(rng, size, texture_scale)[..., None]
  image[..., 3] *= 1 + 0.05 * smooth_noise(rng, size, texture_scale)

  # Water: lakes from low-frequency noise, plus an occasional river.
  water = smooth_noise(rng, size, max(2, int(size * gsd / 2000))) > _quantile_threshold(
      WATER_SHARE[kind])
  if rng.random() < 0.4:
    yy, xx = np.mgrid[0:size, 0:size]
    centre = size * rng.uniform(0.2, 0.8) + size * 0.15 * np.sin(
        yy / size * rng.uniform(2, 6) + rng.uniform(0, 6.3))
    water |= np.abs(xx - centre) < max(1.0, rng.uniform(20, 80) / gsd)
  depth = 1 + 0.3 * smooth_noise(rng, size, 4)
  image[water] = MATERIALS["water"] * np.clip(depth[water], 0.5, 1.5)[:, None]
  return image


def _quantile_threshold(share: float) -> float:
  """Threshold on standard-normal noise above which ``share`` of pixels lie."""
  return float(stats.norm.ppf(1 - share))


def demo_metadata(seed: int, index: int) -> tuple[str, str, float, float, float, str]:
  """Landscape kind, sensor, gsd, lon, lat and date of patch ``index`` (own random stream,
  so the split can be decided without generating the pixels)."""
  rng = np.random.default_rng([seed, index, 0])
  kind = list(LANDSCAPES)[index % len(LANDSCAPES)]
  sensor, gsd = SENSORS[(index // len(LANDSCAPES)) % len(SENSORS)]
  lon = float(rng.uniform(-180, 180))
  lat = float(rng.uniform(*LATITUDES[kind]))
  date = datetime.date(2018, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 7 * 365)))
  return kind, sensor, gsd, lon, lat, date.isoformat()


def demo_patch(seed: int, index: int, size: int) -> Patch:
  kind, sensor, gsd, lon, lat, date = demo_metadata(seed, index)
  rng = np.random.default_rng([seed, index, 1])
  image = landscape(rng, kind, size, gsd)
  # Sensor noise and a small per-scene gain (calibration, illumination).
  image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.004, image.shape)
  image = np.clip(image, 0.0, 1.0).astype(np.float32)
  return Patch(rgb=image[..., :3], nir=image[..., 3:], lon=lon, lat=lat, gsd_m=gsd,
               sensor=sensor, source_id=f"demo_{index:05d}_{kind}", date=date)


class Demo(PatchBuilder):
  """Synthetic multi-sensor RGB+NIR landscapes (no download)."""

  name = "nirgan_demo"
  VERSION = tfds.core.Version(contract.VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  BUILDER_CONFIGS = [DemoConfig(name="default", description="400 patches of 256 px"),
                     DemoConfig(name="small", num_examples=40, patch_size=64,
                                description="40 patches of 64 px (tests)")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = None
  DESCRIPTION = __doc__
  LICENSE = "MIT"

  def _discover(self, manual_dir) -> list[SourceItem]:
    cfg = self.builder_config
    items = []
    for index in range(cfg.num_examples):
      *_, lon, lat, _ = demo_metadata(cfg.seed, index)
      items.append(SourceItem(f"demo_{index:05d}", splits.location_split(lon, lat),
                              {"index": index}))
    return items

  def _patches(self, item: SourceItem):
    cfg = self.builder_config
    yield demo_patch(cfg.seed, item.extra["index"], cfg.patch_size)
