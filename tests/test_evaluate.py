"""evaluate: the metrics table of a model and baselines, overall and per sensor, on the real
S2-100K samples and on the multi-sensor demo data."""

import csv

import numpy as np
import pytest
import rasterio
from test_predict import save_tiny_model

from data_prep import build
from nirgan_jax import models
from nirgan_jax.infer import evaluate, model_io
from nirgan_jax.infer import model as inference
from nirgan_jax.models import config as model_config

from conftest import TEST_DATA, load_config, rbg_key

S2_SAMPLE = TEST_DATA / "s2_100k_sample"


def save_baseline(path, kind):
  config = load_config("baselines")
  config.model.generator.kind = kind
  config.model.baseline.hidden = 8
  nirgan = models.NIRGAN.from_config(config)
  params = nirgan.generator.init(rbg_key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  return model_io.save_model_dir(path, {"generator": params}, model_config.model_sections(config))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  return {"gan": save_tiny_model(root / "gan"), "linear": save_baseline(root / "linear", "linear"),
          "cnn": save_baseline(root / "cnn", "cnn")}


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_real_s2_samples_table_matches_direct_computation(tmp_path, model_dirs):
  builder, _ = build.build("s2_100k", tmp_path / "tfds", S2_SAMPLE)
  split = "+".join(sorted(builder.info.splits))
  out = tmp_path / "eval"
  assert evaluate.main(["--model", str(model_dirs["gan"]), "--baselines", str(model_dirs["linear"]),
                        f"mine={model_dirs['cnn']}", "--dataset", "s2_100k/default", "--data_dir",
                        str(tmp_path / "tfds"), "--split", split, "--image_size", "128",
                        "--batch_size", "2", "--figures", "2", "--out", str(out),
                        "--quiet"]) == 0
  rows = _rows(out / "metrics.csv")
  assert [(r["model"], r["sensor"]) for r in rows] == [
      ("nirgan", "all"), ("linear", "all"), ("mine", "all"),
      ("nirgan", "sentinel2"), ("linear", "sentinel2"), ("mine", "sentinel2")]
  assert all(r["examples"] == "3" for r in rows)
  assert "| nirgan | all | 3 |" in (out / "metrics.md").read_text()
  for name in ("nirgan", "linear", "mine"):
    assert (out / f"figures_{name}.png").stat().st_size > 10_000

  # The linear model's L1, computed here from the GeoTIFFs: centre 128 px of bands 4,3,2 / 8.
  model = inference.load_model(model_dirs["linear"])
  errors = []
  for path in sorted((S2_SAMPLE / "images").glob("*.tif")):
    with rasterio.open(path) as src:
      off = (src.height - 128) // 2
      bands = src.read([4, 3, 2, 8]).astype(np.float32)[:, off:off + 128, off:off + 128]
    bands = np.clip(bands / 10_000, 0, 1)
    pred = model(np.moveaxis(bands[:3], 0, -1)[None])
    errors.append(np.abs(pred[0, ..., 0] - bands[3]).mean())
  assert float(rows[1]["l1"]) == pytest.approx(np.mean(errors), rel=1e-4)


def test_demo_data_is_reported_per_sensor(tmp_path, model_dirs):
  build.build("nirgan_demo", tmp_path / "tfds", config="small")
  out = tmp_path / "eval"
  assert evaluate.main(["--model", str(model_dirs["gan"]), "--dataset", "nirgan_demo/small",
                        "--data_dir", str(tmp_path / "tfds"), "--split", "validation+test",
                        "--image_size", "32", "--out", str(out), "--quiet"]) == 0
  rows = _rows(out / "metrics.csv")
  overall = int(rows[0]["examples"])
  per_sensor = {r["sensor"]: int(r["examples"]) for r in rows[1:]}
  assert rows[0]["sensor"] == "all" and sum(per_sensor.values()) == overall
  assert len(per_sensor) >= 2
  for row in rows:
    assert all(np.isfinite(float(row[m])) for m in evaluate.METRIC_COLUMNS)


def test_missing_dataset_and_model_fail_clearly(tmp_path, model_dirs, capsys):
  assert evaluate.main(["--model", str(model_dirs["gan"]), "--dataset", "s2_100k/default",
                        "--data_dir", str(tmp_path / "nothing"), "--out",
                        str(tmp_path / "eval")]) == 1
  assert "python -m data_prep.build s2_100k" in capsys.readouterr().err
  assert evaluate.main(["--model", str(tmp_path / "nope"), "--dataset", "s2_100k/default",
                        "--data_dir", str(tmp_path), "--out", str(tmp_path / "eval")]) == 1
  assert "nope: no such model" in capsys.readouterr().err
  assert not (tmp_path / "eval").exists()
