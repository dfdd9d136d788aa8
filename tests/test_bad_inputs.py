"""A corpus of malformed inputs for every command-line tool: empty, truncated and oversized
GeoTIFFs, wrong data types and band counts, a file name that is not UTF-8, damaged model
directories, checkpoints (one carrying a pickled payload that must never run) and training
runs, bad configs, manual_dirs and output folders. Every case must be refused the same way:
a non-zero exit status; one line of the tool's own on stderr, ``error: ...``, naming the
offending file or argument and the problem (what libraries log around it is not judged); no
traceback; no output, not even a partial one, left behind; and every input byte for byte as
it was.

Most cases call the tool's ``main`` in this process. A representative few, and the training
program's (its absl flags live in one registry per process), run the real ``python -m``
entry points: each start imports JAX, seconds apiece on 2 cores.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from data_prep import build
from nirgan_jax import contract, models
from nirgan_jax.infer import model_dir
from nirgan_jax.models import config as model_config

from conftest import REPO, TINY_CONFIG, rbg_key, tiny_config
from data_fixtures import write_geotiff

# tool -> (the module ``python -m`` runs, the module whose ``main(argv)`` the in-process cases
# call; None for the training program, whose absl flags are parsed once per process)
TOOLS = {
    "prep": ("data_prep.build", "data_prep.build"),
    "train": ("nirgan_jax.train", None),
    "predict": ("nirgan_jax.predict", "nirgan_jax.infer.predict"),
    "evaluate": ("nirgan_jax.evaluate", "nirgan_jax.evaluate"),
    "export": ("nirgan_jax.export", "nirgan_jax.train.export"),
    "import": ("nirgan_jax.import_torch", "nirgan_jax.infer.import_torch"),
    "timeseries": ("nirgan_jax.timeseries", "nirgan_jax.infer.timeseries"),
}
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # permissions are not enforced
CRS = "EPSG:32632"
TRANSFORM = from_origin(500_000, 5_200_000, 10, 10)
PAYLOAD_RAN = "payload_ran"  # what the pickled payloads create if anything executes them


@dataclasses.dataclass(frozen=True)
class Case:
  tool: str
  make: Callable[[Path, Path], list[str]]  # (root, shared model dir) -> argv; writes inputs
  expect: tuple[str, ...]  # in the error line; "{root}" stands for the case's folder
  status: int = 1


CASES: dict[str, Case] = {}


def case(tool: str, *expect: str, status: int = 1):
  def register(make):
    CASES[f"{tool}-{make.__name__.replace('_', '-')}"] = Case(tool, make, expect, status)
    return make

  return register


# --------------------------------------------------------------------------- malformed inputs


def tif(path: Path, data: np.ndarray | None = None, crs: str | None = CRS, **profile) -> Path:
  """A small GeoTIFF, by default a valid 3-band uint16 one."""
  data = np.full((3, 32, 32), 1000, np.uint16) if data is None else data
  write_geotiff(path, data, crs, TRANSFORM, **profile)
  return path


def truncated(path: Path, keep: float = 0.6) -> Path:
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])
  return path


def declaring_size(path: Path, width: int, height: int) -> Path:
  """``path`` with its TIFF header's ImageWidth and ImageLength rewritten: a header that
  declares far more pixels than the file holds."""
  data = bytearray(path.read_bytes())
  assert data[:4] == b"II*\x00", "a little-endian classic TIFF"
  ifd = struct.unpack_from("<I", data, 4)[0]
  for i in range(struct.unpack_from("<H", data, ifd)[0]):
    entry = ifd + 2 + 12 * i
    tag = struct.unpack_from("<H", data, entry)[0]
    if tag in (256, 257):  # ImageWidth, ImageLength: one LONG each, stored in the entry
      struct.pack_into("<HHII", data, entry, tag, 4, 1, width if tag == 256 else height)
  path.write_bytes(bytes(data))
  return path


def with_corrupt_block(path: Path) -> Path:
  """A deflate-compressed, tiled GeoTIFF whose last tile holds garbage (its size intact)."""
  rng = np.random.default_rng(0)
  tif(path, rng.integers(1, 10_000, (3, 64, 64)).astype(np.uint16), tiled=True,
      blockxsize=32, blockysize=32, compress="deflate")
  with rasterio.open(path) as src:
    start = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
  data = bytearray(path.read_bytes())
  data[start:start + size] = b"\xab" * size
  path.write_bytes(bytes(data))
  return path


class _Payload:
  """Unpickling this creates the file ``path``: a stand-in for arbitrary code."""

  def __init__(self, path: Path):
    self.path = str(path)

  def __reduce__(self):
    return open, (self.path, "w")


def torch_checkpoint(path: Path, content) -> Path:
  import torch

  torch.save(content, path)
  return path


def state_dict(**shapes):
  import torch

  return {key.replace("__", "."): torch.zeros(shape) for key, shape in shapes.items()}


def payload_checkpoint(root: Path) -> Path:
  return torch_checkpoint(root / "evil.ckpt", {
      "state_dict": state_dict(netG__model__1__weight=(8, 3, 7, 7)),
      "hyper_parameters": _Payload(root / PAYLOAD_RAN)})


def model_copy(root: Path, model: Path, name: str = "model") -> Path:
  return Path(shutil.copytree(model, root / name))


def predict_args(root: Path, inputs: Path | str, model: Path | str, *flags: str) -> list[str]:
  return [str(inputs), "--model", str(model), "--out", str(root / "out" / "nir.tif"),
          "--quiet", *flags]


def series(root: Path, *names: str) -> Path:
  """A folder of valid dated rasters (``names``)."""
  folder = root / "series"
  folder.mkdir()
  for name in names:
    tif(folder / name)
  return folder


def timeseries_args(root: Path, folder: Path, model: Path | str, *flags: str) -> list[str]:
  return [str(folder), "--model", str(model), "--out", str(root / "out" / "ndvi.png"),
          "--quiet", *flags]


def evaluate_args(root: Path, model: Path | str, *flags: str) -> list[str]:
  return ["--model", str(model), "--dataset", "s2_100k/default", "--data_dir",
          str(root / "tfds"), "--out", str(root / "eval"), "--quiet", *flags]


def export_args(root: Path, workdir: Path, *flags: str) -> list[str]:
  return ["--workdir", str(workdir), "--out", str(root / "exported"), *flags]


def import_args(root: Path, checkpoint: Path, kind: str = "nirgan", *flags: str) -> list[str]:
  return [kind, str(checkpoint), "--out", str(root / "imported"), *flags]


def prep_args(root: Path, manual_dir: Path, source: str = "s2_100k", *flags: str) -> list[str]:
  return [source, "--manual_dir", str(manual_dir), "--data_dir", str(root / "tfds"), *flags]


def raw_archive(root: Path, index: str | bytes | None = None) -> Path:
  """An S2-100K manual_dir: images/ and, unless None, ``index`` as index.csv."""
  raw = root / "raw"
  (raw / "images").mkdir(parents=True)
  (raw / "README").write_text("S2-100K")
  if index is not None:
    (raw / "index.csv").write_bytes(index.encode() if isinstance(index, str) else index)
  return raw


def train_args(root: Path, *flags: str, config: Path | str = TINY_CONFIG) -> list[str]:
  return ["--config", str(config), "--workdir", str(root / "run"), *flags]


# --------------------------------------------------------------------------- predict


@case("predict", "{root}/zero.tif", "not a readable raster")
def zero_byte_geotiff(root, model):
  (root / "zero.tif").write_bytes(b"")
  return predict_args(root, root / "zero.tif", model)


@case("predict", "{root}/cut.tif", "truncated")
def truncated_geotiff(root, model):
  return predict_args(root, truncated(tif(root / "cut.tif")), model)


@case("predict", "{root}/huge.tif", "holds no pixels")
def header_declaring_a_huge_raster(root, model):
  return predict_args(root, declaring_size(tif(root / "huge.tif"), 100_000, 100_000), model)


@case("predict", "{root}/corrupt.tif", "unreadable pixels")
def corrupt_compressed_block(root, model):
  return predict_args(root, with_corrupt_block(root / "corrupt.tif"), model)


@case("predict", "{root}/complex.tif", "complex")
def complex_values(root, model):
  data = np.full((3, 32, 32), 0.1 + 0.2j, np.complex64)
  return predict_args(root, tif(root / "complex.tif", data), model)


@case("predict", "{root}/int8.tif", "no default reflectance scale")
def int8_values(root, model):
  return predict_args(root, tif(root / "int8.tif", np.full((3, 32, 32), 50, np.int8)), model)


@case("predict", "{root}/one_band.tif", "has 1 band(s)")
def one_band(root, model):
  return predict_args(root, tif(root / "one_band.tif", np.ones((1, 32, 32), np.uint16)), model)


@case("predict", "{root}/two_bands.tif", "has 2 band(s)")
def two_bands(root, model):
  return predict_args(root, tif(root / "two_bands.tif", np.ones((2, 32, 32), np.uint16)), model)


@case("predict", "{root}/scene_", "not valid UTF-8")
def file_name_not_utf8(root, model):
  name = os.fsdecode(os.fsencode(root) + b"/scene_\xff\xfe.tif")  # as the shell passes it
  shutil.copy(tif(root / "valid.tif"), name)
  return predict_args(root, name, model)


@case("predict", "{root}/no_crs.tif", "has no CRS")
def missing_crs(root, model):
  return predict_args(root, tif(root / "no_crs.tif", crs=None), model)


@case("predict", "{root}/empty.tif", "every pixel is nodata")
def all_nodata(root, model):
  return predict_args(root, tif(root / "empty.tif", np.zeros((3, 32, 32), np.uint16), nodata=0),
                      model)


@case("predict", "{root}/notes", "holds no .tif")
def folder_without_rasters(root, model):
  (root / "notes").mkdir()
  (root / "notes" / "scene.txt").write_text("not a raster")
  return predict_args(root, root / "notes", model)


@case("predict", "{root}/out", "is a file, not a folder")
def output_folder_is_a_file(root, model):
  (root / "out").write_text("a file where the output folder should be")
  return predict_args(root, tif(root / "scene.tif"), model)


@case("predict", "{root}/out", "is not writable")
def read_only_output_folder(root, model):
  (root / "out").mkdir(mode=0o555)
  return predict_args(root, tif(root / "scene.tif"), model)


@case("predict", "{root}/model", "params/ is missing")
def model_without_params(root, model):
  shutil.rmtree(model_copy(root, model) / model_dir.PARAMS_DIR)
  return predict_args(root, tif(root / "scene.tif"), root / "model")


@case("predict", "{root}/model/params: cannot read parameters (")
def model_params_truncated(root, model):
  """An exported model whose parameter files were cut short (a copy interrupted)."""
  for data_file in (model_copy(root, model) / model_dir.PARAMS_DIR).rglob("d/*"):
    truncated(data_file, keep=0.5)
  return predict_args(root, tif(root / "scene.tif"), root / "model")


@case("predict", "{root}/model/config.json", "not valid JSON")
def model_config_not_json(root, model):
  (model_copy(root, model) / model_dir.CONFIG_FILE).write_bytes(b'{"model": \xff')
  return predict_args(root, tif(root / "scene.tif"), root / "model")


@case("predict", "{root}/model", "do not make a model")
def model_config_of_another_architecture(root, model):
  config_file = model_copy(root, model) / model_dir.CONFIG_FILE
  config = json.loads(config_file.read_text())
  config["model"]["generator"]["ngf"] *= 2
  config_file.write_text(json.dumps(config))
  return predict_args(root, tif(root / "scene.tif"), root / "model")


@case("predict", "{root}/evil.ckpt", "refused")
def model_checkpoint_with_a_payload(root, model):
  return predict_args(root, tif(root / "scene.tif"), payload_checkpoint(root))


@case("predict", "{root}/cut.ckpt", "not a readable PyTorch checkpoint")
def model_checkpoint_truncated(root, model):
  ckpt = torch_checkpoint(root / "cut.ckpt", {"state_dict": state_dict(w=(64, 64))})
  return predict_args(root, tif(root / "scene.tif"), truncated(ckpt))


@case("predict", "{root}/ref.tif", "not a readable raster")
def empty_histogram_reference(root, model):
  (root / "ref.tif").write_bytes(b"")
  return predict_args(root, tif(root / "scene.tif"), model, "--match_histogram",
                      str(root / "ref.tif"))


@case("predict", "--bands", status=2)
def two_band_indices(root, model):
  return predict_args(root, tif(root / "scene.tif"), model, "--bands", "1,2")


# --------------------------------------------------------------------------- timeseries


@case("timeseries", "{root}/series", "not a folder")
def series_folder_missing(root, model):
  return timeseries_args(root, root / "series", model)


@case("timeseries", "{root}/series/scene.tif", "no date")
def undated_raster(root, model):
  return timeseries_args(root, series(root, "2023-05-01.tif", "scene.tif"), model)


@case("timeseries", "{root}/series/2023-06-01.tif", "not a readable raster")
def empty_raster_among_dated_ones(root, model):
  folder = series(root, "2023-05-01.tif")
  (folder / "2023-06-01.tif").write_bytes(b"")
  return timeseries_args(root, folder, model)


@case("timeseries", "{root}/series/2023-06-01.tif", "has 2 band(s)")
def two_band_raster_among_dated_ones(root, model):
  folder = series(root, "2023-05-01.tif")
  tif(folder / "2023-06-01.tif", np.ones((2, 32, 32), np.uint16))
  return timeseries_args(root, folder, model)


@case("timeseries", "{root}/series/2023-06-01.tif", "truncated")
def truncated_raster_among_dated_ones(root, model):
  folder = series(root, "2023-05-01.tif")
  truncated(tif(folder / "2023-06-01.tif"))
  return timeseries_args(root, folder, model)


@case("timeseries", "{root}/out", "is a file, not a folder")
def plot_folder_is_a_file(root, model):
  (root / "out").write_text("a file where the plot's folder should be")
  return timeseries_args(root, series(root, "2023-05-01.tif"), model)


@case("timeseries", "{root}/model/config.json", "not a config")
def model_config_not_an_object(root, model):
  (model_copy(root, model) / model_dir.CONFIG_FILE).write_text("[1, 2, 3]")
  return timeseries_args(root, series(root, "2023-05-01.tif"), root / "model")


# --------------------------------------------------------------------------- evaluate


@case("evaluate", "{root}/model", "config.json is missing")
def model_without_config(root, model):
  (model_copy(root, model) / model_dir.CONFIG_FILE).unlink()
  return evaluate_args(root, root / "model")


@case("evaluate", "{root}/empty.ckpt", "not a readable PyTorch checkpoint")
def empty_baseline_checkpoint(root, model):
  (root / "empty.ckpt").write_bytes(b"")
  return evaluate_args(root, model, "--baselines", str(root / "empty.ckpt"))


@case("evaluate", "{root}/eval", "is a file, not a folder")
def results_folder_is_a_file(root, model):
  (root / "eval").write_text("a file where the results folder should be")
  return evaluate_args(root, model)


@case("evaluate", "--image_size", status=2)
def image_size_not_a_multiple_of_4(root, model):
  return evaluate_args(root, model, "--image_size", "250")


@case("evaluate", "{root}/tfds", "is not built")
def dataset_not_built(root, model):
  return evaluate_args(root, model)


@case("evaluate", "s2_100k/default", "{root}/tfds")
def dataset_info_not_json(root, model):
  build_dir = root / "tfds" / "s2_100k" / "default" / contract.VERSION
  build_dir.mkdir(parents=True)
  for name in ("dataset_info.json", "features.json"):
    (build_dir / name).write_text("{not json")
  return evaluate_args(root, model)


# --------------------------------------------------------------------------- export


@case("export", "{root}/run", "no training checkpoints")
def workdir_missing(root, model):
  return export_args(root, root / "run")


@case("export", "{root}/run", "no training checkpoints")
def workdir_without_checkpoints(root, model):
  (root / "run").mkdir()
  (root / "run" / "events.out").write_text("")
  return export_args(root, root / "run")


@case("export", "{root}/run/checkpoints/2", "unreadable checkpoint")
def damaged_checkpoint(root, model):
  item = root / "run" / "checkpoints" / "2" / "generator"
  item.mkdir(parents=True)
  (item / "_METADATA").write_bytes(b"\x00garbage")
  return export_args(root, root / "run")


@case("export", "--step", status=2)
def step_not_a_number(root, model):
  (root / "run" / "checkpoints").mkdir(parents=True)
  return export_args(root, root / "run", "--step", "last")


@case("export", "{root}/exported", "not a model directory")
def output_is_another_folder(root, model):
  (root / "exported").mkdir()
  (root / "exported" / "notes.txt").write_text("a user's folder")
  return export_args(root, root / "run", "--overwrite")


@case("export", "{root}/a_file", "is a file, not a folder")
def output_under_a_file(root, model):
  (root / "a_file").write_text("")
  return ["--workdir", str(root / "run"), "--out", str(root / "a_file" / "exported")]


# --------------------------------------------------------------------------- import_torch


@case("import", "{root}/evil.ckpt", "refused")
def checkpoint_with_a_payload(root, model):
  return import_args(root, payload_checkpoint(root))


@case("import", "{root}/evil.pkl", "refused")
def plain_pickle_with_a_payload(root, model):
  (root / "evil.pkl").write_bytes(pickle.dumps({"state_dict": _Payload(root / PAYLOAD_RAN)}))
  return import_args(root, root / "evil.pkl")


@case("import", "{root}/cut.ckpt", "not a readable PyTorch checkpoint")
def truncated_checkpoint(root, model):
  ckpt = torch_checkpoint(root / "cut.ckpt", {"state_dict": state_dict(w=(64, 64))})
  return import_args(root, truncated(ckpt))


@case("import", "{root}/empty.ckpt", "not a readable PyTorch checkpoint")
def empty_checkpoint(root, model):
  (root / "empty.ckpt").write_bytes(b"")
  return import_args(root, root / "empty.ckpt", "satclip")


@case("import", "{root}/list.ckpt", "expected a dict")
def checkpoint_not_a_dict(root, model):
  return import_args(root, torch_checkpoint(root / "list.ckpt", [1, 2, 3]))


@case("import", "{root}/hp.ckpt", "hyper_parameters is a list")
def hyper_parameters_not_a_dict(root, model):
  return import_args(root, torch_checkpoint(root / "hp.ckpt", {
      "state_dict": state_dict(netG__model__1__weight=(8, 3, 7, 7)), "hyper_parameters": [1]}))


@case("import", "{root}/rank.ckpt", "shape mismatch for netG.model.1.weight")
def tensor_of_another_rank(root, model):
  return import_args(root, torch_checkpoint(root / "rank.ckpt", {
      "state_dict": state_dict(netG__model__1__weight=(8,))}))


@case("import", "{root}/nirgan.ckpt", "no SatCLIP SIREN")
def satclip_import_of_another_checkpoint(root, model):
  return import_args(root, torch_checkpoint(root / "nirgan.ckpt", {
      "state_dict": state_dict(netG__model__1__weight=(8, 3, 7, 7))}), "satclip")


@case("import", "{root}/nope.ckpt", "no such file")
def checkpoint_missing(root, model):
  return import_args(root, root / "nope.ckpt")


@case("import", "{root}/a_file", "is a file, not a folder")
def import_output_under_a_file(root, model):
  (root / "a_file").write_text("")
  ckpt = torch_checkpoint(root / "n.ckpt", {"state_dict": state_dict(w=(2,))})
  return ["nirgan", str(ckpt), "--out", str(root / "a_file" / "imported")]


# --------------------------------------------------------------------------- data_prep.build


@case("prep", "{root}/raw", "manual_dir does not exist or is empty")
def manual_dir_missing(root, model):
  return prep_args(root, root / "raw")


@case("prep", "{root}/raw.zip", "manual_dir does not exist or is empty")
def manual_dir_is_a_file(root, model):
  (root / "raw.zip").write_bytes(b"PK\x03\x04")
  return prep_args(root, root / "raw.zip")


@case("prep", "{root}/raw/index.csv", "missing")
def index_csv_missing(root, model):
  return prep_args(root, raw_archive(root))


@case("prep", "{root}/raw/index.csv", "missing columns ['lat', 'lon']")
def index_csv_without_coordinates(root, model):
  return prep_args(root, raw_archive(root, "fn,x,y\npatch_0.tif,1,2\n"))


@case("prep", "{root}/raw/index.csv", "not a UTF-8 CSV")
def index_csv_not_utf8(root, model):
  return prep_args(root, raw_archive(root, b"fn,lon,lat\npatch_\xff.tif,10,45\n"))


@case("prep", "{root}/raw", "no usable s2_100k inputs", "first: {root}/raw/images/patch_")
def index_lists_only_broken_rasters(root, model):
  raw = raw_archive(root, "fn,lon,lat\n" + "".join(f"patch_{i}.tif,10.{i},45\n"
                                                     for i in range(4)))
  twelve_bands = np.full((12, 32, 32), 1000, np.uint16)
  (raw / "images" / "patch_0.tif").write_bytes(b"")
  truncated(tif(raw / "images" / "patch_1.tif", twelve_bands))
  declaring_size(tif(raw / "images" / "patch_2.tif", twelve_bands), 100_000, 100_000)
  tif(raw / "images" / "patch_3.tif", twelve_bands[:4])
  return prep_args(root, raw)


@case("prep", "{root}/ws/metadata.csv", "missing columns")
def worldstrat_metadata_empty(root, model):
  (root / "ws" / "hr_dataset").mkdir(parents=True)
  (root / "ws" / "metadata.csv").write_text("")
  return prep_args(root, root / "ws", "worldstrat")


@case("prep", "{root}/taco", "no usable sen2naip inputs", "a.taco")
def sen2naip_archive_not_a_taco(root, model):
  (root / "taco").mkdir()
  (root / "taco" / "a.taco").write_bytes(b"\x00" * 64)
  return prep_args(root, root / "taco", "sen2naip")


@case("prep", "{root}/a_file", "Not a directory")
def data_dir_is_a_file(root, model):
  (root / "a_file").write_text("")
  return ["nirgan_demo", "--config", "small", "--data_dir", str(root / "a_file")]


@case("prep", "{root}/tfds", "Permission denied")
def read_only_data_dir(root, model):
  (root / "tfds").mkdir(mode=0o555)
  return ["nirgan_demo", "--config", "small", "--data_dir", str(root / "tfds")]


@case("prep", "--patch_size", status=2)
def patch_size_zero(root, model):
  return prep_args(root, raw_archive(root, "fn,lon,lat\n"), "s2_100k", "--patch_size", "0")


# --------------------------------------------------------------------------- train (absl)


@case("train", "--config.data.misspelt=1", "no key 'misspelt'", status=2)
def config_key_misspelt(root, model):
  return train_args(root, "--config.data.misspelt=1")


@case("train", "--config.optim.lr=abc", "could not convert", status=2)
def config_value_of_the_wrong_type(root, model):
  return train_args(root, "--config.optim.lr=abc")


@case("train", "{root}/nope.py", "No such file", status=2)
def config_file_missing(root, model):
  return train_args(root, config=root / "nope.py")


@case("train", "--config", "SyntaxError", "bad_config.py", status=2)
def config_file_not_python(root, model):
  (root / "bad_config.py").write_text("def get_config(:\n")
  return train_args(root, config=root / "bad_config.py")


@case("train", "--workdir", "is a file", status=2)
def workdir_is_a_file(root, model):
  (root / "run").write_text("")
  return train_args(root)


@case("train", "s2_100k/default", "is not built", "{root}/tfds")
def source_not_built(root, model):
  return train_args(root, "--config.data.sources.demo.name=s2_100k/default",
                    f"--config.data.data_dir={root / 'tfds'}")


@case("train", "data.sources: every weight must be positive", "nirgan_demo/small")
def source_weight_zero(root, model):
  return train_args(root, "--config.data.sources.demo.weight=0",
                    f"--config.data.data_dir={root / 'tfds'}")


@case("train", "data.batch_size_per_device=-1")
def batch_size_negative(root, model):
  return train_args(root, "--config.data.batch_size_per_device=-1",
                    f"--config.data.data_dir={root / 'tfds'}")


# The nirgan_jax.data pipeline quotes TFDS's whole message in its own: where the source's
# builder is not registered (python -m nirgan_jax.evaluate imports no data_prep), the list of
# every TFDS dataset. It also lets a dataset_info.json that is not JSON through as a traceback.
SKIP_AS_ROOT = {"predict-read-only-output-folder", "prep-read-only-data-dir"}
# Through the real entry points: one case per tool, the training program's, and two whose
# outcome depends on what the process has imported or on warnings (which pytest captures).
ENTRY_POINT_CASES = [
    "predict-truncated-geotiff", "predict-model-params-truncated",
    "timeseries-undated-raster", "evaluate-model-without-config",
    "export-damaged-checkpoint", "import-checkpoint-with-a-payload", "prep-index-csv-missing",
    "evaluate-dataset-not-built", "import-plain-pickle-with-a-payload",
    *(name for name, c in CASES.items() if c.tool == "train")]
IN_PROCESS_CASES = [name for name, c in CASES.items() if TOOLS[c.tool][1] is not None
                    and name != "evaluate-dataset-not-built"]


def _params(names):
  marks = {}
  for name in SKIP_AS_ROOT:
    marks[name] = [pytest.mark.skipif(AS_ROOT, reason="root ignores file permissions")]
  return [pytest.param(name, marks=marks.get(name, ()), id=name) for name in names]


# --------------------------------------------------------------------------- checks


def reports(stderr: str) -> list[str]:
  """The project's own lines on ``stderr``: its ``error: ...`` reports. What libraries log
  (TensorFlow's and absl's start-up records, GDAL's warnings, progress bars) is theirs, in
  formats that change between versions and machines, and is not judged here."""
  lines = (_ESCAPES.sub("", line).strip() for line in stderr.splitlines())
  return [line for line in lines if line.startswith("error:")]


_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm moves the cursor between bars


def snapshot(*roots: Path) -> dict[str, str]:
  """Every path under ``roots`` -> the sha256 of its content, or "dir" for a folder."""
  found = {}
  for root in roots:
    for path in sorted(root.rglob("*")):
      found[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
  return found


def check_refused(name: str, root: Path, status: int, stdout: str, stderr: str,
                  before: dict[str, str], after: dict[str, str]) -> None:
  expected = CASES[name]
  output = stdout + stderr
  assert "Traceback" not in output, output[-3000:]
  assert status == expected.status, output[-3000:]
  lines = reports(stderr)
  assert len(lines) == 1, stderr[-3000:]
  for text in expected.expect:
    assert text.format(root=root) in lines[0], lines[0]
  assert after == before  # nothing written, nothing removed, every input unchanged
  assert not (root / PAYLOAD_RAN).exists()


def _make_removable(root: Path) -> None:
  for folder in (root, *root.rglob("*")):
    if folder.is_dir():
      folder.chmod(0o755)


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
  """The tiny test model (SatCLIP injection on) with zero weights, made by tracing alone:
  nothing is compiled, and no case gets as far as running it."""
  config = tiny_config()
  nirgan = models.NIRGAN.from_config(config)
  size = 32 + 2 * config.pad
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  embedding = jax.ShapeDtypeStruct((1, config.satclip.embed_dim), jnp.float32)
  shapes = {"generator": jax.eval_shape(nirgan.generator.init, rbg_key(0), image,
                                        embedding)["params"],
            "satclip": jax.eval_shape(lambda key: models.init_location_encoder(nirgan, key),
                                      rbg_key(1))}
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  path = tmp_path_factory.mktemp("shared") / "model"
  return Path(model_dir.save_model_dir(path, params, model_config.model_sections(config)))


def test_the_corpus_is_large_and_covers_every_tool():
  assert len(CASES) >= 40
  assert {c.tool for c in CASES.values()} == set(TOOLS)


@pytest.mark.parametrize("name", _params(IN_PROCESS_CASES))
def test_refused_in_process(name, tmp_path, model, capfd):
  root = tmp_path.absolute()
  argv = CASES[name].make(root, model)
  before = snapshot(root, model)
  main = importlib.import_module(TOOLS[CASES[name].tool][1]).main
  try:
    try:
      status = main(argv)
    except SystemExit as e:  # argparse's own refusals
      status = e.code
    stdout, stderr = capfd.readouterr()
    check_refused(name, root, status, stdout, stderr, before, snapshot(root, model))
  finally:
    _make_removable(root)


@dataclasses.dataclass
class EntryPointRuns:
  results: dict[str, tuple]  # name -> (root, status, stdout, stderr, before, after)
  model_before: dict[str, str]  # the shared model directory, read by all of them
  model_after: dict[str, str]


@pytest.fixture(scope="module")
def entry_point_runs(model, tmp_path_factory) -> EntryPointRuns:
  """Every entry-point case, each in its own folder, four processes at a time."""

  def run(name):
    root = tmp_path_factory.mktemp(name).absolute()
    argv = CASES[name].make(root, model)
    before = snapshot(root)
    process = subprocess.run([sys.executable, "-m", TOOLS[CASES[name].tool][0], *argv],
                             cwd=REPO, capture_output=True, timeout=600)
    decode = lambda data: data.decode(errors="replace")
    return (root, process.returncode, decode(process.stdout), decode(process.stderr), before,
            snapshot(root))

  model_before = snapshot(model)
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = dict(zip(ENTRY_POINT_CASES, pool.map(run, ENTRY_POINT_CASES), strict=True))
  return EntryPointRuns(results, model_before, snapshot(model))


@pytest.mark.parametrize("name", _params(ENTRY_POINT_CASES))
def test_refused_by_the_entry_point(name, entry_point_runs):
  check_refused(name, *entry_point_runs.results[name])


def test_entry_points_leave_the_shared_model_unchanged(entry_point_runs):
  assert entry_point_runs.model_after == entry_point_runs.model_before


def test_failed_build_leaves_the_data_dir_as_it_found_it(tmp_path, capfd):
  """A build that fails removes the folders (and TFDS's bookkeeping in them) it created, and
  nothing that was there before: an earlier build, a shared metadata file, empty folders."""
  data_dir = tmp_path / "tfds"
  earlier = data_dir / "s2_100k" / "boa_offset" / contract.VERSION
  earlier.mkdir(parents=True)
  (earlier / "dataset_info.json").write_text("{}")
  (data_dir / "s2_100k" / ".config").mkdir()
  (data_dir / "s2_100k" / ".config" / "metadata.json").write_text(
      json.dumps({"default_config_name": "default"}))  # as TFDS writes it
  (data_dir / "downloads").mkdir()  # empty, but not the build's to remove
  (data_dir / "notes").mkdir()
  raw = raw_archive(tmp_path)  # without index.csv
  before = snapshot(data_dir)
  assert build.main(["s2_100k", "--manual_dir", str(raw), "--data_dir", str(data_dir)]) == 1
  assert "index.csv: missing" in capfd.readouterr().err
  assert snapshot(data_dir) == before
