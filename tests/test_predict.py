"""predict: tiled GeoTIFF inference equals a whole-image forward, shows no seams, keeps the
georeferencing, runs on the real S2-100K samples, and refuses bad input cleanly."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from nirgan_jax import models
from nirgan_jax.infer import geotiff, model_dir, predict, products, tile_grid
from nirgan_jax.infer import model as inference
from nirgan_jax.models import config as model_config

import range_server
from conftest import REPO, TEST_DATA, rbg_key, tiny_config
from data_fixtures import write_geotiff

CRS = "EPSG:32632"
TRANSFORM = from_origin(500_000, 5_200_000, 10, 10)
S2_SAMPLES = TEST_DATA / "s2_100k_sample" / "images"


def save_tiny_model(path, style="multiply", norm="instance", radiometry_depth=0):
  config = tiny_config(style)
  config.model.generator.update(norm=norm, radiometry_depth=radiometry_depth)
  config.model.conv_impl = "xla"
  nirgan = models.NIRGAN.from_config(config)
  size = 32 + 2 * config.pad
  embedding = np.zeros((1, config.satclip.embed_dim), np.float32) if nirgan.encoder else None
  params = {"generator": nirgan.generator.init(rbg_key(0), np.zeros((1, size, size, 3),
                                                                    np.float32),
                                               embedding)["params"]}
  if nirgan.encoder is not None:
    params["satclip"] = models.init_location_encoder(nirgan, rbg_key(1))
  return model_dir.save_model_dir(path, params, model_config.model_sections(config))


@pytest.fixture(scope="module")
def satclip_model(tmp_path_factory):
  return save_tiny_model(tmp_path_factory.mktemp("models") / "satclip")


def landscape(height, width, seed=0):
  """(3, H, W) uint16 reflectance x 10000 with smooth fields, edges and texture."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width] / 60.0
  fields = np.sin(xx + 0.3 * yy)[None] * np.array([0.05, 0.06, 0.04])[:, None, None]
  blocks = ((xx // 2 + yy // 3) % 3)[None] * np.array([0.03, 0.05, 0.02])[:, None, None]
  noise = rng.normal(0, 0.01, (3, height, width))
  return np.clip((0.12 + fields + blocks + noise) * 10_000, 1, 10_000).astype(np.uint16)


@pytest.mark.parametrize("margin", [0, 10])
def test_tile_starts_cover_the_raster_aligned(margin):
  for size in (1, 100, 256, 700, 1000, 1001):
    starts = tile_grid.tile_starts(size, 256, 64, margin)
    span = size + 2 * margin
    assert starts[0] == -margin and all((s + margin) % tile_grid.ALIGN == 0 for s in starts)
    end = starts[-1] + margin + 256
    assert end >= span and end - span < max(tile_grid.ALIGN, 257 - span)
    assert all(b - a <= 192 for a, b in zip(starts, starts[1:], strict=False))
  ramp = tile_grid.edge_ramp(64)
  np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)  # a partition of unity
  assert ramp[:16].max() == 0.0 and ramp[48:].min() == 1.0


@pytest.mark.parametrize("radiometry_depth", [0, 2])
def test_tiled_prediction_equals_whole_image_forward(tmp_path, radiometry_depth):
  # Without instance norm or a location map the generator is translation-equivariant (the
  # radiometry path is per-pixel), so the tiling and blending must reproduce a whole-image
  # forward away from the raster's border.
  model_dir = save_tiny_model(tmp_path / "plain", style="none", norm="none",
                              radiometry_depth=radiometry_depth)
  data = landscape(700, 1000)
  write_geotiff(tmp_path / "in.tif", data, CRS, TRANSFORM)
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(model_dir), "--out",
                       str(tmp_path / "out.tif"), "--tile", "320", "--overlap", "160",
                       "--quiet"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out:
    assert out.crs.to_string() == CRS and out.transform == TRANSFORM
    assert (out.height, out.width, out.count, out.dtypes[0]) == (700, 1000, 1, "float32")
    tiled = out.read(1)
  model = inference.load_model(model_dir)
  whole = np.clip(model(np.moveaxis(data, 0, -1)[None] / 10_000.0)[0, ..., 0], 0, 1)
  border = 40
  inner = (slice(border, -border), slice(border, -border))
  np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-3)
  assert np.isfinite(tiled).all()


@pytest.mark.parametrize("radiometry_depth", [0, 3])
def test_no_seams_with_the_full_model_blocks(tmp_path, satclip_model, radiometry_depth):
  model_dir = (save_tiny_model(tmp_path / "radiometry", radiometry_depth=radiometry_depth)
               if radiometry_depth else satclip_model)
  data = landscape(384, 512, seed=1)
  write_geotiff(tmp_path / "in.tif", data, CRS, TRANSFORM)
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(model_dir), "--out",
                       str(tmp_path / "out.tif"), "--tile", "128", "--overlap", "32",
                       "--quiet"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out:
    nir = out.read(1).astype(np.float64)
  # Mean |step| between neighbouring columns (rows), at the edges where a tile's coverage
  # starts or ends against the same inside tiles: a seam would stand out at the former.
  for axis, size in ((1, 512), (0, 384)):
    steps = np.abs(np.diff(nir, axis=axis)).mean(axis=1 - axis)
    starts = tile_grid.tile_starts(size, 128, 32, margin=4)  # the tiny model's pad
    edges = sorted({s - 1 for s in starts[1:]} | {s + 127 for s in starts[:-1]})
    inside = np.setdiff1d(np.arange(size - 1), edges)
    assert steps[edges].max() <= steps[inside].max(), (axis, steps[edges], steps[inside].max())


def test_real_s2_samples_rgbn_uint16_cog(tmp_path, satclip_model):
  samples = sorted(S2_SAMPLES.glob("*.tif"))
  assert samples, f"no S2-100K samples in {S2_SAMPLES}"
  out_dir = tmp_path / "out"
  assert predict.main([str(S2_SAMPLES), "--model", str(satclip_model), "--out", str(out_dir),
                       "--bands", "4,3,2", "--output", "rgbn", "--dtype", "uint16", "--cog",
                       "--tile", "128", "--overlap", "32", "--quiet"]) == 0
  for sample in samples:
    with rasterio.open(sample) as src, rasterio.open(out_dir / f"{sample.stem}_rgbn.tif") as out:
      assert out.crs == src.crs and out.transform == src.transform
      assert (out.count, out.dtypes[0]) == (4, "uint16")
      assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
      rgb_in, rgbn = src.read([4, 3, 2]), out.read()
      np.testing.assert_array_equal(rgbn[:3], np.minimum(rgb_in, 10_000))
      assert (rgbn[3] < products.UINT16_NODATA).all() and rgbn[3].std() > 0


def test_nodata_pixels_stay_nodata(tmp_path, satclip_model):
  data = landscape(96, 128, seed=4)
  data[:, 10:30, 40:90] = 0
  write_geotiff(tmp_path / "in.tif", data, CRS, TRANSFORM, nodata=0)
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "out.tif"), "--dtype", "uint16", "--quiet"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out:
    nir = out.read(1)
    assert out.nodata == products.UINT16_NODATA
    assert (out.read_masks(1)[10:30, 40:90] == 0).all()
  hole = np.zeros(nir.shape, bool)
  hole[10:30, 40:90] = True
  assert (nir[hole] == products.UINT16_NODATA).all() and (nir[~hole] < 10_000).all()


def test_bfloat16_compute_predicts_near_float32_into_the_same_float32_product(
    tmp_path, satclip_model):
  write_geotiff(tmp_path / "in.tif", landscape(96, 128, seed=5), CRS, TRANSFORM)
  nir = {}
  for dtype in ("float32", "bfloat16"):
    out = tmp_path / f"{dtype}.tif"
    assert predict.main([str(tmp_path / "in.tif"), "--model", str(satclip_model), "--out",
                         str(out), "--compute_dtype", dtype, "--quiet"]) == 0
    with rasterio.open(out) as src:
      assert src.dtypes[0] == "float32"
      nir[dtype] = src.read(1)
  difference = np.abs(nir["bfloat16"] - nir["float32"])
  # bfloat16 keeps 8 bits of mantissa: NIR moves by about 1e-3 of reflectance (this random
  # tiny model's largest change is larger; benchmarks/predict_precision.py measures a trained
  # one on real imagery).
  assert 0 < difference.mean() < 5e-3, difference.mean()
  assert np.percentile(difference, 99) < 5e-2, np.percentile(difference, 99)
  model = inference.load_model(satclip_model, compute_dtype="bfloat16")
  assert model.config.compute_dtype == "bfloat16"
  with pytest.raises(ValueError, match="compute_dtype must be one of"):
    inference.load_model(satclip_model, compute_dtype="float16")


def test_ndvi_output_and_histogram_matching(tmp_path, satclip_model):
  data = landscape(200, 260, seed=2)
  write_geotiff(tmp_path / "in.tif", data, CRS, TRANSFORM)
  rng = np.random.default_rng(3)
  reference = rng.gamma(4.0, 700.0, (1, 150, 150)).clip(1, 10_000).astype(np.uint16)
  write_geotiff(tmp_path / "ref.tif", reference, CRS, TRANSFORM)
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "nir.tif"), "--match_histogram",
                       str(tmp_path / "ref.tif"), "--quiet"]) == 0
  with rasterio.open(tmp_path / "nir.tif") as out:
    nir = out.read(1)
  quantiles = np.linspace(0.05, 0.95, 10)
  np.testing.assert_allclose(np.quantile(nir, quantiles),
                             np.quantile(reference / 10_000.0, quantiles), rtol=0.03)

  assert predict.main([str(tmp_path / "in.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "ndvi.tif"), "--output", "ndvi", "--quiet"]) == 0
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "plain.tif"), "--quiet"]) == 0
  with rasterio.open(tmp_path / "ndvi.tif") as out, rasterio.open(tmp_path / "plain.tif") as p:
    red = data[0] / 10_000.0
    nir = p.read(1)
    np.testing.assert_allclose(out.read(1), (nir - red) / (nir + red), rtol=1e-4, atol=1e-5)


def test_ndvi_product_is_defined_on_black_pixels_and_nan_only_on_nodata(tmp_path):
  rgb = landscape(40, 50, seed=4)
  rgb[:, 5:10, 5:10] = 0  # black: N + R = 0 where the NIR is 0 too
  write_geotiff(tmp_path / "in.tif", rgb, CRS, TRANSFORM)
  nir = np.full((1, 40, 50), 0.3, np.float32)
  nir[:, 5:10, 5:10] = 0.0
  nir[:, 20:25] = np.nan  # nodata
  write_geotiff(tmp_path / "nir.tif", nir, CRS, TRANSFORM, nodata=np.nan)
  with rasterio.open(tmp_path / "in.tif") as src:
    products.write_product(geotiff.GeoTiffSource(src), tmp_path / "nir.tif",
                           tmp_path / "ndvi.tif", "ndvi")
  with rasterio.open(tmp_path / "ndvi.tif") as out:
    ndvi = out.read(1)
  np.testing.assert_array_equal(np.isnan(ndvi), np.isnan(nir[0]))
  assert (ndvi[5:10, 5:10] == 0).all()
  red = rgb[0] / 10_000.0
  expected = (0.3 - red) / (0.3 + red)
  rest = ~np.isnan(nir[0])
  rest[5:10, 5:10] = False
  np.testing.assert_allclose(ndvi[rest], expected[rest], rtol=1e-5)


def test_unreferenced_raster_needs_lonlat(tmp_path, satclip_model, capsys):
  write_geotiff(tmp_path / "plain.tif", landscape(64, 64), None, from_origin(0, 0, 1, 1))
  args = [str(tmp_path / "plain.tif"), "--model", str(satclip_model), "--out",
          str(tmp_path / "out.tif"), "--quiet"]
  assert predict.main(args) == 1
  assert "plain.tif: has no CRS" in capsys.readouterr().err
  assert not (tmp_path / "out.tif").exists()
  assert predict.main(args + ["--lonlat", "7.4,46.9"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out:
    assert out.crs is None and np.isfinite(out.read(1)).all()


def _bad_inputs(root):
  (root / "notes.tif").write_text("not a raster")
  write_geotiff(root / "two_bands.tif", landscape(32, 32)[:2], CRS, TRANSFORM)
  write_geotiff(root / "empty.tif", np.zeros((3, 32, 32), np.uint16), CRS, TRANSFORM, nodata=0)
  write_geotiff(root / "good.tif", landscape(32, 32), CRS, TRANSFORM)
  (root / "exists.tif").write_text("old")
  (root / "a_file").write_text("")
  return {
      "missing": ([str(root / "missing.tif")], "missing.tif: no such file"),
      "not a raster": ([str(root / "notes.tif")], "notes.tif: not a readable raster"),
      "too few bands": ([str(root / "two_bands.tif")], "two_bands.tif: has 2 band(s)"),
      "all nodata": ([str(root / "empty.tif")], "empty.tif: every pixel is nodata"),
      "output exists": ([str(root / "good.tif"), "--out", str(root / "exists.tif")],
                        "exists.tif: output exists"),
      "unwritable output": ([str(root / "good.tif"), "--out", str(root / "a_file" / "o.tif")],
                            "o.tif: cannot write there"),
      "missing model": ([str(root / "good.tif"), "--model", str(root / "nope")],
                        "nope: no such model"),
  }


@pytest.mark.parametrize("case", ["missing", "not a raster", "too few bands", "all nodata",
                                  "output exists", "unwritable output", "missing model"])
def test_bad_input_fails_cleanly(case, tmp_path, satclip_model, capsys):
  args, message = _bad_inputs(tmp_path)[case]
  out = tmp_path / "out.tif"
  defaults = {"--out": str(out), "--model": str(satclip_model)}
  for flag, value in defaults.items():
    if flag not in args:
      args += [flag, value]
  before = sorted(p.name for p in tmp_path.iterdir())
  assert predict.main(args + ["--quiet"]) == 1
  assert message in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
  if case == "output exists":
    assert (tmp_path / "exists.tif").read_text() == "old"


def test_original_checkpoint_and_imported_model_predict_the_same(tmp_path):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_reference as ref
  from nirgan_jax.infer import import_torch

  torch.manual_seed(0)
  module = ref.NIRGANModule(ngf=8, n_blocks=2, ndf=8, n_layers=2)
  ref.randomize_(module, torch.Generator().manual_seed(1))
  ckpt = tmp_path / "nirgan.ckpt"
  torch.save({"state_dict": module.state_dict()}, ckpt)
  assert import_torch.main(["nirgan", str(ckpt), "--out", str(tmp_path / "imported")]) == 0
  write_geotiff(tmp_path / "in.tif", landscape(96, 160), CRS, TRANSFORM)
  outputs = []
  for model in (ckpt, tmp_path / "imported"):
    out = tmp_path / f"{model.stem}_out.tif"
    assert predict.main([str(tmp_path / "in.tif"), "--model", str(model), "--out", str(out),
                         "--tile", "64", "--overlap", "16", "--quiet"]) == 0
    with rasterio.open(out) as src:
      outputs.append(src.read(1))
  np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("flags, message", [
    (["--scale", "0"], "--scale must be > 0"),
    (["--batch_size", "0"], "--batch_size must be > 0"),
    (["--match_band", "0"], "--match_band must be > 0"),
    (["--tile", "250"], "--tile 250 and --overlap 32 must be multiples of 4"),
    (["--overlap", "30"], "--tile 256 and --overlap 30 must be multiples of 4"),
    (["--bands", "0,1,2"], "--bands needs 3 indices >= 1"),
])
def test_bad_arguments_are_refused_before_any_work(flags, message, tmp_path, capsys):
  write_geotiff(tmp_path / "in.tif", landscape(32, 32), CRS, TRANSFORM)
  before = sorted(p.name for p in tmp_path.iterdir())
  # The model does not exist: the arguments are refused before it is even looked for.
  args = [str(tmp_path / "in.tif"), "--model", str(tmp_path / "nope"), "--out",
          str(tmp_path / "out.tif"), "--quiet"]
  assert predict.main(args + flags) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_inputs_with_the_same_name_are_refused(tmp_path, capsys):
  for folder in ("a", "b"):
    (tmp_path / folder).mkdir()
    write_geotiff(tmp_path / folder / "scene.tif", landscape(32, 32), CRS, TRANSFORM)
  args = [str(tmp_path / "a"), str(tmp_path / "b" / "scene.tif"), "--model",
          str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--quiet"]
  assert predict.main(args) == 2
  err = capsys.readouterr().err
  assert "a/scene.tif and " in err and "b/scene.tif would both be written to" in err
  assert not (tmp_path / "out").exists()


def test_nan_pixels_of_a_float_raster_are_nodata(tmp_path, satclip_model):
  data = landscape(64, 64).astype(np.float32) / 10_000
  data[:, 10:20, 30:50] = np.nan  # no nodata value declared: NaN alone marks it
  write_geotiff(tmp_path / "float.tif", data, CRS, TRANSFORM)
  assert predict.main([str(tmp_path / "float.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "out.tif"), "--quiet"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out:
    nir = out.read(1)
  assert np.isnan(nir[10:20, 30:50]).all()
  nir[10:20, 30:50] = 0
  assert np.isfinite(nir).all()
  data[:] = np.nan
  write_geotiff(tmp_path / "all_nan.tif", data, CRS, TRANSFORM)
  assert predict.main([str(tmp_path / "all_nan.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "out2.tif"), "--quiet"]) == 1
  assert not (tmp_path / "out2.tif").exists()


def _rgbn(tmp_path, model, name, data, *flags, gdal_scale_offset=None):
  """predict's float32 RGBN of ``data`` written as ``name``, optionally declaring GDAL's
  per-band scale and offset."""
  write_geotiff(tmp_path / name, data, CRS, TRANSFORM)
  if gdal_scale_offset is not None:
    with rasterio.open(tmp_path / name, "r+") as dst:
      dst.scales = (gdal_scale_offset[0],) * dst.count
      dst.offsets = (gdal_scale_offset[1],) * dst.count
  out = tmp_path / f"{name}_rgbn.tif"
  assert predict.main([str(tmp_path / name), "--model", str(model), "--out", str(out),
                       "--output", "rgbn", "--quiet", *flags]) == 0
  with rasterio.open(out) as src:
    return src.read()


def test_l2a_offset_from_gdal_metadata_or_offset_flag(tmp_path):
  """Sentinel-2 L2A of processing baseline 04.00 and later: DN = 10000 reflectance + 1000,
  which GDAL declares as band scale 1e-4 and offset -0.1. The model keeps absolute brightness
  (its radiometry path), so an ignored offset shows in the NIR as well as in the RGB."""
  model = save_tiny_model(tmp_path / "model", radiometry_depth=2)
  reflectance_dn = landscape(64, 64, seed=5)
  expected = _rgbn(tmp_path, model, "plain.tif", reflectance_dn)
  l2a = reflectance_dn + np.uint16(1000)
  from_metadata = _rgbn(tmp_path, model, "l2a_meta.tif", l2a, gdal_scale_offset=(1e-4, -0.1))
  from_flag = _rgbn(tmp_path, model, "l2a.tif", l2a, "--offset", "1000")
  np.testing.assert_allclose(from_metadata, expected, atol=1e-6)
  np.testing.assert_allclose(from_flag, expected, atol=1e-6)
  # A given --scale or --offset overrides the metadata: here scale 10000 and offset 0, which
  # reads every pixel 0.1 too bright.
  ignored = _rgbn(tmp_path, model, "l2a_meta.tif", l2a, "--scale", "10000", "--overwrite",
                  gdal_scale_offset=(1e-4, -0.1))
  np.testing.assert_allclose(ignored[:3] - expected[:3], 0.1, atol=1e-6)
  assert np.abs(ignored[3] - expected[3]).max() > 1e-3


def test_a_gdal_scale_of_zero_is_refused(tmp_path, satclip_model, capsys):
  write_geotiff(tmp_path / "in.tif", landscape(32, 32), CRS, TRANSFORM)
  with rasterio.open(tmp_path / "in.tif", "r+") as dst:
    dst.scales = (0.0, 1.0, 1.0)
  assert predict.main([str(tmp_path / "in.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "out.tif"), "--quiet"]) == 1
  assert "declare GDAL scales [0.0, 1.0, 1.0]" in capsys.readouterr().err
  assert not (tmp_path / "out.tif").exists()


@pytest.fixture
def http_server(tmp_path, monkeypatch):
  """A loopback HTTP server of ``tmp_path / "served"`` that answers byte ranges."""
  for proxy in range_server.PROXY_VARIABLES:
    monkeypatch.delenv(proxy, raising=False)
  served = tmp_path / "served"
  served.mkdir()
  with range_server.serving(served) as (url, log):
    yield url, served, log


def test_a_cog_over_http_is_read_in_byte_ranges(tmp_path, satclip_model, http_server):
  url, served, requests = http_server
  local = tmp_path / "scene.tif"
  write_geotiff(local, landscape(512, 512, seed=6), CRS, TRANSFORM)
  rasterio.shutil.copy(local, served / "scene.tif", driver="COG", blocksize=128,
                       compress="deflate")
  size = (served / "scene.tif").stat().st_size
  flags = ["--model", str(satclip_model), "--output", "rgbn", "--quiet"]
  assert predict.main([str(served / "scene.tif"), "--out", str(tmp_path / "local.tif"),
                       *flags]) == 0
  assert predict.main([f"{url}/scene.tif", "--out", str(tmp_path / "remote.tif"), *flags]) == 0
  with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "remote.tif") as b:
    np.testing.assert_array_equal(a.read(), b.read())
    assert b.crs == a.crs and b.transform == a.transform
  scene = [(header, sent) for path, header, sent in requests if path == "/scene.tif"]
  # Opened from its header's bytes, then read in ranges (GDAL merges neighbouring tiles):
  # never the whole file in one answer, and no more than two passes over it (check + predict).
  assert len(scene) > 2 and all(header is not None for header, _ in scene)
  assert scene[0][1] < size / 4 and max(sent for _, sent in scene) < size
  assert sum(sent for _, sent in scene) < 2.5 * size


def test_remote_urls_map_to_gdal_virtual_file_systems():
  assert geotiff.remote_path("gs://b/k/x.tif") == "/vsigs/b/k/x.tif"
  assert geotiff.remote_path("s3://b/x.tif") == "/vsis3/b/x.tif"
  assert geotiff.remote_path("https://h/x.tif") == "/vsicurl/https://h/x.tif"
  assert geotiff.remote_path("/vsiaz/c/x.tif") == "/vsiaz/c/x.tif"
  assert geotiff.remote_path("scenes/x.tif") is None


def test_creation_options_reach_the_output(tmp_path, satclip_model, capsys):
  write_geotiff(tmp_path / "in.tif", landscape(64, 64), CRS, TRANSFORM)
  flags = ["--model", str(satclip_model), "--quiet", "--co", "COMPRESS=LZW"]
  assert predict.main([str(tmp_path / "in.tif"), "--out", str(tmp_path / "out.tif"),
                       *flags, "--co", "blockxsize=32", "--co", "BLOCKYSIZE=32"]) == 0
  assert predict.main([str(tmp_path / "in.tif"), "--out", str(tmp_path / "cog.tif"), *flags,
                       "--cog"]) == 0
  with rasterio.open(tmp_path / "out.tif") as out, rasterio.open(tmp_path / "cog.tif") as cog:
    assert out.compression.name == "lzw" and out.block_shapes[0] == (32, 32)
    assert cog.compression.name == "lzw"
    assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
  assert predict.main([str(tmp_path / "in.tif"), "--out", str(tmp_path / "bad.tif"),
                       "--model", str(satclip_model), "--co", "COMPRESS"]) == 2
  assert "--co 'COMPRESS': expected KEY=VALUE" in capsys.readouterr().err
  assert not (tmp_path / "bad.tif").exists()


def test_preview_shows_rgb_predicted_nir_and_ndvi(tmp_path, satclip_model, capsys):
  write_geotiff(tmp_path / "a.tif", landscape(96, 160, seed=7), CRS, TRANSFORM)
  write_geotiff(tmp_path / "b.tif", landscape(64, 64, seed=8), CRS, TRANSFORM)
  assert predict.main([str(tmp_path / "a.tif"), "--model", str(satclip_model), "--out",
                       str(tmp_path / "a_nir.tif"), "--preview", str(tmp_path / "a.png"),
                       "--quiet"]) == 0
  with Image.open(tmp_path / "a.png") as png:
    assert png.format == "PNG" and png.width > 2 * png.height  # three panels side by side
  assert predict.main([str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--model",
                       str(satclip_model), "--out", str(tmp_path / "out"), "--preview",
                       str(tmp_path / "looks"), "--quiet"]) == 0
  assert sorted(p.name for p in (tmp_path / "looks").iterdir()) == ["a_preview.png",
                                                                    "b_preview.png"]
  capsys.readouterr()
  assert predict.main([str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--model",
                       str(satclip_model), "--out", str(tmp_path / "out2"), "--preview",
                       str(tmp_path / "one.png"), "--quiet"]) == 2
  assert "--preview" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_sigterm_leaves_no_partial_output(tmp_path, satclip_model):
  (tmp_path / "in").mkdir()
  write_geotiff(tmp_path / "in" / "big.tif", landscape(768, 768), CRS, TRANSFORM)
  out = tmp_path / "out"
  process = subprocess.Popen(
      [sys.executable, "-m", "nirgan_jax.predict", str(tmp_path / "in" / "big.tif"), "--model",
       str(satclip_model), "--out", str(out / "big_nir.tif"), "--tile", "64", "--overlap", "8",
       "--batch_size", "1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  deadline = time.monotonic() + 300
  while process.poll() is None and time.monotonic() < deadline:
    if out.is_dir() and any(p.name.startswith(".big_nir.tif.") for p in out.iterdir()):
      break  # predicting: its temporary output exists
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 143, output[-2000:]
  assert "stopped by SIGTERM" in output and "Traceback" not in output
  assert list(out.iterdir()) == []
