"""Stopping a run cleanly when the machine is about to go (SIGTERM from a TPU maintenance
event, a Kubernetes/SLURM preemption or a plain ``kill``).

The handler only records the signal; the training loop asks ``requested()`` between steps,
saves a checkpoint and leaves. With several processes they must agree on the step at which
they stop (a checkpoint is a collective), so ``requested()`` takes the maximum of every
process's flag, every ``check_every`` steps only, to keep collectives off the hot path. The
signal need reach only one of them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run stopped on a signal after saving a checkpoint; rerunning resumes it."""

  def __init__(self, step: int, signal_name: str):
    super().__init__(f"stopped by {signal_name} at step {step} after saving a checkpoint; "
                     "run the same command again to resume")
    self.step = step
    self.signal_name = signal_name


class StopSignal:
  """Context manager that turns ``signals`` into a stop request instead of a kill."""

  def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,),
               check_every: int = 1):
    self._signals = signals
    self._check_every = check_every
    self._received: signal.Signals | None = None
    self._previous: dict[signal.Signals, object] = {}

  def __enter__(self) -> StopSignal:
    # Python lets only the main thread install handlers; elsewhere (a test runner thread)
    # the signals keep their default action.
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    self._received = signal.Signals(signum)

  @property
  def signal_name(self) -> str:
    return self._received.name if self._received is not None else "a signal on another host"

  def requested(self, step: int) -> bool:
    """Whether any process received a stop signal. With several processes this is a
    collective, taken at steps that are multiples of ``check_every`` (call it after every step
    on every process); between them it answers False."""
    local = self._received is not None
    if jax.process_count() == 1:
      return local
    if step % self._check_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
    return bool(np.max(flags))
