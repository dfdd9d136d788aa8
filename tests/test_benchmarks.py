"""benchmarks/: each script runs through its documented ``python -m`` entry point at its
smallest settings and prints one JSON line of figures (the figures themselves are not judged
here: timings belong to the benchmarks, not to tests)."""

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

# The smallest run of each benchmark that still goes through all of its code.
SMALLEST = {
    "generator_forward": ["--sizes", "tiny", "--batch", "1", "--dtype", "float32",
                          "--repeats", "1"],
    "predict": ["--size", "256", "--generator", "tiny", "--tile", "128", "--batch_size", "1"],
    "input_pipeline": ["--examples", "8", "--batches", "2", "--workers", "0"],
    "profile_pipeline": ["--examples", "2", "--repeats", "1"],
    "build_throughput": ["--patches", "4", "--workers", "1"],
    "train_loop": ["--steps", "4", "--log_every", "2", "--batch", "1", "--examples", "8"],
}


def _numbers(record) -> list[float]:
  if isinstance(record, dict):
    return [n for value in record.values() for n in _numbers(value)]
  if isinstance(record, list):
    return [n for value in record for n in _numbers(value)]
  return [record] if isinstance(record, (int, float)) and not isinstance(record, bool) else []


@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_a_benchmark_prints_one_json_line_of_figures(name, tmp_path):
  process = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *SMALLEST[name]],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
  assert process.returncode == 0, process.stderr[-3000:]
  lines = [line for line in process.stdout.splitlines() if line.strip()]
  assert len(lines) == 1, process.stdout[-3000:]
  record = json.loads(lines[0])
  numbers = _numbers(record)
  assert numbers and all(math.isfinite(n) for n in numbers), record


def test_predict_precision_prints_one_json_line_of_figures(tmp_path):
  from benchmarks.predict import write_model

  model = write_model(tmp_path / "model", "tiny")
  process = subprocess.run([sys.executable, "-m", "benchmarks.predict_precision", "--model",
                            str(model), "--images", "2"],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
  assert process.returncode == 0, process.stderr[-3000:]
  record = json.loads(process.stdout)
  assert record["images"] == 2 and set(record["scores"]) == {"float32", "bfloat16"}
  assert 0 < record["bfloat16_vs_float32"]["nir_abs_diff_mean"] < 0.05
  assert all(math.isfinite(n) for n in _numbers(record)), record
