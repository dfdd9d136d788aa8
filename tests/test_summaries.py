"""TensorBoard events without TensorFlow: the event-file writer read back by TensorBoard's own
reader, the progress log, and data preparation plus a training run on a Python where
TensorFlow cannot be imported."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from nirgan_jax.train import summaries
from nirgan_jax.train.progress import ProgressLog

from conftest import REPO, TINY_CONFIG

WITHOUT_TENSORFLOW = REPO / "tests" / "without_tensorflow"  # its sitecustomize hides TF


def _accumulator(logdir) -> event_accumulator.EventAccumulator:
  accumulator = event_accumulator.EventAccumulator(str(logdir), size_guidance={"tensors": 0})
  accumulator.Reload()
  return accumulator


def _values(accumulator, tag):
  return {e.step: tensor_util.make_ndarray(e.tensor_proto) for e in accumulator.Tensors(tag)}


def _decoded(encoded: np.ndarray) -> tuple[tuple[int, int], list[np.ndarray]]:
  """An image summary's tensor as ((width, height), images)."""
  width, height, *pngs = encoded
  return (int(width), int(height)), [np.asarray(Image.open(io.BytesIO(p))) for p in pngs]


def test_events_read_back_by_tensorboard(tmp_path):
  writer = summaries.EventFileWriter(tmp_path)
  writer.write_hparams({"optim.lr": 2e-4, "data.source": "demo", "model.use_satclip": True})
  writer.write_scalars(1, {"train/g_l1": 0.25, "val_l1": np.float32(0.5)})
  writer.write_scalars(2, {"train/g_l1": 0.125})
  panels = np.random.default_rng(0).integers(0, 256, (2, 8, 24, 3), dtype=np.uint8)
  writer.write_images(2, {"val/panels": panels, "val/float": np.full((4, 4, 1), 0.5)})
  writer.write_texts(2, {"notes": "**bold**"})
  writer.flush()
  writer.write_scalars(3, {"train/g_l1": 0.0625})  # a second flush appends to the same file
  writer.close()

  assert len(list(tmp_path.glob(f"{summaries.EVENT_FILE_PREFIX}.*"))) == 1
  got = _accumulator(tmp_path)
  assert _values(got, "train/g_l1") == {1: 0.25, 2: 0.125, 3: 0.0625}
  assert _values(got, "val_l1") == {1: 0.5}
  assert got.summary_metadata["train/g_l1"].plugin_data.plugin_name == "scalars"
  size, images = _decoded(_values(got, "val/panels")[2])
  assert size == (24, 8) and len(images) == 2
  np.testing.assert_array_equal(np.stack(images), panels)
  assert got.summary_metadata["val/panels"].plugin_data.plugin_name == "images"
  size, (gray,) = _decoded(_values(got, "val/float")[2])
  assert size == (4, 4) and np.all(gray == 128)
  assert _values(got, "notes")[2] == b"**bold**"
  content = got.PluginTagToContent("hparams")["_hparams_/session_start_info"]
  hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
  assert hparams["optim.lr"].number_value == pytest.approx(2e-4)
  assert hparams["data.source"].string_value == "demo"
  assert hparams["model.use_satclip"].bool_value


def test_events_are_flushed_after_flush_secs(tmp_path):
  writer = summaries.EventFileWriter(tmp_path, flush_secs=0.0)  # every write is due
  writer.write_scalars(1, {"loss": 1.0})
  assert _values(_accumulator(tmp_path), "loss") == {1: 1.0}  # before any flush() or close()
  lazy = summaries.EventFileWriter(tmp_path / "lazy", flush_secs=3600.0)
  lazy.write_scalars(1, {"loss": 1.0})
  assert not (tmp_path / "lazy").exists()
  lazy.close()
  assert _values(_accumulator(tmp_path / "lazy"), "loss") == {1: 1.0}


def test_a_bad_image_is_refused(tmp_path):
  writer = summaries.EventFileWriter(tmp_path)
  with pytest.raises(ValueError, match="'rgb2'"):
    writer.write_images(1, {"rgb2": np.zeros((4, 4, 2))})


def test_progress_log_reports_rate_share_and_time_left():
  now = [0.0]
  progress = ProgressLog(num_train_steps=1000, every_secs=60.0, clock=lambda: now[0])
  assert progress(1) is None  # the first step (compiling) starts the clock
  now[0] = 30.0
  assert progress(100) is None
  now[0] = 100.0
  assert progress(201) == "2 steps/s, 20.1% (201/1000), ETA: 0:06:40"
  now[0] = 130.0
  assert progress(260) is None


def _without_tensorflow(command, **kwargs):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(WITHOUT_TENSORFLOW), str(REPO), os.environ.get("PYTHONPATH", "")]))
  return subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, **kwargs)


def test_data_prep_and_training_run_without_tensorflow(tmp_path):
  check = _without_tensorflow(["-c", "import tensorflow"])
  assert check.returncode != 0 and "No module named 'tensorflow'" in check.stderr

  data_dir, workdir = tmp_path / "tfds", tmp_path / "run"
  built = _without_tensorflow(["-m", "data_prep.build", "nirgan_demo", "--config", "small",
                               "--data_dir", str(data_dir)])
  assert built.returncode == 0, built.stderr[-3000:]
  trained = _without_tensorflow([
      "-m", "nirgan_jax.train", "--config", str(TINY_CONFIG), "--workdir", str(workdir),
      f"--config.data.data_dir={data_dir}", "--config.train.num_train_steps=2"])
  assert trained.returncode == 0, trained.stderr[-3000:]

  (events,) = workdir.glob(f"{summaries.EVENT_FILE_PREFIX}.*")
  tags: dict[str, set[int]] = {}
  for event in EventFileLoader(str(events)).Load():
    for value in event.summary.value:
      tags.setdefault(value.tag, set()).add(event.step)
      if value.tag == "val/panels":
        _, images = _decoded(tensor_util.make_ndarray(value.tensor))
        assert len(images) == 2 and images[0].dtype == np.uint8
  assert tags["train/g_l1"] == {1, 2} and tags["val_l1"] == {2} and tags["val/panels"] == {2}
  assert "_hparams_/session_start_info" in tags
  assert Path(workdir, "checkpoints", "2").is_dir()
