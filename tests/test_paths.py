"""Cloud paths (``gs://``) reach the storage they name intact, from the config and the command
line; what only works on local files refuses them by name.

``etils.epath.testing.mock_epath`` maps ``gs://bucket/...`` onto a local folder, so everything
that goes through epath runs here as it would on Cloud Storage: model directories
(``config.json``, existence and overwrite checks), PyTorch ``.ckpt`` files read by
``torch.load`` through an epath file object, metrics files and training-run lookups. Orbax
writes and reads arrays through TensorStore's own ``gs://`` driver and TFDS opens ArrayRecord
datasets through its own cloud support, which the mock cannot reach: here Orbax's
``StandardCheckpointer`` is checked to be handed the intact URI and then pointed at the same
local folder, while training checkpoints (``CheckpointManager``) and datasets on ``gs://`` are
left to those libraries' native support, which ``tests/test_gcs.py`` runs against an emulator.
"""

import dataclasses
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing
from test_predict import save_tiny_model

from nirgan_jax import models, paths
from nirgan_jax.infer import model_dir, outputs, predict
from nirgan_jax.infer.model import load_model
from nirgan_jax.train import checkpointing, export, warm_start

from conftest import rbg_key, tiny_config

BUCKET = "gs://bucket"


@dataclasses.dataclass
class Bucket:
  root: str  # the local folder that holds gs://bucket
  opened: list[str]  # gs:// files opened through epath
  orbax: list[str]  # gs:// directories handed to Orbax's StandardCheckpointer

  def local(self, path) -> str:
    path = os.fspath(path)
    if path == BUCKET or path.startswith(BUCKET + "/"):
      return self.root + path[len(BUCKET):]
    assert not paths.is_cloud(path), f"{path}: outside the mocked bucket"
    return path


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """``gs://bucket/...`` stored in ``tmp_path/bucket/``."""
  root = tmp_path / "bucket"
  root.mkdir()
  b = Bucket(str(root), [], [])

  def redirect(original, *args, **kwargs):
    return original(*(b.local(a) if isinstance(a, (str, os.PathLike)) else a for a in args),
                    **kwargs)

  def open_(original, path, mode):
    if paths.is_cloud(path):
      b.opened.append(os.fspath(path))
    return original(b.local(path), mode)

  class Checkpointer(ocp.StandardCheckpointer):
    def save(self, directory, *args, **kwargs):
      return super().save(self._local(directory), *args, **kwargs)

    def restore(self, directory, *args, **kwargs):
      return super().restore(self._local(directory), *args, **kwargs)

    def _local(self, directory):
      if paths.is_cloud(directory):
        b.orbax.append(os.fspath(directory))
      return b.local(directory)

  monkeypatch.setattr(ocp, "StandardCheckpointer", Checkpointer)
  # With TensorFlow installed epath sends gs:// to its tf backend, which the mock leaves alone.
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  names = ("copy", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rename",
           "replace", "rmtree", "stat")
  with epath_testing.mock_epath(open=open_, **dict.fromkeys(names, redirect)):
    yield b


def test_as_path_keeps_uris_and_expands_local_paths(monkeypatch, tmp_path):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  assert str(paths.as_path("gs://b/run/satclip.ckpt")) == "gs://b/run/satclip.ckpt"
  assert str(paths.as_path("gs://b/run") / "checkpoints") == "gs://b/run/checkpoints"
  assert str(paths.as_path("~/run")) == str(tmp_path / "run")
  assert str(paths.as_path("run")) == str(tmp_path / "run")
  with pytest.raises(paths.LocalPathError, match=r"^gs://b/in\.tif: why, so it must be a local"):
    paths.local_path("gs://b/in.tif", "why")


def test_model_directory_written_and_loaded_on_gcs(bucket):
  out = save_tiny_model(f"{BUCKET}/models/tiny")
  assert str(out) == f"{BUCKET}/models/tiny"
  assert os.path.isfile(f"{bucket.root}/models/tiny/{model_dir.CONFIG_FILE}")
  model = load_model(f"{BUCKET}/models/tiny")
  assert model.source == f"{BUCKET}/models/tiny"
  assert bucket.orbax == [f"{BUCKET}/models/tiny/params"] * 2  # save, then restore
  assert f"{BUCKET}/models/tiny/{model_dir.CONFIG_FILE}" in bucket.opened
  assert model(np.full((1, 16, 16, 3), 0.2, np.float32), np.zeros((1, 2))).shape == (1, 16, 16, 1)
  with pytest.raises(outputs.OutputError, match="output exists"):
    save_tiny_model(f"{BUCKET}/models/tiny")
  model_dir.save_model_dir(f"{BUCKET}/models/tiny", model.params, model.config, overwrite=True)
  assert model_dir.is_model_dir(f"{BUCKET}/models/tiny")


def test_import_torch_reads_and_writes_gcs(bucket):
  pytest.importorskip("torch")
  from test_import_torch import _save_nirgan

  from nirgan_jax.infer import import_torch

  os.makedirs(f"{bucket.root}/ckpt")
  _save_nirgan(f"{bucket.root}/ckpt/nirgan.ckpt")
  ckpt, out = f"{BUCKET}/ckpt/nirgan.ckpt", f"{BUCKET}/models/imported"
  assert import_torch.main(["nirgan", ckpt, "--out", out]) == 0
  assert ckpt in bucket.opened and bucket.orbax == [f"{out}/params"]
  params, config = model_dir.load_model_dir(out)
  assert config.source.checkpoint == "nirgan.ckpt"
  expected, _ = import_torch.import_nirgan(f"{bucket.root}/ckpt/nirgan.ckpt")
  jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_warm_start_reads_gcs_model_dir_and_ckpt(bucket):
  pytest.importorskip("torch")
  from test_import_torch import _save_nirgan

  saved = save_tiny_model(f"{BUCKET}/models/tiny")
  os.makedirs(f"{bucket.root}/ckpt")
  _save_nirgan(f"{bucket.root}/ckpt/nirgan.ckpt")
  config = tiny_config()
  config.init.checkpoint = str(saved)
  params = warm_start.load_init_weights(config)
  jax.tree.map(np.testing.assert_array_equal, params, model_dir.load_model_dir(saved)[0])
  config.init.checkpoint = f"{BUCKET}/ckpt/nirgan.ckpt"
  assert set(warm_start.load_init_weights(config)) == {"generator", "discriminator", "satclip"}
  assert config.init.checkpoint in bucket.opened
  config.init.checkpoint = f"{BUCKET}/missing"
  with pytest.raises(checkpointing.CheckpointNotFoundError, match=f"{BUCKET}/missing: no such"):
    warm_start.load_init_weights(config)


def test_satclip_checkpoint_on_gcs_is_found(bucket):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_reference as ref
  from nirgan_jax.infer import import_torch

  config = tiny_config()
  sat = config.satclip
  torch.manual_seed(0)
  encoder = ref.LocationEncoder(sat.legendre_polys, sat.dim_hidden, sat.embed_dim,
                                sat.num_hidden_layers, sat.harmonics)
  torch.save({"state_dict": {f"{import_torch.SATCLIP_PREFIX}{k}": v
                             for k, v in encoder.state_dict().items()}},
             f"{bucket.root}/satclip.ckpt")
  config.satclip.checkpoint = f"{BUCKET}/satclip.ckpt"
  nirgan = models.NIRGAN.from_config(config)
  params = warm_start.load_satclip_params(config, nirgan, rbg_key(0))
  assert bucket.opened == [config.satclip.checkpoint]
  expected = import_torch.import_satclip(f"{bucket.root}/satclip.ckpt")[0]["satclip"]
  jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_export_writes_gcs_out(bucket, tmp_path, monkeypatch):
  params, _ = model_dir.load_model_dir(save_tiny_model(tmp_path / "local"))
  workdirs = []

  def restore_weights(workdir, which):
    workdirs.append(workdir)
    return params, {"config": tiny_config().to_dict()}, 7

  monkeypatch.setattr(checkpointing, "restore_weights", restore_weights)
  out = export.export_model(f"{BUCKET}/runs/demo", f"{BUCKET}/models/exported")
  assert str(out) == f"{BUCKET}/models/exported" and workdirs == [f"{BUCKET}/runs/demo"]
  config = model_dir.load_config(out)
  assert config.source.workdir == f"{BUCKET}/runs/demo" and config.source.step == 7
  assert os.path.isdir(f"{bucket.root}/models/exported/{model_dir.PARAMS_DIR}")


def test_workdir_on_gcs_reaches_orbax_as_a_uri(bucket, monkeypatch):
  os.makedirs(f"{bucket.root}/run/{checkpointing.CHECKPOINTS_DIR}/4")
  found = checkpointing.checkpoints_dir(f"{BUCKET}/run")
  assert str(found) == f"{BUCKET}/run/{checkpointing.CHECKPOINTS_DIR}"
  # Orbax's manager asks Cloud Storage itself about the bucket: only what it is given is checked.
  monkeypatch.setattr(ocp, "CheckpointManager", lambda directory, options: directory)
  directory = checkpointing.make_manager(f"{BUCKET}/run/{checkpointing.CHECKPOINTS_DIR}", 1)
  assert isinstance(directory, epath.Path) and str(directory) == str(found)


def test_metrics_files_written_on_gcs(bucket):
  outputs.write_bytes_atomic(f"{BUCKET}/eval/metrics.csv", b"model\n")
  with open(f"{bucket.root}/eval/metrics.csv", "rb") as f:
    assert f.read() == b"model\n"
  with pytest.raises(outputs.OutputError, match="output exists"):
    outputs.check_new(f"{BUCKET}/eval/metrics.csv", overwrite=False)


def test_predict_refuses_cloud_geotiffs_by_name(capsys):
  assert predict.main(["in.tif", "--model", "m", "--out", f"{BUCKET}/out.tif"]) != 0
  assert capsys.readouterr().err.strip() == (
      f"error: {BUCKET}/out.tif: {predict.LOCAL_OUTPUT}, so it must be a local path (copy it "
      "to or from cloud storage separately)")
  # gs:// inputs are read through GDAL (tests/test_predict.py); a scheme it is not given
  # for is refused by name.
  assert predict.main(["memory://in.tif", "--model", "m", "--out", "out.tif"]) != 0
  assert f"memory://in.tif: {predict.LOCAL_INPUT}" in capsys.readouterr().err
