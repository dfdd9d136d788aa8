"""Ablation: the full recipe without the location prior (plain pix2pix ResNet-9 + PatchGAN).

    python -m nirgan_jax.train --config configs/no_satclip.py --workdir runs/no_satclip
"""

import ml_collections

from configs import multiscale


def get_config() -> ml_collections.ConfigDict:
  config = multiscale.get_config()
  config.model.injection.style = "none"  # no SatCLIP encoder is built or needed
  return config
