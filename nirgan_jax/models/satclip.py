"""SatCLIP location encoder: spherical harmonics of (lon, lat) followed by a SIREN.

Features are ordered by degree l = 0..L-1, then order m = -l..l (L^2 features), as
in SatCLIP, so imported weights line up. SatCLIP computes the harmonics in two
conventions, and its checkpoints only work with the one they were trained with:

* ``closed-form``: textbook real spherical harmonics with the Condon-Shortley phase.
* ``analytic`` (SatCLIP's default): generated with sympy; m != 0 terms carry an extra
  (-1)^m, and m = 0 terms are scaled by sqrt((2l+1) * pi / 4) instead of
  sqrt((2l+1) / (4 pi)), i.e. by pi relative to closed-form (an operator-precedence
  slip in SatCLIP's generator script that its trained weights now depend on).

The associated Legendre functions are evaluated already normalised, with the
standard three-term recurrence, so L = 40 (orders up to 39, whose raw values span
~1e-115..1e57) stays well inside float32.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HARMONICS_CONVENTIONS = ("analytic", "closed-form")


def _recurrence_coefficients(degree: int) -> tuple[np.ndarray, np.ndarray]:
  """a[l, m], b[l, m] of  Pbar[l, m] = a (x Pbar[l-1, m] - b Pbar[l-2, m])  for m <= l - 2."""
  l = np.arange(degree, dtype=np.float64)[:, None]
  m = np.arange(degree, dtype=np.float64)[None, :]
  valid = m <= l - 2
  with np.errstate(divide="ignore", invalid="ignore"):
    a = np.sqrt((4 * l**2 - 1) / (l**2 - m**2))
    b = np.sqrt(((l - 1) ** 2 - m**2) / (4 * (l - 1) ** 2 - 1))
  return np.where(valid, a, 0.0), np.where(valid, b, 0.0)


def normalized_legendre(cos_theta: jax.Array, sin_theta: jax.Array, degree: int) -> jax.Array:
  """K(l, m) P_l^m(cos theta) (Condon-Shortley phase) as (..., degree, degree) indexed [l, m].

  K(l, m) = sqrt((2l + 1) (l - m)! / (4 pi (l + m)!)); entries with m > l are 0.
  Each degree is one vector step over all orders, so tracing cost grows with L, not L^2.
  """
  x = cos_theta[..., None]
  orders = np.arange(degree)
  # Sectoral terms Pbar[m, m] = prod_{k<=m} (-sqrt((2k+1)/(2k)) sin theta) / sqrt(4 pi).
  factors = -np.sqrt((2 * orders[1:] + 1) / (2 * orders[1:]))
  steps = jnp.concatenate(
      [jnp.full_like(x, 1.0 / math.sqrt(4.0 * math.pi)), factors * sin_theta[..., None]], -1)
  sectoral = jnp.cumprod(steps, axis=-1)
  a, b = _recurrence_coefficients(degree)

  rows = []
  prev2 = prev1 = jnp.zeros_like(sectoral)
  for l in range(degree):
    row = jnp.where(orders == l, sectoral, 0.0)
    if l >= 1:  # Pbar[l, l-1] = sqrt(2l + 1) x Pbar[l-1, l-1]
      row = row + jnp.where(orders == l - 1, math.sqrt(2 * l + 1) * x * sectoral, 0.0)
    if l >= 2:
      row = row + a[l] * (x * prev1 - b[l] * prev2)
    rows.append(row)
    prev2, prev1 = prev1, row
  return jnp.stack(rows, axis=-2)


def _feature_layout(degree: int, convention: str):
  """Per feature (l = 0..L-1, m = -l..l): degree, |m|, signed m, and its constant factor."""
  ls, ms = zip(*[(l, m) for l in range(degree) for m in range(-l, l + 1)], strict=True)
  ls, ms = np.array(ls), np.array(ms)
  scale = np.where(ms == 0, 1.0, math.sqrt(2.0))
  if convention == "analytic":
    scale = scale * np.where(ms == 0, math.pi, (-1.0) ** np.abs(ms))
  return ls, np.abs(ms), ms, scale


def spherical_harmonics(lonlat: jax.Array, legendre_polys: int,
                        convention: str = "analytic") -> jax.Array:
  """(..., 2) lon/lat in degrees -> (..., legendre_polys**2) real spherical harmonics."""
  if convention not in HARMONICS_CONVENTIONS:
    raise ValueError(f"harmonics convention must be one of {HARMONICS_CONVENTIONS}, "
                     f"got {convention!r}")
  lonlat = jnp.asarray(lonlat, jnp.float32)
  phi = jnp.deg2rad(lonlat[..., 0] + 180.0)[..., None]
  theta = jnp.deg2rad(lonlat[..., 1] + 90.0)
  pbar = normalized_legendre(jnp.cos(theta), jnp.sin(theta), legendre_polys)
  ls, abs_ms, ms, scale = _feature_layout(legendre_polys, convention)
  angular = jnp.where(ms > 0, jnp.cos(ms * phi), jnp.where(ms < 0, jnp.sin(abs_ms * phi), 1.0))
  return (scale * pbar[..., ls, abs_ms] * angular).astype(jnp.float32)


def siren_uniform(fan_in: int, w0: float, is_first: bool, c: float = 6.0):
  """SIREN's init, used for weights and biases alike: U(-w, w), w = 1/fan_in on the
  first layer and sqrt(c / fan_in) / w0 after."""
  bound = (1.0 / fan_in) if is_first else math.sqrt(c / fan_in) / w0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class LocationEncoder(nn.Module):
  """(B, 2) lon/lat degrees -> (B, embed_dim) SatCLIP location embedding (float32)."""

  legendre_polys: int = 10
  harmonics: str = "analytic"
  dim_hidden: int = 256
  num_hidden_layers: int = 2
  embed_dim: int = 256
  w0_initial: float = 30.0
  w0: float = 1.0

  @nn.compact
  def __call__(self, lonlat: jax.Array) -> jax.Array:
    x = spherical_harmonics(lonlat, self.legendre_polys, self.harmonics)
    for k in range(self.num_hidden_layers):
      w0 = self.w0_initial if k == 0 else self.w0
      init = siren_uniform(x.shape[-1], w0, is_first=k == 0)
      x = nn.Dense(self.dim_hidden, kernel_init=init, bias_init=init, name=f"layers_{k}")(x)
      x = jnp.sin(w0 * x)
    init = siren_uniform(x.shape[-1], self.w0, is_first=False)
    return nn.Dense(self.embed_dim, kernel_init=init, bias_init=init, name="last_layer")(x)
