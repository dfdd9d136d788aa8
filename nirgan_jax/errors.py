"""Errors a user can act on, and the command-line wrapper that reports them.

Every problem with a user's input, output, config or environment is raised as a
``NirganError`` whose message names the file (or key) and the problem in one line. The
command-line tools print it as ``error: <message>`` without a traceback and exit non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
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


class Terminated(BaseException):
  """SIGTERM arrived. Raised in the main thread so that it unwinds like Ctrl-C: every
  temporary output is removed on the way out."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
  """Within the block, SIGTERM raises ``Terminated`` instead of ending the process at once."""
  if threading.current_thread() is not threading.main_thread():
    yield  # signal handlers can only be set from the main thread
    return

  def handler(signum, frame):
    raise Terminated(signal.Signals(signum).name)

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def one_line(error: BaseException) -> str:
  """The first line of ``error``'s message (its type's name if it has none): for wrapping a
  library's error, which may run over many lines, into a one-line report."""
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def report(error: BaseException) -> int:
  """Prints ``error`` as one line on stderr; returns the exit status it calls for."""
  print(f"error: {error}", file=sys.stderr)
  return getattr(error, "exit_status", EXIT_ERROR)


def cli(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
  """Wraps a tool's ``main(argv) -> status``: a ``NirganError`` or an ``OSError`` (a file
  that cannot be read or written) becomes one line on stderr and a non-zero status; SIGTERM
  and Ctrl-C stop the tool with nothing half-written (128 + the signal's number)."""

  @functools.wraps(main)
  def wrapped(argv: Sequence[str] | None = None) -> int:
    try:
      with sigterm_unwinds():
        return main(argv)
    except (NirganError, OSError) as e:
      return report(e)
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
