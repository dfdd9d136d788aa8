"""Non-adversarial baselines beside NIR-GAN (the original's Linear_NIR, MLP_NIR, CNN_NIR):
the same data, crops and L1 objective, without discriminator or location prior.

    python -m nirgan_jax.train --config configs/baselines.py --workdir runs/cnn
    python -m nirgan_jax.train --config configs/baselines.py --workdir runs/linear \
        --config.model.generator.kind=linear
    python -m nirgan_jax.train --config configs/baselines.py --workdir runs/mlp \
        --config.model.generator.kind=mlp

Export each run and pass it to ``python -m nirgan_jax.evaluate --baselines``.
"""

import ml_collections

from configs import multiscale


def as_baseline(config: ml_collections.ConfigDict, kind: str) -> ml_collections.ConfigDict:
  """``config`` with its generator replaced by the ``kind`` regression baseline (linear | mlp |
  cnn): no discriminator, no location prior, the L1 objective, Adam 1e-3 / 0.9. The recipes
  that have baselines (this file, configs/s2_small.py) all make them here."""
  config.model.generator.kind = kind
  config.model.injection.style = "none"
  config.loss.lambda_gan = 0.0  # no discriminator: L1 regression
  config.optim.update(lr=1e-3, b1=0.9)
  return config


def get_config() -> ml_collections.ConfigDict:
  config = as_baseline(multiscale.get_config(), "cnn")
  config.model.baseline.update(dict(hidden=64, depth=3))
  return config
