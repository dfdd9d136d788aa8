"""Every command of the README answers --help, both as an installed console script and as
``python -m``: the installed entry points and the thin ``nirgan_jax.<tool>`` modules reach
their real homes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# console script -> (python -m module, text its help must show)
COMMANDS = {
    "nirgan-train": ("nirgan_jax.train", "--workdir"),
    "nirgan-predict": ("nirgan_jax.predict", "--overlap"),
    "nirgan-evaluate": ("nirgan_jax.evaluate", "--baselines"),
    "nirgan-export": ("nirgan_jax.export", "--jax_export"),
    "nirgan-import": ("nirgan_jax.import_torch", "--inject_style"),
    "nirgan-timeseries": ("nirgan_jax.timeseries", "--nir_band"),
    "nirgan-prep": ("data_prep.build", "--manual_dir"),
}


@pytest.fixture(scope="module")
def help_outputs():
  """Runs every --help at once (each start imports JAX: seconds apiece on 2 cores)."""
  scripts = Path(sys.executable).parent
  runs = {}
  for script, (module, _) in COMMANDS.items():
    for kind, argv in (("script", [str(scripts / script)]),
                       ("module", [sys.executable, "-m", module])):
      runs[script, kind] = subprocess.Popen(argv + ["--help"], cwd=REPO, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  return {key: (p.wait(timeout=300), p.stdout.read()) for key, p in runs.items()}


@pytest.mark.parametrize("kind", ["script", "module"])
@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_help(help_outputs, script, kind):
  status, output = help_outputs[script, kind]
  expected = COMMANDS[script][1]
  assert expected in output, output[-2000:]
  assert "Traceback" not in output
  # argparse exits 0 after --help; absl (the training program) exits 1.
  assert status == (1 if script == "nirgan-train" else 0), output[-2000:]


def _train_elsewhere(tmp_path, config, *flags):
  """``python -m nirgan_jax.train`` started in an empty folder outside the repository."""
  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  return subprocess.run([sys.executable, "-m", "nirgan_jax.train", "--config", config,
                         "--workdir", str(tmp_path / "run"), *flags],
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_main_command_without_data_says_how_to_get_every_source(tmp_path):
  data_dir = tmp_path / "tfds"
  result = _train_elsewhere(tmp_path, "configs/multiscale.py",
                            f"--config.data.data_dir={data_dir}")
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  error = result.stderr[result.stderr.index("error: "):]
  assert error.startswith(f"error: 4 sources of the config are not built in {data_dir}: ")
  for dataset, config, homepage in (
      ("landsat8", "ssl4eo_toa", "https://www.usgs.gov/landsat-missions/landsat-8"),
      ("s2_100k", "default", "https://github.com/microsoft/satclip"),
      ("worldstrat", "hr", "https://worldstrat.github.io"),
      ("sen2naip", "hr", "https://huggingface.co/datasets/tacofoundation/SEN2NAIPv2")):
    assert (f"python -m data_prep.build {dataset} --config {config} --manual_dir RAW "
            f"--data_dir {data_dir}") in error, dataset
    assert homepage in error, dataset
  assert "configs/demo.py" in error.splitlines()[-1]
  assert not (tmp_path / "run").exists()


def test_a_recipe_that_imports_another_loads_from_any_folder(tmp_path):
  result = _train_elsewhere(tmp_path, "configs/s2_small.py:mlp",
                            f"--config.data.data_dir={tmp_path / 'tfds'}")
  assert "ModuleNotFoundError" not in result.stderr and "Traceback" not in result.stderr
  assert "error: 1 source of the config is not built" in result.stderr, result.stderr[-3000:]
