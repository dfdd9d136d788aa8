"""data_prep.rgbn_geotiff on the vendored real images of tests/data/s2_more, and on copies of
them changed the way users' folders differ (offsets, nodata, bad rows)."""

import csv
import json
import shutil

import numpy as np
import pytest
import rasterio
import tensorflow_datasets as tfds

from data_prep import build, raster
from data_prep.report import REPORT_JSON
from nirgan_jax import contract

from conftest import TEST_DATA

S2_MORE = TEST_DATA / "s2_more"


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _examples(builder) -> dict[str, dict]:
  """source_id -> example, over every split."""
  name = f"{builder.name}/{builder.builder_config.name}"
  out = {}
  for split in builder.info.splits:
    source = tfds.data_source(name, split=split, data_dir=str(builder.data_dir_root),
                              download=False)
    for i in range(len(source)):
      out[_text(source[i]["source_id"])] = source[i]
  return out


def _index_rows(folder=S2_MORE) -> list[dict[str, str]]:
  with (folder / "index.csv").open(newline="") as f:
    return list(csv.DictReader(f))


def _write_index(folder, rows: list[dict[str, str]]) -> None:
  with (folder / "index.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _expected_window(fn: str, bands: list[int], window_id: str, offset=0.0, scale=1e4):
  """The stored uint16 RGBN and validity of one patch, read afresh from the file."""
  row, col = map(int, window_id.split(","))
  with rasterio.open(S2_MORE / "images" / fn) as src:
    patch = 64
    dn = src.read(bands, window=rasterio.windows.Window(col, row, patch, patch))
  valid = (dn != 0).all(axis=0)
  stored = contract.to_stored_reflectance((dn.astype(np.float64) - offset) / scale)
  return np.moveaxis(np.where(valid, stored, 0), 0, -1), valid


@pytest.fixture(scope="module")
def s2_more_build(tmp_path_factory):
  builder, report = build.build("rgbn_geotiff", tmp_path_factory.mktemp("tfds"),
                                manual_dir=S2_MORE)
  return builder, report, _examples(builder)


def test_every_row_of_the_real_index_is_tiled_with_its_own_bands(s2_more_build):
  _, report, examples = s2_more_build
  rows = _index_rows()
  assert report["total_skipped"] == 0
  expected_count = 0
  for row in rows:
    with rasterio.open(S2_MORE / "images" / row["fn"]) as src:
      expected_count += len(list(raster.tile_windows(src.height, src.width, 64, 64)))
  assert report["total_written"] == len(examples) == expected_count
  for row in rows:
    bands = [int(row[k]) for k in ("red", "green", "blue", "nir")]
    name = row["fn"] if bands == [1, 2, 3, 4] else f"{row['fn']}[{','.join(map(str, bands))}]"
    ids = [i for i in examples if i.rsplit(":", 1)[0] == name]
    assert ids, name
    for source_id in ids[:2]:
      ex = examples[source_id]
      rgbn, valid = _expected_window(row["fn"], bands, source_id.rsplit(":", 1)[1])
      np.testing.assert_array_equal(np.concatenate([ex["rgb"], ex["nir"]], -1), rgbn)
      np.testing.assert_array_equal(ex[contract.VALID][..., 0], valid)
      assert _text(ex["level"]) == row["level"]
      assert _text(ex["sensor"]) == "sentinel2"
      assert ex["gsd_m"] == pytest.approx(10.0)


def test_two_dates_in_one_file_are_two_images(s2_more_build):
  _, _, examples = s2_more_build
  date_a = {i for i in examples if i.startswith("ftw_austria_2dates.tif:")}
  date_b = {i for i in examples if i.startswith("ftw_austria_2dates.tif[5,6,7,8]:")}
  assert len(date_a) == len(date_b) == 9 * 6  # 578 x 379 px in 64 px patches
  first_a, first_b = sorted(date_a)[0], sorted(date_b)[0]
  assert first_a.split(":")[1] == first_b.split(":")[1]
  assert not np.array_equal(examples[first_a]["nir"], examples[first_b]["nir"])


def test_dates_are_iso_and_places_keep_one_split(s2_more_build):
  builder, _, examples = s2_more_build
  ssl4eo = [ex for i, ex in examples.items() if i.startswith("ssl4eo_")]
  assert {_text(ex["date"]) for ex in ssl4eo} == {"2020-06-04", "2020-08-13", "2020-08-23"}
  assert {_text(ex["level"]) for ex in ssl4eo} == {"L1C", "L2A"}
  # Four images of one place (two dates, two levels) land in one split.
  name = f"{builder.name}/{builder.builder_config.name}"
  split_of = {}
  for split in builder.info.splits:
    source = tfds.data_source(name, split=split, data_dir=str(builder.data_dir_root))
    for i in range(len(source)):
      split_of[_text(source[i]["source_id"])] = split
  assert len({split_of[i] for i in split_of if i.startswith("ssl4eo_")}) == 1


def test_images_smaller_than_a_patch_are_skipped_and_counted(tmp_path):
  _, report = build.build("rgbn_geotiff", tmp_path / "tfds", manual_dir=S2_MORE,
                          patch_size=128)
  small = {s["source"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
  assert set(small) == {r["fn"] for r in _index_rows() if int(r["width"]) < 128
                        or int(r["height"]) < 128}
  assert all("smaller than the patch (128 px)" in reason for reason in small.values())
  assert len(small) == 3 + 7  # EuroSAT 64 px, BigEarthNet 120 px
  written = json.loads(next((tmp_path / "tfds").rglob(REPORT_JSON)).read_text())
  assert written["total_skipped"] == 10


def _copy_first(tmp_path, n: int, change) -> tuple:
  """A manual_dir with the first ``n`` rows of s2_more's index, each changed by ``change``."""
  folder = tmp_path / "raw"
  (folder / "images").mkdir(parents=True)
  rows = _index_rows()[:n]
  for row in rows:
    shutil.copy(S2_MORE / "images" / row["fn"], folder / "images" / row["fn"])
    change(row)
  _write_index(folder, rows)
  return folder, rows


def test_offset_and_scale_give_reflectance(tmp_path):
  folder, rows = _copy_first(tmp_path, 1, lambda row: row.update(offset="1000", scale="20000"))
  builder, _ = build.build("rgbn_geotiff", tmp_path / "tfds", manual_dir=folder)
  examples = _examples(builder)
  source_id = sorted(examples)[0]
  rgbn, _ = _expected_window(rows[0]["fn"], [4, 3, 2, 8], source_id.rsplit(":", 1)[1],
                             offset=1000, scale=20000)
  ex = examples[source_id]
  np.testing.assert_array_equal(np.concatenate([ex["rgb"], ex["nir"]], -1), rgbn)


def test_nodata_is_any_band_at_the_nodata_value(tmp_path):
  folder, rows = _copy_first(tmp_path, 2, lambda row: None)
  path = folder / "images" / rows[0]["fn"]
  with rasterio.open(path, "r+") as dst:  # a block of zeros in the NIR band alone
    nir = dst.read(8)
    nir[:10, :20] = 0
    dst.write(nir, 8)
  rows[1]["nodata"] = "65535"  # an explicit nodata value: zeros are data there
  rows[0]["nodata"] = ""
  _write_index(folder, rows)
  builder, _ = build.build("rgbn_geotiff", tmp_path / "tfds", manual_dir=folder)
  examples = _examples(builder)
  first = examples[f"{rows[0]['fn']}[4,3,2,8]:0,0"]
  assert not first[contract.VALID][:10, :20].any()
  assert first[contract.VALID][10:, 20:].all()
  assert not first["rgb"][:10, :20].any()  # no-data pixels hold 0
  assert all(ex[contract.VALID].all() for i, ex in examples.items() if i.startswith(rows[1]["fn"]))


def test_bad_rows_are_skipped_with_their_reason(tmp_path):
  folder, _ = _copy_first(tmp_path, 4, lambda row: row.update(sensor="sentinel2"))
  rows = _index_rows(folder)
  rows[0]["nir"] = "13"  # the file has 12 bands
  rows[1]["scale"] = "0"
  rows[2]["date"] = "June"
  rows[3]["sensor"] = "hubble"
  _write_index(folder, rows)
  with (folder / "index.csv").open("a") as f:
    f.write("missing.tif,1,2,3,4,10000,0,0,0,1,1,4,uint16,,L2A,10,,,,\n")
  with pytest.raises(FileNotFoundError, match="no usable rgbn_geotiff inputs"):
    build.build("rgbn_geotiff", tmp_path / "tfds", manual_dir=folder)

  rows[3]["sensor"] = "sentinel2"
  _write_index(folder, rows)
  _, report = build.build("rgbn_geotiff", tmp_path / "tfds", manual_dir=folder)
  reasons = sorted(s["reason"] for s in report["skipped"])
  assert len(reasons) == 3
  assert any("bands [4, 3, 2, 13] asked for, the file has 12" in r for r in reasons)
  assert any("scale '0' must be positive" in r for r in reasons)
  assert any("neither YYYYMMDD" in r for r in reasons)
