"""The full NIR-GAN recipe: the reference architecture, losses and optimiser.

Variants import this file and override. Architecture knobs (``pad``,
``compute_dtype``, ``model``, ``satclip``) come from ``nirgan_jax.models.config``.
"""

import ml_collections

from nirgan_jax.models import config as model_config


def get_config() -> ml_collections.ConfigDict:
  config = model_config.get_config()
  config.seed = 42
  # PRNG for parameter init and dropout. "rbg" (XLA's RngBitGenerator) compiles about 5x
  # faster than "threefry2x32" on CPU and is fast on TPU; values differ between the two.
  config.rng_impl = "rbg"

  config.loss = ml_collections.ConfigDict()
  config.loss.gan_mode = "lsgan"  # lsgan | vanilla
  config.loss.lambda_gan = 1.0
  config.loss.lambda_l1 = 100.0
  config.loss.lambda_ssim = 0.0
  config.loss.ssim_window = 5
  config.loss.lambda_hist = 0.0  # EMD between softmax-CDF histograms
  config.loss.lambda_rs = 0.0  # remote-sensing index loss, off as in the original
  config.loss.rs_criterion = "l1"  # l1 | l2
  config.loss.rs_weights = ml_collections.ConfigDict(dict(
      ndvi=0.33, ndwi=0.33, evi=0.33, savi=0.0, msavi=0.0, gndvi=0.0))

  config.optim = ml_collections.ConfigDict(dict(lr=2e-4, b1=0.5, b2=0.999))
  return config
