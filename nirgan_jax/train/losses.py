"""Training losses of NIR-GAN. Images are (B, H, W, C) float in [0, 1]."""

from __future__ import annotations

from collections.abc import Mapping

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections
import optax

from nirgan_jax import indices

GAN_MODES = ("lsgan", "vanilla")
RS_CRITERIA = ("l1", "l2")


def gan_loss(logits: jax.Array, target_is_real: bool, mode: str = "lsgan") -> jax.Array:
  """pix2pix's GANLoss: lsgan = MSE to 1/0, vanilla = BCE with logits."""
  target = jnp.full_like(logits, 1.0 if target_is_real else 0.0)
  if mode == "lsgan":
    return jnp.mean(jnp.square(logits - target))
  if mode == "vanilla":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))
  raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {mode!r}")


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(pred - target))


def ssim_loss(pred: jax.Array, target: jax.Array, window: int = 5) -> jax.Array:
  """1 - SSIM (dm-pix, Gaussian window of ``window`` px, sigma 1.5, max value 1)."""
  return 1.0 - jnp.mean(dm_pix.ssim(pred, target, max_val=1.0, filter_size=window))


def emd_histogram_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean |CDF(softmax(pred)) - CDF(softmax(target))| over the flattened pixels of each image.

  A differentiable stand-in for the earth mover's distance between the two value
  distributions, as in the original.
  """
  batch = pred.shape[0]
  cdf = lambda x: jnp.cumsum(jax.nn.softmax(x.reshape(batch, -1).astype(jnp.float32), axis=-1),
                             axis=-1)
  return jnp.mean(jnp.abs(cdf(pred) - cdf(target)))


def rs_index_loss(rgb: jax.Array, pred_nir: jax.Array, true_nir: jax.Array,
                  weights: Mapping[str, float], criterion: str = "l1") -> tuple[jax.Array, dict]:
  """sum_k w_k * crit(index_k(rgb, pred), index_k(rgb, true)); also returns each term."""
  if criterion not in RS_CRITERIA:
    raise ValueError(f"rs_criterion must be one of {RS_CRITERIA}, got {criterion!r}")
  total = jnp.zeros((), jnp.float32)
  terms = {}
  for name, weight in weights.items():
    if weight == 0:
      continue
    diff = indices.compute_index(name, rgb, pred_nir) - indices.compute_index(name, rgb, true_nir)
    terms[name] = jnp.mean(jnp.abs(diff)) if criterion == "l1" else jnp.mean(jnp.square(diff))
    total = total + weight * terms[name]
  return total, terms


def generator_loss(fake_logits: jax.Array | None, rgb: jax.Array, pred_nir: jax.Array,
                   true_nir: jax.Array, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """The weighted generator objective and its parts (for logging).

  ``cfg`` is the config's ``loss`` section; terms whose weight is 0 are not computed (with
  ``lambda_gan`` 0 there is no adversarial term and ``fake_logits`` may be None).
  """
  parts = {"g_l1": l1_loss(pred_nir, true_nir)}
  total = cfg.lambda_l1 * parts["g_l1"]
  if cfg.lambda_gan:
    parts["g_gan"] = gan_loss(fake_logits, True, cfg.gan_mode)
    total = total + cfg.lambda_gan * parts["g_gan"]
  if cfg.lambda_ssim:
    parts["g_ssim"] = ssim_loss(pred_nir, true_nir, cfg.ssim_window)
    total = total + cfg.lambda_ssim * parts["g_ssim"]
  if cfg.lambda_hist:
    parts["g_hist"] = emd_histogram_loss(pred_nir, true_nir)
    total = total + cfg.lambda_hist * parts["g_hist"]
  if cfg.lambda_rs:
    rs_total, rs_terms = rs_index_loss(rgb, pred_nir, true_nir, dict(cfg.rs_weights),
                                       cfg.rs_criterion)
    parts["g_rs"] = rs_total
    parts.update({f"g_rs_{name}": value for name, value in rs_terms.items()})
    total = total + cfg.lambda_rs * rs_total
  parts["g_total"] = total
  return total, parts


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array,
                       gan_mode: str) -> tuple[jax.Array, dict]:
  """loss(fake, 0) + loss(real, 1), without pix2pix's 0.5 factor (as the original)."""
  fake = gan_loss(fake_logits, False, gan_mode)
  real = gan_loss(real_logits, True, gan_mode)
  total = fake + real
  return total, {"d_fake": fake, "d_real": real, "d_total": total,
                 "d_real_logit": jnp.mean(real_logits), "d_fake_logit": jnp.mean(fake_logits)}
