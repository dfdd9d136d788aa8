"""Errors a user can act on, and the command-line wrapper that reports them.

Every problem with a user's input, output, config or environment is raised as a
``NirganError`` whose message names the file (or key) and the problem in one line. The
command-line tools print it as ``error: <message>`` without a traceback and exit non-zero;
anything else is a bug and keeps its traceback, except a library's error that wraps a
failed read or write (``storage_failure``: no space, no permission, a read-only filesystem, a
vanished file), which is reported like an ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's status for a bad command line
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a process ended by a signal
EXIT_TERMINATED = 128 + signal.SIGTERM


class NirganError(Exception):
  """A problem with the user's input, output, config or environment (exit status 1)."""

  exit_status = EXIT_ERROR


class UsageError(NirganError, ValueError):
  """A bad argument or config value, found before any work is done (exit status 2)."""

  exit_status = EXIT_USAGE


class ConfigError(NirganError, ValueError):
  """A config value the run cannot use, named by its key."""


class MissingExtraError(NirganError):
  """A feature whose library only an optional extra of the package installs."""

  def __init__(self, feature: str, extra: str, error: ImportError):
    super().__init__(f"{feature} needs {error.name or 'a module it could not import'}: "
                     f"pip install 'nirgan-jax[{extra}]'")


def import_extra(module: str, feature: str, extra: str):
  """``importlib.import_module(module)``, or a ``MissingExtraError`` naming the extra that
  installs it."""
  import importlib

  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingExtraError(feature, extra, e) from e


class StorageError(NirganError):
  """A read or write that the filesystem refused, found in a library's error: names the path
  (where the library's message does) and the operating system's reason."""

  def __init__(self, path: str | None, code: int):
    reason = os.strerror(code)
    super().__init__(f"{path}: {reason}" if path else reason)
    self.path = path
    self.errno = code


# What a filesystem answers a read or write the user must act on. The first six are the
# environment's doing (any file would fail alike); the last two may be one file's.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM,
                       errno.EROFS)
_STORAGE_ERRNOS = (*_ENVIRONMENT_ERRNOS, errno.ENOENT, errno.EIO)
_QUOTED_PATH = re.compile(r"""["']((?:/|[a-z][a-z0-9+.-]*://)[^"']+)["']""")


def _causes(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def storage_failure(error: BaseException, environment_only: bool = False
                    ) -> StorageError | None:
  """The failed read or write behind ``error`` as a ``StorageError``, or None. TensorStore
  (under Orbax), GDAL and TensorFlow raise their own types whose message quotes the path and
  the system's reason (``strerror``); an ``OSError`` among the causes says it directly. With
  ``environment_only``, only the reasons that are not one file's fault (no space, no
  permission, a read-only filesystem) count."""
  codes = _ENVIRONMENT_ERRNOS if environment_only else _STORAGE_ERRNOS
  for cause in _causes(error):
    if isinstance(cause, OSError) and cause.errno is not None:
      if cause.errno in codes:
        return StorageError(cause.filename, cause.errno)
      continue
    text = str(cause)
    code = next((c for c in codes if os.strerror(c) in text), None)
    if code is not None:
      path = _QUOTED_PATH.search(text)
      return StorageError(path.group(1) if path else None, code)
  return None


def _is_late_async_callback(unraisable) -> bool:
  """TensorStore reads and writes that finish after Orbax ended the event loop that awaited
  them (it ends it when another one failed) call back into the closed loop."""
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed")


# Libraries whose background threads log a failure with its traceback and then hand it to
# the main thread, where the command reports it in one line: Orbax's checkpoint writes, CLU's
# asynchronous metric writer.
_RELAYING_LIBRARIES = tuple(f"{os.sep}{name}{os.sep}" for name in ("orbax", "clu"))


class _NoRelayedTracebacks(logging.Filter):
  """The records of ``_RELAYING_LIBRARIES`` keep their message and lose the traceback, and so
  do asyncio's about the other writes of a batch that failed together (the first failure is
  the one relayed); those keep only their first line, "Task exception was never retrieved",
  without the task's repr on the next."""

  def filter(self, record: logging.LogRecord) -> bool:
    if any(library in record.pathname for library in _RELAYING_LIBRARIES):
      record.exc_info = record.exc_text = record.stack_info = None
    elif record.name == "asyncio" and "exception was never retrieved" in record.getMessage():
      record.exc_info = record.exc_text = record.stack_info = None
      record.msg, record.args = record.getMessage().splitlines()[0], ()
    return True


def quiet_library_failures() -> None:
  """For the rest of the process, keeps off stderr the tracebacks that libraries print on
  their own around a failure that the command reports in one line: late TensorStore callbacks
  into a closed event loop (``_is_late_async_callback``) and the records of a failed
  background write (``_NoRelayedTracebacks``). Any other unraisable exception or record is
  reported as before."""
  previous = sys.unraisablehook
  if getattr(previous, "quiets_late_async_callbacks", False):
    return

  def hook(unraisable):
    if not _is_late_async_callback(unraisable):
      previous(unraisable)

  hook.quiets_late_async_callbacks = True
  sys.unraisablehook = hook
  for logger in ("absl", "asyncio"):
    logging.getLogger(logger).addFilter(_NoRelayedTracebacks())


class Terminated(BaseException):
  """SIGTERM arrived. Raised in the main thread so that it unwinds like Ctrl-C: every
  temporary output is removed on the way out."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
  """Within the block, SIGTERM raises ``Terminated`` instead of ending the process at once.

  Python runs the handler between two bytecodes of the main thread, which may be inside a
  garbage-collection callback or a ``__del__`` (JAX registers one): there an exception is only
  reported as unraisable, and the signal would be lost. So such a ``Terminated`` has the
  signal sent again, from another thread, and the main thread raises it at a later bytecode;
  the block does not end before every such signal was raised.
  """
  if threading.current_thread() is not threading.main_thread():
    yield  # signal handlers can only be set from the main thread
    return

  def handler(signum, frame):
    raise Terminated(signal.Signals(signum).name)

  previous_hook = sys.unraisablehook
  senders = []

  def send_later():
    sender = threading.Thread(target=_send_sigterm_soon, daemon=True)
    senders.append(sender)
    sender.start()

  def send_again(unraisable):
    if isinstance(unraisable.exc_value, Terminated):
      send_later()
      return
    try:
      previous_hook(unraisable)
    except Terminated:  # it landed in the previous hook (which may format a long traceback)
      send_later()

  previous = signal.signal(signal.SIGTERM, handler)
  sys.unraisablehook = send_again
  try:
    yield
  finally:
    try:
      for sender in senders:
        sender.join()  # its signal is raised here at the latest
    finally:
      signal.signal(signal.SIGTERM, previous)
      if sys.unraisablehook is send_again:
        sys.unraisablehook = previous_hook


# Long enough for the hook that starts the sender to return first (were the signal handled in
# the hook, it would be lost again), short beside any tool's stop.
_RESEND_DELAY_S = 0.01


def _send_sigterm_soon() -> None:
  time.sleep(_RESEND_DELAY_S)
  os.kill(os.getpid(), signal.SIGTERM)


def one_line(error: BaseException) -> str:
  """The first line of ``error``'s message (its type's name if it has none): for wrapping a
  library's error, which may run over many lines, into a one-line report."""
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


# TensorStore appends its whole spec (and C++ source locations) to a message.
_LIBRARY_DETAIL = re.compile(r" \[(tensorstore_spec|source locations)=.*$")
_STATUS_CODE = re.compile(r"^[A-Z_]+: ")  # TensorStore's OUT_OF_RANGE:, NOT_FOUND:, ...
_MAX_REASON = 300


def brief(error: BaseException) -> str:
  """One short line on why a library failed: the first line of the innermost error it wrapped
  (TensorStore's under Orbax's, say), with its type unless it starts with a status code."""
  while error.__cause__ is not None:
    error = error.__cause__
  reason = _LIBRARY_DETAIL.sub("", one_line(error))
  if not _STATUS_CODE.match(reason):
    reason = f"{type(error).__name__}: {reason}"
  return reason if len(reason) <= _MAX_REASON else reason[:_MAX_REASON] + "..."


def report(error: BaseException) -> int:
  """Prints ``error`` as one line on stderr; returns the exit status it calls for."""
  # One write: a line of its own even while other threads log (print writes the end apart).
  sys.stderr.write(f"error: {error}\n")
  sys.stderr.flush()
  return getattr(error, "exit_status", EXIT_ERROR)


def cli(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
  """Wraps a tool's ``main(argv) -> status``: a ``NirganError``, an ``OSError`` or a
  library's error that wraps one (``storage_failure``) becomes one line on stderr and a
  non-zero status; SIGTERM and Ctrl-C stop the tool with nothing half-written (128 + the
  signal's number)."""

  @functools.wraps(main)
  def wrapped(argv: Sequence[str] | None = None) -> int:
    quiet_library_failures()
    try:
      with sigterm_unwinds():
        return main(argv)
    except (NirganError, OSError) as e:
      return report(e)
    except Exception as e:
      failure = storage_failure(e)
      if failure is None:
        raise  # a bug: keep its traceback
      return report(failure)
    except Terminated:
      print("error: stopped by SIGTERM; no partial output was left", file=sys.stderr)
      return EXIT_TERMINATED
    except KeyboardInterrupt:
      print("error: interrupted; no partial output was left", file=sys.stderr)
      return EXIT_INTERRUPTED

  return wrapped


def run(main: Callable[[Sequence[str] | None], int]) -> None:
  """``sys.exit(main())``: the body of a tool's ``if __name__ == "__main__"`` and of its
  console script."""
  sys.exit(main(None))
