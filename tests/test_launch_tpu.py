"""launch_tpu.sh --dry-run: the gcloud commands it would run, and its argument checks."""

import subprocess

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
  assert "--worker=all" in install and "jax[tpu]" in install
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
