"""The full recipe with the remote-sensing losses on: NDVI, NDWI and EVI consistency
(weights 0.33 each, L1) and the EMD between the softmax-CDF histograms of true and predicted
NIR. The original implements them but trains with both off (lambda 0).

    python -m nirgan_jax.train --config configs/rs_losses.py --workdir runs/rs_losses
"""

import ml_collections

from configs import multiscale


def get_config() -> ml_collections.ConfigDict:
  config = multiscale.get_config()
  config.loss.lambda_rs = 1.0
  config.loss.rs_criterion = "l1"
  config.loss.rs_weights.update(dict(ndvi=0.33, ndwi=0.33, evi=0.33))
  config.loss.lambda_hist = 1.0
  return config
