"""Input pipeline throughput: samples/s of the training pipeline at 256 px from a generated
S2-like ArrayRecord dataset (the demo builder with 512 px patches, multi-scale on: 10 m
native, 15 and 20 m derived, which 512 px fill), with 0, 1 and 2 worker processes, and
peak RSS.

Per core twice: ``samples_per_s_per_core`` divides by the cores the process may use (as a
machine of that many cores would be sized), ``samples_per_cpu_s`` by the CPU time the main
process (reading threads included) and its worker processes spent while the batches were
timed: the cores the pipeline kept busy, so how many a host needs for a given rate.

    python -m benchmarks.input_pipeline [--examples 200] [--batches 40] [--workers 0 1 2]
        [--record_compression zstd|snappy|uncompressed]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time

import psutil
from absl import flags

from benchmarks import common
from data_prep import build
from nirgan_jax.data import pipeline as ip

BATCH = 16


def cpu_seconds_by_process() -> dict[int, float]:
  """User + system CPU seconds of this process and of every live process under it."""
  here = psutil.Process()
  seconds = {}
  for process in (here, *here.children(recursive=True)):
    try:
      times = process.cpu_times()
    except psutil.NoSuchProcess:
      continue
    seconds[process.pid] = times.user + times.system
  return seconds


def cpu_seconds_since(before: dict[int, float]) -> float:
  """CPU seconds spent since ``before`` by the processes alive now."""
  return sum(now - before.get(pid, 0.0) for pid, now in cpu_seconds_by_process().items())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--examples", type=int, default=200)
  parser.add_argument("--batches", type=int, default=40)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--record_compression", choices=build.RECORD_COMPRESSIONS,
                      default=build.DEFAULT_RECORD_COMPRESSION,
                      help="of the built shards (nirgan-prep --record_compression)")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # mp_prefetch reads absl flags
  cores = ip.host_cores()
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    with contextlib.redirect_stdout(sys.stderr):  # TFDS announces the build: stdout is the JSON's
      builder, _ = build.build("nirgan_demo", tmp, patch_size=512,
                               extra={"num_examples": args.examples},
                               record_compression=args.record_compression)
    spec = ip.SourceSpec(name=f"nirgan_demo/{builder.builder_config.name}", data_dir=tmp,
                         native_gsd_m=10.0, derived_gsd_m=(15.0, 20.0), prob_native=0.5)
    dataset = ip.train_dataset([spec], 256, global_batch_size=BATCH, seed=0)
    for workers in args.workers:
      iterator = ip.make_iterator(dataset, workers=workers)
      next(iterator)  # start-up (worker processes, first reads) is not throughput
      cpu_before = cpu_seconds_by_process()
      start = time.perf_counter()
      for _ in range(args.batches):
        next(iterator)
      seconds = time.perf_counter() - start
      cpu_seconds = cpu_seconds_since(cpu_before)
      iterator.close()  # its threads and workers would still fill buffers in the next run
      samples = args.batches * BATCH
      runs.append({"workers": workers, "samples_per_s": round(samples / seconds, 1),
                   "samples_per_s_per_core": round(samples / seconds / cores, 1),
                   "cores_busy": round(cpu_seconds / seconds, 2),
                   "samples_per_cpu_s": round(samples / cpu_seconds, 1)})
  common.emit({"benchmark": "input_pipeline", "image_size": 256, "batch": BATCH,
               "record_compression": args.record_compression,
               "cores": cores, "runs": runs, "peak_rss_mb": round(common.peak_rss_mb(), 1)})


if __name__ == "__main__":
  main()
