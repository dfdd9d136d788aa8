"""data_prep throughput on S2-100K-style input: realistic 256 px 12-band L2A patches
(uint16, UTM, tiled LZW, like the published files) written to a temporary folder,
then converted by the ``s2_100k`` builder to ArrayRecord.

    python -m benchmarks.build_throughput [--patches 300] [--workers 1 2]

Prints one JSON line: patches/s, per core, and input MB/s with 1 and 2 worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from benchmarks import common
from data_prep import build, demo

# B01..B12 (no B10) as weights on R, G, B, NIR of a demo landscape: coastal ~ blue,
# red edge between red and NIR, SWIR from the soil-like part.
BAND_MIX = np.array([
    [0.0, 0.0, 1.1, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
    [0.6, 0.0, 0.0, 0.4], [0.3, 0.0, 0.0, 0.7], [0.1, 0.0, 0.0, 0.9], [0.0, 0.0, 0.0, 1.0],
    [0.0, 0.0, 0.0, 1.02], [0.0, 0.0, 0.0, 0.3], [0.8, 0.4, 0.0, 0.2], [0.9, 0.1, 0.0, 0.0]])


def write_inputs(root: Path, count: int, size: int = 256) -> int:
  images = root / "images"
  images.mkdir(parents=True)
  rows, total_bytes = [], 0
  for i in range(count):
    rgbn = demo.demo_patch(seed=1, index=i, size=size)
    stack = np.concatenate([rgbn.rgb, rgbn.nir], -1) @ BAND_MIX.T  # (H, W, 12)
    dn = np.clip(stack * 10000 + 1000, 1, 65535).astype(np.uint16).transpose(2, 0, 1)
    path = images / f"patch_{i}.tif"
    x0, y0 = 300_000.0 + 3000 * (i % 50), 5_000_000.0 + 3000 * (i // 50)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=12,
                       dtype="uint16", crs="EPSG:32633", transform=from_origin(x0, y0, 10, 10),
                       tiled=True, blockxsize=256, blockysize=256, compress="lzw") as dst:
      dst.write(dn)
    total_bytes += path.stat().st_size
    rows.append((path.name, 15.0, 45.0))  # the builder computes centres from the rasters
  with (root / "index.csv").open("w", newline="") as f:
    csv.writer(f).writerows([("fn", "lon", "lat"), *rows])
  return total_bytes


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--patches", type=int, default=300)
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  args = parser.parse_args()
  cores = len(os.sched_getaffinity(0))
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    raw = Path(tmp) / "raw"
    input_bytes = write_inputs(raw, args.patches)
    for workers in args.workers:
      start = time.perf_counter()
      with contextlib.redirect_stdout(sys.stderr):  # TFDS announces it: stdout is the JSON's
        _, report = build.build("s2_100k", Path(tmp) / f"tfds_{workers}", raw, workers=workers)
      seconds = time.perf_counter() - start
      written = report["total_written"]
      runs.append({"workers": workers, "patches": written, "seconds": round(seconds, 2),
                   "patches_per_s": round(written / seconds, 1),
                   "patches_per_s_per_core": round(written / seconds / min(workers, cores), 1),
                   "input_mb_per_s": round(input_bytes / 1e6 / seconds, 1)})
  common.emit({"benchmark": "data_prep", "source": "s2_100k", "cores": cores,
               "input_mb_per_patch": round(input_bytes / 1e6 / args.patches, 3), "runs": runs,
               "peak_rss_mb": round(common.peak_rss_mb(), 1)})


if __name__ == "__main__":
  main()
