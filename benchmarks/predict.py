"""GeoTIFF prediction speed and memory: the full-size generator (ngf 64, 9 blocks, SatCLIP
multiply injection, random weights) over a generated 4,096 x 4,096 RGB uint16 GeoTIFF.

    python -m benchmarks.predict [--size 4096] [--large] [--tile 256] [--overlap 32]
        [--batch_size 4] [--generator full|tiny] [--compute_dtype float32|bfloat16] [--torch]

Prints one JSON line: output megapixels per second (compilation excluded: a warm-up on a
small raster compiles first) and the peak RSS. ``--large`` predicts a 10,980 x 10,980
Sentinel-2-tile-sized scene instead; ``--generator tiny`` measures its memory in minutes.
``--torch`` also times the PyTorch reference generator
of ``benchmarks/torch_reference.py`` on 256 px tiles (with the 10 px pad, no overlap), the way
the original predicts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from benchmarks import common
from nirgan_jax import models
from nirgan_jax.infer import model as inference
from nirgan_jax.infer import model_dir, predict
from nirgan_jax.models import config as model_config


def write_scene(path: Path, size: int, strip: int = 512) -> None:
  """A size x size 3-band uint16 UTM GeoTIFF of smooth fields and texture, strip by strip."""
  rng = np.random.default_rng(0)
  # A small GDAL cache, so that writing the input does not inflate the peak RSS reported
  # for predicting it.
  profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint16",
                 crs="EPSG:32632", transform=from_origin(500_000, 5_200_000, 10, 10),
                 tiled=True, compress="deflate")
  with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(path, "w", **profile) as dst:
    for row in range(0, size, strip):
      h = min(strip, size - row)
      yy, xx = np.mgrid[row:row + h, 0:size] / 80.0
      base = 0.12 + 0.05 * np.sin(xx + 0.3 * yy) + 0.03 * ((xx // 3 + yy // 4) % 3)
      bands = [base * f + rng.normal(0, 0.01, base.shape) for f in (1.0, 1.2, 0.8)]
      dst.write(np.clip(np.stack(bands) * 10_000, 1, 10_000).astype(np.uint16),
                window=Window(0, row, size, h))


def write_model(path: Path, size: str) -> Path:
  """A generator of the reference size ("full") or the test size ("tiny", for measuring
  memory on very large scenes in minutes), random weights, SatCLIP injection."""
  config = model_config.get_config()
  if size == "tiny":
    config.model.generator.update(dict(ngf=8, n_blocks=2))
  nirgan = models.NIRGAN.from_config(config)
  key = jax.random.key(0, impl="rbg")
  params = {
      "generator": jax.jit(nirgan.generator.init)(
          key, np.zeros((1, 276, 276, 3), np.float32), np.zeros((1, 256), np.float32))["params"],
      "satclip": models.init_location_encoder(nirgan, key),
  }
  return model_dir.save_model_dir(path, params, config)


def bench_torch(repeats: int) -> dict:
  import torch

  from benchmarks import torch_reference

  generator = torch_reference.InjectGenerator().eval()
  rgb, embedding = torch.rand(1, 3, 276, 276), torch.randn(1, 256)
  with torch.no_grad():
    times = common.time_torch(lambda: generator(rgb, embedding), repeats)
  median = float(np.median(times))
  return {"tile": 256, "pad": 10, "threads": torch.get_num_threads(),
          "median_s_per_tile": round(median, 3), "mpx_per_s": round(256 * 256 / median / 1e6, 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=4096)
  parser.add_argument("--large", action="store_true", help="a 10,980 px scene")
  parser.add_argument("--tile", type=int, default=256)
  parser.add_argument("--overlap", type=int, default=32)
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--generator", choices=("full", "tiny"), default="full")
  parser.add_argument("--compute_dtype", choices=tuple(models.COMPUTE_DTYPES), default="float32")
  parser.add_argument("--torch", action="store_true")
  parser.add_argument("--repeats", type=int, default=3, help="torch timing repeats")
  args = parser.parse_args()
  size = 10_980 if args.large else args.size

  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    write_scene(tmp / "scene.tif", size)
    write_scene(tmp / "warmup.tif", args.tile + 8)
    model = inference.load_model(write_model(tmp / "model", args.generator),
                                 compute_dtype=args.compute_dtype)
    options = predict.Options(tile=args.tile, overlap=args.overlap,
                              batch_size=args.batch_size)
    predict.predict_file(model, tmp / "warmup.tif", tmp / "warmup_nir.tif", options, False)
    start = time.perf_counter()
    predict.predict_file(model, tmp / "scene.tif", tmp / "scene_nir.tif", options, False)
    seconds = time.perf_counter() - start
    with rasterio.open(tmp / "scene_nir.tif") as out:
      assert np.isfinite(out.read(1, window=Window(0, 0, 256, 256))).all()

  record = {"benchmark": "predict", **common.environment(), "size_px": size,
            "generator": args.generator, "tile": args.tile, "overlap": args.overlap,
            "batch_size": args.batch_size, "compute_dtype": args.compute_dtype,
            "conv_impl": model.config.model.conv_impl, "seconds": round(seconds, 1),
            "mpx_per_s": round(size * size / seconds / 1e6, 4),
            "peak_rss_mb": round(common.peak_rss_mb(), 1)}
  if args.torch:
    record["torch"] = bench_torch(args.repeats)
  common.emit(record)


if __name__ == "__main__":
  main()
