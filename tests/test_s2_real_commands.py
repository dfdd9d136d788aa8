"""The commands that give a user the model trained on every vendored real place
(configs/s2_real.py docstring, README "Real imagery"), run as written, with the training cut
to a few steps: build both folders, train the GAN and the MLP, export, predict a real image."""

import subprocess
import sys

import numpy as np
import pytest
import rasterio

from conftest import REPO

SHORT = ["--config.train.num_train_steps=4", "--config.train.eval_every=4",
         "--config.train.log_every=2", "--config.train.image_every=0"]


def _run(argv):
  result = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
  assert result.returncode == 0, f"{argv}:\n{result.stderr[-3000:]}"
  return result


@pytest.mark.parametrize("variant", ["", ":mlp"])
def test_real_places_model_from_the_documented_commands(tmp_path, variant):
  data = tmp_path / "D"
  _run(["data_prep.build", "s2_100k", "--manual_dir", "tests/data/s2_100k_10",
        "--data_dir", str(data)])
  _run(["data_prep.build", "rgbn_geotiff", "--manual_dir", "tests/data/s2_more",
        "--data_dir", str(data)])
  workdir, model = tmp_path / "W", tmp_path / "M"
  _run(["nirgan_jax.train", "--config", f"configs/s2_real.py{variant}", "--workdir",
        str(workdir), f"--config.data.data_dir={data}", *SHORT])
  _run(["nirgan_jax.export", "--workdir", str(workdir), "--out", str(model)])
  image = REPO / "tests" / "data" / "s2_more" / "images" / "eurosat_Pasture_300.tif"
  out = tmp_path / "nir.tif"
  _run(["nirgan_jax.predict", str(image), "--model", str(model), "--bands",
        "4,3,2", "--out", str(out)])
  with rasterio.open(out) as src, rasterio.open(image) as ref:
    assert (src.width, src.height, src.crs) == (ref.width, ref.height, ref.crs)
    assert np.isfinite(src.read(1).astype(np.float64)).all()
  if not variant:  # README "Your own RGBN imagery": fine-tuning from that model
    _run(["nirgan_jax.train", "--config", "configs/s2_small.py", "--workdir",
          str(tmp_path / "mine"), f"--config.data.data_dir={data}",
          "--config.data.sources.sentinel2.name=rgbn_geotiff/default",
          "--config.data.sources.sentinel2.native_gsd_m=0", f"--config.init.checkpoint={model}",
          *SHORT])
    assert (tmp_path / "mine" / "checkpoints" / "4").is_dir()
