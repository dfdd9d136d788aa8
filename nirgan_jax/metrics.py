"""Image-quality metrics between predicted and true NIR, per example, and the masked means and
SSIM map that the training losses share.

Every metric is one value per example (shape (B,)) so that evaluation can mask padded
examples and group by sensor before averaging. With a ``valid`` mask (B, H, W, 1), 1 where a
pixel is real data and 0 where it must not count, every metric counts only valid pixels: a
patch with a nodata block scores as the patch with that block cropped away. An example in
which a metric counts no pixel gets 0 for it and ``weight/<metric>`` 0 (1 otherwise), and
``GroupedMeans`` leaves it out of that metric's mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nirgan_jax import indices

INDEX_METRICS = ("ndvi", "ndwi", "evi")
# NDVI above which a pixel counts as vegetation in ``vegetation_iou``: the common threshold
# of vegetation masks, the use users make of a synthetic NIR band.
VEGETATION_NDVI = 0.3
# Predicted NIR is clipped to the range of reflectance before any index is computed, so that
# a prediction below 0 (a tanh output can be) cannot make NDVI leave [-1, 1].
REFLECTANCE_RANGE = (0.0, 1.0)
SSIM_PADDINGS = ("valid", "same")
SSIM_WINDOW = 11  # px, the original's Gaussian SSIM window
SSIM_SIGMA = 1.5
# PSNR of an exact match is capped at 10 log10(1 / 1e-10) = 100 dB, so means stay finite.
PSNR_MIN_MSE = 1e-10
PSNR_MAX_DB = 100.0
WEIGHT_PREFIX = "weight/"


def masked_mean(x: jax.Array, weights: jax.Array | None = None, axis=None) -> jax.Array:
  """Mean of ``x`` weighted by ``weights`` (broadcast to ``x``) over ``axis``; 0 where the
  weights sum to 0. Entries with weight 0 never reach the result, even if not finite."""
  if weights is None:
    return jnp.mean(x, axis=axis)
  weights = jnp.broadcast_to(weights, x.shape).astype(jnp.float32)
  total = jnp.sum(weights, axis=axis)
  weighted = jnp.sum(jnp.where(weights > 0, x, 0.0) * weights, axis=axis)
  return jnp.where(total > 0, weighted / jnp.where(total > 0, total, 1.0), 0.0)


def psnr(mse: jax.Array, max_val: float = 1.0) -> jax.Array:
  """10 log10(max_val^2 / mse), at most ``PSNR_MAX_DB`` (for max_val 1)."""
  return 10.0 * jnp.log10(max_val**2 / jnp.maximum(mse, PSNR_MIN_MSE))


def gaussian_window(size: int, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """SSIM's normalised 1-D Gaussian, centred on ``size // 2`` (half a pixel to the left for
  even sizes), as kornia and dm-pix build it."""
  x = np.arange(size) - size // 2 + (0.5 if size % 2 == 0 else 0.0)
  window = np.exp(-(x**2) / (2.0 * sigma**2))
  return window / window.sum()


def _pad_reflect(x: jax.Array, window: int) -> jax.Array:
  """Reflect-pads H and W so that a 'valid' filter of ``window`` keeps the size (kornia)."""
  front = (window - 1) // 2
  pad = (front, window - 1 - front)
  return jnp.pad(x, ((0, 0), pad, pad, (0, 0)), mode="reflect")


def _gaussian_filter(x: jax.Array, window: int) -> jax.Array:
  """Separable Gaussian filter of (B, H, W, C) images, 'valid' (no padding)."""
  channels = x.shape[-1]
  taps = jnp.asarray(gaussian_window(window), x.dtype)
  conv = lambda z, kernel: jax.lax.conv_general_dilated(
      z, jnp.tile(kernel, (1, 1, 1, channels)), (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
      precision=jax.lax.Precision.HIGHEST)
  return conv(conv(x, taps.reshape(window, 1, 1, 1)), taps.reshape(1, window, 1, 1))


def ssim_map(a: jax.Array, b: jax.Array, window: int = SSIM_WINDOW, padding: str = "valid",
             max_val: float = 1.0) -> jax.Array:
  """Per-pixel SSIM of (B, H, W, C) images: Gaussian window of ``window`` px, sigma 1.5,
  k1 0.01, k2 0.03.

  ``padding="valid"``: only where the window fits inside the image, a (B, H - window + 1,
  W - window + 1, C) map, as dm-pix. ``"same"``: every pixel, the images reflect-padded at
  their edges (without repeating the edge pixel), as ``kornia.metrics.ssim``, whose 1e-12 in
  the denominator this keeps.
  """
  if padding not in SSIM_PADDINGS:
    raise ValueError(f"SSIM padding must be one of {SSIM_PADDINGS}, got {padding!r}")
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  if padding == "same":
    a, b = _pad_reflect(a, window), _pad_reflect(b, window)
  blur = lambda x: _gaussian_filter(x, window)
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a * mu_a
  var_b = blur(b * b) - mu_b * mu_b
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  numerator = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
  denominator = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
  return numerator / (denominator + 1e-12)


def ssim_window_weights(valid: jax.Array, window: int = SSIM_WINDOW, padding: str = "valid"
                        ) -> jax.Array:
  """The weight of each pixel of ``ssim_map``'s map under a mask: the least ``valid`` under
  its window, so 1 exactly where the window holds only valid pixels. With ``"same"`` the
  mask is reflected at the image edges like the images: a reflected pixel counts as the
  pixel it mirrors, while a nodata boundary inside the image is not mirrored."""
  valid = valid.astype(jnp.float32)
  if padding == "same":
    valid = _pad_reflect(valid, window)
  return jax.lax.reduce_window(valid, jnp.inf, jax.lax.min, (1, window, window, 1),
                               (1, 1, 1, 1), "VALID")


def _per_example(x: jax.Array, weights: jax.Array | None) -> jax.Array:
  return masked_mean(x, weights, axis=tuple(range(1, x.ndim)))


def _counts_anything(weights: jax.Array | None, batch: int) -> jax.Array:
  if weights is None:
    return jnp.ones((batch,), jnp.float32)
  return (jnp.sum(weights.reshape(batch, -1), axis=-1) > 0).astype(jnp.float32)


def vegetation_overlap(rgb: jax.Array, pred_nir: jax.Array, true_nir: jax.Array,
                       valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(intersection, union), each (B,), of the vegetation masks NDVI > ``VEGETATION_NDVI`` of
  the predicted (clipped to ``REFLECTANCE_RANGE``) and the true NIR, in valid pixels. Summed
  over images first, their ratio is the Jaccard index pooled over pixels."""
  red = rgb[..., :1].astype(jnp.float32)
  pred = jnp.clip(pred_nir.astype(jnp.float32), *REFLECTANCE_RANGE)
  predicted = indices.ndvi(red, pred) > VEGETATION_NDVI
  true = indices.ndvi(red, true_nir.astype(jnp.float32)) > VEGETATION_NDVI
  if valid is not None:
    predicted, true = predicted & (valid > 0), true & (valid > 0)
  count = lambda mask: jnp.sum(mask.reshape(mask.shape[0], -1), axis=-1).astype(jnp.float32)
  return count(predicted & true), count(predicted | true)


def image_metrics(rgb: jax.Array, pred_nir: jax.Array, true_nir: jax.Array,
                  ssim_window: int = SSIM_WINDOW, valid: jax.Array | None = None,
                  ssim_padding: str = "valid") -> dict[str, jax.Array]:
  """L1, L2, PSNR (max value 1, capped at 100 dB), SSIM (``ssim_map`` averaged), the MAE of
  NDVI, NDWI and EVI (EVI on ``indices.index_support`` only) and the Jaccard index of the
  vegetation masks (``vegetation_iou``, ``vegetation_overlap``), each (B,), with their
  ``weight/<metric>``; see the module docstring for ``valid``. Indices are computed from the
  prediction clipped to ``REFLECTANCE_RANGE``."""
  batch = pred_nir.shape[0]
  pred = pred_nir.astype(jnp.float32)
  true = true_nir.astype(jnp.float32)
  rgb = rgb.astype(jnp.float32)
  if valid is not None:
    valid = valid.astype(jnp.float32)
    pred, true, rgb = (jnp.where(valid > 0, x, 0.0) for x in (pred, true, rgb))
  ssim_weights = None if valid is None else ssim_window_weights(valid, ssim_window,
                                                                ssim_padding)
  counts_pixels = _counts_anything(valid, batch)
  l2 = _per_example(jnp.square(pred - true), valid)
  out = {
      "l1": _per_example(jnp.abs(pred - true), valid),
      "l2": l2,
      "psnr": jnp.where(counts_pixels > 0, psnr(l2), 0.0),
      "ssim": _per_example(ssim_map(pred, true, ssim_window, ssim_padding), ssim_weights),
  }
  weights = {name: counts_pixels for name in ("l1", "l2", "psnr")}
  weights["ssim"] = _counts_anything(ssim_weights, batch)
  index_pred = jnp.clip(pred, *REFLECTANCE_RANGE)
  for name in INDEX_METRICS:
    support = indices.index_support(name, rgb)
    pixel_weights = valid
    if support is not None:
      support = support.astype(jnp.float32)
      pixel_weights = support if valid is None else valid * support
    diff = (indices.compute_index(name, rgb, index_pred)
            - indices.compute_index(name, rgb, true))
    out[f"{name}_mae"] = _per_example(jnp.abs(diff), pixel_weights)
    weights[f"{name}_mae"] = _counts_anything(pixel_weights, batch)
  intersection, union = vegetation_overlap(rgb, pred, true, valid)
  out["vegetation_iou"] = jnp.where(union > 0, intersection / jnp.maximum(union, 1.0), 0.0)
  weights["vegetation_iou"] = (union > 0).astype(jnp.float32)
  return {**out, **{WEIGHT_PREFIX + name: w for name, w in weights.items()}}


class GroupedMeans:
  """Running means of per-example metrics, overall (``<metric>``) and per sensor
  (``<metric>/<sensor>``), counting only examples whose mask is 1 and in which the metric
  counts a pixel (``weight/<metric>``, 1 when absent)."""

  def __init__(self, sensors: tuple[str, ...]):
    self.sensors = sensors
    self.sums: dict[str, float] = {}
    self.counts: dict[str, float] = {}

  def add(self, values: dict[str, np.ndarray], mask: np.ndarray, sensor_ids: np.ndarray) -> None:
    mask = np.asarray(mask, np.float64).reshape(-1)
    sensor_ids = np.asarray(sensor_ids).reshape(-1)
    for name, per_example in values.items():
      if name.startswith(WEIGHT_PREFIX):
        continue
      weight = mask * np.asarray(values.get(WEIGHT_PREFIX + name, 1.0), np.float64).reshape(-1)
      groups = [("", weight)] + [(f"/{sensor}", weight * (sensor_ids == i))
                                 for i, sensor in enumerate(self.sensors)]
      per_example = np.asarray(per_example, np.float64).reshape(-1)
      for suffix, group_weight in groups:
        if group_weight.sum() == 0:
          continue
        key = name + suffix
        # Left-out examples are dropped before weighting, so nothing they hold (a padded
        # example's values) can turn the sum into NaN.
        total = float((np.where(group_weight > 0, per_example, 0.0) * group_weight).sum())
        self.sums[key] = self.sums.get(key, 0.0) + total
        self.counts[key] = self.counts.get(key, 0.0) + float(group_weight.sum())

  def result(self) -> dict[str, float]:
    return {key: self.sums[key] / self.counts[key] for key in self.sums}
