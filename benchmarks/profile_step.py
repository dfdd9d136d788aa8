"""Where a training step's device time goes, and how close it runs to the chip's peak.

    python -m benchmarks.profile_step [--size full] [--batch 64] [--dtype bfloat16]
        [--steps 5] [--trace_dir DIR] [--peak_tflops 790]

Traces ``--steps`` calls of the jitted training step (``benchmarks/train_step.py``'s model and
synthetic resident batch) with the JAX profiler, then sums the device kernels' time from the
trace by kind: convolutions and matmuls, reductions (instance-norm statistics, losses),
elementwise fusions, data movement (copies, transposes, pads, slices, concatenations), other.
XLA's FLOP count of the compiled step (``cost_analysis``) over the measured step time gives
the achieved TFLOP/s and its share of ``--peak_tflops``. Prints one JSON line; the trace
(TensorBoard/Perfetto) stays in ``--trace_dir`` for a closer look.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax

from benchmarks import common, train_step
from nirgan_jax import models
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train import state as train_state
from nirgan_jax.train import step as gan_step

# Kernel name patterns, first match wins. XLA names fusions after their root ops
# ("loop_add_fusion", "input_reduce_fusion"); cuDNN and cuBLAS kernels carry their library's
# names ("sm90_xmma_fprop_implicit_gemm", "cutlass", "cudnn").
KERNEL_KINDS = (
    ("conv_matmul", r"conv|gemm|xmma|cutlass|cudnn|wgmma|dot|matmul|cublas"),
    ("reduction", r"reduce|reduction"),
    ("data_movement", r"copy|transpose|pad|slice|concatenate|memcpy|memset|gather|scatter"),
    ("elementwise", r"fusion|loop_|elementwise|convert|add|multiply|select|compare"),
)


# Host-side events of a CPU trace (Python frames, the executor's own spans), not XLA ops.
HOST_EVENT_PREFIXES = ("$", "ThunkExecutor", "PjitFunction")


def kernel_kind(name: str) -> str:
  lowered = name.lower()
  for kind, pattern in KERNEL_KINDS:
    if re.search(pattern, lowered):
      return kind
  return "other"


def device_time_by_kind(trace_dir: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
  """Seconds of device kernel time per kind, and the 15 most expensive kernels, from the
  Perfetto trace the profiler wrote under ``trace_dir``."""
  traces = sorted(trace_dir.rglob("*.trace.json.gz"))
  if not traces:
    raise FileNotFoundError(f"{trace_dir}: the profiler wrote no *.trace.json.gz")
  with gzip.open(traces[-1], "rt") as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  process_names = {e["pid"]: e["args"]["name"] for e in events
                   if e.get("ph") == "M" and e.get("name") == "process_name"}
  # GPU/TPU streams are processes named "/device:GPU:0" etc.; on CPU the XLA ops run on host
  # threads, so fall back to every complete event there.
  device_pids = {pid for pid, name in process_names.items() if name.startswith("/device:")}
  by_kind: dict[str, float] = collections.defaultdict(float)
  by_kernel: dict[str, float] = collections.defaultdict(float)
  for event in events:
    if event.get("ph") != "X" or (device_pids and event.get("pid") not in device_pids):
      continue
    if not device_pids and event["name"].startswith(HOST_EVENT_PREFIXES):
      continue
    seconds = float(event.get("dur", 0.0)) * 1e-6
    by_kind[kernel_kind(event["name"])] += seconds
    by_kernel[event["name"]] += seconds
  top = sorted(by_kernel.items(), key=lambda item: -item[1])[:15]
  return dict(by_kind), top


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", default="full", choices=sorted(train_step.SIZES))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--conv_impl", default="auto")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--trace_dir", default=None, help="default: a temporary folder")
  parser.add_argument("--peak_tflops", type=float, default=790.0,
                      help="the chip's peak in --dtype (H200 bf16: about 790)")
  args = parser.parse_args()

  config = train_step.make_config(args.size, args.dtype, args.conv_impl)
  image = config.data.image_size
  nirgan = models.NIRGAN.from_config(config)
  mesh = mesh_lib.make_data_mesh()
  g, d = train_state.create_train_states(nirgan, jax.random.key(0, impl="rbg"), image, mesh)
  satclip = models.init_location_encoder(nirgan, jax.random.key(1, impl="rbg"))
  batch = mesh_lib.shard_batch(mesh, train_step.synthetic_batch(args.batch, image))
  rng = jax.random.key(2, impl="rbg")
  compiled = gan_step.make_train_step(nirgan, mesh).lower(g, d, satclip, batch, rng).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", 0.0))
  for _ in range(2):  # warm-up
    g, d, metrics = compiled(g, d, satclip, batch, rng)
  jax.block_until_ready(metrics)

  trace_dir = Path(args.trace_dir or tempfile.mkdtemp(prefix="nirgan-trace-"))
  start = time.perf_counter()
  with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
    for _ in range(args.steps):
      g, d, metrics = compiled(g, d, satclip, batch, rng)
    jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / args.steps
  by_kind, top = device_time_by_kind(trace_dir)
  device_s = sum(by_kind.values()) / args.steps
  tflops = flops / step_s / 1e12
  common.emit({
      "benchmark": "profile_step", **common.environment(), "size": args.size,
      "batch": args.batch, "dtype": args.dtype, "steps": args.steps,
      "step_s": round(step_s, 5), "images_per_s": round(args.batch / step_s, 2),
      "gflop_per_image": round(flops / args.batch / 1e9, 1),
      "achieved_tflops": round(tflops, 1), "peak_tflops": args.peak_tflops,
      "share_of_peak": round(tflops / args.peak_tflops, 3),
      "device_s_per_step": round(device_s, 5),
      "device_share_by_kind": {k: round(v / args.steps / device_s, 3)
                               for k, v in sorted(by_kind.items())} if device_s else {},
      "top_kernels_ms_per_step": {name[:80]: round(s / args.steps * 1e3, 3)
                                  for name, s in top},
      "trace_dir": str(trace_dir),
  })


if __name__ == "__main__":
  main()
