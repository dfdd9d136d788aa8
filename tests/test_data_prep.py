"""data_prep builders: fixtures in the real layouts -> ArrayRecord -> tfds.data_source."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tensorflow_datasets as tfds

from data_prep import build, raster, splits
from data_prep.demo import demo_patch
from data_prep.report import REPORT_JSON, REPORT_TEXT
from nirgan_jax import contract
from nirgan_jax.errors import NirganError

import data_fixtures
import range_server
from conftest import REPO, TEST_DATA

S2_SAMPLE = TEST_DATA / "s2_100k_sample"


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _read_split(data_dir, name, split):
  source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
  return [source[i] for i in range(len(source))]


def _read_all(builder):
  name = f"{builder.name}/{builder.builder_config.name}"
  data_dir = Path(builder.data_dir).parents[2]
  return {split: _read_split(data_dir, name, split) for split in builder.info.splits}


def test_location_split_is_deterministic_and_groups_places():
  assert splits.location_split(13.40, 52.50) == splits.location_split(13.40, 52.50)
  assert splits.location_split(13.401, 52.501) == splits.location_split(13.402, 52.502)
  rng = np.random.default_rng(0)
  counts = {s: 0 for s in splits.SPLITS}
  for lon, lat in zip(rng.uniform(-180, 180, 4000), rng.uniform(-60, 70, 4000), strict=True):
    counts[splits.location_split(lon, lat)] += 1
  assert counts["train"] / 4000 == pytest.approx(0.8, abs=0.03)
  assert counts["validation"] / 4000 == pytest.approx(0.1, abs=0.02)
  with pytest.raises(ValueError, match="non-finite"):
    splits.location_split(float("nan"), 0.0)


def test_s2_100k_fixture_builds_with_values_centres_splits_and_report(tmp_path):
  fixture = data_fixtures.write_s2_100k(tmp_path / "raw", size=32)
  builder, report = build.build("s2_100k", tmp_path / "tfds", fixture.root, patch_size=16)
  assert builder.builder_config.name == "default_p16"
  examples = _read_all(builder)

  by_id = {_text(ex["source_id"]): (split, ex) for split, exs in examples.items() for ex in exs}
  # 2 good files x 4 windows of 16 px, plus the valid bottom half of the nodata file.
  assert set(by_id) == {f"{name}:{row},{col}" for name in fixture.good
                        for row in (0, 16) for col in (0, 16)} | {
                            "patch_4.tif:16,0", "patch_4.tif:16,16"}
  for name, dn in fixture.good.items():
    file_splits = set()
    for row in (0, 16):
      for col in (0, 16):
        split, ex = by_id[f"{name}:{row},{col}"]
        file_splits.add(split)
        assert ex["rgb"].shape == (16, 16, 3) and ex["rgb"].dtype == np.uint16
        assert ex["nir"].shape == (16, 16, 1) and ex["nir"].dtype == np.uint16
        assert ex["valid"].shape == (16, 16, 1) and ex["valid"].dtype == np.uint8
        assert ex["valid"].all()
        window = dn[:, row:row + 16, col:col + 16]
        # RGB = B04, B03, B02 and NIR = B08 (1-based), stored as DN (reflectance x 10000).
        np.testing.assert_array_equal(ex["rgb"], window[[3, 2, 1]].transpose(1, 2, 0))
        np.testing.assert_array_equal(ex["nir"][..., 0], window[7])
        x0, y0 = fixture.origins[name]
        lon, lat = data_fixtures.utm_to_lonlat(fixture.crs, x0 + (col + 8) * 10.0,
                                               y0 - (row + 8) * 10.0)
        assert ex["lon"] == pytest.approx(lon, abs=1e-7)
        assert ex["lat"] == pytest.approx(lat, abs=1e-7)
        assert _text(ex["sensor"]) == "sentinel2" and _text(ex["date"]) == ""
        assert ex["gsd_m"] == pytest.approx(10.0)
    assert len(file_splits) == 1  # one place, one split

  assert report["total_written"] == 10
  reasons = {Path(s["source"]).name: s["reason"] for s in report["skipped"]}
  assert reasons["patch_2.tif"].startswith(("unreadable pixels", "not a readable raster"))
  assert reasons["patch_3.tif"] == "has 4 bands, expected 12"
  for window in ("0,0", "0,16"):  # the top half of patch_4 is Sentinel-2 no-data (DN 0)
    assert reasons[f"patch_4.tif:{window}"] == "nodata/NaN share 100.0% exceeds 5.0%"
  assert reasons["patch_5.tif"] == "listed in index.csv but missing"
  assert reasons["index.csv:8"] == "bad coordinates '', 'nan'"
  assert len(reasons) == 6
  saved = json.loads((Path(builder.data_dir) / REPORT_JSON).read_text())
  assert saved == json.loads(json.dumps(report))
  assert "patch_3.tif: has 4 bands" in (Path(builder.data_dir) / REPORT_TEXT).read_text()


def test_s2_100k_boa_offset_config(tmp_path):
  fixture = data_fixtures.write_s2_100k(tmp_path / "raw", size=32)
  builder, _ = build.build("s2_100k", tmp_path / "tfds", fixture.root, config="boa_offset",
                           patch_size=32)
  ex = next(ex for exs in _read_all(builder).values() for ex in exs
            if _text(ex["source_id"]).startswith("patch_0.tif"))
  np.testing.assert_array_equal(ex["nir"][..., 0], fixture.good["patch_0.tif"][7] - 1000)


def test_real_s2_100k_sample_converts_exactly(tmp_path):
  builder, report = build.build("s2_100k", tmp_path / "tfds", S2_SAMPLE)
  assert report["total_written"] == 3 and report["total_skipped"] == 0
  with (S2_SAMPLE / "index.csv").open() as f:
    index = {row["fn"]: (float(row["lon"]), float(row["lat"])) for row in csv.DictReader(f)}
  examples = [ex for exs in _read_all(builder).values() for ex in exs]
  assert len(examples) == 3
  for ex in examples:
    name = _text(ex["source_id"]).split(":")[0]
    with rasterio.open(S2_SAMPLE / "images" / name) as src:
      bands = src.read([4, 3, 2, 8])
    # A few pixels have DN 0 (Sentinel-2's no-data) in some band: invalid, stored as 0.
    invalid = (bands == 0).any(axis=0)
    np.testing.assert_array_equal(ex["valid"][..., 0], ~invalid)
    bands = np.where(invalid, 0, bands)
    np.testing.assert_array_equal(ex["rgb"], bands[:3].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], bands[3])
    assert ex["lon"] == pytest.approx(index[name][0], abs=1e-4)
    assert ex["lat"] == pytest.approx(index[name][1], abs=1e-4)


def test_demo_dataset_is_plausible_and_deterministic(tmp_path):
  builder, report = build.build("nirgan_demo", tmp_path / "tfds", config="small")
  examples = [ex for exs in _read_all(builder).values() for ex in exs]
  assert report["total_written"] == len(examples) == 40
  assert set(builder.info.splits) == {"train", "validation", "test"}
  sensors = {_text(ex["sensor"]) for ex in examples}
  assert sensors == {"landsat8", "sentinel2", "spot6", "naip"}
  for ex in examples:
    assert ex["rgb"].shape == (64, 64, 3) and ex["nir"].dtype == np.uint16
    assert -180 <= ex["lon"] <= 180 and -90 <= ex["lat"] <= 90
  # Vegetation: dense crops and forest have high NDVI, water negative.
  patch = demo_patch(0, 0, 64)
  again = demo_patch(0, 0, 64)
  np.testing.assert_array_equal(patch.rgb, again.rgb)
  red, nir = patch.rgb[..., 0], patch.nir[..., 0]
  ndvi = (nir - red) / (nir + red)
  assert np.percentile(ndvi, 90) > 0.6 and ndvi.min() < 0
  assert patch.rgb.min() >= 0 and patch.nir.max() <= 1


def test_rebuild_is_safe_and_reuses(tmp_path, capsys):
  args = ["nirgan_demo", "--config", "small", "--data_dir", str(tmp_path / "tfds")]
  assert build.main(args) == 0
  first = capsys.readouterr().out
  assert '"total_written": 40' in first
  assert build.main(args) == 0
  assert "already built" in capsys.readouterr().out
  assert build.main(args + ["--overwrite"]) == 0
  assert '"total_written": 40' in capsys.readouterr().out


def test_record_compression_changes_the_shards_not_the_examples(tmp_path, capsys):
  built, shard_bytes = {}, {}
  for compression in build.RECORD_COMPRESSIONS:
    data_dir = tmp_path / compression
    assert build.main(["nirgan_demo", "--config", "small", "--data_dir", str(data_dir),
                       "--record_compression", compression]) == 0
    assert f"records compressed with {compression}" in capsys.readouterr().out
    builder = tfds.builder("nirgan_demo/small", data_dir=str(data_dir))
    built[compression] = _read_all(builder)
    shard_bytes[compression] = sum(p.stat().st_size
                                   for p in Path(builder.data_dir).glob("*.array_record-*"))
  for compression in ("snappy", "uncompressed"):
    for split, examples in built["zstd"].items():
      assert len(examples) == len(built[compression][split]) > 0
      for a, b in zip(examples, built[compression][split], strict=True):
        for key in a:
          np.testing.assert_array_equal(a[key], b[key], err_msg=f"{compression} {key}")
  assert shard_bytes["zstd"] < shard_bytes["snappy"] < shard_bytes["uncompressed"]
  # With no flag, the shards are snappy's: each says how its records were written.
  default_dir = tmp_path / "default"
  assert build.main(["nirgan_demo", "--config", "small", "--data_dir", str(default_dir)]) == 0
  assert f"records compressed with {build.DEFAULT_RECORD_COMPRESSION}" in capsys.readouterr().out
  from array_record.python import array_record_module
  shard = next(Path(tfds.builder("nirgan_demo/small", data_dir=str(default_dir)).data_dir)
               .glob("*.array_record-*"))
  reader = array_record_module.ArrayRecordReader(str(shard))
  assert "snappy" in reader.writer_options_string()
  reader.close()
  # TFDS's own writer is back after each build.
  assert tfds.core.file_adapters.ADAPTER_FOR_FORMAT[
      tfds.core.file_adapters.FileFormat.ARRAY_RECORD].__name__ == "ArrayRecordFileAdapter"
  with pytest.raises(SystemExit) as refused:  # argparse's choices
    build.main(["nirgan_demo", "--data_dir", str(tmp_path / "x"), "--record_compression", "lz4"])
  assert refused.value.code == 2 and not (tmp_path / "x").exists()


def test_cli_options_override_config_fields(tmp_path, capsys):
  args = ["nirgan_demo", "--config", "small", "--data_dir", str(tmp_path / "tfds"),
          "--option", "num_examples=12", "--option", "seed=3"]
  assert build.main(args) == 0
  assert '"total_written": 12' in capsys.readouterr().out
  assert (tmp_path / "tfds" / "nirgan_demo" / "small_num_examples12_seed3").is_dir()
  for option in ("colour=red", "name=x", "seed=three"):
    assert build.main(args[:5] + ["--option", option]) == 2  # refused before any work
    assert f"--option '{option}'" in capsys.readouterr().err


def test_cli_errors_name_the_problem(tmp_path, capsys):
  assert build.main(["s2_100k", "--data_dir", str(tmp_path)]) == 2
  assert "needs --manual_dir" in capsys.readouterr().err
  assert build.main(["s2_100k", "--data_dir", str(tmp_path / "o"),
                     "--manual_dir", str(tmp_path / "absent")]) == 1
  assert "absent" in capsys.readouterr().err
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "README").write_text("not the archive")
  assert build.main(["s2_100k", "--data_dir", str(tmp_path / "o"),
                     "--manual_dir", str(tmp_path / "raw")]) == 1
  assert "index.csv: missing" in capsys.readouterr().err


def test_killed_build_leaves_nothing_that_opens(tmp_path):
  """TFDS writes into an ``incomplete.*`` directory and renames it only at the end."""
  data_dir = tmp_path / "tfds"
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen([sys.executable, "-m", "data_prep.build", "nirgan_demo",
                           "--data_dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and not list(data_dir.glob("nirgan_demo/default/incomplete*")):
    time.sleep(0.2)
  assert list(data_dir.glob("nirgan_demo/default/incomplete*")), "build never started writing"
  time.sleep(2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (data_dir / "nirgan_demo" / "default" / "1.0.0").exists()
  with pytest.raises(KeyError, match="has not been generated"):
    tfds.data_source("nirgan_demo/default", split="train", data_dir=str(data_dir),
                     download=False)


@pytest.mark.parametrize("source", ["landsat8", "s2_100k"])
def test_nodata_pixels_are_stored_as_zero_with_the_validity_mask(tmp_path, source):
  """NaN, the file's nodata value (Landsat) and DN 0 (Sentinel-2) are invalid; a patch with a
  few of them is kept, with valid 0 exactly there and rgb/nir 0 (never a target)."""
  if source == "landsat8":
    fixture = data_fixtures.write_landsat_with_holes(tmp_path / "raw")
    reflectance = np.nan_to_num(fixture.data.astype(np.float64))
    expected = np.where(fixture.invalid, 0, np.rint(reflectance * 10000))
  else:
    fixture = data_fixtures.write_s2_100k_with_holes(tmp_path / "raw")
    expected = np.where(fixture.invalid, 0, fixture.data[[3, 2, 1, 7]])
  builder, report = build.build(source, tmp_path / "tfds", fixture.root, patch_size=32)
  assert report["total_written"] == 1 and report["total_skipped"] == 0
  (ex,) = [ex for exs in _read_all(builder).values() for ex in exs]
  assert ex["valid"].dtype == np.uint8 and ex["valid"].shape == (32, 32, 1)
  np.testing.assert_array_equal(ex["valid"][..., 0], ~fixture.invalid)
  np.testing.assert_array_equal(ex["rgb"], expected[:3].transpose(1, 2, 0))
  np.testing.assert_array_equal(ex["nir"][..., 0], expected[3])


def test_builds_are_versioned_by_the_data_contract(tmp_path):
  builder, _ = build.build("nirgan_demo", tmp_path / "tfds", config="small",
                           extra={"num_examples": 5})
  assert str(builder.info.version) == contract.VERSION != "1.0.0"
  assert Path(builder.data_dir).name == contract.VERSION
  assert contract.VALID in builder.info.features


def test_tiling_centres_a_thin_left_over_instead_of_adding_a_near_duplicate():
  assert raster.tile_starts(64, 32, 32) == [0, 32]  # exact: unchanged
  assert raster.tile_starts(1054, 1024, 1024) == [15]  # a WorldStrat scene: one patch
  assert raster.tile_starts(520, 512, 512) == [4]  # a SEN2NAIP sample
  assert raster.tile_starts(264, 256, 256) == [4]  # an SSL4EO-L scene
  assert raster.tile_starts(600, 256, 256) == [0, 256, 344]  # 88 px left: a window of its own
  assert raster.tile_starts(100, 128, 128) == []


def test_default_patch_sizes_fit_one_sample_of_each_archive():
  """SEN2NAIP samples are 520 px (NAIP) / 130 px (S2); WorldStrat scenes ~1,054 / ~158 px."""
  sizes = {(cls.name, c.name): c.patch_size for cls in build.BUILDERS.values()
           for c in cls.BUILDER_CONFIGS}
  assert sizes[("sen2naip", "hr")] == 512 and sizes[("sen2naip", "lr")] == 128
  assert sizes[("worldstrat", "hr")] == 1024 and sizes[("worldstrat", "lr")] == 128
  assert sizes[("s2_100k", "default")] == 256 and sizes[("landsat8", "rgbn_toa")] == 256
  assert len(raster.tile_starts(520, 512, 512)) == len(raster.tile_starts(130, 128, 128)) == 1
  assert len(raster.tile_starts(1054, 1024, 1024)) == len(raster.tile_starts(158, 128, 128)) == 1


def test_stored_reflectance_rounds_and_clips():
  values = np.array([-0.01, 0.0, 0.12345, 1.0, 7.0])
  np.testing.assert_array_equal(contract.to_stored_reflectance(values),
                                [0, 0, 1234, 10000, 65535])
  assert contract.sensor_id("sentinel2") == 1


def _by_source(builder):
  """source file -> list of (split, example), over all splits."""
  out = {}
  for split, exs in _read_all(builder).items():
    for ex in exs:
      out.setdefault(_text(ex["source_id"]).rsplit(":", 1)[0], []).append((split, ex))
  return out


def test_landsat8_rgbn_toa_folder(tmp_path):
  fixture = data_fixtures.write_landsat_rgbn(tmp_path / "raw")
  builder, report = build.build("landsat8", tmp_path / "tfds", fixture.root, patch_size=32)
  found = _by_source(builder)
  assert set(found) == set(fixture.good)
  for name, data in fixture.good.items():
    (_, ex), = found[name]
    expected = np.rint(data.astype(np.float64) * 10000)
    np.testing.assert_array_equal(ex["rgb"], expected[:3].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], expected[3])
    assert (ex["lon"], ex["lat"]) == pytest.approx(fixture.centres[name], abs=1e-7)
    assert ex["gsd_m"] == pytest.approx(30.0) and _text(ex["sensor"]) == "landsat8"
  reasons = {Path(s["source"]).name.split(":")[0]: s["reason"] for s in report["skipped"]}
  assert reasons["three_bands.tif"] == "has 3 bands, expected 4"
  assert reasons["not_a_raster.tif"].startswith("not a readable raster")
  assert reasons["half_nan.tif"] == "nodata/NaN share 50.0% exceeds 5.0%"


@pytest.mark.parametrize("kind,top", [("toa", 0.4), ("sr", 0.3)])
def test_landsat8_ssl4eo_l(tmp_path, kind, top):
  fixture = data_fixtures.write_ssl4eo_l(tmp_path / "raw", kind)
  builder, report = build.build("landsat8", tmp_path / "tfds", fixture.root,
                                config=f"ssl4eo_{kind}", patch_size=16)
  found = _by_source(builder)
  assert set(found) == set(fixture.good)
  for name, u8 in fixture.good.items():
    assert len(found[name]) == 4
    split, ex = next((s, e) for s, e in found[name] if _text(e["source_id"]).endswith(":0,0"))
    expected = np.rint(u8[[3, 2, 1, 4], :16, :16] / 256.0 * top * 10000).astype(np.uint16)
    np.testing.assert_array_equal(ex["rgb"], expected[:3].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], expected[3])
    assert _text(ex["date"]) == f"{name[-8:-4]}-{name[-4:-2]}-{name[-2:]}"
  seasons = {split for name in fixture.good if name.startswith("0000001")
             for split, _ in found[name]}
  assert len(seasons) == 1  # both seasons of a location in one split
  reasons = {s["source"]: s["reason"] for s in report["skipped"]}
  assert any("nodata/NaN share 100.0%" in r for s, r in reasons.items() if "0000002" in s)
  count = 11 if kind == "toa" else 7
  assert any(r == f"has {count - 2} bands, expected {count}" for r in reasons.values())


@pytest.mark.parametrize("benchmark", [False, True])
def test_landsat8_ssl4eo_l_scenes_at_their_real_size_give_one_centred_patch(tmp_path, benchmark):
  """SSL4EO-L's scenes are 264 px, in the pre-training set's folder or the benchmark set's: the
  recipe's default 256 px patch is the centred one."""
  fixture = data_fixtures.write_ssl4eo_l(tmp_path / "raw", "toa", size=264, benchmark=benchmark)
  builder, _ = build.build("landsat8", tmp_path / "tfds", fixture.root, config="ssl4eo_toa")
  assert builder.builder_config.patch_size == 256
  found = _by_source(builder)
  assert set(found) == set(fixture.good)
  for name, u8 in fixture.good.items():
    [(_, ex)] = found[name]
    assert _text(ex["source_id"]).endswith(":4,4")
    expected = np.rint(u8[[3, 2, 1, 4], 4:260, 4:260] / 256.0 * 0.4 * 10000).astype(np.uint16)
    np.testing.assert_array_equal(ex["rgb"], expected[:3].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], expected[3])


def test_landsat8_ssl4eo_l_without_its_folder_is_refused_naming_both(tmp_path):
  (tmp_path / "raw" / "ssl4eo_l_oli_tirs_toa").mkdir(parents=True)  # TOA, not SR
  with pytest.raises(FileNotFoundError, match=r"holds neither ssl4eo_l_oli_sr nor "
                                              r"ssl4eo_l_oli_sr_benchmark"):
    build.build("landsat8", tmp_path / "tfds", tmp_path / "raw", config="ssl4eo_sr")


@pytest.mark.parametrize("hr_folder", ["12bit", ""])
def test_worldstrat_hr(tmp_path, hr_folder):
  fixture = data_fixtures.write_worldstrat(tmp_path / "raw", hr_folder=hr_folder)
  builder, report = build.build("worldstrat", tmp_path / "tfds", fixture.root, config="hr",
                                patch_size=32)
  examples = _read_all(builder)
  assert set(examples) == {"train", "validation"}  # from the archive's split file ("val")
  found = _by_source(builder)
  assert set(found) == {f"{aoi}/{aoi}_ps.tiff" for aoi in fixture.hr}
  for aoi, dn in fixture.hr.items():
    items = dict((_text(ex["source_id"]).rsplit(":", 1)[1], (split, ex))
                 for split, ex in found[f"{aoi}/{aoi}_ps.tiff"])
    assert len(items) == 4
    split, ex = items["32,0"]  # bottom-left window of the 64 px image
    assert split == ("train" if aoi.startswith("Landcover") else "validation")
    np.testing.assert_array_equal(ex["rgb"], dn[:3, 32:, :32].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], dn[3, 32:, :32])
    lon, lat = fixture.aoi_lonlat[aoi]
    # 16 px (24 m) south and 16 px west of the AOI point.
    assert ex["lat"] == pytest.approx(lat - 24.0 / 110_574.0, abs=1e-9)
    assert ex["lon"] == pytest.approx(lon - 24.0 / (111_320.0 * np.cos(np.radians(lat))),
                                      abs=1e-9)
    assert ex["gsd_m"] == pytest.approx(1.5) and _text(ex["sensor"]) == "spot6"
    assert _text(ex["date"]) == "2019-06-01"
  reasons = {Path(s["source"]).name: s["reason"] for s in report["skipped"]}
  assert reasons == {"Orphan-1_ps.tiff": "AOI 'Orphan-1' has no coordinates in metadata.csv"}


def test_worldstrat_lr(tmp_path):
  fixture = data_fixtures.write_worldstrat(tmp_path / "raw")
  builder, report = build.build("worldstrat", tmp_path / "tfds", fixture.root, config="lr",
                                patch_size=8, stride=8)
  found = _by_source(builder)
  assert set(found) == set(fixture.lr)
  for name, data in fixture.lr.items():
    split, ex = next((s, e) for s, e in found[name] if _text(e["source_id"]).endswith(":0,0"))
    bands = data[[3, 2, 1, 7], :8, :8]
    expected = bands if bands.dtype == np.uint16 else np.rint(bands.astype(np.float64) * 10000)
    np.testing.assert_array_equal(ex["rgb"], expected[:3].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], expected[3])
    x, y = fixture.lr_transforms[name] @ (4, 4)
    assert (ex["lon"], ex["lat"]) == pytest.approx((x, y), abs=1e-9)
    assert _text(ex["date"]) == f"2019-0{name.split('-')[-2]}-15"
    assert ex["gsd_m"] == pytest.approx(9.5e-5 * 111_320 * np.cos(np.radians(ex["lat"])),
                                        rel=1e-3)
  reasons = {Path(s["source"]).name: s["reason"] for s in report["skipped"]}
  assert reasons["Landcover-773616-3-L2A_data.tiff"].startswith(
      ("unreadable pixels", "not a readable raster"))
  assert reasons["Landcover-773616-4-L2A_data.tiff"] == "has 13 bands, expected 12"


def _check_sen2naip(builder, fixture, resolution, patch):
  found = _by_source(builder)
  ids = {key.rsplit("/", 1)[0].split(":")[-1] if ".taco" in key else key.rsplit("/", 1)[0]
         for key in found}
  assert ids == set(fixture.samples)
  for sample_id, sample in fixture.samples.items():
    key = next(k for k in found if k.rsplit("/", 1)[0].endswith(sample_id))
    assert key.endswith(f"/{resolution}")
    split, ex = found[key][-1]
    row, col = map(int, _text(ex["source_id"]).rsplit(":", 1)[1].split(","))
    assert split == ("validation" if sample["split"] == "val" else sample["split"])
    window = sample[resolution][:, row:row + patch, col:col + patch]
    np.testing.assert_array_equal(ex["rgb"], window[:3].transpose(1, 2, 0))
    np.testing.assert_array_equal(ex["nir"][..., 0], window[3])
    transform = sample[f"{resolution}_transform"] * rasterio.Affine.translation(
        col + patch / 2, row + patch / 2)
    lon, lat = data_fixtures.utm_to_lonlat(sample.get("crs", fixture.crs), transform.c,
                                           transform.f)
    assert (ex["lon"], ex["lat"]) == pytest.approx((lon, lat), abs=1e-7)
    assert _text(ex["sensor"]) == ("naip" if resolution == "hr" else "sentinel2")
    assert ex["gsd_m"] == pytest.approx(2.5 if resolution == "hr" else 10.0)
    if "date" in sample:
      assert _text(ex["date"]) == sample["date"]


def _build_sen2naip_and_check_broken(tmp_path, fixture, resolution, patch) -> dict:
  """Builds ``fixture``, checks its good samples and that each broken input was skipped for its
  reason; returns the build report."""
  builder, report = build.build("sen2naip", tmp_path / "tfds", fixture.root, config=resolution,
                                patch_size=patch)
  _check_sen2naip(builder, fixture, resolution, patch)
  reasons = {Path(s["source"]).name: s["reason"] for s in report["skipped"]}
  for name, reason in fixture.broken.items():
    assert reasons[name].startswith(reason)
  return report


@pytest.mark.parametrize("resolution,patch", [("hr", 32), ("lr", 16)])
def test_sen2naip_taco_v1_as_the_legacy_official_reader_reads_it(tmp_path, resolution, patch):
  fixture = data_fixtures.copy_sen2naip_taco_v1(tmp_path / "raw")
  report = _build_sen2naip_and_check_broken(tmp_path, fixture, resolution, patch)
  assert f"{fixture.root / 'sen2naipv2-crosssensor.taco'}: TACO v1, 3 samples" in report["notes"]
  if resolution == "hr":  # the test sample's NAIP image has a 40 x 24 px no-data corner
    skipped = {s["source"]: s["reason"] for s in report["skipped"]}
    assert skipped["sen2naipv2-crosssensor.taco:ROI_00003/hr:0,0"] == (
        "nodata/NaN share 75.0% exceeds 5.0%")


@pytest.mark.parametrize("resolution,patch", [("hr", 32), ("lr", 16)])
def test_sen2naip_taco_v2_written_by_tacotoolbox(tmp_path, resolution, patch):
  fixture = data_fixtures.write_sen2naip_tacozip(tmp_path / "raw")
  report = _build_sen2naip_and_check_broken(tmp_path, fixture, resolution, patch)
  assert {Path(s["source"]).name for s in report["skipped"]} == set(fixture.broken)
  assert f"{fixture.root / 'sen2naip-mini.tacozip'}: TACO v2, 3 samples (tacoreader)" in (
      report["notes"])


def test_sen2naip_v1_and_v2_of_the_same_samples_give_identical_examples(tmp_path):
  """The vendored v1 file and a .tacozip that tacotoolbox writes from the same GeoTIFFs, split
  and dates build the same examples, field by field (the source ids name their files)."""
  (tmp_path / "v1").mkdir()
  v1 = tmp_path / "v1" / "sen2naip.taco"
  v1.write_bytes(data_fixtures.SEN2NAIP_V1.read_bytes())
  samples, files = data_fixtures.read_taco_v1_samples(v1)
  (tmp_path / "v2").mkdir()
  data_fixtures.write_taco_v2(tmp_path / "v2" / "sen2naip.tacozip", samples, files)
  for resolution, patch in (("hr", 64), ("lr", 16)):
    built = {}
    for version in ("v1", "v2"):
      builder, _ = build.build("sen2naip", tmp_path / f"tfds_{version}", tmp_path / version,
                               config=resolution, patch_size=patch)
      built[version] = _read_all(builder)
    assert set(built["v1"]) == set(built["v2"]) == {"train", "validation", "test"}
    for split, examples in built["v1"].items():
      by_id = {_text(e["source_id"]).split(":", 1)[1]: e for e in built["v2"][split]}
      assert len(examples) == len(by_id) > 0
      for a in examples:
        b = by_id[_text(a["source_id"]).split(":", 1)[1]]
        for key in a:
          if key != "source_id":
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split} {key}")


def test_sen2naip_a_remote_tacozip_is_read_in_place_and_builds_as_the_local_one(
    tmp_path, monkeypatch, capsys):
  """A .tacozip in a Cloud Storage bucket (a loopback server speaking its XML API): tacoreader
  reads the metadata and GDAL each GeoTIFF in byte ranges, and the build equals the local one,
  under the same name, with no manual_dir."""
  fixture = data_fixtures.write_sen2naip_tacozip(tmp_path / "raw")
  tacozip = fixture.root / "sen2naip-mini.tacozip"
  (tmp_path / "served" / "bucket").mkdir(parents=True)
  shutil.copy(tacozip, tmp_path / "served" / "bucket" / tacozip.name)
  (tmp_path / "local").mkdir()
  shutil.copy(tacozip, tmp_path / "local" / tacozip.name)
  local, _ = build.build("sen2naip", tmp_path / "tfds_local", tmp_path / "local", config="hr",
                         patch_size=32)
  for proxy in range_server.PROXY_VARIABLES:
    monkeypatch.delenv(proxy, raising=False)
  with range_server.serving(tmp_path / "served") as (url, requests):
    # The Cloud Storage endpoint of tacoreader's object store (obstore), then of GDAL.
    for name, value in {"GOOGLE_BASE_URL": url, "GOOGLE_SKIP_SIGNATURE": "true",
                        "GOOGLE_ALLOW_HTTP": "true", "CPL_GS_ENDPOINT": f"{url}/",
                        "GS_NO_SIGN_REQUEST": "YES"}.items():
      monkeypatch.setenv(name, value)
    assert build.main(["sen2naip", "--data_dir", str(tmp_path / "tfds_remote"), "--config",
                       "hr", "--patch_size", "32", "--remote",
                       f"gs://bucket/{tacozip.name}"]) == 0
    capsys.readouterr()
    assert build.main(["sen2naip", "--data_dir", str(tmp_path / "tfds_missing"), "--remote",
                       "gs://bucket/missing.tacozip"]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err
  assert err.startswith("error: gs://bucket/missing.tacozip: no usable sen2naip inputs"), err
  assert not (tmp_path / "tfds_missing").exists()
  remote = tfds.builder("sen2naip/hr_p32", data_dir=str(tmp_path / "tfds_remote"))
  assert remote.builder_config.name == local.builder_config.name == "hr_p32"
  built = {"local": _read_all(local), "remote": _read_all(remote)}
  assert set(built["local"]) == set(built["remote"]) == {"train", "validation", "test"}
  for split, examples in built["local"].items():
    assert len(examples) == len(built["remote"][split]) > 0
    for a, b in zip(examples, built["remote"][split], strict=True):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split} {key}")
  report = json.loads((Path(remote.data_dir) / REPORT_JSON).read_text())
  assert f"gs://bucket/{tacozip.name}: TACO v2, 3 samples (tacoreader)" in report["notes"]
  assert requests and all(header is not None for _, header, _ in requests)  # ranges only
  assert max(sent for _, _, sent in requests) < tacozip.stat().st_size


def test_reading_taco_v2_never_asks_duckdb_to_download_an_extension(tmp_path, monkeypatch):
  """tacoreader's own connection set-up runs ``INSTALL spatial`` (a download); a build replaces
  it with a plain connection while it reads."""
  from tacoreader.storage.base import TacoBackend

  from data_prep.sen2naip import read_taco_v2

  fixture = data_fixtures.write_sen2naip_tacozip(tmp_path / "raw")

  def downloads(self):
    raise AssertionError("tacoreader's DuckDB set-up (INSTALL spatial) was called")

  monkeypatch.setattr(TacoBackend, "_setup_duckdb_connection", downloads)
  rows = read_taco_v2(fixture.root / "sen2naip-mini.tacozip")
  assert sorted({(r["l0:id"], r["l1:id"]) for r in rows}) == [
      (f"ROI_000{i}", item) for i in range(3) for item in ("hr", "lr")]
  assert TacoBackend._setup_duckdb_connection is downloads  # put back afterwards


@pytest.mark.parametrize("module", ["pyarrow", "h5py", "tacoreader"])
def test_sen2naip_without_the_prep_extra_names_it(tmp_path, monkeypatch, module):
  write = {"pyarrow": data_fixtures.copy_sen2naip_taco_v1,  # Parquet footers
           "h5py": data_fixtures.write_sen2naip_mlstac,  # HDF5 samples
           "tacoreader": data_fixtures.write_sen2naip_tacozip}  # TACO v2
  fixture = write[module](tmp_path / "raw")
  monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
  with pytest.raises(NirganError, match=r"^reading SEN2NAIP needs .*: pip install "
                                        r"'nirgan-jax\[prep\]'$"):
    build.build("sen2naip", tmp_path / "tfds", fixture.root, config="lr", patch_size=16)
  assert not (tmp_path / "tfds" / "sen2naip").exists()


def test_the_builders_and_training_import_without_the_prep_extra():
  code = ("import sys; sys.modules['h5py'] = None; "
          "import data_prep.build, nirgan_jax.train.loop; print('imported')")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-3000:]


def test_corrupt_container_lengths_are_skipped_not_allocated(tmp_path):
  """A length field of 2**60 bytes is refused against the file size (it once reached
  f.read and raised MemoryError, aborting the build)."""
  from data_prep.sen2naip import SkipItem, read_mlstac_index

  fixture = data_fixtures.copy_sen2naip_taco_v1(tmp_path / "raw")
  good = (fixture.root / "sen2naipv2-crosssensor.taco").read_bytes()
  corrupt = bytearray(good)
  corrupt[10:18] = (2**60).to_bytes(8, "little")  # the footer length
  (fixture.root / "sen2naipv2-corrupt.taco").write_bytes(bytes(corrupt))
  _, report = build.build("sen2naip", tmp_path / "tfds", fixture.root, config="lr",
                          patch_size=16)
  reasons = {Path(s["source"]).name: s["reason"] for s in report["skipped"]}
  assert reasons["sen2naipv2-corrupt.taco"].startswith(
      "truncated or corrupt: the tortilla footer declares 1152921504606846976 bytes")
  assert report["total_written"] > 0  # the good containers were still built

  mlstac = tmp_path / "huge.mlstac"
  mlstac.write_bytes(b"#y" + (2**60).to_bytes(8, "little") + b"{}")
  with pytest.raises(SkipItem, match="the ML-STAC header declares"):
    read_mlstac_index(mlstac)


@pytest.mark.parametrize("resolution,patch", [("hr", 32), ("lr", 16)])
def test_sen2naip_mlstac(tmp_path, resolution, patch):
  fixture = data_fixtures.write_sen2naip_mlstac(tmp_path / "raw")
  builder, report = build.build("sen2naip", tmp_path / "tfds", fixture.root, config=resolution,
                                patch_size=patch)
  _check_sen2naip(builder, fixture, resolution, patch)
  reasons = {s["source"]: s["reason"] for s in report["skipped"]}
  assert reasons["train/dp_bad"].startswith("unreadable HDF5 sample")
  assert reasons["train/dp_lost"] == "datapoint dp_lost not in train.mlstac"


def test_metadata_literal_is_parsed_without_eval():
  from data_prep.sen2naip import parse_metadata_literal

  parsed = parse_metadata_literal(
      "{'hr_profile': {'crs': CRS.from_epsg(32614), 'transform': Affine(2.5, 0.0, 5.0, 0.0, "
      "-2.5, 9.0), 'width': 64, 'nodata': None, 'shape': (4, -64)}}")
  assert parsed["hr_profile"]["crs"].to_epsg() == 32614
  assert parsed["hr_profile"]["transform"].e == -2.5
  assert parsed["hr_profile"]["shape"] == (4, -64)
  with pytest.raises(ValueError, match="unsupported"):
    parse_metadata_literal("{'x': __import__('os').system('echo pwned')}")


def test_worker_processes_give_the_same_dataset(tmp_path):
  fixture = data_fixtures.write_s2_100k(tmp_path / "raw", size=32)
  results = []
  for workers in (1, 2):
    builder, report = build.build("s2_100k", tmp_path / f"tfds{workers}", fixture.root,
                                  patch_size=16, workers=workers)
    examples = _read_all(builder)
    results.append((report, {split: [(_text(e["source_id"]), e["rgb"].tobytes())
                                     for e in exs] for split, exs in examples.items()}))
  (report_1, data_1), (report_2, data_2) = results
  assert data_1 == data_2
  assert report_1["written"] == report_2["written"]
  assert sorted(map(str, report_1["skipped"])) == sorted(map(str, report_2["skipped"]))
