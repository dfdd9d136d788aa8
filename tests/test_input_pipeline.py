"""Grain pipeline over real ArrayRecord datasets built by data_prep (demo and S2-100K)."""

import numpy as np
import pytest
import rasterio
from absl import flags

from data_prep import build
from nirgan_jax.data import pipeline as ip

from conftest import TEST_DATA

IMAGE = 32


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
  assert batch["rgb"].min() >= 0.0 and batch["nir"].max() <= 1.0
  assert not np.isnan(batch["rgb"]).any()


def test_same_seed_same_batches_with_and_without_workers(demo_dirs):
  flags.FLAGS.mark_as_parsed()  # mp_prefetch reads absl flags
  dataset = ip.train_dataset(_specs(demo_dirs, derived_gsd_m=(20.0,), prob_native=0.5),
                             IMAGE, global_batch_size=4, seed=3)
  plain = _batches(ip.make_iterator(dataset, workers=0), 6)
  again = _batches(ip.make_iterator(dataset, workers=0), 6)
  workers = _batches(ip.make_iterator(dataset, workers=2), 6)
  for a, b, c in zip(plain, again, workers, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], c[key])


def test_restored_state_reproduces_the_following_batches(demo_dirs):
  dataset = ip.train_dataset(_specs(demo_dirs, derived_gsd_m=(20.0, 40.0), prob_native=0.3),
                             IMAGE, global_batch_size=4, seed=5)
  iterator = ip.make_iterator(dataset)
  _batches(iterator, 5)
  state = iterator.get_state()
  expected = _batches(iterator, 4)
  fresh = ip.make_iterator(ip.train_dataset(
      _specs(demo_dirs, derived_gsd_m=(20.0, 40.0), prob_native=0.3), IMAGE,
      global_batch_size=4, seed=5))
  fresh.set_state(state)
  for a, b in zip(expected, _batches(fresh, 4), strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_derived_resolution_is_the_area_average_of_native_pixels():
  spec = ip.SourceSpec(name="x", data_dir="", native_gsd_m=2.5, derived_gsd_m=(10.0,),
                       prob_native=0.0)
  yy, xx = np.indices((64, 64))
  pattern = (1000 + 37 * yy + 11 * xx + 500 * ((yy + xx) % 2)).astype(np.uint16)
  element = {"rgb": np.stack([pattern, pattern + 1, pattern + 2], -1),
             "nir": (pattern + 3)[..., None], "lon": 1.0, "lat": 2.0, "sensor": b"naip"}
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
  from conftest import load_config

  config = load_config("multiscale")
  specs = ip.source_specs(config.data, "train")
  by_name = {s.name: s for s in specs}
  assert [by_name[n].weight for n in ("landsat8/rgbn_toa", "s2_100k/default", "worldstrat/hr",
                                      "sen2naip/hr")] == [20_000, 75_000, 15_000, 35_000]
  assert all(s.split == "train" and not s.data_dir.startswith("~") for s in specs)
  assert by_name["sen2naip/hr"].derived_gsd_m == (5.0, 10.0, 30.0)
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
  with pytest.raises(ValueError, match="sources: checkpoint"):
    ip.check_resumable(saved, ip.pipeline_fingerprint(changed, IMAGE, 8, 0))
  with pytest.raises(ValueError, match="global_batch_size"):
    ip.check_resumable(saved, ip.pipeline_fingerprint(specs, IMAGE, 16, 0))
