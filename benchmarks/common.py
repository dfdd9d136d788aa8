"""Helpers shared by the benchmark scripts: timing, peak memory, the JSON line."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable

import jax
import ml_collections

from configs import multiscale

# Model sizes the benchmarks measure: "full" is configs/multiscale.py as it is (the reference
# network, 256 px + 10 px pad); "tiny" shrinks it to what a CPU turns around in seconds.
SIZES = ("full", "tiny")
TINY = {"model.generator.ngf": 8, "model.generator.n_blocks": 2, "model.discriminator.ndf": 8,
        "data.image_size": 64, "pad": 4}


def recipe_config(size: str) -> ml_collections.ConfigDict:
  """configs/multiscale.py (its model, losses and optimiser), shrunk for ``size`` "tiny"."""
  config = multiscale.get_config()
  if size == "tiny":
    for key, value in TINY.items():
      *parents, leaf = key.split(".")
      section = config
      for parent in parents:
        section = section[parent]
      section[leaf] = value
  return config


def input_side(config: ml_collections.ConfigDict) -> int:
  """Side of the generator's input: the crop and its reflect padding on both sides."""
  return config.data.image_size + 2 * config.pad


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_call(fn: Callable[[], object], repeats: int) -> list[float]:
  """Wall seconds of ``repeats`` calls, each waited for to completion."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def summary(times: list[float], batch: int) -> dict:
  median = statistics.median(times)
  return {"median_s": round(median, 4), "min_s": round(min(times), 4),
          "max_s": round(max(times), 4), "images_per_s": round(batch / median, 3)}


def environment() -> dict:
  return {"backend": jax.default_backend(), "devices": jax.device_count(),
          "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
          "cpu": platform.processor() or platform.machine()}


def emit(record: dict) -> None:
  print(json.dumps(record, sort_keys=True))


TORCH_DTYPES = ("float32", "bfloat16")


def torch_device():
  """The device JAX runs on, for PyTorch: CUDA when present, so that the ratio to the
  original is always measured on one device in one run."""
  import torch

  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_precision(dtype: str, device):
  """A context for a PyTorch reference run in ``dtype``: fp32 as is, bf16 as the usual
  mixed-precision recipe (autocast to bf16; callers also use channels_last)."""
  import contextlib

  import torch

  if dtype == "float32":
    return contextlib.nullcontext()
  return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def time_torch(fn: Callable[[], object], repeats: int) -> list[float]:
  """Wall seconds of ``repeats`` calls of a PyTorch function, after one warm-up call; on CUDA
  each call is waited for (``torch.cuda.synchronize``)."""
  import torch

  sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
  fn()
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - start)
  return times


def run_sweep(name: str, description: str, sizes, conv_impls, bench_jax, bench_torch) -> None:
  """The CLI shared by the model benchmarks: sweep sizes x batches x dtypes with
  ``bench_jax(size, batch, dtype, conv_impl, repeats)``, optionally time the PyTorch
  reference with ``bench_torch(batch, repeats)`` at the full size, and print the JSON line."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--torch_batch", type=int, nargs="+", default=None,
                      help="batches of the PyTorch reference (default: --batch)")
  parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--sizes", nargs="+", default=["full", "tiny"], choices=sorted(sizes))
  parser.add_argument("--conv_impl", default="auto", choices=conv_impls)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--torch", action="store_true", help="time the PyTorch reference too")
  parser.add_argument("--torch_dtype", nargs="+", default=["float32"], choices=TORCH_DTYPES,
                      help="PyTorch reference precisions (bfloat16: autocast + channels_last)")
  args = parser.parse_args()

  results = [bench_jax(size, batch, dtype, args.conv_impl, args.repeats)
             for size in args.sizes for batch in args.batch for dtype in args.dtype]
  record = {"benchmark": name, **environment(), "results": results}
  if args.torch:
    record["torch"] = [bench_torch(batch, dtype, args.repeats)
                       for batch in args.torch_batch or args.batch for dtype in args.torch_dtype]
    ours = {(r["batch"], r["dtype"]): r["median_s"] for r in results if r["size"] == "full"}
    # Same batch and precision, on the same device: > 1 means nirgan-jax is faster.
    record["speedup_vs_torch"] = {
        f"{t['batch']}/{t['dtype']}": round(t["median_s"] / ours[t["batch"], t["dtype"]], 3)
        for t in record["torch"] if (t["batch"], t["dtype"]) in ours}
  record["peak_rss_mb"] = round(peak_rss_mb(), 1)
  emit(record)
