"""Where the input pipeline's time goes: milliseconds per example of each stage of
``ExampleTransform`` (and of reading and decoding the stored record before it) at 10 m
native and at 15 and 20 m derived, on the benchmark's data: the demo builder's 512 px
patches, 256 px examples.

    python -m benchmarks.profile_pipeline [--examples 64] [--repeats 3]
        [--record_compression zstd|snappy|uncompressed]

Each stage runs on the output of the one before, as in the pipeline, one example at a time
in this process (median over ``--repeats`` passes of every example). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks import common
from data_prep import build
from nirgan_jax.data import pipeline as ip
from nirgan_jax.data import transforms

IMAGE = 256
GSDS = (10.0, 15.0, 20.0)


def stages(record: bytes, source, transform: ip.ExampleTransform,
           rng: np.random.Generator) -> dict[str, float]:
  """Seconds of each stage of ``transform.random_map`` for one stored example, run as it runs
  them."""
  times = {}
  clock = time.perf_counter

  t = clock()
  element = source.dataset_info.features.deserialize_example_np(record)
  times["decode"] = clock() - t
  gsd, factor = transform.choose_gsd(element, rng)
  t = clock()
  bands, valid = transform.native_window(element, gsd, factor, rng)
  times["window_to_float"] = clock() - t
  t = clock()
  if factor > 1:
    bands, valid = transforms.area_resample_valid(bands, valid, factor)
  times["area_resample"] = clock() - t
  t = clock()
  bands, valid = transform.crop(bands, valid, rng)
  times["crop"] = clock() - t
  t = clock()
  bands = transform.apply_gain(bands, valid, rng)
  times["illumination_gain"] = clock() - t
  t = clock()
  bands, valid = transform.orient(bands, valid, rng)
  times["flip"] = clock() - t
  t = clock()
  for array in (*bands, valid):  # what batching costs the example: a copy into its row
    np.stack([array])
  times["batch_copy"] = clock() - t
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--examples", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--record_compression", choices=build.RECORD_COMPRESSIONS,
                      default=build.DEFAULT_RECORD_COMPRESSION,
                      help="of the built shards (nirgan-prep --record_compression)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    with contextlib.redirect_stdout(sys.stderr):  # TFDS announces the build: stdout is the JSON's
      builder, _ = build.build("nirgan_demo", tmp, patch_size=512,
                               extra={"num_examples": args.examples},
                               record_compression=args.record_compression)
    spec = ip.SourceSpec(name=f"nirgan_demo/{builder.builder_config.name}", data_dir=tmp,
                         split="train")
    source = ip.open_source(spec)
    count = len(source)
    rng = np.random.default_rng(0)
    per_gsd = {}
    read = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      records = [source.data_source[i] for i in range(count)]
      read.append((time.perf_counter() - t) / count)
    for gsd in GSDS:
      # Always at ``gsd``: that resolution as the only one, with the recipe's augmentation.
      only = ip.SourceSpec(name=spec.name, data_dir=tmp, native_gsd_m=10.0,
                           derived_gsd_m=(gsd,), prob_native=0.0 if gsd > 10.0 else 1.0)
      transform = ip.ExampleTransform(only, IMAGE, augment=True, illumination_gain=(0.67, 1.5))
      passes = []
      for _ in range(args.repeats):
        totals: dict[str, float] = {}
        for record in records:
          for stage, seconds in stages(record, source, transform, rng).items():
            totals[stage] = totals.get(stage, 0.0) + seconds
        passes.append(totals)
      per_gsd[f"{gsd:g}m"] = {
          stage: round(statistics.median(p[stage] for p in passes) / count * 1000, 3)
          for stage in passes[0]}
      per_gsd[f"{gsd:g}m"]["total"] = round(sum(per_gsd[f"{gsd:g}m"].values()), 3)
  common.emit({"benchmark": "profile_pipeline", "image_size": IMAGE, "patch_size": 512,
               "record_compression": args.record_compression,
               "examples": count, "read_ms": round(statistics.median(read) * 1000, 3),
               "ms_per_example": per_gsd})


if __name__ == "__main__":
  main()
