"""Inference needs no training code: a fresh interpreter that loads a model and predicts a
GeoTIFF imports neither the training side (step, loop, checkpoints, input pipeline) nor
optax, Grain or TensorFlow."""

import json
import os
import subprocess
import sys

import pytest
from test_predict import CRS, TRANSFORM, landscape, save_tiny_model

from conftest import REPO
from data_fixtures import write_geotiff

TRAINING_SIDE = ("nirgan_jax.train", "nirgan_jax.data", "optax", "grain", "tensorflow",
                 "tensorflow_datasets")

PREDICT = """
import json, sys
import numpy as np
from nirgan_jax.infer.model import load_model
from nirgan_jax.infer import tiled
from nirgan_jax.infer.predict import main

model = load_model(sys.argv[1])
image = tiled.ArraySource(np.full((24, 24, 3), 0.2, np.float32), location=(7.4, 46.9))
assert tiled.predict_image(model, image, tile=32, overlap=8).shape == (24, 24)
status = main([sys.argv[2], "--model", sys.argv[1], "--out", sys.argv[3], "--output", "ndvi",
               "--tile", "64", "--overlap", "16", "--quiet"])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""

INDICES = """
import json, sys
import numpy as np
from nirgan_jax import indices
from nirgan_jax.infer import geotiff

with np.errstate(invalid="ignore", divide="ignore"):
  ndvi = indices.ndvi(np.float32([0.1, 0.0]), np.float32([0.5, 0.0]), eps=0)
print(json.dumps({"ndvi": [None if np.isnan(v) else float(v) for v in ndvi],
                  "type": type(ndvi).__module__, "modules": sorted(sys.modules)}))
"""


def _run(script, *args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
  result = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _training_side(modules):
  return [m for m in modules if any(m == p or m.startswith(p + ".") for p in TRAINING_SIDE)]


def test_predict_imports_no_training_code(tmp_path):
  model_dir = save_tiny_model(tmp_path / "model")
  write_geotiff(tmp_path / "in.tif", landscape(80, 96), CRS, TRANSFORM)
  report = _run(PREDICT, model_dir, tmp_path / "in.tif", tmp_path / "ndvi.tif")
  assert report["status"] == 0 and (tmp_path / "ndvi.tif").is_file()
  assert "nirgan_jax.infer.predict" in report["modules"]
  assert _training_side(report["modules"]) == []


def test_indices_and_geotiff_input_need_no_jax():
  report = _run(INDICES)
  assert report["ndvi"][0] == pytest.approx(0.4 / 0.6, rel=1e-6) and report["ndvi"][1] is None
  assert report["type"] == "numpy"
  assert not [m for m in report["modules"] if m == "jax" or m.startswith("jax.")]
  assert _training_side(report["modules"]) == []
