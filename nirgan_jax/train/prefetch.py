"""Training batches sharded onto the devices ahead of the step that consumes them.

While the devices run step ``t``, the host has already read, sharded and started copying the
batches of steps ``t + 1 .. t + depth`` (the idea of flax's ``prefetch_to_device``), so
reading, host-to-device copies and compute overlap. Reading ahead moves the data iterator
past the steps done; each batch therefore carries the iterator's state as it was right after
that batch was read, which is what a checkpoint must store for an exact resume.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class PrefetchedBatch:
  device: dict[str, jax.Array]  # the model inputs, sharded over the mesh
  host: Mapping[str, np.ndarray]  # the whole host batch (labels, bookkeeping)
  iterator_state: dict[str, Any]  # the data iterator's state right after this batch


class IteratorSnapshot:
  """A data iterator's saved state in the shape Grain's checkpoint handler writes
  (``get_state()`` as JSON bytes): the same files as checkpointing the iterator itself, so
  ``grain.checkpoint.CheckpointRestore`` restores it."""

  def __init__(self, state: dict[str, Any]):
    self._state = state

  def get_state(self) -> bytes:
    return json.dumps(self._state, indent=4).encode()


def prefetch_to_device(iterator: Iterator[Mapping[str, np.ndarray]],
                       shard: Callable[[Mapping[str, np.ndarray]], dict[str, jax.Array]],
                       depth: int = 2) -> Iterator[PrefetchedBatch]:
  """Yields ``iterator``'s batches, each already given to ``shard`` (which starts its
  host-to-device copy) ``depth`` batches before it is yielded."""
  queue: collections.deque[PrefetchedBatch] = collections.deque()

  def enqueue() -> bool:
    try:
      host = next(iterator)
    except StopIteration:
      return False
    queue.append(PrefetchedBatch(shard(host), host, iterator.get_state()))
    return True

  for _ in range(depth):
    enqueue()
  while queue:
    # The caller dispatches this batch's step (asynchronously) before asking for the next,
    # so the read below overlaps the step.
    yield queue.popleft()
    enqueue()
