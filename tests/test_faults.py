"""Faults a long run meets: a damaged checkpoint (resume, export and fine-tuning pass over it
to the newest step that reads, and set nothing aside that another config cannot read), two
trainers on one workdir, a holder killed with SIGKILL, and a full filesystem."""

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from etils import epath
from rasterio.transform import from_origin

from nirgan_jax import errors
from nirgan_jax.infer import model_dir
from nirgan_jax.train import checkpointing, export, loop, warm_start, workdir_lock

from conftest import REPO, TINY_CONFIG, load_config_file
from data_fixtures import write_geotiff

# An absl record (INFO, WARNING, ERROR) or a Python logging one: not a line of the refusal.
LOG_RECORD = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] "
                        r"|^(INFO|WARNING|ERROR):\S+:")

LISTING = "--listing--"  # what the tool printed is above it, the files it left below
STEPS = (2, 4, 6)  # the base run's checkpoints


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
  from data_prep import build

  data_dir = tmp_path_factory.mktemp("tfds")
  build.build("nirgan_demo", data_dir, config="small")
  return data_dir


def tiny(data_dir, steps):
  config = load_config_file(TINY_CONFIG)
  config.data.data_dir = str(data_dir)
  config.train.num_train_steps = steps
  config.train.image_every = 0
  return config


@pytest.fixture(scope="module")
def base_run(demo_data, tmp_path_factory):
  """6 steps, checkpoints 2, 4 and 6: copied by each test before it damages anything."""
  workdir = tmp_path_factory.mktemp("base") / "run"
  loop.train_and_evaluate(tiny(demo_data, 6), str(workdir))
  assert _steps(workdir) == list(STEPS)
  return workdir


def _copy(run: Path, tmp_path: Path) -> Path:
  return Path(shutil.copytree(run, tmp_path / "run"))


def _steps(workdir: Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _snapshot(folder: Path) -> dict[str, str]:
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def _largest_file(folder: Path) -> Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(path: Path) -> None:
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _truncate_data_files(item: Path) -> None:
  """Every OCDBT data file of ``item``: the per-process ones and the merged ones."""
  for data_file in item.rglob("d/*"):
    _truncate(data_file)


def _remove_manifests(item: Path) -> None:
  for manifest in item.rglob("manifest.ocdbt"):
    manifest.unlink()


# Each damages one item of a step folder, as a copy cut short or a disk error would.
DAMAGES = {
    "generator-data-file-truncated":
        lambda step: _truncate(_largest_file(step / "generator" / "ocdbt.process_0")),
    "iterator-state-garbled":
        lambda step: (step / "data_iter" / "process_0-of-1.json").write_text("\x00garbage"),
    "generator-manifests-removed": lambda step: _remove_manifests(step / "generator"),
    "satclip-data-files-truncated": lambda step: _truncate_data_files(step / "satclip"),
    "metrics-garbled": lambda step: (step / "metrics" / "metrics").write_text("{not json"),
}


def _damage(workdir: Path, how: str, step: int = 6) -> dict[str, str]:
  """Damages ``step``; returns a snapshot of the damaged step folder."""
  folder = workdir / "checkpoints" / str(step)
  DAMAGES[how](folder)
  return _snapshot(folder)


def _unreadable_warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and "unreadable" in r.getMessage()]


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("how", [h for h in DAMAGES if h != "generator-manifests-removed"])
def test_resume_sets_a_damaged_step_aside_and_trains_on(how, base_run, demo_data, tmp_path,
                                                       caplog):
  workdir = _copy(base_run, tmp_path)
  damaged = _damage(workdir, how)
  caplog.set_level(logging.INFO)
  metrics = loop.train_and_evaluate(tiny(demo_data, 8), str(workdir))
  assert np.isfinite(metrics["val_l1"])
  [warning] = _unreadable_warnings(caplog)
  assert warning.startswith("checkpoint step 6 is unreadable (")
  assert "resumed from step 4" in caplog.text
  assert _steps(workdir)[-1] == 8
  aside = workdir / "checkpoints" / checkpointing.UNREADABLE_DIR / "6"
  assert str(aside) in warning
  assert _snapshot(aside) == damaged  # kept, byte for byte


def test_resume_through_the_command_line_says_it_in_one_warning(base_run, demo_data, tmp_path):
  """The row that printed 319 lines of tracebacks (asyncio's "Event loop is closed" among
  them): one warning, no traceback, the run reaches num_train_steps."""
  workdir = _copy(base_run, tmp_path)
  _damage(workdir, "generator-manifests-removed")
  process = subprocess.run(
      [sys.executable, "-m", "nirgan_jax.train", "--config", str(TINY_CONFIG), "--workdir",
       str(workdir), f"--config.data.data_dir={demo_data}", "--config.train.num_train_steps=8",
       "--config.train.image_every=0"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  output = process.stdout + process.stderr
  assert process.returncode == 0, output[-3000:]
  assert "Traceback" not in output and "Event loop is closed" not in output, output[-3000:]
  warnings = [line for line in output.splitlines() if "is unreadable" in line]
  assert len(warnings) == 1 and "checkpoint step 6 is unreadable" in warnings[0], warnings
  assert _steps(workdir)[-1] == 8
  assert (workdir / "checkpoints" / checkpointing.UNREADABLE_DIR / "6" / "generator").is_dir()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(workdir: Path, data_dir: Path, steps: int) -> list[str]:
  """Trains ``workdir`` to ``steps`` with two processes of ``jax.distributed`` on loopback;
  returns what each printed."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={jax.device_count() // 2}")
  address = f"127.0.0.1:{_free_port()}"
  processes = [subprocess.Popen(
      [sys.executable, "-m", "nirgan_jax.train", "--config", str(TINY_CONFIG), "--workdir",
       str(workdir), f"--config.data.data_dir={data_dir}",
       f"--config.train.num_train_steps={steps}", "--config.train.image_every=0",
       f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  printed = [p.communicate(timeout=600)[0] for p in processes]
  for process, output in zip(processes, printed, strict=True):
    assert process.returncode == 0, output[-3000:]
  return printed


def test_processes_of_one_run_set_aside_a_step_only_one_of_them_cannot_read(demo_data,
                                                                            tmp_path):
  """Process 1's iterator state of step 4 garbled: process 0 reads the step, yet both set it
  aside once and resume from step 2, as one run."""
  workdir = tmp_path / "run"
  _two_processes(workdir, demo_data, 4)
  assert _steps(workdir) == [2, 4]
  (workdir / "checkpoints" / "4" / "data_iter" / "process_1-of-2.json").write_text("\x00garbage")
  printed = _two_processes(workdir, demo_data, 6)
  warnings = [[line for line in output.splitlines() if "is unreadable" in line]
              for output in printed]
  assert [len(w) for w in warnings] == [1, 1], warnings
  assert "checkpoint step 4 is unreadable (unreadable on another process)" in warnings[0][0]
  assert "checkpoint step 4 is unreadable" in warnings[1][0]
  assert all("resumed from step 2" in output for output in printed)
  assert _steps(workdir) == [2, 4, 6]
  assert checkpointing.set_aside_steps(workdir / "checkpoints") == ["4"]


def test_no_readable_step_is_refused_and_stays_refused(base_run, demo_data, tmp_path, caplog):
  workdir = _copy(base_run, tmp_path)
  for step in STEPS:
    _damage(workdir, "iterator-state-garbled", step)
  for _ in range(2):  # a rerun must not quietly start afresh
    with pytest.raises(checkpointing.NoReadableCheckpointError,
                       match=r"checkpoints: no checkpoint of this run can be restored .*"
                             r"2, 4, 6\); to train from scratch here, move"):
      loop.train_and_evaluate(tiny(demo_data, 8), str(workdir))
  assert len(_unreadable_warnings(caplog)) == 3
  assert _steps(workdir) == []
  assert checkpointing.set_aside_steps(workdir / "checkpoints") == ["2", "4", "6"]


def test_a_step_of_another_model_config_is_refused_not_set_aside(base_run, demo_data,
                                                                tmp_path):
  workdir = _copy(base_run, tmp_path)
  before = _snapshot(workdir / "checkpoints")
  config = tiny(demo_data, 8)
  config.model.generator.ngf = 16
  with pytest.raises(ValueError, match="saved by a run of another model config"):
    loop.train_and_evaluate(config, str(workdir))
  assert _snapshot(workdir / "checkpoints") == before


# --------------------------------------------------------------------------- export, warm start


@pytest.fixture
def damaged_run(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  _damage(workdir, "generator-data-file-truncated")
  return workdir


def test_export_passes_over_an_unreadable_step_and_moves_nothing(damaged_run, tmp_path,
                                                                caplog, capsys):
  before = _snapshot(damaged_run)
  assert export.main(["--workdir", str(damaged_run), "--out", str(tmp_path / "latest"),
                      "--step", "latest"]) == 0
  assert model_dir.load_config(tmp_path / "latest").source.step == 4
  [warning] = _unreadable_warnings(caplog)
  assert "checkpoints/6: unreadable checkpoint (OUT_OF_RANGE" in warning
  assert "looking for the latest step among the others" in warning

  checkpoints = damaged_run / "checkpoints"
  val_l1 = {step: checkpointing._val_metric(epath.Path(checkpoints), step) for step in (2, 4)}
  assert export.main(["--workdir", str(damaged_run), "--out", str(tmp_path / "best"),
                      "--step", "best"]) == 0
  assert model_dir.load_config(tmp_path / "best").source.step == min(val_l1, key=val_l1.get)
  assert _snapshot(damaged_run) == before
  capsys.readouterr()


def test_export_refuses_an_unreadable_step_asked_for_by_number(damaged_run, tmp_path, capfd):
  assert export.main(["--workdir", str(damaged_run), "--out", str(tmp_path / "six"),
                      "--step", "6"]) == 1
  stderr = capfd.readouterr().err
  [line] = [line for line in stderr.splitlines() if not line.startswith("WARNING:")]
  assert line.startswith(f"error: {damaged_run}/checkpoints/6: unreadable checkpoint (")
  assert line.endswith("; readable steps: [2, 4])")
  assert not (tmp_path / "six").exists()


def test_fine_tuning_from_a_workdir_passes_over_an_unreadable_step(damaged_run, demo_data):
  config = tiny(demo_data, 1)
  config.init.checkpoint = str(damaged_run)
  config.init.step = "latest"
  params = warm_start.load_init_weights(config)
  expected, _, _ = checkpointing.restore_weights(damaged_run, 4)
  jax.tree.map(np.testing.assert_array_equal, params, expected)
  config.init.step = "6"
  with pytest.raises(checkpointing.UnreadableCheckpointError, match=r"readable steps: \[2, 4\]"):
    warm_start.load_init_weights(config)


# --------------------------------------------------------------------------- one writer


def _hold_in_a_process(workdir: Path, forks: bool = False) -> subprocess.Popen:
  """A process that holds ``workdir`` (and, with ``forks``, has forked a child that lives on)
  until killed; returns once it holds."""
  script = (
      "import os, sys, time\n"
      "from nirgan_jax.train import workdir_lock\n"
      "with workdir_lock.hold(sys.argv[1]):\n"
      "  started, child_runs = os.pipe()\n"
      f"  if {forks} and os.fork() == 0:\n"  # the child's fork hooks have run once it writes
      "    os.write(child_runs, b'x'); time.sleep(600); os._exit(0)\n"
      f"  if {forks}: os.read(started, 1)\n"
      "  print('held', flush=True)\n"
      "  time.sleep(600)\n")
  process = subprocess.Popen([sys.executable, "-c", script, str(workdir)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
  assert process.stdout.readline().strip() == "held"
  return process


@pytest.mark.parametrize("forks", [False, True], ids=["alone", "with-a-forked-child"])
def test_a_holder_killed_with_sigkill_never_blocks_the_next_run(tmp_path, forks):
  holder = _hold_in_a_process(tmp_path, forks)
  try:
    busy = rf"another run is training here \(host \S+, process {holder.pid}\)"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=busy), workdir_lock.hold(tmp_path):
      pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    workdir_lock.refuse_if_held(tmp_path)  # the forked child, still alive, holds nothing
    with workdir_lock.hold(tmp_path):
      assert (tmp_path / workdir_lock.LOCK_FILE).read_text().split()[1] == str(os.getpid())
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(holder.pid, signal.SIGKILL)  # the forked child too
    holder.wait(timeout=60)


def test_a_second_trainer_is_refused_at_once_and_the_first_finishes(demo_data, tmp_path):
  workdir, steps = tmp_path / "run", 30
  train = [sys.executable, "-m", "nirgan_jax.train", "--config", str(TINY_CONFIG),
           "--workdir", str(workdir), f"--config.data.data_dir={demo_data}",
           f"--config.train.num_train_steps={steps}", "--config.train.image_every=0"]
  first = subprocess.Popen(train, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
  try:
    deadline = time.monotonic() + 600
    while not (workdir / "checkpoints" / "2").is_dir() and first.poll() is None:
      assert time.monotonic() < deadline
      time.sleep(0.05)
    start = time.monotonic()
    second = subprocess.run(train, cwd=REPO, capture_output=True, text=True, timeout=600)
    refused_in = time.monotonic() - start
    assert first.poll() is None, "the first run ended before the second was refused"
    assert second.returncode == 1, second.stderr[-3000:]
    assert second.stderr.strip() == (
        f"error: {workdir}: another run is training here (host {os.uname().nodename}, "
        f"process {first.pid}); wait for it to finish or stop it, or give another --workdir")
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"process {first.pid}"):
      loop.train_and_evaluate(tiny(demo_data, steps), str(workdir))
    output = first.communicate(timeout=600)[0]
  finally:
    first.kill()
  assert first.returncode == 0, output[-3000:]
  assert _steps(workdir)[-1] == steps
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1
  print(f"second trainer refused in {refused_in:.1f} s")


# --------------------------------------------------------------------------- full filesystem


def test_export_into_a_full_filesystem_is_one_line_and_leaves_nothing(base_run, tmp_path,
                                                                     monkeypatch, capfd):
  """A write that raises ENOSPC, as a full disk's would."""

  def no_space(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

  monkeypatch.setattr(type(epath.Path(tmp_path)), "write_text", no_space)
  out = tmp_path / "out" / "model"
  out.parent.mkdir()
  assert export.main(["--workdir", str(base_run), "--out", str(out)]) == 1
  assert capfd.readouterr().err.strip() == (
      f"error: {out}: cannot write the model directory (No space left on device)")
  assert list(out.parent.iterdir()) == []


def _unshare_tmpfs_available() -> bool:
  if shutil.which("unshare") is None:
    return False
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m t /mnt"],
                         capture_output=True)
  return probe.returncode == 0


@pytest.mark.skipif(not _unshare_tmpfs_available(),
                    reason="no user and mount namespaces to mount a small tmpfs in")
@pytest.mark.parametrize("tool", ["train", "export", "predict", "evaluate", "timeseries", "prep"])
def test_a_real_full_filesystem_is_one_line(tool, base_run, demo_data, tmp_path):
  """A 1 MB tmpfs, mounted in a namespace of the tool's own, filled but for 64 KB."""
  full = tmp_path / "full"
  full.mkdir()
  rng = np.random.default_rng(0)
  if tool in ("predict", "evaluate", "timeseries"):
    model = tmp_path / "model"
    export.export_model(base_run, model, "latest")
  if tool == "train":
    argv = ["nirgan_jax.train", "--config", str(TINY_CONFIG), "--workdir", f"{full}/run",
            f"--config.data.data_dir={demo_data}", "--config.train.num_train_steps=4",
            "--config.train.image_every=0"]
    destination, left = f"{full}/run", ["filler", "run"]  # no step: see below
  elif tool == "export":
    argv = ["nirgan_jax.export", "--workdir", str(base_run), "--out", f"{full}/model"]
    destination, left = f"{full}/model", ["filler"]
  elif tool == "evaluate":  # a table, a JSON line and figures
    argv = ["nirgan_jax.evaluate", "--model", str(model), "--dataset", "nirgan_demo/small",
            "--data_dir", str(demo_data), "--split", "test", "--image_size", "64",
            "--protocol", "whole_same7",
            "--figures", "4", "--out", f"{full}/evaluation", "--quiet"]
    destination, left = f"{full}/evaluation", ["filler"]
  elif tool == "timeseries":  # a plot and its CSV
    dates = tmp_path / "dates"
    dates.mkdir()
    for date in ("2023-05-01", "2023-07-01"):
      write_geotiff(dates / f"{date}.tif", rng.integers(1, 3000, (4, 512, 512)).astype(np.uint16),
                    "EPSG:32632", from_origin(500_000, 5_200_000, 10, 10))
    argv = ["nirgan_jax.timeseries", str(dates), "--model", str(model), "--window", "512",
            "--out", f"{full}/ndvi.png", "--quiet"]
    destination, left = f"{full}/ndvi", ["filler"]
  elif tool == "prep":  # the demo's TFDS build
    argv = ["data_prep.build", "nirgan_demo", "--config", "small", "--data_dir", f"{full}/tfds"]
    destination, left = f"{full}/tfds", ["filler"]
  else:
    scene = tmp_path / "scene.tif"
    write_geotiff(scene, rng.integers(1, 3000, (3, 256, 256)).astype(np.uint16), "EPSG:32632",
                  from_origin(500_000, 5_200_000, 10, 10))
    argv = ["nirgan_jax.predict", str(scene), "--model", str(model), "--out",
            f"{full}/nir.tif", "--quiet"]
    destination, left = f"{full}/nir.tif", ["filler"]
  script = (f"mount -t tmpfs -o size=1m tmpfs {full} && head -c {1024 * 1024 - 65536} "
            f"/dev/zero > {full}/filler && {sys.executable} -m {' '.join(argv)}; status=$?; "
            f"echo {LISTING}; ls -A {full}; ls {full}/run/checkpoints 2>/dev/null; exit $status")
  process = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
  assert process.returncode == 1, process.stderr[-3000:]
  listed = process.stdout.split(LISTING)[-1].split()
  assert listed[:len(left)] == left, listed  # nothing written, not even partly
  assert not [name for name in listed[len(left):] if name.isdigit()]  # no step appeared
  assert "Traceback" not in process.stderr, process.stderr[-5000:]
  if tool in ("train", "prep"):  # log records over several lines (parameter tables); TFDS's
    # progress bars, which may leave the cursor mid-line above the error
    lines = [line[line.index("error:"):] for line in process.stderr.splitlines()
             if "error:" in line]
  else:
    lines = [line for line in process.stderr.splitlines() if line.strip()
             and not LOG_RECORD.match(line)]
  assert len(lines) == 1, process.stderr[-3000:]
  assert lines[0].startswith(f"error: {destination}"), lines
  assert lines[0].endswith("No space left on device" if tool in ("train", "prep") else
                           "No space left on device)"), lines


def test_asyncio_records_of_writes_that_failed_together_keep_one_line():
  """When a batch of writes fails together, the command reports the first failure in one line,
  and asyncio logs each other one as a task whose exception was never retrieved: that record
  stays, on one line, without the task's repr or a traceback."""
  error = OSError(28, "No space left on device")
  record = logging.LogRecord(
      "asyncio", logging.ERROR, "/usr/lib/python3/asyncio/base_events.py", 1, "%s",
      ("Task exception was never retrieved\nfuture: <Task finished name='Task-7' coro=<write()> "
       "exception=OSError(28)>",), (OSError, error, None))
  errors._NoRelayedTracebacks().filter(record)
  assert logging.Formatter().format(record) == "Task exception was never retrieved"
  other = logging.LogRecord("asyncio", logging.ERROR, "x.py", 1, "two\nlines", (), None)
  errors._NoRelayedTracebacks().filter(other)
  assert other.getMessage() == "two\nlines"  # any other asyncio record is left as it is


def test_a_sigterm_during_a_garbage_collection_callback_still_unwinds():
  """Python runs the SIGTERM handler between two bytecodes, which may be inside a gc callback
  (JAX registers one), where its exception is only reported as unraisable: the signal must be
  delivered again, not lost (a tool would then finish and exit 0)."""
  import gc
  sent = []

  def callback(phase, info):
    if not sent:
      sent.append(phase)
      os.kill(os.getpid(), signal.SIGTERM)
      sum(range(100))  # bytecodes: the handler runs here, inside the callback

  gc.collect()  # earlier tests' garbage, whose unraisable errors would slow the collection
  gc.callbacks.append(callback)
  previous_hook, previous_handler = sys.unraisablehook, signal.getsignal(signal.SIGTERM)
  try:
    with pytest.raises(errors.Terminated), errors.sigterm_unwinds():
      gc.collect()
      for _ in range(10_000):  # outside the callback: where the signal lands again
        pass
  finally:
    gc.callbacks.remove(callback)
  assert sent and sys.unraisablehook is previous_hook
  assert signal.getsignal(signal.SIGTERM) is previous_handler
