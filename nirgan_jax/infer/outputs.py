"""Outputs that appear whole or not at all.

Every file or directory a tool writes is first written to a temporary sibling (same folder,
so the final rename is atomic) and renamed into place at the end; a failure removes the
sibling and leaves any previous output untouched. The result gets the permissions the
process's umask gives a newly created file or directory, as a plain ``open()`` would.
On cloud storage (``gs://``...), which has no rename, a file is written in place: an object
appears only once its upload is complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from nirgan_jax import errors, paths
from nirgan_jax.errors import NirganError


class OutputError(NirganError):
  """An output that exists (without overwrite) or cannot be written; names the path."""


def current_umask() -> int:
  """The process's umask, read without setting it: ``os.umask`` can only be read by changing
  it, which races with other threads creating files meanwhile."""
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  # Elsewhere: the mode the umask leaves on a directory created with every permission.
  with tempfile.TemporaryDirectory() as tmp:
    probe = Path(tmp) / "probe"
    probe.mkdir(mode=0o777)
    return 0o777 & ~probe.stat().st_mode


def check_new(path: str | os.PathLike, overwrite: bool) -> None:
  """Refuses an existing output (local or cloud) unless it may be replaced."""
  if paths.as_path(path).exists() and not overwrite:
    raise OutputError(f"{path}: output exists (pass --overwrite to replace it)")


def exists(path: str | os.PathLike) -> bool:
  """Whether anything is at ``path`` (local or cloud), a dangling symlink included."""
  return paths.as_path(path).exists() if paths.is_cloud(path) else os.path.lexists(path)


def check_writable(path: str | os.PathLike) -> None:
  """Refuses a local output whose nearest existing folder is a file or is not writable (on
  cloud storage the write itself reports what the storage refuses)."""
  if paths.is_cloud(path):
    return
  path = Path(path)
  folder = path.parent
  while not folder.exists():
    folder = folder.parent
  if not folder.is_dir():
    raise OutputError(f"{path}: cannot write there ({folder} is a file, not a folder)")
  if not os.access(folder, os.W_OK):
    raise OutputError(f"{path}: cannot write there ({folder} is not writable)")


# What a filesystem has left, at most, right after a write into it failed for lack of space.
_NEARLY_FULL = 1 << 20


def _filesystem_refusal(folder: Path) -> int | None:
  """The errno that a write into ``folder`` meets now (a read-only filesystem, a full one, a
  folder this process may not write), or None."""
  try:
    status = os.statvfs(folder)
  except OSError:
    return None
  if status.f_flag & os.ST_RDONLY:
    return errno.EROFS
  free_blocks = status.f_bfree if os.geteuid() == 0 else status.f_bavail
  if free_blocks * status.f_frsize < _NEARLY_FULL:
    return errno.ENOSPC
  if not os.access(folder, os.W_OK):
    return errno.EACCES
  return None


def write_failure(path: str | os.PathLike, error: BaseException) -> NirganError | None:
  """``error``, raised while ``path`` was written, as one line with the filesystem's reason,
  where a library's message lost it (GDAL reports a full disk as a failed read of what it
  wrote); None if ``error`` says what it is already or is no filesystem's doing."""
  if not isinstance(error, Exception) or isinstance(error, NirganError):
    return None
  if isinstance(error, OSError) and error.errno is not None:  # rasterio's have none
    if error.filename is not None:
      return None
    # A failed write() names no file: the one line needs the output's.
    return OutputError(f"{path}: cannot write it ({os.strerror(error.errno)})")
  failure = errors.storage_failure(error)
  if failure is not None:
    return failure
  code = _filesystem_refusal(Path(path).parent)
  return None if code is None else OutputError(f"{path}: cannot write it ({os.strerror(code)})")


def quiet_libtiff_fallback_errors() -> None:
  """Stops libtiff printing, on stderr, errors that reach the command anyway.

  GDAL reports a failed write of a GeoTIFF's strips (a full disk) through libtiff's
  process-wide error handler, whose default prints ``_tiffWriteProc: No space left on
  device.`` above the command's one error line, while the same failure reaches rasterio as an
  exception (``write_failure`` names its cause). Only that default is removed: errors GDAL
  routes per file are raised as before. Linux only (libtiff is found among the process's
  mapped files, where rasterio's wheel or the system put it); elsewhere nothing changes.
  """
  import rasterio  # noqa: F401  (loads GDAL and its libtiff)
  try:
    with open("/proc/self/maps") as maps:
      libraries = {line.split()[-1] for line in maps if "/libtiff" in line}
  except OSError:
    return
  for library in libraries:
    # Not loadable by its path, or without the symbol: nothing to turn off.
    with contextlib.suppress(OSError, AttributeError):
      ctypes.CDLL(library).TIFFSetErrorHandler(None)


# After a failed Orbax save, TensorStore's own threads may still finish writes that were in
# flight and re-create the temporary folder a moment after it was removed: it must stay gone
# for _SETTLE_S, and its removal is retried for up to _LATE_WRITES_S.
_LATE_WRITES_S = 10.0
_SETTLE_S = 0.5


def _remove(path: Path) -> None:
  if not (path.is_dir() and not path.is_symlink()):
    path.unlink(missing_ok=True)
    return
  deadline = time.monotonic() + _LATE_WRITES_S
  while True:
    shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
      time.sleep(_SETTLE_S)
      if not path.exists():
        return
    if time.monotonic() > deadline:
      return
    time.sleep(0.05)


_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths in one step
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
  """Swaps the paths ``a`` and ``b`` atomically; False where the system cannot."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a filesystem without it
    return False
  raise OSError(code, os.strerror(code), str(b))


def _replace_directory(new: Path, path: Path) -> None:
  """Puts directory ``new`` at ``path``, where a directory may already be: swapped in one
  step where the system allows, so that at no moment is there neither; the old one is then
  removed."""
  if not path.exists():
    os.replace(new, path)
  elif _exchange(new, path):
    shutil.rmtree(new)  # ``new`` now names the old output
  else:
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    os.replace(path, old / path.name)
    os.replace(new, path)
    shutil.rmtree(old)


@contextlib.contextmanager
def replacing(path: str | Path, directory: bool = False,
              replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
  """Yields a new temporary sibling of ``path`` (an empty file, or with ``directory`` an
  empty directory) to write the output into; renames it onto ``path`` when the block ends
  normally, removes it when the block raises (a library's error that hides a full or
  read-only filesystem becomes ``write_failure``'s one line). ``path`` must be local.

  An existing ``path`` is replaced only if it is of the same kind (file or directory) and
  ``replaceable(path)`` (default: any) says it is an output of this kind, so that nothing
  else a user owns is ever deleted.
  """
  path = paths.local_path(path, "it is written through a temporary sibling renamed into place")
  if path.exists() or path.is_symlink():
    same_kind = path.is_dir() == directory and not path.is_symlink()
    if not same_kind or (replaceable is not None and not replaceable(path)):
      what = "a model directory" if directory else "a file this tool wrote"
      raise OutputError(f"{path}: exists and is not {what}; refusing to replace it")
  made_folders = [folder for folder in (path.parent, *path.parent.parents)
                  if not folder.exists()]
  path.parent.mkdir(parents=True, exist_ok=True)
  prefix = f".{path.name}."
  if directory:
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
  else:
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
  try:
    yield tmp
    # mkstemp and mkdtemp make it private; an output is not.
    tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~current_umask())
    if directory:
      _replace_directory(tmp, path)
    else:
      os.replace(tmp, path)
  except BaseException as e:
    failure = write_failure(path, e)  # before removing: that frees space
    _remove(tmp)
    for folder in made_folders:  # deepest first; kept if anything else is in it now
      with contextlib.suppress(OSError):
        folder.rmdir()
    if failure is not None:
      raise failure from e
    raise


def write_files_atomic(files: Mapping[str | os.PathLike, bytes]) -> None:
  """Writes every file of ``files`` (path: contents), each as ``write_bytes_atomic`` does;
  locally, none is renamed into place until all are written, so that a failure leaves none
  of them (and no folder made for them) and every previous version untouched."""
  if any(paths.is_cloud(path) for path in files):
    for path, data in files.items():
      write_bytes_atomic(path, data)
    return
  with contextlib.ExitStack() as stack:  # renames in reverse order once every write is done
    for path, data in files.items():
      stack.enter_context(replacing(path)).write_bytes(data)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary sibling renamed into place, or on cloud
  storage as one object."""
  if paths.is_cloud(path):
    path = paths.as_path(path)
    if path.is_dir():
      raise OutputError(f"{path}: exists and is not a file this tool wrote; refusing to "
                        "replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return
  with replacing(path) as tmp:
    tmp.write_bytes(data)
