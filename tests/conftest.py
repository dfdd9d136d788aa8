"""Shared fixtures. Four fake CPU devices, set before JAX initialises."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# Many tests (and the training runs they start in subprocesses, which inherit this) compile
# the same tiny programs: a persistent compilation cache for the session skips the repeats.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile

  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="nirgan-jax-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Real samples vendored with the tests (see tests/data/README.md).
TEST_DATA = REPO / "tests" / "data"


def load_config_module(path):
  """A config file as a module, loaded by path as config_flags does."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path):
  """``get_config()`` of a config file."""
  return load_config_module(path).get_config()


def load_config(name: str):
  """``get_config()`` of ``configs/<name>.py``."""
  return load_config_file(REPO / "configs" / f"{name}.py")


def rbg_key(seed: int):
  """A PRNG key of the implementation the configs use: its init compiles ~5x faster on CPU."""
  import jax

  return jax.random.key(seed, impl="rbg")


TINY_CONFIG = REPO / "tests" / "configs" / "tiny.py"


def tiny_config(style: str = "multiply"):
  """``tests/configs/tiny.py`` with SatCLIP injection ``style``."""
  config = load_config_file(TINY_CONFIG)
  config.model.injection.style = style
  return config


def bias_before_instance_norm(network: str, path: tuple[str, ...], config) -> bool:
  """Conv biases right before an instance norm have zero true gradient: their float noise
  differs between device layouts, and Adam's normalisation turns that noise into +-lr steps."""
  if path[-1] != "bias":
    return False
  if network == "G":
    return path[0] not in ("conv_out", "injection")
  return path[0] not in ("conv_0", f"conv_{config.model.discriminator.n_layers + 1}")
