import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from nirgan_jax.models import satclip

# Poles, the antimeridian, the equator and ordinary places.
LONLAT = np.array([[-180.0, -90.0], [180.0, 90.0], [0.0, 0.0], [13.4, 52.5], [-122.3, 47.6],
                   [151.2, -33.9], [-58.4, -34.6], [77.2, 28.6], [-0.1, 89.9], [179.9, -89.9]])


def reference_harmonics(lonlat: np.ndarray, degree: int, convention: str) -> np.ndarray:
  """Float64 real spherical harmonics from scipy's associated Legendre functions.

  ``scipy.special.lpmv`` includes the Condon-Shortley phase, like SatCLIP's P.
  """
  phi = np.deg2rad(lonlat[:, 0] + 180.0)
  theta = np.deg2rad(lonlat[:, 1] + 90.0)
  x = np.cos(theta)
  out = []
  for l in range(degree):
    for m in range(-l, l + 1):
      am = abs(m)
      k = math.sqrt((2 * l + 1) * math.factorial(l - am) / (4 * math.pi * math.factorial(l + am)))
      p = special.lpmv(am, l, x)
      if m == 0:
        scale = math.sqrt((2 * l + 1) * math.pi / 4) if convention == "analytic" else k
        out.append(scale * p)
      else:
        angular = np.cos(m * phi) if m > 0 else np.sin(am * phi)
        sign = (-1.0) ** m if convention == "analytic" else 1.0
        out.append(sign * math.sqrt(2.0) * k * p * angular)
  return np.stack(out, axis=-1)


@pytest.mark.parametrize("convention", ["analytic", "closed-form"])
@pytest.mark.parametrize("degree", [10, 40])
def test_harmonics_match_scipy_float64(convention, degree):
  got = np.asarray(jax.jit(satclip.spherical_harmonics, static_argnums=(1, 2))(
      LONLAT, degree, convention))
  ref = reference_harmonics(LONLAT, degree, convention)
  assert got.shape == (len(LONLAT), degree**2)
  # Values reach ~|9| (analytic m = 0 at L = 40); float32 with cancellation near the poles.
  np.testing.assert_allclose(got, ref, atol=2e-4 * max(1.0, np.abs(ref).max()), rtol=0)


def test_conventions_differ_exactly_as_documented():
  analytic = np.asarray(satclip.spherical_harmonics(LONLAT, 6, "analytic"))
  closed = np.asarray(satclip.spherical_harmonics(LONLAT, 6, "closed-form"))
  col = 0
  for l in range(6):
    for m in range(-l, l + 1):
      factor = math.pi if m == 0 else (-1.0) ** m
      np.testing.assert_allclose(analytic[:, col], factor * closed[:, col], atol=1e-5)
      col += 1


def test_closed_form_harmonics_are_orthonormal():
  """A property no sign or ordering slip survives: the Gram matrix over the sphere is I."""
  lat_nodes, lat_weights = np.polynomial.legendre.leggauss(24)  # nodes in cos(theta)
  lons = np.linspace(-180, 180, 48, endpoint=False)
  lats = np.rad2deg(np.arccos(lat_nodes)) - 90.0
  grid_lon, grid_lat = np.meshgrid(lons, lats)
  weights = np.repeat(lat_weights, len(lons)) * (2 * np.pi / len(lons))
  y = np.asarray(satclip.spherical_harmonics(
      np.stack([grid_lon.ravel(), grid_lat.ravel()], -1), 6, "closed-form"), np.float64)
  gram = (y * weights[:, None]).T @ y
  np.testing.assert_allclose(gram, np.eye(36), atol=1e-4)


def test_encoder_float32_matches_float64_evaluation():
  encoder = satclip.LocationEncoder(legendre_polys=10)
  variables = jax.jit(encoder.init)(jax.random.key(0), jnp.zeros((1, 2)))
  got = np.asarray(jax.jit(encoder.apply)(variables, LONLAT))
  assert got.shape == (len(LONLAT), 256)

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  x = reference_harmonics(LONLAT, 10, "analytic")
  x = np.sin(30.0 * (x @ p["layers_0"]["kernel"] + p["layers_0"]["bias"]))
  x = np.sin(1.0 * (x @ p["layers_1"]["kernel"] + p["layers_1"]["bias"]))
  ref = x @ p["last_layer"]["kernel"] + p["last_layer"]["bias"]
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_unknown_convention_is_rejected():
  with pytest.raises(ValueError, match="closed-form"):
    satclip.spherical_harmonics(LONLAT, 3, "discretized")
