"""launch_tpu.sh --dry-run: the gcloud commands it would run, and its argument checks; and
the worker set-up it runs on every TPU VM worker (tpu_worker_setup.sh), executed for real under
Python 3.10, the documented runtime's, with uv and pip stubbed (no network)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

ARGS = ["--name", "nirgan-v4", "--zone", "us-central2-b", "--accelerator-type", "v4-32",
        "--runtime-version", "tpu-ubuntu2204-base", "--workdir", "gs://bucket/runs/ms"]


def _launch(*args):
  return subprocess.run(["bash", str(REPO / "launch_tpu.sh"), *args], capture_output=True,
                        text=True, timeout=60)


def test_dry_run_prints_create_copy_install_and_train_on_all_workers():
  result = _launch(*ARGS, "--dry-run", "--project", "my-project", "--spot", "--",
                   "--config.optim.lr=1e-4")
  assert result.returncode == 0, result.stderr
  commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
  assert commands[0].startswith("+ gcloud compute tpus tpu-vm create nirgan-v4")
  assert "--accelerator-type v4-32" in commands[0] and "--spot" in commands[0]
  assert "--version tpu-ubuntu2204-base" in commands[0] and "--project my-project" in commands[0]
  assert "git" in commands[1] and "archive" in commands[1]
  copy, install, train = commands[2:]
  assert copy.startswith("+ gcloud compute tpus tpu-vm scp") and "--worker=all" in copy
  assert "--worker=all" in install
  assert "bash ~/nirgan-jax/tpu_worker_setup.sh ~/nirgan-jax gcs'" in install  # no .ckpt
  assert "--worker=all" in train and "NIRGAN_DISTRIBUTED=1" in train
  for part in ("nirgan_jax.train", "configs/multiscale.py", "gs://bucket/runs/ms",
               "--config.optim.lr=1e-4"):
    assert part in train


def test_bad_arguments_are_refused():
  result = _launch("--name", "x", "--dry-run")
  assert result.returncode == 2 and "missing zone accelerator runtime workdir" in result.stderr
  local = [a if a != "gs://bucket/runs/ms" else "runs/ms" for a in ARGS]
  result = _launch(*local, "--dry-run")
  assert result.returncode == 2 and "gs://" in result.stderr
  result = _launch(*ARGS, "--config", "configs/nope.py", "--dry-run")
  assert result.returncode == 2 and "configs/nope.py" in result.stderr


def test_a_ckpt_argument_installs_the_torch_extra_too():
  result = _launch(*ARGS, "--dry-run", "--", "--config.satclip.checkpoint=gs://b/satclip.ckpt")
  assert result.returncode == 0, result.stderr
  install = [line for line in result.stdout.splitlines() if "tpu_worker_setup.sh" in line]
  assert len(install) == 1 and "tpu_worker_setup.sh ~/nirgan-jax gcs,torch" in install[0]


# --------------------------------------------------------------------------- the worker set-up

STUB_UV = """#!/usr/bin/env bash
echo "uv $*" >> "$STUB_LOG"
case "$1 $2" in
  "python install") exit "${UV_INSTALL_STATUS:-0}" ;;
  "python find") echo "$STUB_PYTHON_311" ;;
esac
"""
# Found by `python -m pip` ahead of the real pip (PYTHONPATH comes before site-packages):
# records who ran it, with what.
STUB_PIP = """import json, os, platform, sys
with open(os.environ["STUB_LOG"], "a") as log:
  log.write("pip " + json.dumps([sys.prefix, platform.python_version(), sys.argv[1:]]) + "\\n")
"""


def _python310():
  """A Python 3.10 interpreter of this machine: on PATH, or one pyenv installed."""
  candidates = [shutil.which("python3.10"), "/usr/bin/python3.10",
                *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))]
  for candidate in filter(None, candidates):
    try:
      check = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == "
                              "(3, 10)"], capture_output=True, timeout=60)
    except OSError:
      continue
    if check.returncode == 0:
      return candidate
  return None


@pytest.fixture
def worker(tmp_path):
  """A worker's home and PATH: python3 is Python 3.10, uv and pip are stubs."""
  python310 = _python310()
  if python310 is None:
    pytest.skip("needs a Python 3.10 interpreter (the TPU runtime's)")
  home, bin_dir, stubs = tmp_path / "home", tmp_path / "bin", tmp_path / "stubs"
  for folder in (home, bin_dir, stubs / "pip"):
    folder.mkdir(parents=True)
  (bin_dir / "python3").symlink_to(python310)
  (bin_dir / "uv").write_text(STUB_UV)
  (bin_dir / "uv").chmod(0o755)
  (stubs / "pip" / "__init__.py").write_text("")
  (stubs / "pip" / "__main__.py").write_text(STUB_PIP)
  env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             PYTHONPATH=str(stubs), STUB_LOG=str(tmp_path / "calls.log"),
             STUB_PYTHON_311=sys.executable)
  return env, tmp_path / "calls.log", home


def _set_up(env, extras="gcs,torch"):
  return subprocess.run(["bash", str(REPO / "tpu_worker_setup.sh"), "/src/nirgan-jax", extras],
                        env=env, capture_output=True, text=True, timeout=300)


def _calls(log):
  return log.read_text().splitlines() if log.exists() else []


def test_worker_setup_on_python_310_installs_311_with_uv_then_the_package(worker):
  env, log, home = worker
  result = _set_up(env)
  assert result.returncode == 0, result.stderr
  calls = _calls(log)
  assert calls[:2] == ["uv python install 3.11", "uv python find 3.11"]
  pips = [json.loads(call.removeprefix("pip ")) for call in calls[2:]]
  venv = str(home / "nirgan-venv")
  assert [prefix for prefix, _, _ in pips] == [venv, venv]
  assert all(tuple(map(int, version.split(".")[:2])) >= (3, 11) for _, version, _ in pips)
  assert pips[0][2] == ["install", "-q", "-U", "pip"]
  assert pips[1][2] == ["install", "-q", "-e", "/src/nirgan-jax[gcs,torch]", "jax[tpu]"]
  assert f"in {venv} (Python 3.1" in result.stdout


def test_worker_setup_stops_with_one_line_when_python_311_cannot_be_had(worker):
  env, log, home = worker
  result = _set_up(dict(env, UV_INSTALL_STATUS="1"))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: tpu_worker_setup.sh on ")
  assert result.stderr.strip().endswith("uv cannot install Python 3.11")
  assert not (home / "nirgan-venv").exists()
  assert not any(call.startswith("pip ") for call in _calls(log))


def test_worker_setup_uses_a_recent_enough_python3_as_it_is(worker, tmp_path):
  env, log, home = worker
  (tmp_path / "bin" / "python3").unlink()
  (tmp_path / "bin" / "python3").symlink_to(sys.executable)
  result = _set_up(env, "gcs")
  assert result.returncode == 0, result.stderr
  calls = _calls(log)
  assert not any(call.startswith("uv ") for call in calls)
  assert json.loads(calls[-1].removeprefix("pip "))[2][-2:] == ["/src/nirgan-jax[gcs]", "jax[tpu]"]
