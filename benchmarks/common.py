"""Helpers shared by the benchmark scripts: timing, peak memory, the JSON line."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from collections.abc import Callable

import jax


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_call(fn: Callable[[], object], repeats: int) -> list[float]:
  """Wall seconds of ``repeats`` calls, each waited for to completion."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def summary(times: list[float], batch: int) -> dict:
  median = statistics.median(times)
  return {"median_s": round(median, 4), "min_s": round(min(times), 4),
          "max_s": round(max(times), 4), "images_per_s": round(batch / median, 3)}


def environment() -> dict:
  return {"backend": jax.default_backend(), "devices": jax.device_count(),
          "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
          "cpu": platform.processor() or platform.machine()}


def emit(record: dict) -> None:
  print(json.dumps(record, sort_keys=True))
