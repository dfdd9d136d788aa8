"""experiments/real_places.py: the folds, the separation of training and held-out places, the
scores, the refused reuse of a workdir, and one small run end to end on the real images."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from experiments import real_places as rp
from nirgan_jax import errors

from conftest import REPO

BLOCK = 4  # px: a training example whose any 4 x 4 block of RGBN values appears in a held-out
# image would be a leak


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  return rp.build_sources(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def images():
  return rp.read_images()


def test_folds_cover_27_places_each_once():
  rp.check_places()
  assert len(rp.PLACES) == 27 and len(rp.FOLDS) >= 5
  assert sorted(p for fold in rp.FOLDS for p in fold) == sorted(rp.PLACES)


def _stored(reflectance: np.ndarray) -> np.ndarray:
  return np.rint(reflectance * 10_000).astype(np.uint16)


def test_no_held_out_pixel_in_any_training_source(sources, images):
  for fold in range(len(rp.FOLDS)):
    held = [im for im in images if im.place in rp.FOLDS[fold]]
    blocks = set()
    for im in held:
      windows = sliding_window_view(_stored(im.reflectance), (BLOCK, BLOCK, 4))
      windows = windows.reshape(-1, BLOCK * BLOCK * 4)
      blocks.update(map(bytes, windows))
    train = rp.training_examples(sources, fold)
    assert sum(map(len, train.values())) > 0
    for examples in train.values():
      for ex in examples:
        rgbn = np.concatenate([ex["rgb"], ex["nir"]], axis=-1)
        for top in range(0, rgbn.shape[0] - BLOCK + 1, 16):
          for left in range(0, rgbn.shape[1] - BLOCK + 1, 16):
            block = np.ascontiguousarray(rgbn[top:top + BLOCK, left:left + BLOCK])
            assert bytes(block.reshape(-1)) not in blocks, (fold, ex["source_id"])
        # No training patch within 10 km of a held-out image's centre.
        for im in held:
          km = 111.32 * math.hypot((ex["lon"] - im.lonlat[0]) * math.cos(math.radians(
              im.lonlat[1])), ex["lat"] - im.lonlat[1])
          assert km > 10, (fold, ex["source_id"], im.name)
    # Every held-out place is really absent, and every other place really trains.
    trained = {rp.place_of_example(ex) for examples in train.values() for ex in examples}
    assert trained == set(rp.PLACES) - set(rp.FOLDS[fold])


def test_a_workdir_is_not_reused_for_another_split_or_config(sources, tmp_path):
  gan, other = rp.s2_real.get_config("gan"), rp.s2_real.get_config("gan")
  other.loss.lambda_gan = 0.5
  record = {**rp.split_record(sources, 0), "config_digest": rp.config_digest(gan)}
  rp.claim_workdir(tmp_path, record)
  rp.claim_workdir(tmp_path, record)  # the same split and config: resumes
  with pytest.raises(errors.NirganError, match=r"fold 0\), not .* \(fold 1\)"):
    rp.claim_workdir(tmp_path, {**rp.split_record(sources, 1),
                                "config_digest": rp.config_digest(gan)})
  with pytest.raises(errors.NirganError, match=r"trained with another config .*digest "
                                               rf"{record['config_digest']}, now "):
    rp.claim_workdir(tmp_path, {**record, "config_digest": rp.config_digest(other)})


def test_scores_pool_pixels_and_the_oracle_recovers_a_linear_map(images):
  held = [im for im in images if im.place in rp.FOLDS[2]]
  exact = [im.reflectance[..., :3] @ np.float32([0.2, -0.1, 0.5]) + 0.05 for im in held]
  fake = [rp.Image(im.place, im.name, np.concatenate([im.reflectance[..., :3], e[..., None]], -1),
                   im.valid, im.lonlat) for im, e in zip(held, exact, strict=True)]
  scores = rp.pooled([rp.image_sums(im, p) for im, p in
                      zip(fake, rp.oracle_predictions(fake), strict=True)])
  assert scores["mae"] < 1e-5 and scores["ssim"] > 0.999 and scores["vegetation_iou"] > 0.99
  # Pooled, not averaged per image: a 1 px image weighs 1 px.
  sums = [{"pixels": 1.0, "mae_sum": 1.0, "ndvi_mae_sum": 0.0, "ssim_pixels": 1.0,
           "ssim_sum": 0.0, "vegetation_intersection": 0.0, "vegetation_union": 1.0},
          {"pixels": 3.0, "mae_sum": 0.0, "ndvi_mae_sum": 0.0, "ssim_pixels": 3.0,
           "ssim_sum": 3.0, "vegetation_intersection": 3.0, "vegetation_union": 3.0}]
  assert rp.pooled(sums) == {"mae": 0.25, "ndvi_mae": 0.0, "ssim": 0.75, "vegetation_iou": 0.75}


def test_scored_pixels_leave_out_the_border_and_nodata(images):
  im = images[0]
  assert not im.scored[:rp.BORDER].any() and not im.scored[:, -rp.BORDER:].any()
  assert im.scored[rp.BORDER:-rp.BORDER, rp.BORDER:-rp.BORDER].sum() == im.valid[
      rp.BORDER:-rp.BORDER, rp.BORDER:-rp.BORDER].sum()


def test_one_fold_end_to_end_resumes_from_its_results(tmp_path):
  command = [sys.executable, "-m", "experiments.real_places", "--out", str(tmp_path),
             "--models", "linear", "--folds", "1", "--seeds", "0", "--jobs", "1",
             "--steps_scale", "0.001"]
  first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  line = json.loads(first.stdout.strip().splitlines()[-1])
  assert set(line["summary"]) == {"linear", rp.ORACLE}
  scores = line["summary"]["linear"]["mean"]
  assert set(scores) == set(rp.SCORES) and all(np.isfinite(v) for v in scores.values())
  assert 0 <= scores["vegetation_iou"] <= 1 and 0 <= scores["ndvi_mae"] <= 2
  records = rp.read_results(tmp_path / "results.jsonl")
  assert [(r["fold"], r["model"]) for r in records] == [(1, rp.ORACLE), (1, "linear")]
  assert {i["place"] for i in records[1]["images"]} == set(rp.FOLDS[1])
  table = (tmp_path / "real_places.md").read_text()
  assert "| linear | 1 x 1 |" in table and f"| {rp.ORACLE} |" in table

  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert rp.read_results(tmp_path / "results.jsonl") == records  # nothing trained again


def test_a_candidate_recipe_is_a_model_of_its_own():
  args = rp.parse_args(["--models", "gan,mlp", "--seeds", "0", "--folds", "0", "--gan_override",
                        "model.generator.correction_gate=True", "--gan_override",
                        "loss.lambda_gan=0.25"])
  labels = [r.label for r in rp.pending_runs(args, set())]
  assert labels == ["mlp", "gan[model.generator.correction_gate=True,loss.lambda_gan=0.25]"]
  done = {(0, "mlp", 0)}
  assert [r.model for r in rp.pending_runs(args, done)] == ["gan"]
  with pytest.raises(SystemExit):
    rp.parse_args(["--gan_override", "no_equals_sign"])
