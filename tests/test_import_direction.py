"""Imports run one way, read from the source of every module (imports inside functions too):
``data_prep`` may use ``nirgan_jax``, never the reverse; the inference tools
(``nirgan_jax/infer``) use no training code, optax, Grain or TensorFlow; and no benchmark or
library module imports from ``tests/``."""

import ast
from pathlib import Path

import pytest

from conftest import REPO


def imported_modules(path: Path) -> set[str]:
  modules = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      modules.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      modules.add(node.module)
      modules.update(f"{node.module}.{alias.name}" for alias in node.names)
  return modules


def _modules(folder: str) -> list[Path]:
  return sorted((REPO / folder).rglob("*.py"))


def _offending(path: Path, prefixes: tuple[str, ...]) -> list[str]:
  return sorted(m for m in imported_modules(path)
                if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", _modules("nirgan_jax"), ids=lambda p: str(p.relative_to(REPO)))
def test_nirgan_jax_never_imports_data_prep(path):
  assert not _offending(path, ("data_prep",))


@pytest.mark.parametrize("path", _modules("nirgan_jax/infer"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_inference_tools_use_no_training_code(path):
  assert not _offending(path, ("nirgan_jax.train", "nirgan_jax.data", "nirgan_jax.evaluate",
                               "optax", "grain", "tensorflow", "tensorflow_datasets"))


@pytest.mark.parametrize("path", _modules("nirgan_jax") + _modules("data_prep")
                         + _modules("benchmarks") + _modules("experiments"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_outside_the_tests_imports_them(path):
  assert not _offending(path, ("tests", "conftest", "data_fixtures", "torch_reference"))


def test_the_checker_sees_imports_inside_functions(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("def f():\n  from data_prep import build\n  import grain.python\n")
  assert imported_modules(module) == {"data_prep", "data_prep.build", "grain.python"}


def test_every_builder_is_registered_for_the_training_program():
  """nirgan_jax finds the builders through the ``nirgan_jax.sources`` entry points, so each
  data_prep builder must be registered there (pyproject.toml)."""
  from data_prep import build
  from nirgan_jax.data import pipeline

  assert pipeline.source_builders() == build.BUILDERS
