"""Progress of a training run in the log: its rate, the share done and the time left.

The part of CLU's ``periodic_actions.ReportProgress`` the loop used (``clu.periodic_actions``
imports TensorFlow); the rate also goes to TensorBoard as ``train/steps_per_s``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from absl import logging


class ProgressLog:
  """Call with each finished step; logs every ``every_secs`` of wall time."""

  def __init__(self, num_train_steps: int, every_secs: float = 60.0,
               clock: Callable[[], float] = time.monotonic):
    self._num_train_steps = num_train_steps
    self._every_secs = every_secs
    self._clock = clock
    self._since: tuple[int, float] | None = None  # (step, time) of the last report

  def __call__(self, step: int) -> str | None:
    """Logs and returns the report if one is due at ``step``."""
    now = self._clock()
    if self._since is None:  # the first step includes compiling: rates start after it
      self._since = (step, now)
      return None
    last_step, last_time = self._since
    if now - last_time < self._every_secs or step == last_step:
      return None
    rate = (step - last_step) / (now - last_time)
    left = datetime.timedelta(seconds=round((self._num_train_steps - step) / rate))
    report = (f"{rate:.3g} steps/s, {100 * step / self._num_train_steps:.1f}% "
              f"({step}/{self._num_train_steps}), ETA: {left}")
    logging.info(report)
    self._since = (step, now)
    return report
