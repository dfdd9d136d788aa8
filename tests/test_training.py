"""End to end on the small demo data: a trained and resumed run (TensorBoard, checkpoints, the
plateau schedule, the best step), export, fine-tuning, exact resume after SIGKILL, SIGTERM,
the NaN guard, config errors, and two processes on loopback."""

import dataclasses
import functools
import glob
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import flags
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

from nirgan_jax import errors
from nirgan_jax.data import pipeline as input_pipeline
from nirgan_jax.infer import model as infer_model
from nirgan_jax.infer import model_dir
from nirgan_jax.train import checkpointing, export, loop, warm_start
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train.preemption import Preempted

from conftest import REPO, TINY_CONFIG, assert_adam_runs_agree, load_config_file


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
  """The small demo dataset, built once (runs launched in parallel must not race to)."""
  from data_prep import build

  data_dir = tmp_path_factory.mktemp("tfds")
  build.build("nirgan_demo", data_dir, config="small")
  return data_dir


def tiny(data_dir, steps=4, **train):
  config = load_config_file(TINY_CONFIG)
  config.data.data_dir = str(data_dir)
  config.train.num_train_steps = steps
  config.train.update(train)
  return config


def _events(workdir):
  """The run's TensorBoard events, read as TensorBoard reads them."""
  for path in sorted(glob.glob(str(workdir / "events.out.tfevents.*"))):
    yield from EventFileLoader(path).Load()


def _event_tags(workdir):
  return {value.tag for event in _events(workdir) for value in event.summary.value}


def _scalars(workdir, tag):
  return {event.step: float(tensor_util.make_ndarray(value.tensor)) for event in _events(workdir)
          for value in event.summary.value if value.tag == tag}


def _steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def plateau_every_eval(config):
  """Threshold 1 makes every evaluation "no better", patience 0 acts on it at once."""
  config.optim.plateau.update(dict(threshold=1.0, patience=0, factor=0.5))
  return config


def _train_cli(workdir, data_dir, *flags, env=None):
  command = [sys.executable, "-m", "nirgan_jax.train", "--config", str(TINY_CONFIG),
             "--workdir", str(workdir), f"--config.data.data_dir={data_dir}", *flags]
  return subprocess.Popen(command, cwd=REPO, env=env or dict(os.environ),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclasses.dataclass
class TrainedRun:
  workdir: Path
  first_metrics: dict  # of the first 4 steps
  first_steps: list  # checkpoints after them
  resumed_metrics: dict  # after resuming the same workdir to step 6


@pytest.fixture(scope="module")
def trained_run(demo_data, tmp_path_factory):
  """4 steps with the plateau schedule acting at every evaluation, then resumed to step 6."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  first = loop.train_and_evaluate(plateau_every_eval(tiny(demo_data, steps=4)), str(workdir))
  first_steps = _steps(workdir)
  resumed = loop.train_and_evaluate(plateau_every_eval(tiny(demo_data, steps=6)), str(workdir))
  return TrainedRun(workdir, first, first_steps, resumed)


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
  """The trained run's latest step as a model directory with a jax.export program."""
  model_dir = tmp_path_factory.mktemp("export") / "model"
  assert export.main(["--workdir", str(trained_run.workdir), "--out", str(model_dir),
                      "--step", "latest", "--jax_export"]) == 0
  return model_dir


def test_training_evaluates_and_logs_to_tensorboard(trained_run):
  metrics = trained_run.first_metrics
  assert np.isfinite(metrics["val_l1"]) and any(k.startswith("val_psnr/") for k in metrics)
  assert {"train/g_l1", "train/d_total", "train/g_lr", "val_l1", "val_ssim",
          "val/panels"} <= _event_tags(trained_run.workdir)
  assert trained_run.first_steps == [2, 4]


def test_resume_continues_from_the_latest_checkpoint(trained_run):
  assert np.isfinite(trained_run.resumed_metrics["val_l1"])
  assert _steps(trained_run.workdir) == [2, 4, 6]


def test_plateau_schedule_carries_across_resume(trained_run):
  # It halved the learning rate at each of the 3 evaluations (steps 2, 4, 6): its state
  # travels in the checkpoint, the rate in the optimizer states.
  _, metadata, _ = checkpointing.restore_weights(trained_run.workdir, "latest")
  assert metadata["plateau"]["lr"] == pytest.approx(2e-4 / 8)
  lrs = _scalars(trained_run.workdir, "train/g_lr")
  assert lrs[1] == pytest.approx(2e-4) and lrs[3] == pytest.approx(1e-4)
  assert lrs[5] == pytest.approx(5e-5)


def test_best_step_survives_resume(trained_run):
  # Its metric is on disk, not only in the first run's memory.
  val_l1 = _scalars(trained_run.workdir, "val_l1")
  best = checkpointing.open_read_only(trained_run.workdir).best_step()
  assert best == min(val_l1, key=val_l1.get)


def test_changed_pipeline_cannot_resume(trained_run, demo_data):
  changed = tiny(demo_data, steps=8)
  changed.data.batch_size_per_device = 4
  with pytest.raises(ValueError, match="global_batch_size"):
    loop.train_and_evaluate(changed, str(trained_run.workdir))


def test_export_runs_in_a_fresh_process_without_training_code(exported, tmp_path):
  params, model_config = model_dir.load_model_dir(exported)
  assert set(params) == {"generator", "satclip"} and model_config.source.step == 6
  rng = np.random.default_rng(0)
  rgb = rng.uniform(0, 0.4, (2, 48, 64, 3)).astype(np.float32)
  lonlat = np.array([[7.5, 46.9], [-120.2, 38.5]], np.float32)
  expected = np.asarray(infer_model.inference_fn(model_config)(
      params["generator"], params["satclip"], rgb, lonlat))
  np.save(tmp_path / "rgb.npy", rgb)
  np.save(tmp_path / "lonlat.npy", lonlat)
  script = (
      "import sys, numpy as np\n"
      "from nirgan_jax.infer import model, model_dir\n"
      "d, t = sys.argv[1], sys.argv[2]\n"
      "rgb, ll = np.load(t + '/rgb.npy'), np.load(t + '/lonlat.npy')\n"
      "params, config = model_dir.load_model_dir(d)\n"
      "a = model.inference_fn(config)(params['generator'], params['satclip'], rgb, ll)\n"
      "b = model.load_exported(d)(rgb, ll)\n"
      "assert not [m for m in sys.modules if m.startswith('nirgan_jax.train')]\n"
      "np.save(t + '/a.npy', np.asarray(a)); np.save(t + '/b.npy', np.asarray(b))\n")
  subprocess.run([sys.executable, "-c", script, str(exported), str(tmp_path)], cwd=REPO,
                 check=True, timeout=600)
  np.testing.assert_allclose(np.load(tmp_path / "a.npy"), expected, atol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "b.npy"), expected, atol=1e-4)
  assert expected.shape == (2, 48, 64, 1)


def test_export_never_replaces_a_run_and_names_a_missing_step(trained_run, exported, tmp_path):
  assert export.main(["--workdir", str(trained_run.workdir), "--out", str(exported)]) == 1
  # --overwrite replaces only a model directory: never the training run itself.
  before = sorted(p.name for p in trained_run.workdir.rglob("*"))
  assert export.main(["--workdir", str(trained_run.workdir), "--out", str(trained_run.workdir),
                      "--overwrite"]) == 1
  assert sorted(p.name for p in trained_run.workdir.rglob("*")) == before
  with pytest.raises(checkpointing.CheckpointNotFoundError, match="no checkpoint of step 5"):
    export.export_model(trained_run.workdir, tmp_path / "other", which=5)


def test_fine_tuning_from_an_exported_model(exported, demo_data, tmp_path):
  # lr ~0 keeps the starting weights, so the run's weights must be the model's.
  params, _ = model_dir.load_model_dir(exported)
  config = tiny(demo_data, steps=1)
  config.optim.lr = 1e-12
  config.init.checkpoint = str(exported)
  config.satclip.allow_random_init = False  # the encoder comes from the model directory too
  loop.train_and_evaluate(config, str(tmp_path / "tuned"))
  tuned, _, _ = checkpointing.restore_weights(tmp_path / "tuned", "latest")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-8),
               tuned["generator"], params["generator"])
  jax.tree.map(np.testing.assert_array_equal, tuned["satclip"], params["satclip"])


def test_fine_tuning_from_a_workdir_refuses_another_shape(trained_run, demo_data, tmp_path):
  config = tiny(demo_data, steps=1)
  config.init.checkpoint = str(trained_run.workdir)
  config.init.step = "latest"
  assert "discriminator" in warm_start.load_init_weights(config)
  config.model.generator.ngf = 16
  with pytest.raises(ValueError, match=r"\['conv_in'\]\['kernel'\]: shape \(7, 7, 3, 8\)"):
    loop.train_and_evaluate(config, str(tmp_path / "wrong"))


def _averaged(data_dir, steps):
  config = tiny(data_dir, steps=steps, eval_every=4)
  config.optim.ema_decay = 0.5
  return config


def test_weight_average_is_checkpointed_resumed_and_exported(trained_run, demo_data, tmp_path):
  resumed, straight = tmp_path / "resumed", tmp_path / "straight"
  loop.train_and_evaluate(_averaged(demo_data, 4), str(resumed))
  loop.train_and_evaluate(_averaged(demo_data, 8), str(resumed))
  loop.train_and_evaluate(_averaged(demo_data, 8), str(straight))
  assert (resumed / "checkpoints" / "8" / checkpointing.GENERATOR_EMA).is_dir()
  average, _, _ = checkpointing.restore_weights(resumed, "latest")
  trained, _, _ = checkpointing.restore_weights(resumed, "latest", average=False)
  assert not np.allclose(average["generator"]["conv_in"]["kernel"],
                         trained["generator"]["conv_in"]["kernel"])
  expected, _, _ = checkpointing.restore_weights(straight, "latest")
  jax.tree.map(np.testing.assert_array_equal, average, expected)

  export.export_model(resumed, tmp_path / "model", "latest")
  exported, _ = model_dir.load_model_dir(tmp_path / "model")
  jax.tree.map(np.testing.assert_array_equal, exported["generator"], average["generator"])

  # A run that kept no average cannot resume with one; its checkpoints stay as they were.
  with pytest.raises(ValueError, match="holds no moving average of the generator"):
    loop.train_and_evaluate(_averaged(demo_data, 8), str(trained_run.workdir))
  assert _steps(trained_run.workdir) == [2, 4, 6]


def test_resume_after_sigkill_is_bit_identical(demo_data, tmp_path):
  steps = 40
  uninterrupted = tmp_path / "uninterrupted"
  loop.train_and_evaluate(tiny(demo_data, steps=steps), str(uninterrupted))

  killed = tmp_path / "killed"
  process = _train_cli(killed, demo_data, f"--config.train.num_train_steps={steps}")
  first = killed / "checkpoints" / "2"
  deadline = time.monotonic() + 600
  while not first.is_dir() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.01)
  time.sleep(random.uniform(0.0, 0.5))  # a random point after a checkpoint
  process.send_signal(signal.SIGKILL)
  output = process.communicate()[0]
  assert process.returncode == -signal.SIGKILL, output[-3000:]
  interrupted_at = _steps(killed)[-1]
  assert 2 <= interrupted_at < steps

  loop.train_and_evaluate(tiny(demo_data, steps=steps), str(killed))
  expected, _, _ = checkpointing.restore_weights(uninterrupted, steps)
  resumed, _, _ = checkpointing.restore_weights(killed, steps)
  for network in ("generator", "discriminator"):
    jax.tree.map(np.testing.assert_array_equal, resumed[network], expected[network])


def test_sigterm_saves_and_stops_then_resumes(demo_data, tmp_path):
  workdir = tmp_path / "run"

  def send_sigterm_after_first_checkpoint():
    while not (workdir / "checkpoints" / "2").is_dir():
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_sigterm_after_first_checkpoint, daemon=True).start()
  with pytest.raises(Preempted, match="stopped by SIGTERM") as stopped:
    loop.train_and_evaluate(tiny(demo_data, steps=10_000), str(workdir))
  stop_step = stopped.value.step
  assert _steps(workdir)[-1] == stop_step and stop_step < 10_000
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is uninstalled

  loop.train_and_evaluate(tiny(demo_data, steps=stop_step + 1), str(workdir))
  assert _steps(workdir)[-1] == stop_step + 1


def test_auto_workers_are_measured_logged_and_kept_on_resume(demo_data, tmp_path, monkeypatch,
                                                           caplog):
  """"auto" times the pipeline and the compiled step and logs its choice; a resume reads with
  the count saved in the checkpoint (the state of Grain's multiprocess iterator depends on
  it) and measures nothing."""
  flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags
  caplog.set_level(logging.INFO)
  monkeypatch.setattr(input_pipeline, "measure_pipeline_rate", functools.partial(
      input_pipeline.measure_pipeline_rate, seconds=0.5))
  measured = []

  def one_worker(*rates_batch_cores):  # a multiprocess iterator: its state needs the count
    measured.append(rates_batch_cores)
    return 1

  monkeypatch.setattr(input_pipeline, "choose_workers", one_worker)
  config = tiny(demo_data, steps=1, image_every=0)
  config.data.workers = "auto"
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))
  [(pipeline_rate, step_rate, batch, cores)] = measured
  assert pipeline_rate > 0 and step_rate > 0 and batch == 2 * jax.device_count() and cores >= 1
  assert "data.workers=auto: 1 worker processes" in caplog.text

  def no_measuring(*args, **kwargs):
    raise AssertionError("a resume measured the pipeline")

  monkeypatch.setattr(input_pipeline, "measure_pipeline_rate", no_measuring)
  config.train.num_train_steps = 2
  loop.train_and_evaluate(config, str(workdir))
  assert "data.workers=auto: resuming with the checkpoint's 1 worker processes" in caplog.text
  _, metadata, step = checkpointing.restore_weights(workdir, "latest")
  assert step == 2 and metadata["reader"]["workers"] == 1


def test_nonfinite_batch_is_skipped_and_never_saved(demo_data, tmp_path, monkeypatch, caplog):
  shard_batch = mesh_lib.shard_batch
  calls = []

  def poison_second_training_batch(mesh, batch):
    calls.append(1)
    if len(calls) == 2:  # step 2's batch: the eval at step 2 comes after it
      batch = dict(batch, rgb=np.full_like(batch["rgb"], np.nan))
    return shard_batch(mesh, batch)

  monkeypatch.setattr(mesh_lib, "shard_batch", poison_second_training_batch)
  workdir = tmp_path / "skip"
  loop.train_and_evaluate(tiny(demo_data, steps=2, image_every=0), str(workdir))
  assert "non-finite loss in 1 step(s) of [2, 2] (steps 2)" in caplog.text
  assert "g_l1" in caplog.text
  assert _scalars(workdir, "train/nonfinite") == {1: 0.0, 2: 1.0}
  saved, _, _ = checkpointing.restore_weights(workdir, "latest")
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved))

  calls.clear()
  halted = tmp_path / "halt"
  assert issubclass(loop.NonFiniteLossError, errors.NirganError)  # one line from the CLI
  with pytest.raises(loop.NonFiniteLossError, match=r"\(steps 2\): .*g_l1"):
    loop.train_and_evaluate(tiny(demo_data, steps=2, image_every=0, on_nonfinite="halt"),
                                str(halted))
  assert not (halted / "checkpoints").exists() or _steps(halted) == []


def test_no_step_waits_for_the_host(demo_data, tmp_path, monkeypatch):
  """The training loop runs with implicit transfers disallowed: the only device-host traffic
  is what it names (sharding batches, and the host work of log, eval and checkpoint steps),
  so an implicit sync (e.g. float() of a step's metric) cannot come back unnoticed."""
  train_loop = loop.train_loop

  def guarded(*args, **kwargs):
    with jax.transfer_guard("disallow"):
      return train_loop(*args, **kwargs)

  monkeypatch.setattr(loop, "train_loop", guarded)
  config = tiny(demo_data, steps=6, log_every=3, image_every=3)
  metrics = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(metrics["val_l1"]) and _steps(tmp_path / "run") == [2, 4, 6]


def test_config_errors_fail_before_compiling(demo_data, tmp_path):
  # A misspelt key on the command line: the locked config refuses it, naming it.
  process = _train_cli(tmp_path / "run", demo_data, "--config.optim.lrr=1e-3")
  output = process.communicate(timeout=300)[0]
  assert process.returncode != 0 and "lrr" in output
  assert not (tmp_path / "run").exists()

  config = tiny(demo_data)
  config.model.injection.style = "multiplyy"
  with pytest.raises(ValueError, match="model.injection.style='multiplyy'"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  config = tiny(demo_data)
  config.train.num_images = 100
  with pytest.raises(ValueError, match="train.num_images=100"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  config = tiny(demo_data)
  config.satclip.allow_random_init = False
  with pytest.raises(ValueError, match="satclip.checkpoint is empty"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  config = tiny(demo_data)
  config.init.checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="init.checkpoint .*missing"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_on_loopback_equal_one_process(demo_data, tmp_path):
  steps = 3
  assert jax.device_count() % 2 == 0, "the single process's devices split over two processes"
  per_process = jax.device_count() // 2  # the same global batch as the single process's
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={per_process}",
             JAX_PLATFORMS="cpu")
  address = f"127.0.0.1:{_free_port()}"
  multi = tmp_path / "two_processes"
  processes = [
      _train_cli(multi, demo_data, f"--config.train.num_train_steps={steps}",
                 f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
                 env=env)
      for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for p, output in zip(processes, outputs, strict=True):
    assert p.returncode == 0, output[-3000:]

  single = tmp_path / "one_process"
  config = tiny(demo_data, steps=steps)
  loop.train_and_evaluate(config, str(single))
  expected, _, _ = checkpointing.restore_weights(single, steps)
  got, _, _ = checkpointing.restore_weights(multi, steps)
  for network in ("generator", "discriminator"):
    assert_adam_runs_agree(got[network], expected[network], steps, config.optim.lr)
