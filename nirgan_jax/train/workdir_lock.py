"""One training run per workdir.

``hold(workdir)`` takes an exclusive lock (``flock``) on ``WORKDIR/train.lock`` for as long as
the run trains, and writes the holder's host and process id into the file. The kernel drops
the lock when the holder's process ends, however it ends (kill -9 included), so a dead holder
never blocks the next run; while the holder lives, ``hold`` raises ``WorkdirBusyError``
naming it. Worker processes forked by the holder do not keep the lock. On NFS the lock holds
across machines where the server supports locking (NFSv4); cloud workdirs (``gs://``) are
not locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

from etils import epath

from nirgan_jax import paths
from nirgan_jax.errors import NirganError

LOCK_FILE = "train.lock"

_held: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
  """A forked child closes its copies: the lock then ends with the holder alone."""
  for fd in _held:
    with contextlib.suppress(OSError):
      os.close(fd)
  _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class WorkdirBusyError(NirganError):
  """Another live run trains in the workdir."""


def holder(workdir: str | os.PathLike) -> str:
  """Who holds ``workdir`` (or held it last), as the lock file names them."""
  try:
    text = (paths.as_path(workdir) / LOCK_FILE).read_text().strip()
  except OSError:
    text = ""
  host, _, pid = text.partition(" ")
  return f"host {host}, process {pid}" if pid else "a process that has not named itself yet"


def _busy(workdir: str | os.PathLike) -> WorkdirBusyError:
  return WorkdirBusyError(f"{workdir}: another run is training here ({holder(workdir)}); wait "
                          "for it to finish or stop it, or give another --workdir")


def refuse_if_held(workdir: str | os.PathLike) -> None:
  """Raises ``WorkdirBusyError`` if a live run holds ``workdir``; creates nothing. For the
  command line, to refuse before loading JAX; ``hold`` decides."""
  lock_file = paths.as_path(workdir) / LOCK_FILE
  if paths.is_cloud(workdir) or not lock_file.is_file():
    return
  fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    raise _busy(workdir) from None
  finally:
    os.close(fd)


@contextlib.contextmanager
def hold(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds ``workdir`` (an existing local folder) for the block; raises ``WorkdirBusyError``
  at once if a live process holds it. Does nothing for a cloud workdir."""
  if paths.is_cloud(workdir):
    yield
    return
  lock_file = epath.Path(workdir) / LOCK_FILE
  fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _busy(workdir) from None
    _held.add(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
    try:
      yield
    finally:
      _held.discard(fd)
  finally:
    os.close(fd)  # releases the lock
