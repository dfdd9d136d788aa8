"""CPU-sized demo: the procedurally generated nirgan_demo dataset (built automatically),
a small generator, 64 px crops, 800 steps. Finishes in about 5 minutes on 2 cores; val L1
halves.

    python -m nirgan_jax.train --config configs/demo.py --workdir runs/demo
"""

import ml_collections

from configs import multiscale


def get_config() -> ml_collections.ConfigDict:
  config = multiscale.get_config()
  config.pad = 4
  config.model.generator.ngf = 16
  config.model.generator.n_blocks = 3
  config.model.discriminator.ndf = 16
  config.model.discriminator.n_layers = 2
  config.model.injection.map_size = 32
  # No SatCLIP checkpoint ships with the demo: a random encoder stands in.
  config.satclip.allow_random_init = True

  config.data.data_dir = "data/tfds"
  config.data.build_missing = True
  config.data.image_size = 64
  config.data.batch_size_per_device = 8
  # A 2-core CPU: more read threads than cores compete with the step itself (measured here:
  # 3.2-3.7 steps/s with 2 threads, 3.0-3.2 with the recipe's 8).
  config.data.read_threads = 2
  # The demo mixes four sensors: native_gsd_m 0 takes each example's own gsd_m.
  config.data.sources = ml_collections.ConfigDict(dict(
      demo=multiscale.source("nirgan_demo/default", 1.0, 0.0, (), 1.0)))

  config.train.num_train_steps = 800
  config.train.log_every = 25
  config.train.eval_every = 100
  config.train.image_every = 100
  config.train.eval_ssim_window = 7
  return config
