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

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_config_file(path):
  """``get_config()`` of a config file, loaded by path as config_flags does."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load_config(name: str):
  """``get_config()`` of ``configs/<name>.py``."""
  return load_config_file(REPO / "configs" / f"{name}.py")


def rbg_key(seed: int):
  """A PRNG key of the implementation the configs use: its init compiles ~5x faster on CPU."""
  import jax

  return jax.random.key(seed, impl="rbg")


def tiny_config(style: str = "multiply"):
  """The full recipe shrunk so that a step compiles and runs in seconds on 2 cores."""
  config = load_config("multiscale")
  config.pad = 4
  config.model.generator.ngf = 8
  config.model.generator.n_blocks = 2
  config.model.discriminator.ndf = 8
  config.model.discriminator.n_layers = 2
  config.model.injection.style = style
  config.model.injection.map_size = 16
  config.satclip.legendre_polys = 4
  config.satclip.dim_hidden = 16
  config.satclip.embed_dim = 16
  config.satclip.allow_random_init = True
  return config


def bias_before_instance_norm(network: str, path: tuple[str, ...], config) -> bool:
  """Conv biases right before an instance norm have zero true gradient: their float noise
  differs between device layouts and Adam turns it into +-lr steps (see JAX_NOTES)."""
  if path[-1] != "bias":
    return False
  if network == "G":
    return path[0] not in ("conv_out", "injection")
  return path[0] not in ("conv_0", f"conv_{config.model.discriminator.n_layers + 1}")


@pytest.fixture
def tiny():
  return tiny_config()
