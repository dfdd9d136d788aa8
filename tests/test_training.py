"""End to end: train_and_evaluate on the demo data, checkpoints, TensorBoard, resume."""

import glob

import numpy as np
import pytest
import tensorflow as tf

from nirgan_jax import training

from conftest import load_config, tiny_config


def demo_config(data_dir, steps=4):
  config = tiny_config("multiply")
  demo = load_config("demo")
  config.data = demo.data
  config.train = demo.train
  config.data.data_dir = str(data_dir)
  config.data.sources.demo.name = "nirgan_demo/small"
  config.data.image_size = 32
  config.data.batch_size_per_device = 2
  config.model.conv_impl = "xla"  # compiles faster; the matmul path is tested elsewhere
  config.train.num_train_steps = steps
  config.train.eval_every = 2
  config.train.log_every = 1
  config.train.eval_ssim_window = 3
  return config


def _event_tags(workdir):
  tags = set()
  for path in glob.glob(str(workdir / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags |= {value.tag for value in event.summary.value}
  return tags


def plateau_every_eval(config):
  """Threshold 1 makes every evaluation "no better", patience 0 acts on it at once."""
  config.optim.plateau.update(dict(threshold=1.0, patience=0, factor=0.5))
  return config


def _scalars(workdir, tag):
  values = {}
  for path in glob.glob(str(workdir / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_train_evaluate_checkpoint_and_resume(tmp_path):
  workdir = tmp_path / "run"
  metrics = training.train_and_evaluate(
      plateau_every_eval(demo_config(tmp_path / "tfds", steps=4)), str(workdir))
  assert np.isfinite(metrics["val_l1"]) and any(k.startswith("val_psnr/") for k in metrics)
  tags = _event_tags(workdir)
  assert {"train/g_l1", "train/d_total", "train/g_lr", "val_l1", "val_ssim"} <= tags
  steps = sorted(int(p.split("/")[-1]) for p in glob.glob(str(workdir / "checkpoints" / "*"))
                 if p.split("/")[-1].isdigit())
  assert steps[-1] == 4

  # Resume: the same workdir continues from step 4 to 6 instead of starting over.
  resumed = training.train_and_evaluate(
      plateau_every_eval(demo_config(tmp_path / "tfds", steps=6)), str(workdir))
  assert np.isfinite(resumed["val_l1"])
  steps = sorted(int(p.split("/")[-1]) for p in glob.glob(str(workdir / "checkpoints" / "*"))
                 if p.split("/")[-1].isdigit())
  assert steps[-1] == 6

  # The plateau schedule halved the learning rate at each of the 3 evaluations (steps 2, 4, 6),
  # across the resume: its state travels in the checkpoint, the rate in the optimizer states.
  import orbax.checkpoint as ocp

  meta = ocp.CheckpointManager(workdir / "checkpoints").restore(
      6, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata
  assert meta["plateau"]["lr"] == pytest.approx(2e-4 / 8)
  lrs = _scalars(workdir, "train/g_lr")
  assert lrs[1] == pytest.approx(2e-4) and lrs[3] == pytest.approx(1e-4)
  assert lrs[5] == pytest.approx(5e-5)

  # A different pipeline cannot resume that run.
  changed = demo_config(tmp_path / "tfds", steps=8)
  changed.data.batch_size_per_device = 4
  with pytest.raises(ValueError, match="global_batch_size"):
    training.train_and_evaluate(changed, str(workdir))


def test_invalid_values_fail_before_compiling(tmp_path):
  config = demo_config(tmp_path)
  config.model.injection.style = "multiplyy"
  with pytest.raises(ValueError, match="model.injection.style='multiplyy'"):
    training.train_and_evaluate(config, str(tmp_path / "run"))
  config = demo_config(tmp_path)
  config.satclip.allow_random_init = False
  with pytest.raises(ValueError, match="satclip.checkpoint is empty"):
    training.train_and_evaluate(config, str(tmp_path / "run"))
