"""tiled: a numpy image (ArraySource) and a GeoTIFF, whole or a window of it (GeoTiffSource),
go through the same tiled prediction and give the same NIR."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from test_predict import CRS, TRANSFORM, landscape, save_tiny_model

from nirgan_jax.infer import geotiff, predict, tiled
from nirgan_jax.infer import model as inference

from data_fixtures import write_geotiff

LONLAT = (7.4, 46.9)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return save_tiny_model(tmp_path_factory.mktemp("models") / "satclip")


@pytest.fixture(scope="module")
def model(model_dir):
  return inference.load_model(model_dir)


def _reflectance(data):
  """(3, H, W) uint16 DN -> (H, W, 3) reflectance, computed as the GeoTIFF reader does."""
  return np.moveaxis(data, 0, -1).astype(np.float32) / 10_000.0


def test_array_source_equals_the_geotiff_path(tmp_path, model_dir, model):
  data = landscape(150, 230, seed=5)
  data[:, 40:60, 100:170] = 0  # a nodata hole
  write_geotiff(tmp_path / "in.tif", data, CRS, TRANSFORM, nodata=0)
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(model_dir), "--out",
                       str(tmp_path / "out.tif"), "--tile", "64", "--overlap", "16",
                       "--batch_size", "3", "--lonlat", ",".join(map(str, LONLAT)),
                       "--quiet"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out:
    from_file = out.read(1)

  source = tiled.ArraySource(_reflectance(data), valid=(data != 0).all(axis=0), location=LONLAT)
  from_array = np.clip(tiled.predict_image(model, source, tile=64, overlap=16, batch_size=3),
                       0, 1)
  np.testing.assert_array_equal(np.isnan(from_array), np.isnan(from_file))
  assert np.isnan(from_array[40:60, 100:170]).all() and np.isfinite(from_array[:40]).all()
  np.testing.assert_array_equal(from_array, from_file)


def test_a_window_of_a_geotiff_equals_the_cropped_array(tmp_path, model):
  data = landscape(120, 160, seed=6)
  write_geotiff(tmp_path / "in.tif", data, CRS, TRANSFORM)
  window = Window(col_off=30, row_off=20, width=96, height=72)
  crop = data[:, 20:92, 30:126]
  with rasterio.open(tmp_path / "in.tif") as src:
    windowed = geotiff.GeoTiffSource(src, window=window, lonlat=LONLAT)
    from_file = tiled.predict_image(model, windowed, tile=64, overlap=16)
    # Tile locations come from the raster's CRS at the window's place in the raster.
    whole = geotiff.GeoTiffSource(src)
    rows, cols = np.array([0.0, 10.5, 71.0]), np.array([0.0, 47.5, 95.0])
    np.testing.assert_allclose(geotiff.GeoTiffSource(src, window=window).lonlat(rows, cols),
                               whole.lonlat(rows + 20, cols + 30), rtol=0, atol=1e-9)
  from_array = tiled.predict_image(model, tiled.ArraySource(_reflectance(crop), location=LONLAT),
                                   tile=64, overlap=16)
  assert from_file.shape == (72, 96)
  np.testing.assert_array_equal(from_file, from_array)


def test_array_source_without_location_is_refused_for_a_satclip_model(model):
  source = tiled.ArraySource(np.full((40, 40, 3), 0.2, np.float32))
  with pytest.raises(ValueError, match="location"):
    tiled.predict_image(model, source, tile=32, overlap=8)
