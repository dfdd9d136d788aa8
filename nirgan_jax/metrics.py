"""Image-quality metrics between predicted and true NIR, per example.

Every function returns one value per example (shape (B,)) so that evaluation can
mask padded examples and group by sensor before averaging.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from nirgan_jax import indices

INDEX_METRICS = ("ndvi", "ndwi", "evi")


def _per_example_mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def image_metrics(rgb: jax.Array, pred_nir: jax.Array, true_nir: jax.Array,
                  ssim_window: int = 11) -> dict[str, jax.Array]:
  """L1, L2, PSNR (max value 1), SSIM and the MAE of NDVI, NDWI and EVI, each (B,)."""
  pred = pred_nir.astype(jnp.float32)
  true = true_nir.astype(jnp.float32)
  out = {
      "l1": _per_example_mean(jnp.abs(pred - true)),
      "l2": _per_example_mean(jnp.square(pred - true)),
      "psnr": dm_pix.psnr(pred, true),
      "ssim": dm_pix.ssim(pred, true, max_val=1.0, filter_size=ssim_window),
  }
  for name in INDEX_METRICS:
    diff = indices.compute_index(name, rgb, pred) - indices.compute_index(name, rgb, true)
    out[f"{name}_mae"] = _per_example_mean(jnp.abs(diff))
  return out


class GroupedMeans:
  """Running means of per-example metrics, overall (``<metric>``) and per sensor
  (``<metric>/<sensor>``), counting only examples whose mask is 1."""

  def __init__(self, sensors: tuple[str, ...]):
    self.sensors = sensors
    self.sums: dict[str, float] = {}
    self.counts: dict[str, float] = {}

  def add(self, values: dict[str, np.ndarray], mask: np.ndarray, sensor_ids: np.ndarray) -> None:
    mask = np.asarray(mask, np.float64).reshape(-1)
    sensor_ids = np.asarray(sensor_ids).reshape(-1)
    groups = [("", mask)] + [(f"/{sensor}", mask * (sensor_ids == i))
                             for i, sensor in enumerate(self.sensors)]
    for name, per_example in values.items():
      per_example = np.asarray(per_example, np.float64).reshape(-1)
      for suffix, weight in groups:
        if weight.sum() == 0:
          continue
        key = name + suffix
        # Padded examples are dropped before weighting: their PSNR is inf, and inf * 0 is NaN.
        total = float((np.where(weight > 0, per_example, 0.0) * weight).sum())
        self.sums[key] = self.sums.get(key, 0.0) + total
        self.counts[key] = self.counts.get(key, 0.0) + float(weight.sum())

  def result(self) -> dict[str, float]:
    return {key: self.sums[key] / self.counts[key] for key in self.sums}
