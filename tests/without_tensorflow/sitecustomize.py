"""On ``PYTHONPATH``, makes TensorFlow look uninstalled to the Python that starts: its finder
of installed modules no longer finds ``tensorflow``, so ``import tensorflow`` raises
``ModuleNotFoundError`` and ``importlib.util.find_spec("tensorflow")`` is None, as on a machine
without it (libraries that check for it, such as TFDS and etils, take their TF-free paths)."""

import importlib.machinery
import sys


class _WithoutTensorFlow:
  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return self._finder.find_spec(name, path, target)

  def __getattr__(self, name):
    return getattr(self._finder, name)


sys.meta_path[:] = [_WithoutTensorFlow(finder) if finder is importlib.machinery.PathFinder
                    else finder for finder in sys.meta_path]
