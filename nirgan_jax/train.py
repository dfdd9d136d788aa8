"""Trains NIR-GAN.

    python -m nirgan_jax.train --config configs/multiscale.py --workdir DIR [--config.x=y ...]

Resumes from the latest checkpoint in ``--workdir``. Set ``NIRGAN_DISTRIBUTED=1`` on
multi-host systems (TPU pods, multi-node GPU) to call ``jax.distributed.initialize()``.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from nirgan_jax import training

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
flags.mark_flags_as_required(["workdir"])
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if os.environ.get("NIRGAN_DISTRIBUTED") == "1":
    import jax

    jax.distributed.initialize()
  metrics = training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  logging.info("final evaluation: %s", metrics)


if __name__ == "__main__":
  app.run(main)
