"""timeseries: dated RGBN / RGB rasters of one place -> NDVI CSV and plot."""

import csv
import datetime as dt

import numpy as np
import pytest
from PIL import Image
from rasterio.transform import from_origin
from test_predict import CRS, TRANSFORM, landscape, save_tiny_model

from nirgan_jax.infer import timeseries

from data_fixtures import write_geotiff


def _season(day_of_year):
  return 0.5 + 0.4 * np.sin(2 * np.pi * (day_of_year - 80) / 365)


def write_series(folder):
  """Six RGBN dates named in three date styles, one RGB-only date dated by its tags."""
  folder.mkdir()
  dates = [dt.date(2023, m, 15) for m in (1, 3, 5, 7, 9, 11)]
  names = ["S2_2023-01-15.tif", "S2_2023_03_15.tif", "S2_20230515_T32TNS.tif",
           "S2_2023-07-15.tif", "S2_2023-09-15.tif", "S2_2023-11-15.tif"]
  expected = {}
  for date, name in zip(dates, names, strict=True):
    rgb = landscape(160, 200, seed=date.month).astype(np.float64)
    red = rgb[0] / 10_000
    nir = red * (1 + _season(date.timetuple().tm_yday)) / (1 - _season(date.timetuple().tm_yday))
    nir_dn = np.clip(np.round(nir * 10_000), 1, 10_000).astype(np.uint16)
    write_geotiff(folder / name, np.concatenate([rgb.astype(np.uint16), nir_dn[None]]), CRS,
                  TRANSFORM)
    window = (slice(16, 144), slice(36, 164))  # the central 128 px
    r, n = rgb[0][window] / 10_000, nir_dn[window] / 10_000.0
    expected[date] = float(((n - r) / (n + r)).mean())
  write_geotiff(folder / "rgb_only.tif", landscape(160, 200, seed=99), CRS, TRANSFORM,
                **{})
  import rasterio

  with rasterio.open(folder / "rgb_only.tif", "r+") as dst:
    dst.update_tags(TIFFTAG_DATETIME="2023:12:24 10:30:00")
  return expected


def test_series_csv_and_plot(tmp_path):
  model = save_tiny_model(tmp_path / "model")
  expected = write_series(tmp_path / "series")
  out = tmp_path / "plots" / "ndvi.png"
  assert timeseries.main([str(tmp_path / "series"), "--model", str(model), "--out", str(out),
                          "--quiet"]) == 0
  with open(out.with_suffix(".csv")) as f:
    rows = list(csv.DictReader(f))
  dates = [dt.date.fromisoformat(r["date"]) for r in rows]
  assert dates == sorted(expected) + [dt.date(2023, 12, 24)]
  for row in rows[:-1]:
    date = dt.date.fromisoformat(row["date"])
    assert float(row["ndvi_true"]) == pytest.approx(expected[date], abs=1e-4)
    assert -1 <= float(row["ndvi_predicted"]) <= 1 and int(row["valid_pixels"]) == 128 * 128
  assert rows[-1]["ndvi_true"] == "" and rows[-1]["file"] == "rgb_only.tif"
  with Image.open(out) as image:
    assert image.format == "PNG" and image.size[0] > 600

  # Outputs are not replaced without --overwrite; an undated raster is named.
  assert timeseries.main([str(tmp_path / "series"), "--model", str(model), "--out", str(out),
                          "--quiet"]) == 1
  write_geotiff(tmp_path / "series" / "nodate.tif", landscape(64, 64), CRS,
                from_origin(0, 0, 10, 10))
  other = tmp_path / "other.png"
  assert timeseries.main([str(tmp_path / "series"), "--model", str(model), "--out",
                          str(other), "--quiet"]) == 1
  assert not other.exists() and not other.with_suffix(".csv").exists()


def test_date_parsing():
  parse = timeseries.parse_date
  assert parse(timeseries.Path("x_2021-02-03.tif"), {}) == dt.date(2021, 2, 3)
  assert parse(timeseries.Path("LC08_20210203_T1.tif"), {}) == dt.date(2021, 2, 3)
  assert parse(timeseries.Path("a.tif"), {"DATE": "2020-05-06"}) == dt.date(2020, 5, 6)
  with pytest.raises(timeseries.geotiff.RasterError, match="a_12345678901.tif: no date"):
    parse(timeseries.Path("a_12345678901.tif"), {})
