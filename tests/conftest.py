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


def assert_adam_runs_agree(got, expected, steps: int, lr: float, *, close: float = 1e-5,
                           share_apart: float = 0.01) -> None:
  """The weights of two Adam runs whose steps differ only in the order of float32 reductions
  (device layouts, processes). Adam moves a weight by about ``lr`` per step whatever the size
  of its gradient, so a weight whose gradient is float noise (a conv bias right before an
  instance norm has zero true gradient; any weight can have a near-zero one) may end up to
  ``2 steps lr`` apart in the two runs, whereas the rest agree within ``close``. Asserts both,
  with at most ``share_apart`` of the weights beyond ``close``."""
  import jax
  import numpy as np

  apart = total = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected),
                          strict=True):
    diff = np.abs(np.asarray(a) - np.asarray(b))
    worst = float(diff.max(initial=0.0))
    assert worst <= 2 * steps * lr, f"{jax.tree_util.keystr(path)} differs by {worst}"
    apart += int(np.sum(diff > close))
    total += diff.size
  assert apart <= share_apart * total, f"{apart} of {total} weights differ by more than {close}"
