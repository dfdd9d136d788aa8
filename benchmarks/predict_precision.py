"""What bfloat16 inference costs in accuracy and gains in speed: a trained model directory
predicts every real Sentinel-2 image vendored in ``tests/data`` (the 27 places of
``experiments.real_places``) whole, tiled as ``nirgan-predict`` does, once with float32 and
once with bfloat16 convolutions.

    python -m benchmarks.predict_precision --model MODEL_DIR [--repeats 1] [--images N]

Prints one JSON line: the bfloat16 prediction's difference from the float32 one over every
valid pixel (NIR reflectance: mean, 99th percentile and largest absolute difference; NDVI:
mean and largest), each precision's scores against the true NIR pooled over all images
(MAE, NDVI MAE, SSIM, vegetation IoU, on the pixels ``experiments.real_places`` scores), and
each precision's prediction time (compilation excluded, best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import common
from experiments import real_places
from nirgan_jax import indices
from nirgan_jax.infer import model as inference
from nirgan_jax.infer import tiled

PRECISIONS = ("float32", "bfloat16")


def predict_all(model: inference.Model, images) -> list[np.ndarray]:
  return [tiled.predict_image(model, tiled.ArraySource(im.reflectance[..., :3], im.valid,
                                                       im.lonlat)) for im in images]


def timed_predictions(model: inference.Model, images, repeats: int
                      ) -> tuple[list[np.ndarray], float]:
  predict_all(model, images)  # compiles every tile shape
  best, predictions = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    predictions = predict_all(model, images)
    best = min(best, time.perf_counter() - start)
  return predictions, best


def differences(images, reference: list[np.ndarray], other: list[np.ndarray]) -> dict:
  """How far ``other`` is from ``reference`` over every valid pixel of ``images``."""
  nir_diff, ndvi_diff = [], []
  for image, ref, pred in zip(images, reference, other, strict=True):
    red = image.reflectance[..., 0][image.valid]
    ref, pred = ref[image.valid], pred[image.valid]
    nir_diff.append(np.abs(pred - ref))
    ndvi_diff.append(np.abs(indices.ndvi(red, np.clip(pred, 0, 1))
                            - indices.ndvi(red, np.clip(ref, 0, 1))))
  nir_diff, ndvi_diff = np.concatenate(nir_diff), np.concatenate(ndvi_diff)
  return {"pixels": int(nir_diff.size),
          "nir_abs_diff_mean": float(nir_diff.mean()),
          "nir_abs_diff_p99": float(np.percentile(nir_diff, 99)),
          "nir_abs_diff_max": float(nir_diff.max()),
          "ndvi_abs_diff_mean": float(np.nanmean(ndvi_diff)),
          "ndvi_abs_diff_max": float(np.nanmax(ndvi_diff))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="a model directory (nirgan_jax.export)")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--images", type=int, default=None, help="only the first N images")
  args = parser.parse_args()
  images = real_places.read_images()[:args.images]
  predictions, seconds, scores = {}, {}, {}
  for precision in PRECISIONS:
    model = inference.load_model(args.model, compute_dtype=precision)
    predictions[precision], seconds[precision] = timed_predictions(model, images, args.repeats)
    scores[precision] = {name: round(value, 5) for name, value in real_places.pooled(
        [real_places.image_sums(im, p) for im, p in zip(images, predictions[precision],
                                                        strict=True)]).items()}
  common.emit({"benchmark": "predict_precision", **common.environment(), "model": args.model,
               "images": len(images),
               "bfloat16_vs_float32": {k: round(v, 6) if isinstance(v, float) else v
                                       for k, v in differences(images, predictions["float32"],
                                                               predictions["bfloat16"]).items()},
               "scores": scores,
               "seconds": {k: round(v, 2) for k, v in seconds.items()},
               "peak_rss_mb": round(common.peak_rss_mb(), 1)})


if __name__ == "__main__":
  main()
