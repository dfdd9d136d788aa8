"""Trains NIR-GAN.

    python -m nirgan_jax.train --config configs/multiscale.py --workdir DIR [--config.x=y ...]

Resumes from the latest checkpoint in ``--workdir``. On multi-host systems (TPU pods,
multi-node GPU) set ``NIRGAN_DISTRIBUTED=1`` to call ``jax.distributed.initialize()``,
which finds its peers on TPU VMs, SLURM, Open MPI and Kubernetes; elsewhere give
``--coordinator_address``, ``--num_processes`` and ``--process_id``. On SIGTERM it saves
a checkpoint and exits with status 143; run the same command again to resume.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from nirgan_jax import errors
from nirgan_jax.train import loop
from nirgan_jax.train.preemption import Preempted

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
flags.mark_flags_as_required(["workdir"])
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")

EXIT_PREEMPTED = 128 + 15  # what a shell reports for a process ended by SIGTERM


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if os.environ.get("NIRGAN_DISTRIBUTED") == "1" or FLAGS.coordinator_address:
    import jax

    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  try:
    metrics = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Preempted as e:
    logging.warning("%s", e)
    sys.exit(EXIT_PREEMPTED)
  except (errors.NirganError, OSError) as e:
    sys.exit(errors.report(e))
  logging.info("final evaluation: %s", metrics)


def run():
  """``python -m nirgan_jax.train`` and the ``nirgan-train`` console script."""
  # absl's --help prints the __main__ module's docstring and flags; under the console script
  # __main__ is the generated wrapper, so it borrows this module's.
  script = sys.modules["__main__"]
  if script.__doc__ is None:
    script.__doc__ = f"{__doc__}\nflags:\n{FLAGS.module_help(__name__)}"
  app.run(main)


if __name__ == "__main__":
  run()
