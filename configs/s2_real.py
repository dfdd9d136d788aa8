"""The model a user gets from the project's real imagery: the ``configs/s2_small.py`` recipe,
with a tenth of its adversarial weight, trained on every vendored real Sentinel-2 place (27:
the ten S2-100K patches of ``tests/data/s2_100k_10`` and the 17 places of
``tests/data/s2_more``), all splits:

    python -m data_prep.build s2_100k --manual_dir tests/data/s2_100k_10 --data_dir D
    python -m data_prep.build rgbn_geotiff --manual_dir tests/data/s2_more --data_dir D
    python -m nirgan_jax.train --config configs/s2_real.py --workdir W --config.data.data_dir=D
    python -m nirgan_jax.export --workdir W --out M

``configs/s2_real.py:linear``, ``:mlp`` and ``:cnn`` give the baselines on the same data. Every
place trains, so the loop's evaluation (``data.eval_split``) scores training places; how the
recipe does on places it never saw is measured by leave-places-out cross-validation
(``python -m experiments.real_places``).
"""

import ml_collections

from configs import multiscale, s2_small

VARIANTS = s2_small.VARIANTS
# Stored pixels of each source (S2-100K: 10 x 256^2; s2_more: 23 images, 64 to 578 px):
# sources mixed in proportion, so that every real pixel is about as likely to be drawn.
S2_100K_PIXELS = 655_360
S2_MORE_PIXELS = 1_220_268


def get_config(variant: str = "gan") -> ml_collections.ConfigDict:
  config = s2_small.get_config(variant)
  # A tenth of the original's adversarial weight, chosen on the leave-places-out folds (5 folds
  # x 2 seeds, docs/real_imagery.md): lower MAE, NDVI MAE and higher SSIM on places never seen
  # than 1.0; the discriminator's pull towards training places' textures cost accuracy there.
  if variant == "gan":
    config.loss.lambda_gan = 0.1
  total = S2_100K_PIXELS + S2_MORE_PIXELS
  config.data.sources = ml_collections.ConfigDict(dict(
      s2_100k=multiscale.source("s2_100k/default", S2_100K_PIXELS / total, 10.0, (), 1.0),
      s2_more=multiscale.source("rgbn_geotiff/default", S2_MORE_PIXELS / total, 10.0, (), 1.0)))
  config.data.train_split = "train+validation+test"
  return config
