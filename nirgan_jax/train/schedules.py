"""ReduceLROnPlateau on validation L1, with PyTorch's semantics (mode "min", relative
threshold), kept on the host and saved with each checkpoint as plain JSON.

The original NIR-GAN passes ``patience=5`` but never its configured factor of 0.5,
so it trained with PyTorch's default factor 0.1; ``optim.plateau.factor`` defaults
to that 0.1 to reproduce it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class Plateau:
  lr: float  # the current learning rate (starts at the base one)
  factor: float = 0.1
  patience: int = 5
  threshold: float = 1e-4  # relative: better means < best * (1 - threshold)
  min_lr: float = 0.0
  eps: float = 1e-8  # reductions smaller than this are skipped (as PyTorch does)
  best: float = math.inf
  num_bad: int = 0

  def update(self, value: float) -> float:
    """Records one evaluation; returns the learning rate to use from now on."""
    if value < self.best * (1.0 - self.threshold):
      self.best, self.num_bad = value, 0
    else:
      self.num_bad += 1
    if self.num_bad > self.patience:
      new_lr = max(self.lr * self.factor, self.min_lr)
      if self.lr - new_lr > self.eps:
        self.lr = new_lr
      self.num_bad = 0
    return self.lr

  def state_dict(self) -> dict[str, Any]:
    state = dataclasses.asdict(self)
    state["best"] = None if math.isinf(self.best) else self.best  # JSON has no infinity
    return state

  @classmethod
  def from_state_dict(cls, state: dict[str, Any]) -> Plateau:
    state = dict(state)
    state["best"] = math.inf if state.get("best") is None else state["best"]
    return cls(**state)
