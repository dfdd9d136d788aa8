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

from nirgan_jax import errors, paths

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")


def packaged_config(value: str) -> str:
  """``--config``'s value, with a ``configs/<name>.py`` that is not in the working directory
  taken from the installed recipes (a ``:variant`` kept)."""
  path, colon, variant = value.partition(":")
  if os.path.exists(path) or not path.startswith("configs/"):
    return value
  try:
    import configs
  except ImportError:  # not installed: the path stays as given, and its error names it
    return value
  packaged = os.path.join(os.path.dirname(configs.__file__), path.removeprefix("configs/"))
  return f"{packaged}{colon}{variant}" if os.path.exists(packaged) else value


def _with_packaged_config(argv: list[str]) -> list[str]:
  out = list(argv)
  for i, arg in enumerate(out):
    if arg == "--config" and i + 1 < len(out):
      out[i + 1] = packaged_config(out[i + 1])
    elif arg.startswith("--config="):
      out[i] = "--config=" + packaged_config(arg.removeprefix("--config="))
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """``FLAGS(argv)``, but a bad command line (a flag value of the wrong type, an override of a
  key the config does not have, a config file that is missing or fails to load) stops the
  program with one line and exit status 2, not absl's two lines or a traceback. A
  ``configs/<name>.py`` missing from the working directory is the installed recipe's."""
  argv = _with_packaged_config(argv)
  try:
    argv = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises only once used
    return argv
  except flags.Error as e:
    problem = str(e)
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown key
    problem = _unknown_key(argv, e)
  except OSError as e:  # ml_collections: the config file failed to load; the cause comes last
    problem = f"--config: {str(e).strip().splitlines()[-1].strip()}"
  except Exception as e:  # the config file raised (a SyntaxError, ...)
    problem = f"--config: {type(e).__name__}: {errors.one_line(e)}"
  sys.exit(errors.report(errors.UsageError(problem)))


def _unknown_key(argv: list[str], error: AttributeError | KeyError) -> str:
  """``--config.a.b=1: the config has no key 'b'``, from ml_collections' KeyError (wrapped in
  an AttributeError), whose text is the quoted key and maybe a line 'Did you mean ...?'."""
  while error.args and isinstance(error.args[0], KeyError):
    error = error.args[0]
  key, _, hint = str(error.args[0] if error.args else error).partition("\n")
  key = key.strip("'\"")
  flag = next((arg for arg in argv if arg.startswith("--config.")
               and key in arg.partition("=")[0].split(".")), "--config")
  return f"{flag}: the config has no key {key!r}" + (f" ({hint.strip()})" if hint else "")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = paths.as_path(FLAGS.workdir)
  if workdir.exists() and not workdir.is_dir():
    sys.exit(errors.report(errors.UsageError(f"--workdir {workdir}: is a file, not a folder")))
  distributed = os.environ.get("NIRGAN_DISTRIBUTED") == "1" or FLAGS.coordinator_address
  if not distributed:  # a run of several processes shares process 0's hold
    from nirgan_jax.train import workdir_lock

    try:
      workdir_lock.refuse_if_held(workdir)  # at once; train_and_evaluate takes the hold
    except (errors.NirganError, OSError) as e:
      sys.exit(errors.report(e))
  # Imported only now: a bad command line is answered before JAX and TensorFlow load.
  from nirgan_jax.train import loop
  from nirgan_jax.train.preemption import Preempted

  if distributed:
    import jax

    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  errors.quiet_library_failures()
  try:
    metrics = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Preempted as e:
    logging.warning("%s", e)
    sys.exit(errors.EXIT_TERMINATED)
  except errors.NirganError as e:
    sys.exit(errors.report(e))
  except Exception as e:
    failure = errors.storage_failure(e)
    if failure is None:
      if isinstance(e, OSError):
        sys.exit(errors.report(e))
      raise  # a bug: keep its traceback
    if failure.path is None:  # TensorBoard's writer, for one, names no file
      failure = errors.StorageError(str(workdir), failure.errno)
    sys.exit(errors.report(failure))
  logging.info("final evaluation: %s", metrics)


def run():
  """``python -m nirgan_jax.train`` and the ``nirgan-train`` console script."""
  # absl's --help prints the __main__ module's docstring and flags; under the console script
  # __main__ is the generated wrapper, so it borrows this module's.
  script = sys.modules["__main__"]
  if script.__doc__ is None:
    script.__doc__ = f"{__doc__}\nflags:\n{FLAGS.module_help(__name__)}"
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
