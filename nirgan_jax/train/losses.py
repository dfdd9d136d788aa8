"""Training losses of NIR-GAN. Images are (B, H, W, C) float in [0, 1].

Every loss takes an optional ``valid`` mask (B, H, W, 1), 1.0 where a pixel is real data and
0.0 where it must not count (None: all valid). Pixel losses (L1, the index losses, the
histogram EMD) are means over the valid pixels of the batch, so a patch with a nodata block
gives the loss of the patch with that block cropped away. SSIM averages its map over the
windows that hold only valid pixels. The adversarial losses average over the patch logits
that ``patch_weights`` keeps. Nodata values are never read (they may even be NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from nirgan_jax import indices
from nirgan_jax.metrics import SSIM_WINDOW, masked_mean, ssim_map, ssim_window_weights
from nirgan_jax.models.discriminator import receptive_fields

GAN_MODES = ("lsgan", "vanilla")
RS_CRITERIA = ("l1", "l2")
# A patch logit counts in the adversarial losses when at least this share of its receptive
# field (the part inside the image) is valid.
MIN_PATCH_VALID_SHARE = 0.5


def _only_valid(valid: jax.Array | None, *images: jax.Array) -> tuple[jax.Array, ...]:
  """``images`` with 0 on nodata pixels, so that no value there reaches a loss or gradient."""
  if valid is None:
    return images
  return tuple(jnp.where(valid > 0, x, jnp.zeros_like(x)) for x in images)


def patch_weights(valid: jax.Array, n_layers: int,
                  min_valid_share: float = MIN_PATCH_VALID_SHARE) -> jax.Array:
  """(B, H', W', 1): 1.0 for each PatchGAN logit whose receptive field (70 x 70 px at
  n_layers 3, clipped to the image) is at least ``min_valid_share`` valid, else 0.0."""
  _, height, width, _ = valid.shape

  def box_matrix(size):  # (logits, pixels): 1 where the pixel is in the logit's field
    start, stop = receptive_fields(size, n_layers)
    pixels = jnp.arange(size)
    return ((pixels >= start[:, None]) & (pixels < stop[:, None])).astype(jnp.float32)

  rows, cols = box_matrix(height), box_matrix(width)
  counts = jnp.einsum("ih,bhwc,jw->bijc", rows, valid.astype(jnp.float32), cols,
                      precision=jax.lax.Precision.HIGHEST)
  area = rows.sum(1)[:, None] * cols.sum(1)[None, :]
  return (counts / area[None, :, :, None] >= min_valid_share).astype(jnp.float32)


def gan_loss(logits: jax.Array, target_is_real: bool, mode: str = "lsgan",
             weights: jax.Array | None = None) -> jax.Array:
  """pix2pix's GANLoss: lsgan = MSE to 1/0, vanilla = BCE with logits; the mean over the
  logits, weighted by ``weights`` (``patch_weights``) if given."""
  target = jnp.full_like(logits, 1.0 if target_is_real else 0.0)
  if mode == "lsgan":
    per_logit = jnp.square(logits - target)
  elif mode == "vanilla":
    per_logit = optax.sigmoid_binary_cross_entropy(logits, target)
  else:
    raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {mode!r}")
  return masked_mean(per_logit, weights)


def l1_loss(pred: jax.Array, target: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  pred, target = _only_valid(valid, pred, target)
  return masked_mean(jnp.abs(pred - target), valid)


def ssim_loss(pred: jax.Array, target: jax.Array, window: int = SSIM_WINDOW,
              valid: jax.Array | None = None) -> jax.Array:
  """1 - SSIM: Gaussian window of ``window`` px, sigma 1.5, max value 1, the map where the
  window fits in the image (dm-pix's 'valid' filtering), averaged over the windows that
  hold only valid pixels."""
  pred, target = _only_valid(valid, pred, target)
  weights = None if valid is None else ssim_window_weights(valid, window)
  return masked_mean(1.0 - ssim_map(pred, target, window), weights)


def emd_histogram_loss(pred: jax.Array, target: jax.Array,
                       valid: jax.Array | None = None) -> jax.Array:
  """Mean |CDF(softmax(pred)) - CDF(softmax(target))| over the flattened pixels of each image.

  A differentiable stand-in for the earth mover's distance between the two value
  distributions, as in the original. With ``valid`` the softmax and the mean run over the
  valid pixels only (in raster order, as the cropped image's).
  """
  batch = pred.shape[0]
  pred, target = _only_valid(valid, pred, target)
  flat = lambda x: x.reshape(batch, -1).astype(jnp.float32)
  if valid is None:
    cdf = lambda x: jnp.cumsum(jax.nn.softmax(flat(x), axis=-1), axis=-1)
    return jnp.mean(jnp.abs(cdf(pred) - cdf(target)))
  weights = flat(valid)

  def cdf(x):
    x = flat(x)
    shifted = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))) * weights
    total = jnp.sum(shifted, axis=-1, keepdims=True)
    return jnp.cumsum(shifted / jnp.where(total > 0, total, 1.0), axis=-1)

  return masked_mean(jnp.abs(cdf(pred) - cdf(target)), weights)


def rs_index_loss(rgb: jax.Array, pred_nir: jax.Array, true_nir: jax.Array,
                  weights: Mapping[str, float], criterion: str = "l1",
                  valid: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """sum_k w_k * crit(index_k(rgb, pred), index_k(rgb, true)); also returns each term.

  Each term is the mean over the valid pixels where the index is counted
  (``indices.index_support``: EVI only where its denominator stays >= 0.5).
  """
  if criterion not in RS_CRITERIA:
    raise ValueError(f"rs_criterion must be one of {RS_CRITERIA}, got {criterion!r}")
  rgb, pred_nir, true_nir = _only_valid(valid, rgb, pred_nir, true_nir)
  total = jnp.zeros((), jnp.float32)
  terms = {}
  for name, weight in weights.items():
    if weight == 0:
      continue
    pixel_weights = valid
    support = indices.index_support(name, rgb)
    if support is not None:
      support = support.astype(jnp.float32)
      pixel_weights = support if valid is None else valid * support
    diff = indices.compute_index(name, rgb, pred_nir) - indices.compute_index(name, rgb, true_nir)
    per_pixel = jnp.abs(diff) if criterion == "l1" else jnp.square(diff)
    terms[name] = masked_mean(per_pixel, pixel_weights)
    total = total + weight * terms[name]
  return total, terms


def generator_loss(fake_logits: jax.Array | None, rgb: jax.Array, pred_nir: jax.Array,
                   true_nir: jax.Array, loss_config: ml_collections.ConfigDict,
                   valid: jax.Array | None = None, logit_weights: jax.Array | None = None
                   ) -> tuple[jax.Array, dict]:
  """The weighted generator objective and its parts (for logging).

  ``loss_config`` is the config's ``loss`` section; terms whose weight is 0 are not computed
  (with ``lambda_gan`` 0 there is no adversarial term and ``fake_logits`` may be None).
  ``valid`` masks the pixel terms, ``logit_weights`` (``patch_weights``) the adversarial one.
  """
  parts = {"g_l1": l1_loss(pred_nir, true_nir, valid)}
  total = loss_config.lambda_l1 * parts["g_l1"]
  if loss_config.lambda_gan:
    parts["g_gan"] = gan_loss(fake_logits, True, loss_config.gan_mode, logit_weights)
    total = total + loss_config.lambda_gan * parts["g_gan"]
  if loss_config.lambda_ssim:
    parts["g_ssim"] = ssim_loss(pred_nir, true_nir, loss_config.ssim_window, valid)
    total = total + loss_config.lambda_ssim * parts["g_ssim"]
  if loss_config.lambda_hist:
    parts["g_hist"] = emd_histogram_loss(pred_nir, true_nir, valid)
    total = total + loss_config.lambda_hist * parts["g_hist"]
  if loss_config.lambda_rs:
    rs_total, rs_terms = rs_index_loss(rgb, pred_nir, true_nir, dict(loss_config.rs_weights),
                                       loss_config.rs_criterion, valid)
    parts["g_rs"] = rs_total
    parts.update({f"g_rs_{name}": value for name, value in rs_terms.items()})
    total = total + loss_config.lambda_rs * rs_total
  parts["g_total"] = total
  return total, parts


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, gan_mode: str,
                       logit_weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """loss(fake, 0) + loss(real, 1), without pix2pix's 0.5 factor (as the original), over the
  logits that ``logit_weights`` keeps."""
  fake = gan_loss(fake_logits, False, gan_mode, logit_weights)
  real = gan_loss(real_logits, True, gan_mode, logit_weights)
  total = fake + real
  return total, {"d_fake": fake, "d_real": real, "d_total": total,
                 "d_real_logit": masked_mean(real_logits, logit_weights),
                 "d_fake_logit": masked_mean(fake_logits, logit_weights)}
