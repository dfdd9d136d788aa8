"""Paths a user gives (config values, command-line arguments): local or on cloud storage.

``pathlib.Path("gs://b/x")`` collapses to ``gs:/b/x``; ``as_path`` keeps such URIs intact as an
``etils.epath.Path``, whose backends read and write them. What only works on a local
filesystem asks for ``local_path``, which refuses a URI with the reason.
"""

from __future__ import annotations

import os
import pathlib

from etils import epath

from nirgan_jax.errors import NirganError


class LocalPathError(NirganError):
  """A cloud URI where only a local path works."""


def is_cloud(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a URI (``gs://``, ``s3://``...) rather than a local path."""
  return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """A cloud URI as given, or a local path with ``~`` expanded, made absolute."""
  if is_cloud(path):
    return epath.Path(path)
  return epath.Path(os.path.expanduser(os.fspath(path))).absolute()


def local_path(path: str | os.PathLike, why: str) -> pathlib.Path:
  """``path`` (``~`` expanded) for local-only work; a URI is refused, naming ``why``."""
  if is_cloud(path):
    raise LocalPathError(f"{path}: {why}, so it must be a local path (copy it to or from "
                         "cloud storage separately)")
  return pathlib.Path(os.path.expanduser(os.fspath(path)))
