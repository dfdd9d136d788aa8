"""Grain pipeline over real ArrayRecord datasets built by data_prep (the demo, S2-100K and
every source of configs/multiscale.py from its raw-layout fixture)."""

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from absl import flags

from data_prep import build
from nirgan_jax import contract, errors
from nirgan_jax.data import pipeline as ip
from nirgan_jax.data import transforms
from nirgan_jax.data.gsd_shares import GsdShares

import data_fixtures
from conftest import TEST_DATA, load_config

IMAGE = 32
# configs/multiscale.py shrunk by this factor (image_size 256 -> 32 and each source's default
# patch size likewise), keeping every ratio of patch to example.
SCALE = 8


@pytest.fixture(scope="module")
def demo_dirs(tmp_path_factory):
  """Two small demo datasets with different seeds: disjoint places, so the source of every
  example can be told from its lon/lat."""
  root = tmp_path_factory.mktemp("tfds")
  names = []
  for seed in (0, 1):
    builder, _ = build.build("nirgan_demo", root, config="small", extra={"seed": seed})
    names.append(f"nirgan_demo/{builder.builder_config.name}")
  return root, names


def _specs(demo_dirs, weights=(0.7, 0.3), **kwargs):
  root, names = demo_dirs
  return [ip.SourceSpec(name=name, data_dir=str(root), split="train", weight=w, **kwargs)
          for name, w in zip(names, weights, strict=True)]


def _locations(spec):
  source = ip.open_source(spec)
  return {(np.float32(source[i]["lon"]), np.float32(source[i]["lat"]))
          for i in range(len(source))}


def _batches(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_mixing_follows_the_weights(demo_dirs):
  specs = _specs(demo_dirs)
  first = _locations(specs[0])
  dataset = ip.train_dataset(specs, IMAGE, global_batch_size=50, seed=0)
  from_first = sum((float(lon), float(lat)) in {(float(a), float(b)) for a, b in first}
                   for batch in (dataset[i] for i in range(40)) for lon, lat in batch["lonlat"])
  assert from_first / 2000 == pytest.approx(0.7, abs=0.03)


def test_batches_have_the_contract_shapes(demo_dirs):
  batch = ip.train_dataset(_specs(demo_dirs), IMAGE, global_batch_size=8, seed=0)[0]
  assert batch["rgb"].shape == (8, IMAGE, IMAGE, 3) and batch["rgb"].dtype == np.float32
  assert batch["nir"].shape == (8, IMAGE, IMAGE, 1)
  assert batch["lonlat"].shape == (8, 2) and batch["sensor_id"].dtype == np.int32
  assert batch["valid"].shape == (8, IMAGE, IMAGE, 1) and batch["valid"].dtype == np.float32
  assert batch["source_index"].dtype == np.int32 and set(batch["source_index"]) <= {0, 1}
  assert batch["rgb"].min() >= 0.0 and batch["nir"].max() <= 1.0
  assert not np.isnan(batch["rgb"]).any()


def test_same_seed_same_batches_with_and_without_workers(demo_dirs):
  flags.FLAGS.mark_as_parsed()  # mp_prefetch reads absl flags
  dataset = ip.train_dataset(_specs(demo_dirs, derived_gsd_m=(20.0,), prob_native=0.5),
                             IMAGE, global_batch_size=4, seed=3)
  plain = _batches(ip.make_iterator(dataset, workers=0), 6)
  again = _batches(ip.make_iterator(dataset, workers=0), 6)
  workers = _batches(ip.make_iterator(dataset, workers=2), 6)
  one_worker = _batches(ip.make_iterator(dataset, workers=1), 6)
  for a, b, c, d in zip(plain, again, workers, one_worker, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], c[key])
      np.testing.assert_array_equal(a[key], d[key])
  # The workers' batches come in shared memory; the dataset itself is left as it was.
  assert type(dataset[0]["rgb"]) is np.ndarray


def test_restored_state_reproduces_the_following_batches(demo_dirs):
  dataset = ip.train_dataset(_specs(demo_dirs, derived_gsd_m=(15.0, 20.0), prob_native=0.3),
                             IMAGE, global_batch_size=4, seed=5)
  iterator = ip.make_iterator(dataset)
  _batches(iterator, 5)
  state = iterator.get_state()
  expected = _batches(iterator, 4)
  fresh = ip.make_iterator(ip.train_dataset(
      _specs(demo_dirs, derived_gsd_m=(15.0, 20.0), prob_native=0.3), IMAGE,
      global_batch_size=4, seed=5))
  fresh.set_state(state)
  for a, b in zip(expected, _batches(fresh, 4), strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("pipeline_rate,step_rate,batch,cores,expected", [
    (500.0, 3.0, 8, 2, 0),  # a CPU host: the step is slow, the main process keeps up
    (100.0, 1.0, 80, 16, 0),  # keeps up with the 1.25x headroom to spare
    (100.0, 1.0, 81, 16, 2),  # not quite: one worker only matches the main process
    (100.0, 2.0, 64, 16, 2),  # 160 examples/s needed
    (100.0, 4.0, 64, 16, 4),
    (50.0, 10.0, 64, 8, 7),  # capped: one core stays with the main process
    (50.0, 10.0, 64, 1, 0),
    (0.0, 1.0, 8, 4, 3),
])
def test_choose_workers(pipeline_rate, step_rate, batch, cores, expected):
  assert ip.choose_workers(pipeline_rate, step_rate, batch, cores) == expected


def test_pipeline_rate_is_measured(demo_dirs):
  dataset = ip.train_dataset(_specs(demo_dirs), IMAGE, global_batch_size=4, seed=0)
  rate = ip.measure_pipeline_rate(dataset, read_threads=2, prefetch_buffer=2, seconds=0.3)
  assert rate > 0 and ip.host_cores() >= 1


def test_derived_resolution_is_the_area_average_of_native_pixels():
  spec = ip.SourceSpec(name="x", data_dir="", native_gsd_m=2.5, derived_gsd_m=(10.0,),
                       prob_native=0.0)
  yy, xx = np.indices((64, 64))
  pattern = (1000 + 37 * yy + 11 * xx + 500 * ((yy + xx) % 2)).astype(np.uint16)
  element = {"rgb": np.stack([pattern, pattern + 1, pattern + 2], -1),
             "nir": (pattern + 3)[..., None], "valid": np.ones((64, 64, 1), np.uint8),
             "lon": 1.0, "lat": 2.0, "sensor": b"naip"}
  transform = ip.ExampleTransform(spec, image_size=16, augment=False, multiscale=True)
  out = transform.random_map(element, np.random.default_rng(0))
  assert out["gsd_m"] == 10.0
  expected = (pattern.astype(np.float64) / 10000).reshape(16, 4, 16, 4).mean(axis=(1, 3))
  np.testing.assert_allclose(out["rgb"][..., 0], expected, rtol=1e-5)
  np.testing.assert_allclose(out["nir"][..., 0], expected + 3e-4, rtol=1e-5)


def test_hosts_see_disjoint_examples_whose_union_is_one_host(demo_dirs):
  specs = _specs(demo_dirs, weights=(1.0, 1.0))

  def rows(process_index, process_count, batches):
    dataset = ip.train_dataset(specs, IMAGE, global_batch_size=4, seed=0,
                               process_index=process_index, process_count=process_count)
    out = []
    for b in range(batches):
      batch = dataset[b]
      out += [(tuple(batch["lonlat"][i]), batch["rgb"][i].tobytes())
              for i in range(len(batch["lonlat"]))]
    return out

  single = rows(0, 1, 6)
  host0, host1 = rows(0, 2, 6), rows(1, 2, 6)
  assert not set(host0) & set(host1)
  assert sorted(host0 + host1) == sorted(single)  # same examples, same crops


def test_missing_source_names_the_build_command(tmp_path):
  spec = ip.SourceSpec(name="s2_100k/default", data_dir=str(tmp_path))
  with pytest.raises(ip.MissingDataError, match="python -m data_prep.build s2_100k"):
    ip.open_source(spec)


def test_real_s2_100k_values_through_the_pipeline(tmp_path):
  build.build("s2_100k", tmp_path, TEST_DATA / "s2_100k_sample")
  spec = ip.SourceSpec(name="s2_100k/default", data_dir=str(tmp_path), split="train")
  source = ip.open_source(spec)
  transform = ip.ExampleTransform(spec, image_size=256, augment=False)
  for i in range(len(source)):
    element = source[i]
    out = transform.random_map(element, np.random.default_rng(0))
    name = element["source_id"].decode().split(":")[0]
    with rasterio.open(TEST_DATA / "s2_100k_sample" / "images" / name) as src:
      bands = src.read([4, 3, 2, 8]).astype(np.float32) / 10000
    for row, col in ((0, 0), (100, 37), (255, 255)):
      np.testing.assert_allclose(out["rgb"][row, col], np.clip(bands[:3, row, col], 0, 1),
                                 rtol=1e-6)
      assert out["nir"][row, col, 0] == pytest.approx(min(bands[3, row, col], 1.0), rel=1e-6)
    # DN 0 in any band is Sentinel-2's no-data: those pixels, and only those, are invalid.
    with rasterio.open(TEST_DATA / "s2_100k_sample" / "images" / name) as src:
      invalid = (src.read([4, 3, 2, 8]) == 0).any(axis=0)
    np.testing.assert_array_equal(out["valid"][..., 0], ~invalid)


def test_eval_pass_counts_every_example_once_across_hosts(demo_dirs):
  specs = _specs(demo_dirs)
  dataset = ip.eval_dataset(specs, IMAGE)
  total = len(dataset)
  seen, batch_counts = [], []
  for process_index in range(2):
    batches = list(ip.eval_batches(dataset, 6, process_index, 2))
    batch_counts.append(len(batches))
    for batch in batches:
      assert batch["rgb"].shape == (3, IMAGE, IMAGE, 3)
      seen += [tuple(batch["lonlat"][i]) for i in range(3) if batch["mask"][i] == 1]
      assert np.all(batch["rgb"][batch["mask"] == 0] == 0)
  assert batch_counts[0] == batch_counts[1]
  assert len(seen) == total == len(set(seen))
  # No augmentation: the same example gives the same pixels every pass.
  np.testing.assert_array_equal(dataset[0]["rgb"], dataset[0]["rgb"])


def test_multiscale_config_sources_parse():
  config = load_config("multiscale")
  specs = ip.source_specs(config.data, "train")
  by_name = {s.name: s for s in specs}
  assert [by_name[n].weight for n in ("landsat8/ssl4eo_toa", "s2_100k/default", "worldstrat/hr",
                                      "sen2naip/hr")] == [20_000, 75_000, 15_000, 35_000]
  assert all(s.split == "train" and not s.data_dir.startswith("~") for s in specs)
  assert by_name["sen2naip/hr"].derived_gsd_m == (5.0,)
  with pytest.raises(ValueError, match="unknown source keys"):
    ip.SourceSpec.from_config({"name": "x", "data_dir": "", "weigth": 1.0})


def test_iterator_state_round_trips_through_orbax(demo_dirs, tmp_path):
  import grain
  import orbax.checkpoint as ocp

  def make():
    return ip.make_iterator(ip.train_dataset(_specs(demo_dirs), IMAGE, global_batch_size=4,
                                             seed=9))

  iterator = make()
  _batches(iterator, 3)
  checkpointer = ocp.Checkpointer(grain.checkpoint.CheckpointHandler())
  checkpointer.save(tmp_path / "data_iter", args=grain.checkpoint.CheckpointSave(iterator))
  expected = _batches(iterator, 2)
  restored = make()
  checkpointer.restore(tmp_path / "data_iter", args=grain.checkpoint.CheckpointRestore(restored))
  for a, b in zip(expected, _batches(restored, 2), strict=True):
    np.testing.assert_array_equal(a["rgb"], b["rgb"])


def test_host_batches_become_one_global_array(demo_dirs):
  import jax

  from nirgan_jax.train import mesh as mesh_lib

  mesh = mesh_lib.make_data_mesh()
  batch = ip.train_dataset(_specs(demo_dirs), IMAGE, global_batch_size=8, seed=0)[0]
  sharded = mesh_lib.shard_batch(mesh, batch)
  assert sharded["rgb"].shape == (8, IMAGE, IMAGE, 3)
  assert len(sharded["rgb"].sharding.device_set) == jax.device_count() == 4
  np.testing.assert_array_equal(np.asarray(sharded["nir"]), batch["nir"])


def test_resume_with_changed_weights_fails_clearly(demo_dirs):
  specs = _specs(demo_dirs)
  saved = ip.pipeline_fingerprint(specs, IMAGE, 8, 0)
  ip.check_resumable(ip.json_round_trip(saved), ip.pipeline_fingerprint(specs, IMAGE, 8, 0))
  changed = _specs(demo_dirs, weights=(0.5, 0.5))
  with pytest.raises(errors.ConfigError, match="sources: checkpoint") as refused:
    ip.check_resumable(saved, ip.pipeline_fingerprint(changed, IMAGE, 8, 0))
  assert "\n" not in str(refused.value)  # the entry points print it as one line
  with pytest.raises(errors.ConfigError, match="global_batch_size"):
    ip.check_resumable(saved, ip.pipeline_fingerprint(specs, IMAGE, 16, 0))


def test_a_source_weight_of_zero_is_a_config_error(demo_dirs):
  with pytest.raises(errors.ConfigError, match=r"every weight must be positive, got \{.*: 0\.0"):
    ip.train_dataset(_specs(demo_dirs, weights=(1.0, 0.0)), IMAGE, global_batch_size=8, seed=0)


# --------------------------------------------------------------------------- real pixels only


def _raw_fixture(dataset: str, config_name: str, root: Path, patch_size: int) -> Path:
  """A raw archive of ``dataset`` in its real layout, each raster or sample 6 x 6 patches of
  ``patch_size`` px: Grain's index shuffle costs ~40 ms / records per example, so a few
  dozen records per source keep 2,000 examples quick."""
  size = 6 * patch_size
  if dataset == "landsat8":
    if config_name.startswith("ssl4eo_"):
      return data_fixtures.write_ssl4eo_l(root, config_name.removeprefix("ssl4eo_"), size).root
    return data_fixtures.write_landsat_rgbn(root, size=size).root
  if dataset == "s2_100k":
    return data_fixtures.write_s2_100k(root, size=size).root
  if dataset == "sen2naip":
    return data_fixtures.write_sen2naip_tacozip(root, lr_size=size // 4).root
  return data_fixtures.write_worldstrat(root, hr_size=size).root


@pytest.fixture(scope="module")
def multiscale_sources(tmp_path_factory):
  """Every source of configs/multiscale.py, built from its fixture with its default patch size
  / SCALE, as specs at the configured resolutions and probabilities (all splits)."""
  config = load_config("multiscale")
  root = tmp_path_factory.mktemp("multiscale")
  specs = []
  for spec in ip.source_specs(config.data, "train"):
    dataset, _, config_name = spec.name.partition("/")
    default = next(c.patch_size for c in build.BUILDERS[dataset].BUILDER_CONFIGS
                   if c.name == config_name)
    raw = _raw_fixture(dataset, config_name, root / "raw" / dataset, default // SCALE)
    builder, _ = build.build(dataset, root / "tfds", raw, config=config_name,
                             patch_size=default // SCALE)
    specs.append(dataclasses.replace(
        spec, name=f"{dataset}/{builder.builder_config.name}", data_dir=str(root / "tfds"),
        split="+".join(sorted(builder.info.splits))))
  return specs, config.data.image_size // SCALE


def test_every_configured_source_and_gsd_gives_only_real_pixels(multiscale_sources):
  specs, image = multiscale_sources
  dataset = ip.train_dataset(specs, image, global_batch_size=50, seed=0)
  seen = set()
  for b in range(20):
    batch = dataset[b]
    assert batch["rgb"].shape == (50, image, image, 3)
    # The fixtures' kept patches hold no no-data, so a 0 in valid could only be filler.
    assert batch["valid"].min() == 1.0
    for i in range(50):
      seen.add((int(batch["source_index"][i]), float(batch["gsd_m"][i])))
      pixels = np.concatenate([batch["rgb"][i], batch["nir"][i]], axis=-1)
      # Padding (reflect or edge) repeats rows or columns; real, random pixels never do.
      assert len({row.tobytes() for row in pixels}) == image
      assert len({col.tobytes() for col in pixels.transpose(1, 0, 2)}) == image
  configured = {(i, g) for i, s in enumerate(specs)
                for g in transforms.gsd_probabilities(s.native_gsd_m, s.derived_gsd_m,
                                                      s.prob_native)}
  assert seen == configured
  assert len(configured) == 1 + 2 + 1 + 4  # landsat8; naip 2.5, 5; sentinel2; spot6 1.5-6 m


def test_gsd_shares_per_source_match_the_configured_probabilities(multiscale_sources):
  """2,000 examples of each source that draws a gsd, counted as the training log counts them
  (the others show every example at their native gsd, as the test above sees)."""
  specs, image = multiscale_sources
  for spec in (s for s in specs if s.derived_gsd_m):
    shares = GsdShares([spec.name])
    dataset = ip.train_dataset([spec], image, global_batch_size=100, seed=1)
    for b in range(20):
      shares.add(dataset[b])
    measured = shares.shares()[spec.name]
    configured = transforms.gsd_probabilities(spec.native_gsd_m, spec.derived_gsd_m,
                                              spec.prob_native)
    assert set(measured) == set(configured), spec.name
    for gsd, probability in configured.items():
      assert measured[gsd] == pytest.approx(probability, abs=0.03), (spec.name, gsd)
  assert set(shares.scalars()) == {f"gsd_share/{specs[-1].name}/{g}m" for g in
                                   ("1.5", "2.5", "5", "6")}


def test_a_gsd_the_stored_patches_cannot_fill_is_refused_at_start(multiscale_sources):
  specs, image = multiscale_sources
  naip = next(i for i, s in enumerate(specs) if s.name.startswith("sen2naip/"))
  too_coarse = list(specs)
  too_coarse[naip] = dataclasses.replace(specs[naip], derived_gsd_m=(5.0, 10.0))
  with pytest.raises(ip.UnfillableResolutionError,
                     match=r"^source 'sen2naip/hr_p64': 10 m at image_size 32 needs 128 px "
                           r"patches of 2.5 m, but it is built with 64 px; drop 10 m .* "
                           r"--patch_size 128$"):
    ip.train_dataset(too_coarse, image, global_batch_size=8, seed=0)
  landsat = next(s for s in specs if s.name.startswith("landsat8/"))
  with pytest.raises(ip.UnfillableResolutionError,
                     match=r"^source 'landsat8/ssl4eo_toa_p32': 30 m at image_size 64 needs 64 px"):
    ip.eval_dataset([landsat], 64)
  with pytest.raises(ip.UnfillableResolutionError, match="needs a fixed native_gsd_m"):
    ip.train_dataset([dataclasses.replace(landsat, native_gsd_m=0.0, derived_gsd_m=(60.0,))],
                     image, global_batch_size=8, seed=0)


def test_a_build_of_an_older_data_contract_is_refused_with_the_rebuild_command(tmp_path):
  """An old build (no validity mask) is refused: found as an older version beside a missing
  current one (registered configs), or read from its files (other config names)."""
  import json

  builder, _ = build.build("nirgan_demo", tmp_path, config="small")
  shutil.move(builder.data_dir, Path(builder.data_dir).with_name("1.0.0"))
  with pytest.raises(ip.MissingDataError, match=r"only builds of an older data contract "
                                                rf"\(1.0.0; this code reads {contract.VERSION}\).*"
                                                r"python -m data_prep.build nirgan_demo"):
    ip.open_source(ip.SourceSpec(name="nirgan_demo/small", data_dir=str(tmp_path)))

  builder, _ = build.build("nirgan_demo", tmp_path, config="small", extra={"num_examples": 5})
  old = Path(builder.data_dir).with_name("1.0.0")
  shutil.move(builder.data_dir, old)
  features = json.loads((old / "features.json").read_text())
  del features["featuresDict"]["features"]["valid"]
  (old / "features.json").write_text(json.dumps(features))
  info = (old / "dataset_info.json").read_text().replace(f'"version": "{contract.VERSION}"',
                                                      '"version": "1.0.0"')
  (old / "dataset_info.json").write_text(info)
  name = f"nirgan_demo/{builder.builder_config.name}"
  with pytest.raises(ip.MissingDataError, match=r"is a build of data contract 1.0.0 without the "
                                                r"per-pixel validity mask.*Rebuild it with"):
    ip.open_source(ip.SourceSpec(name=name, data_dir=str(tmp_path)))


# --------------------------------------------------------------------------- no-data


@pytest.fixture(scope="module")
def holes(tmp_path_factory):
  """A built 32 px Landsat patch with a NaN block and a nodata pixel, and its spec."""
  root = tmp_path_factory.mktemp("holes")
  fixture = data_fixtures.write_landsat_with_holes(root / "raw")
  builder, _ = build.build("landsat8", root / "tfds", fixture.root, patch_size=32)
  spec = ip.SourceSpec(name=f"landsat8/{builder.builder_config.name}", data_dir=str(root / "tfds"),
                       split="+".join(sorted(builder.info.splits)), native_gsd_m=30.0)
  return fixture, spec


def _covered(start: float, factor: float, count: int) -> list[range]:
  """Native pixels under each of ``count`` coarse pixels from native coordinate ``start``."""
  return [range(int(np.floor(start + i * factor)), int(np.ceil(start + (i + 1) * factor)))
          for i in range(count)]


@pytest.mark.parametrize("gsd,window_top", [(30.0, 8), (60.0, 0), (45.0, 4)])
def test_valid_is_zero_exactly_over_nodata_at_every_resolution(holes, gsd, window_top):
  """Native (centre 16 of 32 px), 2x (the whole patch) and 1.5x (the centre 24 px): a coarse
  pixel is invalid iff a native pixel under it is."""
  fixture, spec = holes
  element = ip.open_source(spec)[0]
  native_valid = ~fixture.invalid
  factor = gsd / 30.0
  transform = ip.ExampleTransform(dataclasses.replace(spec, derived_gsd_m=(gsd,), prob_native=0.0),
                                  16, augment=False, multiscale=gsd > 30.0)
  out = transform.random_map(element, np.random.default_rng(0))
  assert out["gsd_m"] == gsd
  rows = _covered(window_top, factor, 16)
  expected = np.array([[native_valid[np.ix_(r, c)].all() for c in rows] for r in rows])
  np.testing.assert_array_equal(out["valid"][..., 0], expected)
  assert 0 < (out["valid"] == 0).sum() < 16 * 16
  for key in ("rgb", "nir"):
    assert np.isfinite(out[key]).all()
  # A valid coarse pixel is the area mean of its native pixels, as without no-data.
  stored = np.concatenate([element["rgb"], element["nir"]], -1).astype(np.float64) / 10000
  end = window_top + round(16 * factor)
  plain = transforms.area_resample(stored[window_top:end, window_top:end], factor)
  np.testing.assert_allclose(out["rgb"][expected], plain[..., :3][expected], rtol=1e-5)
  np.testing.assert_allclose(out["nir"][expected], plain[..., 3:][expected], rtol=1e-5)


def test_training_batches_carry_the_nodata_mask(holes):
  _, spec = holes
  spec = dataclasses.replace(spec, derived_gsd_m=(60.0,), prob_native=0.5)
  invalid = 0
  for b in range(4):
    batch = ip.train_dataset([spec], 16, global_batch_size=8, seed=2)[b]
    assert set(np.unique(batch["valid"])) <= {0.0, 1.0}
    assert np.isfinite(batch["rgb"]).all() and np.isfinite(batch["nir"]).all()
    invalid += int((batch["valid"] == 0).sum())
  assert invalid > 0
  eval_batch = next(ip.eval_batches(ip.eval_dataset([spec], 16), 4))
  assert eval_batch["valid"].shape == (4, 16, 16, 1)
  np.testing.assert_array_equal(eval_batch["valid"][eval_batch["mask"] == 0], 0)


def test_illumination_gain_scales_all_bands_by_one_factor_per_example(holes):
  _, spec = holes
  plain = ip.ExampleTransform(spec, 16, augment=True)
  gained = ip.ExampleTransform(spec, 16, augment=True, illumination_gain=(0.5, 2.0))
  element = ip.open_source(spec)[0]
  ratios = []
  for seed in range(20):
    a = plain.random_map(element, np.random.default_rng(seed))
    b = gained.random_map(element, np.random.default_rng(seed))
    # The same window (the gain is drawn after the crop); the quarter turns may differ.
    rgbn_a = np.sort(np.concatenate([a["rgb"], a["nir"]], -1).reshape(-1, 4), axis=0)
    rgbn_b = np.sort(np.concatenate([b["rgb"], b["nir"]], -1).reshape(-1, 4), axis=0)
    valid = rgbn_a > 0
    ratio = rgbn_b[valid] / rgbn_a[valid]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    assert rgbn_b.max() <= 1.0
    ratios.append(ratio[0])
  assert 0.5 - 1e-6 <= min(ratios) < 0.9 and max(ratios) > 1.1


def test_build_missing_builds_generated_sources_through_their_entry_point(tmp_path, caplog):
  """The demo is built by data_prep, found through the ``nirgan_jax.generated_sources`` entry
  point (nirgan_jax never imports data_prep); sources with a raw archive are left alone."""
  caplog.set_level("INFO")
  specs = [ip.SourceSpec(name="nirgan_demo/small", data_dir=str(tmp_path)),
           ip.SourceSpec(name="s2_100k/default", data_dir=str(tmp_path))]
  ip.build_missing(specs)
  assert "built nirgan_demo/small" in caplog.text
  assert len(ip.open_source(dataclasses.replace(specs[0], split="train"))) > 0
  assert not (tmp_path / "s2_100k").exists()
  caplog.clear()
  ip.build_missing(specs)  # built already: reused
  assert "built nirgan_demo/small" not in caplog.text


def _examples_before_the_speed_up(element, rng, spec, size, gain_range):
  """ExampleTransform.random_map as it was before the pipeline was profiled and sped up
  (whole-patch concatenation, NumPy's block mean, a dense matrix product for non-integer
  factors, a masked maximum): the reference that the fast version must match bit for bit,
  and to float rounding where the banded resampling sums in another order."""
  native = spec.native_gsd_m
  gsd = transforms.choose_gsd(rng, native, spec.derived_gsd_m, spec.prob_native)
  factor = gsd / native
  image = np.concatenate([element["rgb"], element["nir"]], axis=-1)
  height, width = image.shape[:2]
  window = transforms.native_window(size, factor)
  top = int(rng.integers(0, height - window + 1))
  left = int(rng.integers(0, width - window + 1))
  image = transforms.to_reflectance(image[top:top + window, left:left + window])
  valid = element[contract.VALID][top:top + window, left:left + window].astype(np.float32)

  def area(x, dtype=np.float32):
    h, w = x.shape[:2]
    if float(factor).is_integer() and h % factor == 0 and w % factor == 0:
      f = int(factor)
      return x.astype(dtype).reshape(h // f, f, w // f, f, x.shape[-1]).mean(axis=(1, 3),
                                                                             dtype=dtype)
    rows = transforms.area_weights(h, round(h / factor)).astype(dtype)
    cols = transforms.area_weights(w, round(w / factor)).astype(dtype)
    return np.einsum("ih,hwc,jw->ijc", rows, x.astype(dtype), cols, optimize=True)

  if factor > 1:
    if valid.all():
      image = area(image)
      valid = np.ones((*image.shape[:2], 1), np.float32)
    else:
      cover = area(valid, np.float64)
      sums = area(np.where(valid > 0, image, 0.0))
      image = np.where(cover > 0, sums / np.maximum(cover, 1e-12), 0.0).astype(np.float32)
      valid = (cover >= 1.0 - transforms.VALID_TOLERANCE).astype(np.float32)
  top, left = transforms.random_crop_offsets(rng, *image.shape[:2], size)
  image = transforms.crop(np.concatenate([image, valid], axis=-1), size, top, left)
  gain = math.exp(rng.uniform(math.log(gain_range[0]), math.log(gain_range[1])))
  brightest = float(np.max(image[..., :4], where=image[..., 4:] > 0, initial=0.0))
  image[..., :4] *= min(gain, 1.0 / brightest) if brightest > 0 else gain
  image = transforms.dihedral(image, int(rng.integers(0, 4)), bool(rng.random() < 0.5))
  return np.ascontiguousarray(image, np.float32), gsd


def test_the_sped_up_transform_gives_the_examples_it_gave_before():
  rng = np.random.default_rng(0)
  patch = 96
  valid = np.ones((patch, patch, 1), np.uint8)
  valid[10:13, 40:47] = 0
  element = {"rgb": rng.integers(0, 10_000, (patch, patch, 3)).astype(np.uint16),
             "nir": rng.integers(0, 10_000, (patch, patch, 1)).astype(np.uint16),
             contract.VALID: valid, "lon": 1.0, "lat": 2.0, "gsd_m": 2.5, "sensor": b"naip"}
  full = dict(element, **{contract.VALID: np.ones_like(valid)})
  spec = ip.SourceSpec(name="x/y", data_dir="", native_gsd_m=2.5,
                       derived_gsd_m=(3.75, 5.0, 7.5, 10.0), prob_native=0.2)
  transform = ip.ExampleTransform(spec, 24, augment=True, illumination_gain=(0.67, 1.5))
  seen = set()
  for seed in range(120):
    for example in (element, full):
      out = transform.random_map(example, np.random.default_rng(seed))
      expected, gsd = _examples_before_the_speed_up(example, np.random.default_rng(seed), spec,
                                                    24, (0.67, 1.5))
      seen.add(gsd)
      got = np.concatenate([out["rgb"], out["nir"], out["valid"]], -1)
      if float(gsd / spec.native_gsd_m).is_integer():
        np.testing.assert_array_equal(got, expected, err_msg=f"seed {seed} at {gsd} m")
      else:  # the banded resampling: the same sums in another order
        np.testing.assert_array_equal(got[..., 4], expected[..., 4], err_msg=f"seed {seed}")
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"seed {seed} at {gsd} m")
  assert seen == {2.5, 3.75, 5.0, 7.5, 10.0}
