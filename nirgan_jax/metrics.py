"""Image-quality metrics between predicted and true NIR, per example.

Every function returns one value per example (shape (B,)) so that evaluation can
mask padded examples and group by sensor before averaging.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

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
