"""Evaluates NIR-GAN and baselines on a built dataset: a metrics table overall and per sensor.

    python -m nirgan_jax.evaluate --model models/nirgan [--baselines models/linear models/cnn]
        --dataset s2_100k/default --data_dir ~/tensorflow_datasets [--split test]
        [--protocol nirgan|nirgan_jax] [--image_size 256] [--batch_size 8] [--ssim_window 11]
        [--figures 4] [--out DIR]

Models are model directories (``nirgan_jax.export``, ``nirgan_jax.import_torch``) or original
NIR-GAN ``.ckpt`` files; ``NAME=PATH`` names one in the table (default: ``nirgan`` for
``--model``, the generator kind or the folder name for baselines). Each example is the
centre ``image_size`` crop at native resolution. Writes ``metrics.md`` and ``metrics.csv``
(L1, L2, PSNR, SSIM, NDVI/NDWI/EVI MAE) and, with ``--figures N``, ``figures_<model>.png`` of
the first N examples.

Protocols (``--protocol``):

- ``nirgan`` (default), the original's results table: metrics on the centre 240 px of each
  prediction; SSIM with an 11 px Gaussian window (sigma 1.5) over the reflect-padded
  ('same') map, as ``kornia.metrics.ssim``; PSNR with max 1; L1; L2; the MAE of NDVI, NDWI and
  EVI. Needs ``--image_size`` >= 240.
- ``nirgan_jax``, as training's evaluation: metrics on the whole centre ``image_size`` crop;
  SSIM with a ``--ssim_window`` px window (default 11) where it fits in the image ('valid'
  filtering, as dm-pix).

In both, PSNR is capped at 100 dB, EVI is counted where its denominator stays >= 0.5
(``nirgan_jax.indices``), and a batch's ``valid`` mask, when the dataset has one, restricts
every metric to real pixels.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import io
from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from nirgan_jax import contract, errors, indices, metrics, paths
from nirgan_jax.data import pipeline as input_pipeline
from nirgan_jax.infer import figures, outputs
from nirgan_jax.infer.model import Model, load_model

METRIC_COLUMNS = ("l1", "l2", "psnr", "ssim", "ndvi_mae", "ndwi_mae", "evi_mae",
                  "vegetation_iou")
OVERALL = "all"
PROTOCOLS = ("nirgan", "nirgan_jax")
NIRGAN_CROP_PX = 240
NIRGAN_SSIM_WINDOW = 11


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How predictions are scored: the centre crop the metrics see (None: all of the
  prediction) and the SSIM window and padding (``metrics.ssim_map``)."""

  name: str
  crop_px: int | None
  ssim_window: int
  ssim_padding: str

  def describe(self, image_size: int) -> str:
    if self.crop_px is None:
      where = f"centre {image_size} px crops"
    else:
      where = f"centre {self.crop_px} px of predictions on centre {image_size} px crops"
    padding = ("reflect-padded 'same' map, as kornia" if self.ssim_padding == "same"
               else "'valid' filtering, as dm-pix")
    return (f"protocol {self.name}: {where}; SSIM window {self.ssim_window} (Gaussian sigma "
            f"1.5, {padding}); PSNR max 1, capped at {metrics.PSNR_MAX_DB:.0f} dB; L1; L2; "
            f"NDVI/NDWI/EVI MAE (EVI where its denominator stays >= "
            f"{indices.EVI_MIN_DENOMINATOR})")


def make_protocol(name: str = "nirgan", ssim_window: int | None = None) -> Protocol:
  if name == "nirgan":
    if ssim_window not in (None, NIRGAN_SSIM_WINDOW):
      raise errors.UsageError(f"--protocol nirgan uses the original's SSIM window "
                              f"{NIRGAN_SSIM_WINDOW}; for --ssim_window {ssim_window} pass "
                              f"--protocol nirgan_jax")
    return Protocol(name, NIRGAN_CROP_PX, NIRGAN_SSIM_WINDOW, "same")
  if name == "nirgan_jax":
    return Protocol(name, None, ssim_window or NIRGAN_SSIM_WINDOW, "valid")
  raise errors.UsageError(f"--protocol must be one of {PROTOCOLS}, got {name!r}")


def centre_crop(images: np.ndarray | None, size: int | None) -> np.ndarray | None:
  """The centre ``size`` x ``size`` of (B, H, W, C) images (top-left of centre when odd)."""
  if images is None or size is None:
    return images
  top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
  return images[:, top:top + size, left:left + size]


def parse_named(spec: str, default_name: str | None = None) -> tuple[str, str]:
  """``NAME=PATH`` or ``PATH``."""
  name, sep, path = spec.partition("=")
  if sep:
    return name, path
  return default_name or "", spec


def load_named_models(model: str, baselines: Sequence[str]) -> dict[str, Model]:
  models = {}
  for spec, default in [(model, "nirgan")] + [(b, None) for b in baselines]:
    name, path = parse_named(spec, default)
    loaded = load_model(path)
    if not name:
      kind = loaded.config.model.generator.get("kind", "resnet")
      name = kind if kind != "resnet" else paths.as_path(path).name
    if name in models:
      raise errors.UsageError(f"two models are named {name!r}: name them with NAME=PATH")
    models[name] = loaded
  return models


@functools.cache
def _metric_fn(ssim_window: int, ssim_padding: str):
  return jax.jit(functools.partial(metrics.image_metrics, ssim_window=ssim_window,
                                   ssim_padding=ssim_padding))


def score(rgb: np.ndarray, pred: np.ndarray, nir: np.ndarray, valid: np.ndarray | None,
          protocol: Protocol) -> dict[str, np.ndarray]:
  """Per-example metrics (and their ``weight/<metric>``) of a batch under ``protocol``."""
  rgb, pred, nir, valid = (centre_crop(x, protocol.crop_px) for x in (rgb, pred, nir, valid))
  return jax.device_get(_metric_fn(protocol.ssim_window, protocol.ssim_padding)(
      rgb, pred, nir, valid=valid))


def evaluate_models(models: dict[str, Model], dataset, batch_size: int,
                    protocol: Protocol | None = None, num_figures: int = 0,
                    progress: bool = True
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict]:
  """One pass over ``dataset`` with every model, scored by ``protocol`` (default nirgan).

  Returns (means per model: {"l1": ..., "l1/naip": ...}, example counts per group, and the
  first ``num_figures`` examples: {"rgb", "nir", "pred": {model: ...}}).
  """
  protocol = protocol or make_protocol()
  means = {name: metrics.GroupedMeans(contract.SENSORS) for name in models}
  samples = {"rgb": [], "nir": [], "pred": {name: [] for name in models}}
  n_batches = -(-len(dataset) // batch_size)
  for batch in tqdm(input_pipeline.eval_batches(dataset, batch_size), total=n_batches,
                    desc="evaluate", unit="batch", disable=not progress):
    keep = min(batch_size, num_figures - len(samples["rgb"]))
    keep = int(min(keep, batch["mask"].sum())) if keep > 0 else 0
    if keep:
      samples["rgb"] += list(batch["rgb"][:keep])
      samples["nir"] += list(batch["nir"][:keep])
    for name, model in models.items():
      lonlat = batch["lonlat"] if model.uses_location else None
      pred = model(batch["rgb"], lonlat)
      values = score(batch["rgb"], pred, batch["nir"], batch.get("valid"), protocol)
      means[name].add(values, batch["mask"], batch["sensor_id"])
      if keep:
        samples["pred"][name] += list(pred[:keep])
  counts = {}
  for key, count in next(iter(means.values())).counts.items():
    if key.startswith("l1"):
      counts[OVERALL if key == "l1" else key.split("/", 1)[1]] = int(count)
  return {name: m.result() for name, m in means.items()}, counts, samples


def table_rows(results: dict[str, dict[str, float]], counts: dict[str, int]) -> list[dict]:
  """One row per (model, group), overall first, then the sensors present. A metric that
  counted no pixel of a group (EVI on snow alone) is NaN."""
  groups = [OVERALL] + [s for s in contract.SENSORS if s in counts]
  rows = []
  for group in groups:
    for name, values in results.items():
      suffix = "" if group == OVERALL else f"/{group}"
      rows.append({"model": name, "sensor": group, "examples": counts[group],
                   **{m: values.get(m + suffix, float("nan")) for m in METRIC_COLUMNS}})
  return rows


def _cell(metric: str, value: float) -> str:
  if np.isnan(value):
    return "n/a"
  return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def markdown_table(rows: list[dict]) -> str:
  header = ["model", "sensor", "examples", *METRIC_COLUMNS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    cells = [row["model"], row["sensor"], str(row["examples"])]
    cells += [_cell(m, row[m]) for m in METRIC_COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=["model", "sensor", "examples", *METRIC_COLUMNS])
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m nirgan_jax.evaluate",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="[NAME=]model directory or .ckpt")
  parser.add_argument("--baselines", nargs="*", default=[], help="[NAME=]model directories")
  parser.add_argument("--dataset", required=True, help='TFDS "<dataset>/<config>"')
  parser.add_argument("--data_dir", required=True, help="TFDS data directory")
  parser.add_argument("--split", default="test", help="split (TFDS syntax, e.g. test, "
                                                      "validation+test)")
  parser.add_argument("--protocol", default="nirgan", choices=PROTOCOLS,
                      help="nirgan: the original's table (centre 240 px, kornia SSIM); "
                           "nirgan_jax: training's evaluation (whole crop, dm-pix SSIM)")
  parser.add_argument("--image_size", type=int, default=256, help="centre crop, px")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--ssim_window", type=int, default=None,
                      help="SSIM window of --protocol nirgan_jax (default 11)")
  parser.add_argument("--figures", type=int, default=0, help="examples to draw per model")
  parser.add_argument("--out", default="evaluation", help="folder for the table and figures")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace the metrics and figures of an earlier evaluation in --out")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.image_size % 4 or args.image_size <= 0:
    raise errors.UsageError(
        f"--image_size must be a positive multiple of 4, got {args.image_size}")
  if args.batch_size <= 0 or args.figures < 0:
    raise errors.UsageError(f"--batch_size must be > 0 and --figures >= 0, got "
                            f"{args.batch_size} and {args.figures}")
  out = paths.as_path(args.out)
  for name in ("metrics.md", "metrics.csv"):
    outputs.check_new(out / name, args.overwrite)
    outputs.check_writable(out / name)
  protocol = make_protocol(args.protocol, args.ssim_window)
  if protocol.crop_px is not None and args.image_size < protocol.crop_px:
    raise errors.UsageError(f"--protocol {protocol.name} scores the centre {protocol.crop_px} "
                            f"px: --image_size must be at least that, got {args.image_size}")
  if args.image_size < protocol.ssim_window:
    raise errors.UsageError(f"--image_size {args.image_size} is smaller than the SSIM window "
                            f"{protocol.ssim_window}")
  models = load_named_models(args.model, args.baselines)
  spec = input_pipeline.SourceSpec(name=args.dataset, data_dir=str(paths.as_path(args.data_dir)),
                                   split=args.split, native_gsd_m=0.0)
  dataset = input_pipeline.eval_dataset([spec], args.image_size)
  results, counts, samples = evaluate_models(models, dataset, args.batch_size, protocol,
                                             args.figures, progress=not args.quiet)
  rows = table_rows(results, counts)
  table = markdown_table(rows)
  title = f"# {args.dataset} ({args.split})\n\n{protocol.describe(args.image_size)}"
  outputs.write_bytes_atomic(out / "metrics.md", f"{title}\n\n{table}".encode())
  outputs.write_bytes_atomic(out / "metrics.csv", csv_table(rows).encode())
  if samples["rgb"]:
    rgb, nir = np.stack(samples["rgb"]), np.stack(samples["nir"])
    for name, preds in samples["pred"].items():
      fig = figures.comparison_figure(rgb, nir, np.stack(preds))
      fig.suptitle(f"{name}: {args.dataset} ({args.split})", fontsize=9)
      image = io.BytesIO()
      fig.savefig(image, format="png", dpi=120)
      figures.plt.close(fig)
      outputs.write_bytes_atomic(out / f"figures_{name}.png", image.getvalue())
  print(protocol.describe(args.image_size))
  print(table, end="")
  print(f"wrote {out / 'metrics.md'} and {out / 'metrics.csv'}")
  return 0


if __name__ == "__main__":
  errors.run(main)
