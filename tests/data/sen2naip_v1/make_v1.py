"""Writes sen2naip_mini.taco, a SEN2NAIP-like TACO v1 file, with the official v1 writer.

tacotoolbox 0.5.2 (with pytortilla 0.5.1, which it wraps) is the last release that writes the
v1 format SEN2NAIP v2 is distributed in; later releases write only TACO v2. It cannot be
installed beside the tacotoolbox the tests use, so this script runs in a venv of its own:

    python3.11 -m venv /tmp/taco_v1 && /tmp/taco_v1/bin/pip install tacotoolbox==0.5.2 rasterio
    cd tests/data/sen2naip_v1 && /tmp/taco_v1/bin/python make_v1.py

Three samples (train, validation, test) in two UTM zones, each a nested tortilla of a 4-band
uint16 Sentinel-2-like GeoTIFF ("lr", 10 m, 32 px) and a NAIP-like one ("hr", 2.5 m, 128 px),
bands R, G, B, NIR as reflectance x 10000, nodata 0; the test sample's NAIP image has a no-data
corner. The pixels are smooth seeded fields, so the file stays small.
"""

import datetime
import pathlib
import shutil
import tempfile

import numpy as np
import pytortilla
import rasterio
import tacotoolbox
from pytortilla.datamodel.main import STAC
from rasterio.transform import from_origin
from tacotoolbox.datamodel import Collection
from tacotoolbox.specification import Contact, Extent

HERE = pathlib.Path(__file__).parent
LR, HR = 32, 128
SAMPLES = [  # id, split, CRS, upper-left corner, acquisition time (UTC)
    ("ROI_00001", "train", "EPSG:32614", (612_000.0, 4_210_000.0),
     datetime.datetime(2021, 6, 14, 17, 25, tzinfo=datetime.UTC)),
    ("ROI_00002", "validation", "EPSG:32614", (640_000.0, 4_180_000.0),
     datetime.datetime(2021, 7, 2, 17, 35, tzinfo=datetime.UTC)),
    ("ROI_00003", "test", "EPSG:32617", (350_000.0, 3_900_000.0),
     datetime.datetime(2022, 8, 21, 16, 5, tzinfo=datetime.UTC)),
]


def smooth_rgbn(rng: np.random.Generator, size: int) -> np.ndarray:
  """(4, size, size) uint16 reflectance x 10000: a few broad waves plus faint noise."""
  y, x = np.mgrid[0:size, 0:size] / size
  bands = []
  for base in (600, 800, 500, 2800):  # R, G, B, NIR of a vegetated scene
    field = sum(np.sin(2 * np.pi * (rng.uniform(0.3, 2) * x + rng.uniform(0.3, 2) * y)
                       + rng.uniform(0, 6)) for _ in range(3))
    bands.append(base * (1 + 0.25 * field / 3) + rng.normal(0, 4, (size, size)))
  return np.clip(np.rint(bands), 1, 10_000).astype(np.uint16)


def write_geotiff(path, data, crs, transform) -> None:
  with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                     count=4, dtype="uint16", crs=crs, transform=transform, nodata=0,
                     compress="deflate", predictor=2) as dst:
    dst.write(data)


def main() -> None:
  rng = np.random.default_rng(2024)
  work = pathlib.Path(tempfile.mkdtemp())
  rows = []
  for sample_id, split, crs, (x0, y0), time in SAMPLES:
    hr = smooth_rgbn(rng, HR)
    if split == "test":
      hr[:, :40, :24] = 0  # a no-data corner
    lr = smooth_rgbn(rng, LR)
    items = []
    for name, data, res in (("lr", lr, 10.0), ("hr", hr, 2.5)):
      path = work / f"{sample_id}_{name}.tif"
      write_geotiff(path, data, crs, from_origin(x0, y0, res, res))
      items.append(pytortilla.datamodel.Sample(
          id=name, file_format="GTiff", path=path,
          stac_data=STAC(crs=crs, raster_shape=data.shape[1:],
                         geotransform=(x0, res, 0.0, y0, 0.0, -res), time_start=time)))
    nested = pytortilla.create(samples=pytortilla.datamodel.Samples(samples=items),
                               output=work / f"{sample_id}.tortilla", nworkers=1, quiet=True)
    rows.append(pytortilla.datamodel.Sample(
        id=sample_id, file_format="TORTILLA", path=nested, data_split=split,
        stac_data=STAC(crs=crs, raster_shape=(LR, LR), geotransform=(x0, 10.0, 0.0, y0, 0.0, -10.0),
                       time_start=time, time_end=time)))
  collection = Collection(
      id="sen2naipmini", dataset_version="2.0.0", title="SEN2NAIP-like test file",
      description="Three SEN2NAIP-like samples: Sentinel-2 (lr, 10 m) and NAIP (hr, 2.5 m) RGBN.",
      licenses=["CC0-1.0"], task="super-resolution",
      extent=Extent(spatial=[[-98.0, 35.0, -80.0, 38.5]],
                    temporal=[["2021-06-14T00:00:00Z", "2022-08-22T00:00:00Z"]]),
      providers=[Contact(name="nirgan-jax tests", roles=["producer"])])
  out = HERE / "sen2naip_mini.taco"
  out.unlink(missing_ok=True)
  tacotoolbox.create(collection=collection, samples=pytortilla.datamodel.Samples(samples=rows),
                     output=out, nworkers=1, quiet=True)
  shutil.rmtree(work)
  print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":  # pytortilla exports metadata in worker processes
  main()
