"""Fixture writers: small copies of the raw archives in their exact on-disk layouts
(as the README's data preparation table describes them), each with known pixel values,
known centres and broken files."""

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
  rows.append(("patch_6.tif", "", "nan"))  # no coordinates
  broken["patch_6.tif"] = "bad coordinates"

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


@dataclasses.dataclass
class HolesFixture:
  root: Path
  data: np.ndarray  # (C, H, W) as written
  invalid: np.ndarray  # (H, W) bool: the pixels written as NaN or no-data


def write_landsat_with_holes(root: Path, size: int = 32) -> HolesFixture:
  """One Landsat RGBN float32 TOA file (nodata -9999) with a 4 x 6 px NaN block and one NIR
  pixel at the nodata value: 25 invalid pixels, 2.4 % of 32 x 32, under the 5 % threshold."""
  root.mkdir(parents=True)
  rng = np.random.default_rng(13)
  data = rng.uniform(0.02, 0.45, (4, size, size)).astype(np.float32)
  invalid = np.zeros((size, size), bool)
  data[:, 10:14, 5:11] = np.nan
  invalid[10:14, 5:11] = True
  data[3, 20, 25] = -9999.0
  invalid[20, 25] = True
  write_geotiff(root / "holes.tif", data, "EPSG:32618", from_origin(500_000.0, 4_500_000.0, 30, 30),
                nodata=-9999.0)
  return HolesFixture(root, data, invalid)


def write_s2_100k_with_holes(root: Path, size: int = 32) -> HolesFixture:
  """S2-100K layout with one file whose B04 (red) is 0, Sentinel-2's no-data, over a 3 x 5 px
  block (1.5 %)."""
  (root / "images").mkdir(parents=True)
  data = s2_dn(21, size)
  invalid = np.zeros((size, size), bool)
  data[3, 20:23, 2:7] = 0
  invalid[20:23, 2:7] = True
  crs, origin = "EPSG:32633", (410_000.0, 5_790_000.0)
  write_geotiff(root / "images" / "patch_0.tif", data, crs, from_origin(*origin, 10.0, 10.0))
  lon, lat = utm_to_lonlat(crs, origin[0] + size * 5.0, origin[1] - size * 5.0)
  (root / "index.csv").write_text(f"fn,lon,lat\npatch_0.tif,{lon},{lat}\n")
  return HolesFixture(root, data, invalid)


def write_ssl4eo_l(root: Path, kind: str = "toa", size: int = 32,
                   benchmark: bool = False) -> LandsatFixture:
  """SSL4EO-L: ssl4eo_l_oli_tirs_toa/<7-digit location>/<scene id>/all_bands.tif, 11 (TOA) or 7
  (SR) bands uint8, UTM 30 m (in ssl4eo_l_oli_tirs_toa_benchmark/ ... for the benchmark set);
  two seasons at one location; an all-zero scene; a scene with the wrong band count."""
  folder, count = ("ssl4eo_l_oli_tirs_toa", 11) if kind == "toa" else ("ssl4eo_l_oli_sr", 7)
  folder += "_benchmark" if benchmark else ""
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
  lr: dict[str, np.ndarray]  # "<AOI>/<file>" -> (12, h, w) L2A: float32 reflectance or uint16 DN
  lr_transforms: dict[str, object]
  aoi_lonlat: dict[str, tuple[float, float]]
  broken: dict[str, str]


def write_worldstrat(root: Path, hr_size: int = 64, lr_size: int = 9,
                     hr_folder: str = "12bit") -> WorldStratFixture:
  """WorldStrat as the Zenodo archive extracts: metadata.csv (unnamed AOI column, a row per
  revisit), split csv, hr_dataset/12bit/<AOI>/<AOI>_ps.tiff (4-band uint16 12-bit, identity
  transform) with its _pan.tiff, _rgbn.tiff and _rgb.png siblings, the 8-bit conversions
  hr_dataset/8bit/<AOI>/<AOI>_ps_8bit.tiff ..., lr_dataset/<AOI>/L2A/<AOI>-<n>-L2A_data.tiff
  (12-band float32, EPSG:4326) with the -CLM, -CLP, -SCL and -dataMask rasters beside it, and
  lr_dataset/<AOI>/L1C/<AOI>-<n>-L1C_data.tiff (13 bands). ``hr_folder=""`` puts the AOI folders
  directly in hr_dataset/ (a flattened copy). Broken: an AOI missing from metadata.csv, a
  truncated L2A file, an L1C-like 13-band file in L2A/."""
  rng = np.random.default_rng(3)
  aois = {"Landcover-773616": (92.40, 20.80, "train"), "Amnesty POI-20-2-2": (-3.70, 40.42, "val")}
  hr, lr, lr_transforms, lonlat, broken = {}, {}, {}, {}, {}
  meta_rows = []
  for aoi, (lon, lat, _) in aois.items():
    lonlat[aoi] = (lon, lat)
    hr_dir = root / "hr_dataset" / hr_folder / aoi
    hr_dir.mkdir(parents=True)
    hr[aoi] = rng.integers(0, 4096, (4, hr_size, hr_size)).astype(np.uint16)
    identity = rasterio.Affine.identity()
    write_geotiff(hr_dir / f"{aoi}_ps.tiff", hr[aoi], "EPSG:4326", identity)
    write_geotiff(hr_dir / f"{aoi}_pan.tiff", hr[aoi][:1], "EPSG:4326", identity)
    write_geotiff(hr_dir / f"{aoi}_rgbn.tiff", hr[aoi][:, ::4, ::4], "EPSG:4326", identity)
    eight_bit = (hr[aoi] >> 4).astype(np.uint8)
    with rasterio.open(hr_dir / f"{aoi}_rgb.png", "w", driver="PNG", width=hr_size,
                       height=hr_size, count=3, dtype="uint8") as dst:
      dst.write(eight_bit[:3])
    if hr_folder:
      eight_bit_dir = root / "hr_dataset" / "8bit" / aoi
      eight_bit_dir.mkdir(parents=True)
      for kind, data in (("ps", eight_bit), ("pan", eight_bit[:1]), ("rgbn", eight_bit)):
        write_geotiff(eight_bit_dir / f"{aoi}_{kind}_8bit.tiff", data, "EPSG:4326", identity)
    lr_dir = root / "lr_dataset" / aoi / "L2A"
    lr_dir.mkdir(parents=True)
    (root / "lr_dataset" / aoi / "L1C").mkdir()
    for n in (1, 2):
      name = f"{aoi}-{n}-L2A_data.tiff"
      transform = from_origin(lon - 4.5 * 9.5e-5, lat + 4.5 * 9.1e-5, 9.5e-5, 9.1e-5)
      data = rng.uniform(0.0, 0.6, (12, lr_size, lr_size)).astype(np.float32)
      if aoi.startswith("Amnesty") and n == 2:  # some revisits hold integer DN (x 10000)
        data = np.rint(data * 10000).astype(np.uint16)
      write_geotiff(lr_dir / name, data, "EPSG:4326", transform)
      for mask in ("CLM", "CLP", "SCL", "dataMask"):
        write_geotiff(lr_dir / f"{aoi}-{n}-{mask}.tiff", np.ones((1, lr_size, lr_size), np.uint8),
                      "EPSG:4326", transform)
      write_geotiff(root / "lr_dataset" / aoi / "L1C" / f"{aoi}-{n}-L1C_data.tiff",
                    rng.uniform(0.0, 0.6, (13, lr_size, lr_size)).astype(np.float32),
                    "EPSG:4326", transform)
      lr[f"{aoi}/{name}"], lr_transforms[f"{aoi}/{name}"] = data, transform
      meta_rows.append((aoi, n, lon, lat, f"2019-0{n}-15", "2019-06-01", 0.05))

  # Broken inputs.
  orphan = root / "hr_dataset" / hr_folder / "Orphan-1"
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


# --------------------------------------------------------------------------- SEN2NAIP


@dataclasses.dataclass
class Sen2NaipFixture:
  root: Path
  samples: dict[str, dict]  # sample id -> {"lr", "hr" arrays (4, h, w), "hr_transform", ...}
  crs: str
  broken: dict[str, str]


def geotiff_bytes(data: np.ndarray, crs: str, transform) -> bytes:
  from rasterio.io import MemoryFile

  with MemoryFile() as memory:
    with memory.open(driver="GTiff", width=data.shape[2], height=data.shape[1],
                     count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform) as dst:
      dst.write(data)
    return memory.read()


def _sen2naip_sample(rng, index: int, lr_size: int = 16):
  crs = "EPSG:32614"
  x0, y0 = 600_000.0 + 5_000 * index, 4_200_000.0 - 7_000 * index
  hr = rng.integers(1, 6000, (4, 4 * lr_size, 4 * lr_size)).astype(np.uint16)
  lr = hr.reshape(4, lr_size, 4, lr_size, 4).mean(axis=(2, 4)).astype(np.uint16)
  return crs, {"hr": hr, "lr": lr, "hr_transform": from_origin(x0, y0, 2.5, 2.5),
               "lr_transform": from_origin(x0, y0, 10.0, 10.0)}


SEN2NAIP_V1 = Path(__file__).parent / "data" / "sen2naip_v1" / "sen2naip_mini.taco"


def read_taco_v1_samples(path: Path) -> tuple[dict[str, dict], dict[str, bytes]]:
  """The samples of a TACO v1 file as the legacy official reader (``tacoreader.v1``) gives
  them: sample id -> {"lr", "hr" arrays, their transforms, "crs", "split", "date"}, and
  "<sample id>/<item>" -> the item's GeoTIFF bytes."""
  import logging

  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  import tacoreader.v1 as legacy  # its import sets up INFO logging on the root logger

  root.handlers[:], root.level = handlers, level
  table = legacy.load(str(path))
  samples, files = {}, {}
  for position in range(len(table)):
    row = table.iloc[position]
    nested = table.read(position)
    sample = {"split": row["tortilla:data_split"], "date": str(np.datetime64(
        int(row["stac:time_start"]), "s").astype("datetime64[D]"))}
    for index, name in enumerate(("lr", "hr")):
      assert nested.iloc[index]["tortilla:id"] == name
      vsi = nested.read(index)
      with rasterio.open(vsi) as src:
        sample[name], sample[f"{name}_transform"] = src.read(), src.transform
        sample["crs"] = src.crs.to_string()
      offset_length, file = vsi.removeprefix("/vsisubfile/").split(",", 1)
      offset, length = map(int, offset_length.split("_"))
      with open(file, "rb") as f:
        f.seek(offset)
        files[f"{row['tortilla:id']}/{name}"] = f.read(length)
    samples[row["tortilla:id"]] = sample
  return samples, files


def copy_sen2naip_taco_v1(root: Path) -> Sen2NaipFixture:
  """The vendored TACO v1 file (written by tacotoolbox 0.5.2, the last official v1 writer; see
  tests/data/sen2naip_v1/make_v1.py) as sen2naipv2-crosssensor.taco, with its samples as the
  legacy reader gives them; broken: a copy whose last sample's nested tortilla is overwritten
  with zeros, and a truncated ``.part.taco``."""
  root.mkdir(parents=True)
  taco = SEN2NAIP_V1.read_bytes()
  (root / "sen2naipv2-crosssensor.taco").write_bytes(taco)
  samples, _ = read_taco_v1_samples(root / "sen2naipv2-crosssensor.taco")
  import io

  import pyarrow.parquet as pq

  footer_offset, footer_length = np.frombuffer(taco[2:18], "<u8")
  footer = pq.read_table(io.BytesIO(taco[footer_offset:footer_offset + footer_length]))
  last = footer.to_pylist()[-1]
  damaged = bytearray(taco)
  start = last["tortilla:offset"]
  damaged[start:start + 64] = bytes(64)
  (root / "sen2naipv2-damaged.taco").write_bytes(bytes(damaged))
  (root / "sen2naipv2-unet.0001.part.taco").write_bytes(taco[: len(taco) // 2])
  broken = {f"sen2naipv2-damaged.taco:{last['tortilla:id']}": "not a TACO/tortilla container",
            "sen2naipv2-unet.0001.part.taco": "truncated"}
  crs = {sample["crs"] for sample in samples.values()}
  return Sen2NaipFixture(root, samples, crs.pop() if len(crs) == 1 else "", broken)


def write_taco_v2(path: Path, samples: dict[str, dict], files: dict[str, bytes]) -> None:
  """A TACO v2 ``.tacozip`` written by the official writer (tacotoolbox): per sample a folder of
  the GeoTIFFs ``lr`` and ``hr`` (``files["<id>/lr"]``, ...) with STAC metadata (CRS, shape,
  geotransform, acquisition time; the writer adds the centroid) and the sample's split."""
  import datetime

  from tacotoolbox import create
  from tacotoolbox.datamodel import Sample, Taco, Tortilla
  from tacotoolbox.sample.extensions.split import Split
  from tacotoolbox.sample.extensions.stac import STAC
  from tacotoolbox.taco.datamodel import Provider

  def stac(data, transform, crs, date):
    time = datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.UTC)
    return STAC(crs=crs, tensor_shape=data.shape, geotransform=transform.to_gdal(),
                time_start=int(time.timestamp() * 1_000_000))

  folders = []
  for sample_id, sample in samples.items():
    items = []
    for name in ("lr", "hr"):
      tif = path.parent / f".{sample_id}_{name}.tif"
      tif.write_bytes(files[f"{sample_id}/{name}"])
      item = Sample(id=name, path=tif)
      item.extend_with(stac(sample[name], sample[f"{name}_transform"], sample["crs"],
                            sample["date"]))
      items.append(item)
    folder = Sample(id=sample_id, path=Tortilla(samples=items))
    folder.extend_with(stac(sample["lr"], sample["lr_transform"], sample["crs"], sample["date"]))
    folder.extend_with(Split(split=sample["split"]))
    folders.append(folder)
  create(Taco(tortilla=Tortilla(samples=folders), id="sen2naip_mini", dataset_version="2.0.0",
              description="SEN2NAIP-like samples: Sentinel-2 (lr, 10 m), NAIP (hr, 2.5 m) RGBN",
              licenses=["CC0-1.0"], providers=[Provider(name="nirgan-jax tests")],
              tasks=["super-resolution"]), path)
  for tif in path.parent.glob(".*_?r.tif"):
    tif.unlink()


def write_sen2naip_tacozip(root: Path, lr_size: int = 16) -> Sen2NaipFixture:
  """sen2naip-mini.tacozip, TACO v2 written by tacotoolbox: 3 samples (train, validation, test)
  of lr 4 x 16 x 16 and hr 4 x 64 x 64 uint16 GeoTIFFs (``lr_size`` sets the LR side, the HR
  is 4 times it), nodata 0; and a truncated copy."""
  from rasterio.io import MemoryFile

  root.mkdir(parents=True)
  rng = np.random.default_rng(5)
  samples, files = {}, {}
  for i, split in enumerate(["train", "validation", "test"]):
    crs, sample = _sen2naip_sample(rng, i, lr_size)
    sample_id = f"ROI_{i:04d}"
    samples[sample_id] = {**sample, "crs": crs, "split": split, "date": f"2021-06-0{i + 1}"}
    for name in ("lr", "hr"):
      data = sample[name]
      with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=data.shape[2], height=data.shape[1], count=4,
                         dtype="uint16", crs=crs, transform=sample[f"{name}_transform"],
                         nodata=0) as dst:
          dst.write(data)
        files[f"{sample_id}/{name}"] = memory.read()
  write_taco_v2(root / "sen2naip-mini.tacozip", samples, files)
  whole = (root / "sen2naip-mini.tacozip").read_bytes()
  (root / "sen2naip-mini-part2.tacozip").write_bytes(whole[: len(whole) // 2])
  broken = {"sen2naip-mini-part2.tacozip": "not a readable TACO v2 dataset"}
  return Sen2NaipFixture(root, samples, "EPSG:32614", broken)


def write_sen2naip_mlstac(root: Path) -> Sen2NaipFixture:
  """ML-STAC: main.json + {train,test}/mls/metadata.parquet + <split>.mlstac data files of HDF5
  blobs (input 4x16x16, target 4x64x64 uint16, attrs["metadata"] a repr() with CRS/Affine);
  one sample without lr_profile, one blob that is not HDF5, one id missing from the header."""
  import io
  import json
  import struct

  import h5py
  import pyarrow as pa
  import pyarrow.parquet as pq
  from rasterio import CRS

  rng = np.random.default_rng(9)
  root.mkdir(parents=True)
  catalog = {split: {"metadata_file": f"{split}/mls/metadata.parquet"}
             for split in ("train", "test")}
  (root / "main.json").write_text(json.dumps({
      "type": "Collection", "id": "SEN2NAIPv2-synthetic2", "ml_catalog": catalog}))
  samples, broken = {}, {}
  plan = {"train": ["dp_0", "dp_1", "dp_bad", "dp_lost"], "test": ["dp_2"]}
  for split, ids in plan.items():
    folder = root / split / "mls"
    folder.mkdir(parents=True)
    blobs, rows = {}, []
    for i, dp in enumerate(ids):
      if dp == "dp_bad":
        blobs[dp] = b"definitely not hdf5" * 5
        broken[f"{split}/{dp}"] = "unreadable HDF5 sample"
        continue
      if dp == "dp_lost":
        broken[f"{split}/{dp}"] = "not in"
        continue
      crs, sample = _sen2naip_sample(rng, 10 + i + (5 if split == "test" else 0))
      metadata = {"hr_profile": {"driver": "GTiff", "dtype": "uint16", "width": 64,
                                 "height": 64, "count": 4, "crs": CRS.from_string(crs),
                                 "transform": sample["hr_transform"]}}
      if dp != "dp_1":
        metadata["lr_profile"] = {"width": 16, "height": 16, "crs": CRS.from_string(crs),
                                  "transform": sample["lr_transform"]}
      buffer = io.BytesIO()
      with h5py.File(buffer, "w") as h5:
        h5.create_dataset("input", data=sample["lr"])
        h5.create_dataset("target", data=sample["hr"])
        h5.attrs["metadata"] = repr(metadata)
      blobs[dp] = buffer.getvalue()
      samples[f"{split}/{dp}"] = {**sample, "split": split}
    header, begin = {}, 0
    for dp, blob in blobs.items():
      header[dp] = [begin, len(blob)]
      begin += len(blob)
    header_json = json.dumps(header).encode()
    data_file = folder / f"{split}.mlstac"
    data_file.write_bytes(b"#y" + struct.pack("<Q", len(header_json)) + header_json
                          + b"".join(blobs.values()))
    for dp in ids:
      start, length = header.get(dp, [0, 0])
      rows.append({"datapoint_id": dp, "begin": start, "length": length,
                   "metadata_length": 0, "url": f"https://example.invalid/{data_file.name}"})
    pq.write_table(pa.Table.from_pylist(rows), folder / "metadata.parquet")
  return Sen2NaipFixture(root, samples, "EPSG:32614", broken)
