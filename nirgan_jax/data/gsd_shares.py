"""The share of each source's training examples shown at each ground sampling distance:
what the training log reports, to compare with the configured ``prob_native`` and
``derived_gsd_m`` (``transforms.gsd_probabilities``)."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np


class GsdShares:
  """Counts the rows of training batches by (``source_index``, ``gsd_m``)."""

  def __init__(self, source_names: Sequence[str]):
    self.source_names = list(source_names)  # by source_index
    self.counts: collections.Counter[tuple[int, float]] = collections.Counter()

  def add(self, batch: Mapping[str, np.ndarray]) -> None:
    sources = np.asarray(batch["source_index"]).reshape(-1).tolist()
    gsds = np.asarray(batch["gsd_m"], np.float64).reshape(-1).tolist()
    # float32 gsd_m: 0.3 arrives as 0.30000001.
    self.counts.update((int(s), round(g, 3)) for s, g in zip(sources, gsds, strict=True))

  def shares(self) -> dict[str, dict[float, float]]:
    """Source name -> gsd -> share of that source's counted examples."""
    totals = collections.Counter()
    for (source, _), count in self.counts.items():
      totals[source] += count
    out: dict[str, dict[float, float]] = {}
    for (source, gsd), count in sorted(self.counts.items()):
      out.setdefault(self.source_names[source], {})[gsd] = count / totals[source]
    return out

  def scalars(self) -> dict[str, float]:
    """``{"gsd_share/<source>/<gsd>m": share}``, e.g. ``gsd_share/sen2naip/hr/5m``."""
    return {f"gsd_share/{name}/{gsd:g}m": share
            for name, by_gsd in self.shares().items() for gsd, share in by_gsd.items()}
