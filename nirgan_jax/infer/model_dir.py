"""A self-contained model directory: parameter trees (Orbax) plus the config (JSON).

Layout of ``DIR``::

    DIR/config.json    the ml_collections config the networks are built from
    DIR/params/        Orbax checkpoint of {"generator": ..., "discriminator": ...,
                       "satclip": ...} (any subset)
    DIR/generator.jax_export   optional serialized inference program (``export``)

Written by the PyTorch import and by export; read by predict, evaluate and
fine-tuning. Paths may be local or cloud URIs (``nirgan_jax.paths``). Writing goes to a
temporary sibling directory that is renamed at the end (``outputs.replacing``), so a failed
write never leaves a directory that looks complete; cloud storage has no atomic rename, so
there the files are written in place with ``config.json`` last, and a failed write leaves a
directory that does not load.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from nirgan_jax import errors, paths
from nirgan_jax.errors import NirganError
from nirgan_jax.infer import outputs

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
EXPORTED_FILE = "generator.jax_export"


class ModelDirError(NirganError):
  """A model directory is missing, incomplete or unreadable."""


def save_model_dir(path: str | os.PathLike, params: dict[str, Any],
                   config: ml_collections.ConfigDict, overwrite: bool = False,
                   extra_files: dict[str, bytes] | None = None) -> epath.Path:
  """Writes ``params`` (a dict of named parameter trees), ``config`` and any
  ``extra_files`` (name -> content) to ``path``."""
  path = paths.as_path(path)
  check_output(path, overwrite)

  def write(folder: epath.Path) -> None:
    checkpointer = ocp.StandardCheckpointer()
    try:
      checkpointer.save(folder / PARAMS_DIR, jax.tree.map(np.asarray, params))
      checkpointer.wait_until_finished()
    finally:
      # A failed save may leave writes of its background thread in flight; they must end
      # before the temporary folder is removed, or they re-create it.
      with contextlib.suppress(Exception):
        checkpointer.close()
    for name, content in (extra_files or {}).items():
      (folder / name).write_bytes(content)
    (folder / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))

  try:
    if paths.is_cloud(path):
      if path.exists():  # a model directory that check_output allowed to replace
        path.rmtree()
      write(path)
    else:
      with outputs.replacing(path, directory=True, replaceable=is_model_dir) as tmp:
        write(epath.Path(tmp))
  except Exception as e:  # TensorStore's own types, under Orbax, for a failed write
    failure = errors.storage_failure(e)
    if failure is None:
      raise
    raise outputs.OutputError(f"{path}: cannot write the model directory "
                              f"({os.strerror(failure.errno)})") from e
  return path


def is_model_dir(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a directory ``save_model_dir`` wrote (and nothing else): the only
  kind of directory an ``--overwrite`` may replace."""
  path = paths.as_path(path)
  known = {CONFIG_FILE, PARAMS_DIR, EXPORTED_FILE}
  return (path.is_dir() and (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()
          and {p.name for p in path.iterdir()} <= known)


def check_output(path: str | os.PathLike, overwrite: bool) -> None:
  """Refuses, before any work, an output path that exists unless ``overwrite`` and it is a
  model directory (a training run, or any other folder, is never replaced)."""
  path = paths.as_path(path)
  outputs.check_new(path, overwrite)
  if outputs.exists(path) and not is_model_dir(path):
    raise outputs.OutputError(f"{path}: exists and is not a model directory; refusing to "
                              "replace it")
  outputs.check_writable(path)


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  config_file = paths.as_path(path) / CONFIG_FILE
  if not config_file.is_file():
    raise ModelDirError(f"{path}: not a model directory ({CONFIG_FILE} is missing)")
  try:
    config = json.loads(config_file.read_text())
  except ValueError as e:  # not UTF-8, or not JSON
    raise ModelDirError(f"{config_file}: not valid JSON ({e})") from e
  if not isinstance(config, dict):
    raise ModelDirError(f"{config_file}: not a config (a JSON {type(config).__name__}, not an "
                        "object)")
  return ml_collections.ConfigDict(config)


def load_model_dir(path: str | os.PathLike
                   ) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """(params, config) of a directory written by ``save_model_dir``; params as numpy."""
  path = paths.as_path(path)
  config = load_config(path)
  if not (path / PARAMS_DIR).is_dir():
    raise ModelDirError(f"{path}: not a model directory ({PARAMS_DIR}/ is missing)")
  try:
    params = ocp.StandardCheckpointer().restore(path / PARAMS_DIR)
  except Exception as e:  # Orbax raises a variety of types for damaged checkpoints.
    raise ModelDirError(f"{path / PARAMS_DIR}: cannot read parameters "
                        f"({errors.brief(e)})") from e
  return jax.tree.map(np.asarray, params), config
