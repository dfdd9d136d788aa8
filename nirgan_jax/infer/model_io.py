"""A self-contained model directory: parameter trees (Orbax) plus the config (JSON).

Layout of ``DIR``::

    DIR/config.json    the ml_collections config the networks are built from
    DIR/params/        Orbax checkpoint of {"generator": ..., "discriminator": ...,
                       "satclip": ...} (any subset)
    DIR/generator.jax_export   optional serialized inference program (``export``)

Written by the PyTorch import and by export; read by predict, evaluate and
fine-tuning. Writing goes to a temporary sibling directory that is renamed at the
end (``outputs.replacing``), so a failed write never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from nirgan_jax.errors import NirganError
from nirgan_jax.infer import outputs

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
EXPORTED_FILE = "generator.jax_export"


class ModelDirError(NirganError):
  """A model directory is missing, incomplete or unreadable."""


def save_model_dir(path: str | Path, params: dict[str, Any],
                   config: ml_collections.ConfigDict, overwrite: bool = False,
                   extra_files: dict[str, bytes] | None = None) -> Path:
  """Writes ``params`` (a dict of named parameter trees), ``config`` and any
  ``extra_files`` (name -> content) to ``path``."""
  path = Path(path).absolute()
  check_output(path, overwrite)
  with outputs.replacing(path, directory=True, replaceable=is_model_dir) as tmp:
    host_params = jax.tree.map(np.asarray, params)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp / PARAMS_DIR, host_params)
    checkpointer.wait_until_finished()
    (tmp / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    for name, content in (extra_files or {}).items():
      (tmp / name).write_bytes(content)
  return path


def is_model_dir(path: str | Path) -> bool:
  """Whether ``path`` is a directory ``save_model_dir`` wrote (and nothing else): the only
  kind of directory an ``--overwrite`` may replace."""
  path = Path(path)
  known = {CONFIG_FILE, PARAMS_DIR, EXPORTED_FILE}
  return (path.is_dir() and (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()
          and {p.name for p in path.iterdir()} <= known)


def check_output(path: str | Path, overwrite: bool) -> None:
  """Refuses, before any work, an output path that exists unless ``overwrite`` and it is a
  model directory (a training run, or any other folder, is never replaced)."""
  path = Path(path)
  outputs.check_new(path, overwrite)
  if (path.exists() or path.is_symlink()) and not is_model_dir(path):
    raise outputs.OutputError(f"{path}: exists and is not a model directory; refusing to "
                              "replace it")


def load_config(path: str | Path) -> ml_collections.ConfigDict:
  config_file = Path(path) / CONFIG_FILE
  if not config_file.is_file():
    raise ModelDirError(f"{path}: not a model directory ({CONFIG_FILE} is missing)")
  try:
    return ml_collections.ConfigDict(json.loads(config_file.read_text()))
  except json.JSONDecodeError as e:
    raise ModelDirError(f"{config_file}: not valid JSON ({e})") from e


def load_model_dir(path: str | Path) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """(params, config) of a directory written by ``save_model_dir``; params as numpy."""
  path = Path(path).absolute()
  config = load_config(path)
  if not (path / PARAMS_DIR).is_dir():
    raise ModelDirError(f"{path}: not a model directory ({PARAMS_DIR}/ is missing)")
  try:
    params = ocp.StandardCheckpointer().restore(path / PARAMS_DIR)
  except Exception as e:  # Orbax raises a variety of types for damaged checkpoints.
    raise ModelDirError(f"{path / PARAMS_DIR}: cannot read parameters ({e})") from e
  return jax.tree.map(np.asarray, params), config
