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


def get_config() -> ml_collections.ConfigDict:
  config = multiscale.get_config()
  config.model.generator.kind = "cnn"  # linear | mlp | cnn
  config.model.baseline.update(dict(hidden=64, depth=3))
  config.model.injection.style = "none"
  config.loss.lambda_gan = 0.0  # no discriminator: L1 regression
  config.optim.lr = 1e-3
  config.optim.b1 = 0.9
  return config
