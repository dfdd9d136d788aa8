"""Every command of the README answers --help, both as an installed console script and as
``python -m``: the installed entry points and the thin ``nirgan_jax.<tool>`` modules reach
their real homes."""

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
