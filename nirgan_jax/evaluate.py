"""Evaluates NIR-GAN and baselines on a built dataset: a metrics table overall and per sensor.

    python -m nirgan_jax.evaluate --model models/nirgan [--baselines models/linear models/cnn]
        --dataset s2_100k/default --data_dir ~/tensorflow_datasets [--split test]
        [--protocol centre240_same11] [--image_size 256] [--batch_size 8] [--figures 4]
        [--out DIR]

Models are model directories (``nirgan_jax.export``, ``nirgan_jax.import_torch``) or original
NIR-GAN ``.ckpt`` files; ``NAME=PATH`` names one in the table (default: ``nirgan`` for
``--model``, the generator kind or the folder name for baselines). Each example is the
centre ``image_size`` crop at native resolution, read through the training input pipeline
(this tool, unlike those of ``nirgan_jax.infer``, needs Grain and TFDS). Writes ``metrics.md``
and ``metrics.csv`` (L1, L2, PSNR, SSIM, NDVI/NDWI/EVI MAE, vegetation IoU) and, with
``--figures N``, ``figures_<model>.png`` of the first N examples.

``--protocol`` (``nirgan_jax.evaluation``) names what the metrics see and the SSIM window and
padding: ``centre240_same11`` (default) is the original NIR-GAN's results table (the centre
240 px of each prediction, an 11 px SSIM window over the reflect-padded map, as
``kornia.metrics.ssim``); ``whole_valid11`` is the training loop's (every pixel, SSIM where
its window fits, as dm-pix; ``whole_valid7`` with a 7 px window, and so on). A batch's
``valid`` mask, when the dataset has one, restricts every metric to real pixels.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from nirgan_jax import contract, errors, evaluation, metrics, paths
from nirgan_jax.data import pipeline as input_pipeline
from nirgan_jax.infer import figures, outputs
from nirgan_jax.infer.model import Model, load_model
from nirgan_jax.models.generator import SIZE_MULTIPLE

METRIC_COLUMNS = ("l1", "l2", "psnr", "ssim", "ndvi_mae", "ndwi_mae", "evi_mae",
                  "vegetation_iou")
OVERALL = "all"
DEFAULT_PROTOCOL = evaluation.ORIGINAL.name  # centre240_same11


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
def _scores_fn(protocol: evaluation.Protocol):
  return jax.jit(protocol.scores)


def score(rgb: np.ndarray, pred: np.ndarray, nir: np.ndarray, valid: np.ndarray | None,
          protocol: evaluation.Protocol) -> dict[str, np.ndarray]:
  """Per-example metrics (and their ``weight/<metric>``) of a batch under ``protocol``."""
  return evaluation.per_example(jax.device_get(_scores_fn(protocol)(rgb, pred, nir, valid)))


def evaluate_models(models: dict[str, Model], dataset, batch_size: int,
                    protocol: evaluation.Protocol = evaluation.ORIGINAL, num_figures: int = 0,
                    progress: bool = True
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict]:
  """One pass over ``dataset`` with every model, scored by ``protocol``.

  Returns (means per model: {"l1": ..., "l1/naip": ...}, example counts per group, and the
  first ``num_figures`` examples: {"rgb", "nir", "pred": {model: ...}}).
  """
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
  parser.add_argument("--protocol", default=DEFAULT_PROTOCOL,
                      help="centre240_same11: the original's table (centre 240 px, kornia "
                           "SSIM); whole_valid11: the training loop's (whole crop, dm-pix SSIM)")
  parser.add_argument("--image_size", type=int, default=256, help="centre crop, px")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--figures", type=int, default=0, help="examples to draw per model")
  parser.add_argument("--out", default="evaluation", help="folder for the table and figures")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace the metrics and figures of an earlier evaluation in --out")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.image_size % SIZE_MULTIPLE or args.image_size <= 0:
    raise errors.UsageError(f"--image_size must be a positive multiple of {SIZE_MULTIPLE}, "
                            f"got {args.image_size}")
  if args.batch_size <= 0 or args.figures < 0:
    raise errors.UsageError(f"--batch_size must be > 0 and --figures >= 0, got "
                            f"{args.batch_size} and {args.figures}")
  out = paths.as_path(args.out)
  for name in ("metrics.md", "metrics.csv"):
    outputs.check_new(out / name, args.overwrite)
    outputs.check_writable(out / name)
  protocol = evaluation.protocol_named(args.protocol)
  if args.image_size < protocol.min_size():
    raise errors.UsageError(f"--protocol {protocol.name} needs images of at least "
                            f"{protocol.min_size()} px: --image_size {args.image_size} is "
                            "smaller")
  models = load_named_models(args.model, args.baselines)
  spec = input_pipeline.SourceSpec(name=args.dataset, data_dir=str(paths.as_path(args.data_dir)),
                                   split=args.split, native_gsd_m=0.0)
  dataset = input_pipeline.eval_dataset([spec], args.image_size)
  results, counts, samples = evaluate_models(models, dataset, args.batch_size, protocol,
                                             args.figures, progress=not args.quiet)
  rows = table_rows(results, counts)
  table = markdown_table(rows)
  title = (f"# {args.dataset} ({args.split})\n\ncentre {args.image_size} px crops; "
           f"{protocol.describe()}")
  files = {out / "metrics.md": f"{title}\n\n{table}".encode(),
           out / "metrics.csv": csv_table(rows).encode()}
  if samples["rgb"]:
    rgb, nir = np.stack(samples["rgb"]), np.stack(samples["nir"])
    for name, preds in samples["pred"].items():
      fig = figures.comparison_figure(rgb, nir, np.stack(preds))
      fig.suptitle(f"{name}: {args.dataset} ({args.split})", fontsize=9)
      image = io.BytesIO()
      fig.savefig(image, format="png", dpi=120)
      figures.plt.close(fig)
      files[out / f"figures_{name}.png"] = image.getvalue()
  outputs.write_files_atomic(files)
  print(f"centre {args.image_size} px crops; {protocol.describe()}")
  print(table, end="")
  print(f"wrote {out / 'metrics.md'} and {out / 'metrics.csv'}")
  return 0


if __name__ == "__main__":
  errors.run(main)
