"""benchmarks/real_s2.py: its hold-outs hold out what they say, its oracle is the best linear
map, and the whole benchmark runs on the vendored real patches."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import real_s2

from conftest import REPO

SAMPLES = REPO / "tests" / "data" / "s2_100k_10"


def test_patch_hold_out_keeps_whole_patches_including_a_bright_one_out_of_training():
  patches = real_s2.read_patches(SAMPLES)
  assert len(patches) == 10
  split = real_s2.patch_split(patches, real_s2.DEFAULT_HOLDOUT)
  held = [p.name for p, _, _ in split.heldout]
  assert sorted(held) == sorted(real_s2.DEFAULT_HOLDOUT)
  assert not {p.name for p in split.train} & set(held) and len(split.train) == 7
  brightest = max(float(p.reflectance[..., :3].mean()) for p, _, _ in split.heldout)
  assert brightest > 0.8  # snow and ice


def test_block_hold_out_trains_on_three_quarters_and_scores_the_fourth():
  patches = real_s2.read_patches(SAMPLES)
  split = real_s2.block_split(patches)
  assert len(split.train) == 30 and {p.dn.shape for p in split.train} == {(128, 128, 4)}
  for patch, rows, cols in split.heldout:
    held = patch.dn[rows, cols]
    assert held.shape == (128, 128, 4)
    quarters = [p.dn for p in split.train if p.name.startswith(patch.name + "_q")]
    assert len(quarters) == 3 and not any(np.array_equal(q, held) for q in quarters)
    np.testing.assert_array_equal(quarters[0], patch.dn[:128, :128])


def test_oracle_linear_recovers_an_exact_linear_map():
  rng = np.random.default_rng(0)
  rgb = rng.uniform(0.0, 0.5, (64, 64, 3))
  nir = rgb @ np.array([0.3, 0.9, 0.1]) + 0.05
  dn = np.round(np.concatenate([rgb, nir[..., None]], -1) * 10_000).astype(np.uint16)
  patch = real_s2.Patch("p", dn, np.ones((64, 64), bool), 0.0, 0.0)
  split = real_s2.Split([], [(patch, slice(None), slice(None))])
  scores = real_s2.score(split, real_s2.oracle_linear(split))
  assert scores["l1"]["mean"] < 1e-4 and scores["ssim"]["mean"] > 0.999


def test_benchmark_runs_end_to_end_on_the_real_patches(tmp_path):
  """Both protocols, each in its own process (the default two jobs) on its own cores."""
  out = subprocess.run(
      [sys.executable, str(REPO / "benchmarks" / "real_s2.py"), "--models", "gan,linear",
       "--steps_scale", "0.001", "--out", str(tmp_path / "out"), "--workdir",
       str(tmp_path / "runs")], capture_output=True, text=True, check=True, cwd=tmp_path,
      timeout=900)
  line = json.loads(out.stdout.strip().splitlines()[-1])
  patch_cores, block_cores = set(line["cores"]["patch"]), set(line["cores"]["block"])
  assert patch_cores | block_cores == os.sched_getaffinity(0)
  assert patch_cores.isdisjoint(block_cores) or len(os.sched_getaffinity(0)) == 1
  assert line["jobs"] == 2 and set(line["train_s"]) == {
      f"{protocol}/{model}" for protocol in ("patch", "block") for model in ("gan", "linear")}
  heldout_regions = {"patch": set(real_s2.DEFAULT_HOLDOUT),
                     "block": {p.name for p in real_s2.read_patches(SAMPLES)}}
  for protocol, regions in heldout_regions.items():
    scores = line["results"][protocol]
    assert set(scores) == {"gan", "gan" + real_s2.AS_TRAINED, "linear", "oracle linear"}
    assert scores["gan"] != scores["gan" + real_s2.AS_TRAINED]
    for model in scores.values():
      assert set(model["l1"]) == {"mean", *regions}
      assert all(np.isfinite(v) for metric in model.values() for v in metric.values())
    assert (tmp_path / "runs" / protocol / "gan" / "checkpoints").is_dir()
  assert set(line["goal"]) == {"mae_gain_vs_linear", "ndvi_mae_gain_vs_linear",
                               "ssim_minus_linear"}
  table = (tmp_path / "out" / "real_s2.md").read_text()
  assert "| gan |" in table and "| oracle linear |" in table and "**block**" in table
  assert (tmp_path / "out" / "real_s2.png").stat().st_size > 10_000


def _job_processes(parent: int) -> list[int]:
  """Live processes that ``parent`` started through multiprocessing's spawn."""
  jobs = []
  for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()
      cmdline = (stat.parent / "cmdline").read_bytes()
    except OSError:  # ended while listed
      continue
    state, ppid = fields[0], int(fields[1])
    if ppid == parent and state != "Z" and b"spawn_main" in cmdline:
      jobs.append(int(stat.parent.name))
  return jobs


def _alive(pid: int) -> bool:
  try:
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_killing_the_benchmark_ends_its_jobs(tmp_path):
  benchmark = subprocess.Popen(
      [sys.executable, str(REPO / "benchmarks" / "real_s2.py"), "--steps_scale", "0.001",
       "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs")],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
  try:
    started = 0
    for line in benchmark.stderr:
      started += line.startswith("[real_s2]")
      if started == 2:  # both protocols' jobs are training their first model
        break
    jobs = _job_processes(benchmark.pid)
    assert len(jobs) == 2
  finally:
    benchmark.kill()
    benchmark.wait()
    benchmark.stderr.close()
  deadline = time.monotonic() + 20
  while any(_alive(pid) for pid in jobs) and time.monotonic() < deadline:
    time.sleep(0.5)
  assert not any(_alive(pid) for pid in jobs)
  assert not (tmp_path / "out").exists()
