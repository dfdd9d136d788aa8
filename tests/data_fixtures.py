"""Fixture writers: small copies of the raw archives in their exact on-disk layouts
(DATA_FORMATS.md), each with known pixel values, known centres and broken files."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin


@dataclasses.dataclass
class S2Fixture:
  root: Path
  good: dict[str, np.ndarray]  # file name -> (12, H, W) uint16 DN
  origins: dict[str, tuple[float, float]]  # file name -> UTM (x, y) of the top-left corner
  crs: str
  broken: dict[str, str]  # file name -> what is wrong with it


def s2_dn(seed: int, size: int) -> np.ndarray:
  """12 bands of distinct, recognisable DN: band b has values in [1000 b, 1000 b + 999]."""
  rng = np.random.default_rng(seed)
  bands = [1000 * b + rng.integers(0, 1000, (size, size)) for b in range(1, 13)]
  return np.stack(bands).astype(np.uint16)


def write_geotiff(path: Path, data: np.ndarray, crs: str | None, transform,
                  nodata=None, **profile) -> None:
  count, height, width = data.shape
  with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                     dtype=data.dtype, crs=crs, transform=transform, nodata=nodata,
                     **profile) as dst:
    dst.write(data)


def utm_to_lonlat(crs: str, x: float, y: float) -> tuple[float, float]:
  """Reference projection (pyproj, always_xy), independent of the converters' rasterio code."""
  lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
  return float(lon), float(lat)


def write_s2_100k(root: Path, size: int = 32) -> S2Fixture:
  """S2-100K layout: index.csv (fn, lon, lat) + images/patch_<N>.tif, 12-band uint16, UTM 10 m,
  tiled LZW; plus a truncated file, a 4-band file, a half-nodata file and a missing file."""
  images = root / "images"
  images.mkdir(parents=True)
  crs = "EPSG:32633"
  good, origins, broken, rows = {}, {}, {}, []
  profile = dict(tiled=True, blockxsize=16, blockysize=16, compress="lzw")

  def add(name, data, origin, **extra):
    write_geotiff(images / name, data, crs, from_origin(*origin, 10.0, 10.0), **profile, **extra)
    centre = (origin[0] + size * 5.0, origin[1] - size * 5.0)
    rows.append((name, *utm_to_lonlat(crs, *centre)))

  for i in range(2):
    name = f"patch_{i}.tif"
    origins[name] = (400_000.0 + 20_000 * i, 5_800_000.0 - 30_000 * i)
    good[name] = s2_dn(i, size)
    add(name, good[name], origins[name])

  truncated = "patch_2.tif"
  add(truncated, s2_dn(2, size), (450_000.0, 5_750_000.0))
  data = (images / truncated).read_bytes()
  (images / truncated).write_bytes(data[: len(data) // 2])
  broken[truncated] = "truncated"

  four_bands = "patch_3.tif"
  add(four_bands, s2_dn(3, size)[:4], (460_000.0, 5_740_000.0))
  broken[four_bands] = "has 4 bands"

  nodata = "patch_4.tif"
  holes = s2_dn(4, size)
  holes[:, : size // 2, :] = 0  # Sentinel-2 no-data value
  add(nodata, holes, (470_000.0, 5_730_000.0))
  broken[nodata] = "nodata"

  rows.append(("patch_5.tif", 15.0, 52.0))  # listed, never written
  broken["patch_5.tif"] = "missing"

  with (root / "index.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["fn", "lon", "lat"])
    writer.writerows(rows)
  return S2Fixture(root, good, origins, crs, broken)


@dataclasses.dataclass
class LandsatFixture:
  root: Path
  good: dict[str, np.ndarray]  # source name (relative) -> (C, H, W) array as written
  centres: dict[str, tuple[float, float]]  # source name -> (lon, lat) of the raster centre
  broken: dict[str, str]


def write_landsat_rgbn(root: Path, size: int = 32) -> LandsatFixture:
  """NIR-GAN's Landsat export: any *.tif (sub-folders too), 4-band RGBN float32 TOA, UTM 30 m;
  plus a 3-band file, a file that is not a raster and a file that is half NaN."""
  crs = "EPSG:32618"
  rng = np.random.default_rng(7)
  good, centres, broken = {}, {}, {}
  (root / "batch_2").mkdir(parents=True)

  def write(name, data, origin):
    write_geotiff(root / name, data, crs, from_origin(*origin, 30.0, 30.0))
    centres[name] = utm_to_lonlat(crs, origin[0] + size * 15.0, origin[1] - size * 15.0)

  for i, name in enumerate(["l8_0_17.tif", "batch_2/l8_1_4.tif"]):
    data = np.stack([rng.uniform(0.02, 0.12, (size, size)), rng.uniform(0.03, 0.13, (size, size)),
                     rng.uniform(0.01, 0.10, (size, size)), rng.uniform(0.15, 0.45, (size, size))])
    good[name] = data.astype(np.float32)
    write(name, good[name], (500_000.0 + 40_000 * i, 4_500_000.0))
  write("three_bands.tif", good["l8_0_17.tif"][:3], (560_000.0, 4_400_000.0))
  broken["three_bands.tif"] = "has 3 bands"
  (root / "not_a_raster.tif").write_bytes(b"II*\x00garbage" * 10)
  broken["not_a_raster.tif"] = "not a readable raster"
  half_nan = good["l8_0_17.tif"].copy()
  half_nan[:, :, : size // 2] = np.nan
  write("half_nan.tif", half_nan, (580_000.0, 4_300_000.0))
  broken["half_nan.tif"] = "NaN"
  return LandsatFixture(root, good, centres, broken)


def write_ssl4eo_l(root: Path, kind: str = "toa", size: int = 32) -> LandsatFixture:
  """SSL4EO-L: ssl4eo_l_oli_tirs_toa/<7-digit location>/<scene id>/all_bands.tif, 11 (TOA) or 7
  (SR) bands uint8, UTM 30 m; two seasons at one location; an all-zero scene; a scene with the
  wrong band count."""
  folder, count = ("ssl4eo_l_oli_tirs_toa", 11) if kind == "toa" else ("ssl4eo_l_oli_sr", 7)
  crs = "EPSG:32611"
  rng = np.random.default_rng(11)
  good, centres, broken = {}, {}, {}

  def write(location, scene, data, origin):
    path = root / folder / location / scene / "all_bands.tif"
    path.parent.mkdir(parents=True)
    write_geotiff(path, data, crs, from_origin(*origin, 30.0, 30.0), compress="lzw", predictor=2)
    name = f"{location}/{scene}"
    centres[name] = utm_to_lonlat(crs, origin[0] + size * 15.0, origin[1] - size * 15.0)
    return name

  scenes = [("0000000", "LC08_045030_20190814", (400_000.0, 4_000_000.0)),
            ("0000001", "LC08_046031_20220301", (300_000.0, 3_900_000.0)),
            ("0000001", "LC08_046031_20220705", (300_000.0, 3_900_000.0))]
  for location, scene, origin in scenes:
    data = rng.integers(1, 256, (count, size, size)).astype(np.uint8)
    good[write(location, scene, data, origin)] = data
  broken[write("0000002", "LC08_047032_20220101", np.zeros((count, size, size), np.uint8),
               (200_000.0, 3_800_000.0))] = "nodata"
  broken[write("0000003", "LC08_048033_20220202", np.ones((count - 2, size, size), np.uint8),
               (250_000.0, 3_700_000.0))] = f"has {count - 2} bands"
  return LandsatFixture(root, good, centres, broken)


@dataclasses.dataclass
class WorldStratFixture:
  root: Path
  hr: dict[str, np.ndarray]  # AOI -> (4, H, W) uint16 _ps DN
  lr: dict[str, np.ndarray]  # "<AOI>/<file>" -> (12, h, w) float32 L2A reflectance
  lr_transforms: dict[str, object]
  aoi_lonlat: dict[str, tuple[float, float]]
  broken: dict[str, str]


def write_worldstrat(root: Path, hr_size: int = 64, lr_size: int = 9) -> WorldStratFixture:
  """WorldStrat: metadata.csv (unnamed AOI column, a row per revisit), split csv, hr_dataset/<AOI>/
  <AOI>_ps.tiff (4-band uint16 12-bit, identity transform) with _pan/_rgbn siblings,
  lr_dataset/<AOI>/L2A/<AOI>-<n>-L2A_data.tiff (12-band float32, EPSG:4326); broken: an AOI
  missing from metadata.csv, a truncated L2A file, an L1C-like 13-band file in L2A/."""
  rng = np.random.default_rng(3)
  aois = {"Landcover-773616": (92.40, 20.80, "train"), "Amnesty POI-20-2-2": (-3.70, 40.42, "val")}
  hr, lr, lr_transforms, lonlat, broken = {}, {}, {}, {}, {}
  meta_rows = []
  for aoi, (lon, lat, _) in aois.items():
    lonlat[aoi] = (lon, lat)
    hr_dir = root / "hr_dataset" / aoi
    hr_dir.mkdir(parents=True)
    hr[aoi] = rng.integers(0, 4096, (4, hr_size, hr_size)).astype(np.uint16)
    write_geotiff(hr_dir / f"{aoi}_ps.tiff", hr[aoi], "EPSG:4326", rasterio.Affine.identity())
    write_geotiff(hr_dir / f"{aoi}_pan.tiff", hr[aoi][:1], "EPSG:4326", rasterio.Affine.identity())
    write_geotiff(hr_dir / f"{aoi}_rgbn.tiff", hr[aoi][:, ::4, ::4], "EPSG:4326",
                  rasterio.Affine.identity())
    lr_dir = root / "lr_dataset" / aoi / "L2A"
    lr_dir.mkdir(parents=True)
    for n in (1, 2):
      name = f"{aoi}-{n}-L2A_data.tiff"
      transform = from_origin(lon - 4.5 * 9.5e-5, lat + 4.5 * 9.1e-5, 9.5e-5, 9.1e-5)
      data = rng.uniform(0.0, 0.6, (12, lr_size, lr_size)).astype(np.float32)
      write_geotiff(lr_dir / name, data, "EPSG:4326", transform)
      lr[f"{aoi}/{name}"], lr_transforms[f"{aoi}/{name}"] = data, transform
      meta_rows.append((aoi, n, lon, lat, f"2019-0{n}-15", "2019-06-01", 0.05))

  # Broken inputs.
  orphan = root / "hr_dataset" / "Orphan-1"
  orphan.mkdir()
  write_geotiff(orphan / "Orphan-1_ps.tiff", hr["Landcover-773616"], "EPSG:4326",
                rasterio.Affine.identity())
  broken["Orphan-1_ps.tiff"] = "no coordinates"
  aoi = "Landcover-773616"
  lr_dir = root / "lr_dataset" / aoi / "L2A"
  truncated = lr_dir / f"{aoi}-3-L2A_data.tiff"
  write_geotiff(truncated, lr[f"{aoi}/{aoi}-1-L2A_data.tiff"], "EPSG:4326",
                lr_transforms[f"{aoi}/{aoi}-1-L2A_data.tiff"])
  truncated.write_bytes(truncated.read_bytes()[:600])
  broken[truncated.name] = "truncated"
  thirteen = lr_dir / f"{aoi}-4-L2A_data.tiff"
  write_geotiff(thirteen, np.zeros((13, lr_size, lr_size), np.float32) + 0.1, "EPSG:4326",
                lr_transforms[f"{aoi}/{aoi}-1-L2A_data.tiff"])
  broken[thirteen.name] = "has 13 bands"
  for n in (3, 4):
    meta_rows.append((aoi, n, 92.40, 20.80, "2019-09-15", "2019-06-01", 0.1))

  with (root / "metadata.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["", "n", "lon", "lat", "lowres_date", "highres_date", "cloud_cover"])
    writer.writerows(meta_rows)
  with (root / "stratified_train_val_test_split.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["", "tile", "IPCC Class", "SMOD", "source", "joint_class", "split"])
    for i, (aoi, (_, _, split)) in enumerate(aois.items()):
      writer.writerow([i, aoi, "Cropland", "Rural", "Landcover", "Cropland-Rural", split])
  return WorldStratFixture(root, hr, lr, lr_transforms, lonlat, broken)
