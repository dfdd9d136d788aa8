"""Deterministic train/validation/test assignment by location.

Archives without their own split are split by a hash of the location's grid cell,
so every patch of one place (the same cell) lands in the same split, on every
machine and every run (no Python ``hash`` salt, no RNG state).
"""

from __future__ import annotations

import hashlib
import math

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
# ~5.5 km at the equator: patches closer than this share a cell (and so a split).
DEFAULT_CELL_DEG = 0.05


def location_cell(lon: float, lat: float, cell_deg: float = DEFAULT_CELL_DEG) -> tuple[int, int]:
  return math.floor(lon / cell_deg), math.floor(lat / cell_deg)


def location_split(lon: float, lat: float, fractions=DEFAULT_FRACTIONS,
                   cell_deg: float = DEFAULT_CELL_DEG) -> str:
  if not (math.isfinite(lon) and math.isfinite(lat)):
    raise ValueError(f"non-finite location ({lon}, {lat})")
  if abs(sum(fractions) - 1.0) > 1e-9:
    raise ValueError(f"split fractions must sum to 1, got {fractions}")
  cell = location_cell(lon, lat, cell_deg)
  digest = hashlib.sha256(f"{cell[0]},{cell[1]}".encode()).digest()
  u = int.from_bytes(digest[:8], "little") / 2**64
  edge = 0.0
  for split, fraction in zip(SPLITS, fractions, strict=True):
    edge += fraction
    if u < edge:
      return split
  return SPLITS[-1]
