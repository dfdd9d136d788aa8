"""Spectral indices from reflectance bands in [0, 1].

Every function takes arrays of equal shape and an ``eps`` that guards the
denominator: with ``eps > 0`` (as the losses use) an all-zero input gives 0, not NaN.
For products (maps a user reads) pass ``eps=0`` to get the textbook value.

Bounds. On reflectance in [0, 1] every index that losses and metrics use
(``compute_index``) is finite and within ``INDEX_BOUNDS[name]``:

- NDVI, NDWI, GNDVI: [-1, 1] (``|N - R| <= N + R``; 0 where N + R = 0 with ``eps > 0``).
- SAVI: [-1, 1] (denominator >= 0.5; extremes at N, R = 1, 0 and 0, 1).
- MSAVI: [-1, 1] (its radicand is (2N - 1)^2 + 8R >= 0).
- EVI2: [-25/34, 5/4] (denominator N + 2.4R + 1 >= 1).
- EVI (MODIS): its denominator N + 6R - 7.5B + 1 crosses 0 inside the cube (at R = 0.45,
  N = 0.55, B = 0.5667), so it is counted only where the RGB alone keeps
  the denominator at least ``EVI_MIN_DENOMINATOR`` (0.5) whatever the NIR in [0, 1]:
  1 + 6R - 7.5B >= 0.5 (``index_support``). That leaves out clouds, snow and other
  blue-bright pixels, the same pixels for every model. There EVI is in [-5, 5/3];
  ``compute_index`` gives 0 elsewhere.

JAX arrays (and tracers) give JAX arrays; numpy arrays give numpy arrays without
importing JAX, so the inference tools can compute products on the host.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  import jax

  Array = np.ndarray | jax.Array
else:
  Array = Any

DEFAULT_EPS = 1e-6
EVI_MIN_DENOMINATOR = 0.5


def _array_module(*arrays):
  """``jax.numpy`` if any input is a JAX array, else numpy."""
  jax = sys.modules.get("jax")  # without JAX loaded no input can be a JAX array
  if jax is not None and any(isinstance(a, jax.Array) for a in arrays):
    return jax.numpy
  return np


def _safe_ratio(num: Array, den: Array, eps: float) -> Array:
  if eps == 0:
    return num / den
  # Push the denominator away from zero on its own side, so the sign is kept.
  den = _array_module(den).where(den >= 0, den + eps, den - eps)
  return num / den


def ndvi(red, nir, eps: float = DEFAULT_EPS):
  """Normalised difference vegetation index (N - R) / (N + R)."""
  return _safe_ratio(nir - red, nir + red, eps)


def ndwi(green, nir, eps: float = DEFAULT_EPS):
  """McFeeters' normalised difference water index (G - N) / (G + N)."""
  return _safe_ratio(green - nir, green + nir, eps)


def evi(red, nir, blue, eps: float = DEFAULT_EPS):
  """Enhanced vegetation index 2.5 (N - R) / (N + 6R - 7.5B + 1), unbounded on [0, 1]^4.

  The original NIR-GAN code writes this formula with misplaced terms; this is the
  standard MODIS definition (Huete et al., 2002). Losses and metrics count it only on
  ``evi_support``.
  """
  return _safe_ratio(2.5 * (nir - red), nir + 6.0 * red - 7.5 * blue + 1.0, eps)


def evi_support(red, blue):
  """Where EVI's denominator is at least ``EVI_MIN_DENOMINATOR`` for every NIR in [0, 1]."""
  return 1.0 + 6.0 * red - 7.5 * blue >= EVI_MIN_DENOMINATOR


def evi2(red, nir, eps: float = DEFAULT_EPS):
  """Two-band EVI 2.5 (N - R) / (N + 2.4R + 1) (Jiang et al., 2008): EVI without the blue
  band; the denominator is at least 1."""
  return _safe_ratio(2.5 * (nir - red), nir + 2.4 * red + 1.0, eps)


def savi(red, nir, eps: float = DEFAULT_EPS, soil_factor: float = 0.5):
  """Soil-adjusted vegetation index (1 + L)(N - R) / (N + R + L), L = 0.5."""
  return _safe_ratio((1.0 + soil_factor) * (nir - red), nir + red + soil_factor, eps)


def msavi(red, nir, eps: float = DEFAULT_EPS):
  """Modified SAVI (2N + 1 - sqrt((2N + 1)^2 - 8(N - R))) / 2.

  The radicand is clipped at ``eps`` so the square root (and its gradient) is finite.
  """
  xp = _array_module(red, nir)
  radicand = xp.square(2.0 * nir + 1.0) - 8.0 * (nir - red)
  return (2.0 * nir + 1.0 - xp.sqrt(xp.maximum(radicand, eps))) / 2.0


def gndvi(green, nir, eps: float = DEFAULT_EPS):
  """Green NDVI (N - G) / (N + G)."""
  return _safe_ratio(nir - green, nir + green, eps)


INDEX_NAMES = ("ndvi", "ndwi", "evi", "evi2", "savi", "msavi", "gndvi")
# (low, high) of compute_index on reflectance in [0, 1]: see the module docstring.
INDEX_BOUNDS = {"ndvi": (-1.0, 1.0), "ndwi": (-1.0, 1.0), "gndvi": (-1.0, 1.0),
                "savi": (-1.0, 1.0), "msavi": (-1.0, 1.0), "evi2": (-25.0 / 34.0, 1.25),
                "evi": (-2.5 / EVI_MIN_DENOMINATOR, 2.5 / (1.0 + EVI_MIN_DENOMINATOR))}


def index_support(name: str, rgb: Array):
  """(..., 1) bool: the pixels where index ``name`` is counted, or None for all of them."""
  if name == "evi":
    return evi_support(rgb[..., 0:1], rgb[..., 2:3])
  return None


def compute_index(name: str, rgb: Array, nir: Array, eps: float = DEFAULT_EPS):
  """Index ``name`` from channels-last RGB (..., 3) and NIR (..., 1); returns (..., 1).

  EVI is 0 outside ``index_support``, where it is computed with B = 0 so that neither the
  value nor its gradient can be non-finite.
  """
  red, green, blue = rgb[..., 0:1], rgb[..., 1:2], rgb[..., 2:3]
  if name == "ndvi":
    return ndvi(red, nir, eps)
  if name == "ndwi":
    return ndwi(green, nir, eps)
  if name == "evi":
    xp = _array_module(rgb, nir)
    support = evi_support(red, blue)
    value = evi(red, nir, xp.where(support, blue, 0.0), eps)
    return xp.where(support, value, 0.0)
  if name == "evi2":
    return evi2(red, nir, eps)
  if name == "savi":
    return savi(red, nir, eps)
  if name == "msavi":
    return msavi(red, nir, eps)
  if name == "gndvi":
    return gndvi(green, nir, eps)
  raise ValueError(f"unknown index {name!r}; known: {INDEX_NAMES}")
