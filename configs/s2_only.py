"""Single-sensor baseline: Sentinel-2 (S2-100K) at its native 10 m only, no multi-scale
resampling, as NIR-GAN's first experiments. Compare with multiscale.py on other sensors to
see what the multi-sensor, multi-resolution mix buys.

    python -m nirgan_jax.train --config configs/s2_only.py --workdir runs/s2_only
"""

import ml_collections

from configs import multiscale


def get_config() -> ml_collections.ConfigDict:
  config = multiscale.get_config()
  config.data.sources = ml_collections.ConfigDict(dict(
      sentinel2=multiscale.source("s2_100k/default", 1.0, 10.0, (), 1.0)))
  return config
