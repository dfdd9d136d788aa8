"""How a recipe generalises on real Sentinel-2 imagery: NIR-GAN against the baselines on
patches and areas never seen in training.

    python benchmarks/real_s2.py [--data tests/data/s2_100k_10] [--out benchmarks/results/real_s2]
        [--holdout patch_25630,patch_502692,patch_526850] [--models gan,linear,mlp,cnn]
        [--protocols patch,block] [--steps_scale 1.0] [--jobs 2] [--workdir DIR]

``--data`` is a folder in the S2-100K layout (``index.csv``, ``images/patch_*.tif``). Each
model is trained with ``configs/s2_small.py`` (its variant for the baselines) through the
real training loop, from an in-memory source of the stored patches, then predicts whole
patches with tiled inference. Two protocols:

- ``patch``: the ``--holdout`` patches are never seen in training (by default snow and ice,
  dense vegetation and red soils); the others train.
- ``block``: the bottom-right quarter of every patch is held out; the other three quarters
  train, as 128 px patches. The prediction sees the whole patch's RGB.

Scores are MAE, NDVI MAE and SSIM (window 11, 'same' padding) over the held-out pixels, the
mean over held-out regions. ``oracle linear`` is a least-squares fit of NIR on RGB made on
the held-out pixels themselves: the best any per-pixel linear map could do there. A model
that keeps a moving average of its generator's weights (the GAN) is scored with it, and the
same run's weights as trained are scored too (``gan, weights as trained``). Prints one JSON
line; writes ``<out>/real_s2.md`` (the tables) and ``<out>/real_s2.png`` (held-out patches,
the GAN beside the best baseline).

The protocols train at once in ``--jobs`` processes, each on its own share of the CPU
cores (``--jobs 1``: in turn, in one, on all of them); within a protocol the models train
one after another. ``--workdir`` keeps the runs: a finished run found there is scored again
without training.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import jax
import ml_collections
import numpy as np
import rasterio
from absl import flags, logging

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: configs/ and data_prep/ live beside it
  sys.path.insert(0, str(REPO))
from benchmarks import common
from configs import s2_small
from data_prep import contract
from data_prep.s2_100k import L2A_BANDS, S2_NODATA
from nirgan_jax import metrics
from nirgan_jax.data import pipeline
from nirgan_jax.infer import figures, tiled
from nirgan_jax.infer.model import Model
from nirgan_jax.models import config as model_config
from nirgan_jax.train import checkpointing, loop, summaries

MODELS = ("gan", "linear", "mlp", "cnn")
AS_TRAINED = ", weights as trained"  # a model's row scored without its weight average
PROTOCOLS = ("patch", "block")
DEFAULT_HOLDOUT = ("patch_25630", "patch_502692", "patch_526850")
SSIM_WINDOW = 11
REPORTED = {"l1": "MAE", "ndvi_mae": "NDVI MAE", "ssim": "SSIM"}


@dataclasses.dataclass(frozen=True)
class Patch:
  name: str
  dn: np.ndarray  # (H, W, 4) uint16 R, G, B, NIR as stored: reflectance x 10,000
  valid: np.ndarray  # (H, W) bool
  lon: float
  lat: float

  @property
  def reflectance(self) -> np.ndarray:
    return self.dn.astype(np.float32) / np.float32(contract.REFLECTANCE_SCALE)


@dataclasses.dataclass(frozen=True)
class Split:
  """Training patches, and held-out regions: (patch, rows, cols) scored on its pixels."""

  train: list[Patch]
  heldout: list[tuple[Patch, slice, slice]]


def read_patches(folder: Path) -> list[Patch]:
  patches = []
  with (folder / "index.csv").open(newline="") as f:
    for row in csv.DictReader(f):
      with rasterio.open(folder / "images" / Path(row["fn"]).name) as src:
        dn = src.read(L2A_BANDS.indexes)
      patches.append(Patch(Path(row["fn"]).stem, np.moveaxis(dn, 0, -1),
                           (dn != S2_NODATA).any(axis=0), float(row["lon"]), float(row["lat"])))
  return patches


def patch_split(patches: list[Patch], holdout: tuple[str, ...]) -> Split:
  names = {p.name for p in patches}
  if missing := set(holdout) - names:
    raise SystemExit(f"--holdout {sorted(missing)}: not in the data ({sorted(names)})")
  full = (slice(None), slice(None))
  return Split([p for p in patches if p.name not in holdout],
               [(p, *full) for p in patches if p.name in holdout])


def block_split(patches: list[Patch]) -> Split:
  """The bottom-right quarter of each patch held out; the other three train."""
  train, heldout = [], []
  for p in patches:
    h, w = p.dn.shape[0] // 2, p.dn.shape[1] // 2
    for i, (rows, cols) in enumerate([(slice(0, h), slice(0, w)), (slice(0, h), slice(w, None)),
                                      (slice(h, None), slice(0, w))]):
      train.append(dataclasses.replace(p, name=f"{p.name}_q{i}", dn=p.dn[rows, cols],
                                       valid=p.valid[rows, cols]))
    heldout.append((p, slice(h, None), slice(w, None)))
  return Split(train, heldout)


def stored_example(p: Patch) -> dict:
  """A patch in the data contract's stored form, as ``data_prep`` writes it."""
  return {"rgb": p.dn[..., :3], "nir": p.dn[..., 3:], contract.VALID: p.valid[..., None].astype(
      np.uint8), "lon": p.lon, "lat": p.lat, "gsd_m": np.float32(10.0), "sensor": "sentinel2",
          "source_id": p.name, "date": ""}


def run_config(model: str, source: str, steps_scale: float) -> ml_collections.ConfigDict:
  config = s2_small.get_config(model)
  config.data.sources.sentinel2.name = source
  config.data.build_missing = False
  steps = max(2, round(config.train.num_train_steps * steps_scale))
  # One evaluation (on training patches: an in-memory source has no other split) and one
  # checkpoint, at the end; the held-out regions are scored here, by tiled prediction.
  config.train.update(num_train_steps=steps, eval_every=steps, image_every=0,
                      log_every=min(config.train.log_every, steps))
  return config


def train_and_predict(config: ml_collections.ConfigDict, split: Split, workdir: Path
                      ) -> list[np.ndarray]:
  """Trains ``config`` in ``workdir`` and returns ``predict_heldout`` of its last step."""
  loop.train_and_evaluate(config, str(workdir), writer=summaries.LoggingWriter())
  return predict_heldout(config, split, workdir)


def predict_heldout(config: ml_collections.ConfigDict, split: Split, workdir: Path,
                    average: bool = True) -> list[np.ndarray]:
  """Predicts every held-out patch whole with the last step of the run in ``workdir`` (tiled,
  as ``predict`` does; its generator's weight average if it kept one and ``average``) and
  returns the predictions of the held-out regions."""
  params, _, step = checkpointing.restore_weights(workdir, "latest", average)
  model = Model(model_config.model_sections(config), {"generator": params["generator"]},
                f"{workdir} step {step}")
  out = []
  for patch, rows, cols in split.heldout:
    source = tiled.ArraySource(patch.reflectance[..., :3], patch.valid, (patch.lon, patch.lat))
    out.append(tiled.predict_image(model, source)[rows, cols])
  return out


def oracle_linear(split: Split) -> list[np.ndarray]:
  """Least-squares NIR = w . RGB + b over all held-out pixels."""
  regions = [(p.reflectance[rows, cols], p.valid[rows, cols]) for p, rows, cols in split.heldout]
  design = lambda r: np.concatenate([r[..., :3], np.ones_like(r[..., :1])], axis=-1)
  x = np.concatenate([design(r)[v] for r, v in regions])
  y = np.concatenate([r[..., 3][v] for r, v in regions])
  w = np.linalg.lstsq(x, y, rcond=None)[0]
  return [design(r) @ w for r, _ in regions]


def heldout_truth(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  regions = [p.reflectance[rows, cols] for p, rows, cols in split.heldout]
  valid = np.stack([p.valid[rows, cols] for p, rows, cols in split.heldout])[..., None]
  rgbn = np.stack(regions)
  return rgbn[..., :3], rgbn[..., 3:], valid


def score(split: Split, predictions: list[np.ndarray]) -> dict:
  """The mean over held-out regions of each reported metric, and each region's."""
  rgb, nir, valid = heldout_truth(split)
  pred = np.nan_to_num(np.stack(predictions))[..., None].astype(np.float32)
  per_region = jax.device_get(metrics.image_metrics(rgb, pred, nir, SSIM_WINDOW, valid,
                                                    ssim_padding="same"))
  names = [p.name for p, _, _ in split.heldout]
  return {key: {"mean": round(float(np.mean(per_region[key])), 4),
                **{n: round(float(v), 4) for n, v in zip(names, per_region[key], strict=True)}}
          for key in REPORTED}


def markdown(results: dict, split_notes: dict[str, str]) -> str:
  lines = []
  for protocol, by_model in results.items():
    lines += [f"**{protocol}**: {split_notes[protocol]}", "",
              "| model | " + " | ".join(REPORTED.values()) + " |",
              "|---|" + "---|" * len(REPORTED)]
    for model, scores in by_model.items():
      cells = [f"{scores[k]['mean']:.3f}" for k in REPORTED]
      lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def goal(results: dict) -> dict:
  """Patch hold-out: the GAN's gain over the linear baseline (positive: lower error)."""
  scores = results.get("patch", {})
  if not {"gan", "linear"} <= scores.keys():
    return {}
  gan, linear = scores["gan"], scores["linear"]
  gain = lambda k: round(1 - gan[k]["mean"] / linear[k]["mean"], 4)
  return {"mae_gain_vs_linear": gain("l1"), "ndvi_mae_gain_vs_linear": gain("ndvi_mae"),
          "ssim_minus_linear": round(gan["ssim"]["mean"] - linear["ssim"]["mean"], 4)}


def save_figure(split: Split, predictions: dict[str, list[np.ndarray]], path: Path) -> None:
  rgb, nir, _ = heldout_truth(split)
  preds = {name: np.stack(p) for name, p in predictions.items()}
  fig = figures.comparison_figure(rgb, nir, preds, titles=[p.name for p, _, _ in split.heldout],
                                  index_names=("ndvi",))
  fig.savefig(path, dpi=80)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", type=Path, default=REPO / "tests" / "data" / "s2_100k_10")
  parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "real_s2")
  parser.add_argument("--holdout", default=",".join(DEFAULT_HOLDOUT),
                      help="patches of the patch hold-out (file stems)")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--protocols", default=",".join(PROTOCOLS))
  parser.add_argument("--steps_scale", type=float, default=1.0,
                      help="multiplies every config's num_train_steps (smoke tests)")
  parser.add_argument("--workdir", type=Path, default=None,
                      help="where runs are trained (default: a temporary folder)")
  parser.add_argument("--jobs", type=int, default=2,
                      help="protocols trained at once, each in its own process (1: in turn)")
  args = parser.parse_args(argv)
  args.models = [m for m in args.models.split(",") if m]
  args.protocols = [p for p in args.protocols.split(",") if p]
  args.holdout = tuple(h for h in args.holdout.split(",") if h)
  for name, given, known in (("--models", args.models, MODELS),
                             ("--protocols", args.protocols, PROTOCOLS)):
    if not given or set(given) - set(known):
      parser.error(f"{name} takes names from {known}, got {given}")
  if args.jobs < 1:
    parser.error(f"--jobs must be at least 1, got {args.jobs}")
  if not (args.data / "index.csv").is_file():
    parser.error(f"--data {args.data}: no index.csv (expected the S2-100K layout)")
  return args


@dataclasses.dataclass
class ProtocolOutcome:
  results: dict  # model -> scores
  predictions: dict[str, list[np.ndarray]]  # model -> held-out regions
  seconds: dict[str, float]  # model -> training and prediction time
  cores: list[int]  # the CPU cores it trained on


def splits_of(args: argparse.Namespace) -> dict[str, Split]:
  patches = read_patches(args.data)
  return {"patch": patch_split(patches, args.holdout), "block": block_split(patches)}


def run_protocol(args: argparse.Namespace, protocol: str, workdir: Path,
                 cores: set[int] | None = None) -> ProtocolOutcome:
  """Trains and scores every model of ``args.models`` under ``protocol``, one after another,
  on ``cores`` (default: those this process has). XLA sizes its thread pool by the cores a
  process may use when it first runs, so they are set before anything runs on JAX."""
  if cores is not None:
    os.sched_setaffinity(0, cores)
  split = splits_of(args)[protocol]
  source = pipeline.InMemorySource([stored_example(p) for p in split.train]).register(
      f"real_s2_{protocol}")
  outcome = ProtocolOutcome({}, {}, {}, sorted(os.sched_getaffinity(0)))
  for model in args.models:
    print(f"[real_s2] {protocol} hold-out: training {model}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    config = run_config(model, source, args.steps_scale)
    outcome.predictions[model] = train_and_predict(config, split, workdir / model)
    outcome.seconds[model] = round(time.perf_counter() - start, 1)
    outcome.results[model] = score(split, outcome.predictions[model])
    if config.optim.ema_decay > 0:  # what the average changes, on the very same run
      outcome.results[model + AS_TRAINED] = score(
          split, predict_heldout(config, split, workdir / model, average=False))
  outcome.results["oracle linear"] = score(split, oracle_linear(split))
  return outcome


def _set_up_process() -> None:
  flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags
  logging.set_verbosity(logging.INFO)  # the training loop's progress and metrics


def _set_up_job(parent: int) -> None:
  """A job process ends with the benchmark's: killed (by a timeout, say), it would otherwise
  leave its jobs training for nothing."""
  _set_up_process()

  def exit_with_parent():
    while os.getppid() == parent:
      time.sleep(2)
    os._exit(1)

  threading.Thread(target=exit_with_parent, daemon=True).start()


def job_count(args: argparse.Namespace) -> int:
  return min(args.jobs, len(args.protocols))


def core_groups(jobs: int) -> list[set[int]]:
  """The cores of this process in ``jobs`` disjoint sets, one per job (every core to each
  job when there are fewer cores than jobs)."""
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < jobs:
    return [set(cores)] * jobs
  return [set(cores[i::jobs]) for i in range(jobs)]


def run_protocols(args: argparse.Namespace, workdir: Path) -> dict[str, ProtocolOutcome]:
  """One protocol per job process, each on its own cores. On a few CPU cores two trainings
  at once keep the cores busier than one: a single small training leaves them partly idle
  between its many ops. Two trainings sharing all cores spend the gain on their threads
  contending: two GAN steps of configs/s2_small.py at once, 1.08 s each shared against 0.97
  s each on a core of its own (2 cores, idle)."""
  # The steps' large temporary buffers are mmap-ed and faulted in afresh on every step; with
  # glibc's malloc on transparent huge pages that costs 512x fewer page faults (a GAN step of
  # configs/s2_small.py: 0.51 s -> 0.41 s on 2 cores). Read at process start, so it is set
  # here for the job processes, which inherit it.
  os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  spawn = multiprocessing.get_context("spawn")  # a fresh JAX runtime in each job
  jobs = job_count(args)
  with futures.ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_set_up_job,
                                  initargs=(os.getpid(),)) as pool:
    groups = core_groups(jobs)
    running = {p: pool.submit(run_protocol, args, p, workdir / p, groups[i % jobs])
               for i, p in enumerate(args.protocols)}
    return {p: job.result() for p, job in running.items()}


def run(args: argparse.Namespace, workdir: Path) -> dict:
  start = time.perf_counter()
  splits = splits_of(args)
  n_patches = len(splits["block"].heldout)
  notes = {"patch": f"{len(args.holdout)} patches never seen in training "
                    f"({', '.join(args.holdout)}); {n_patches - len(args.holdout)} train",
           "block": f"the bottom-right quarter of each of {n_patches} patches held out"}
  outcomes = run_protocols(args, workdir)
  results = {p: outcome.results for p, outcome in outcomes.items()}
  seconds = {f"{p}/{m}": s for p, outcome in outcomes.items() for m, s in outcome.seconds.items()}
  cores = {p: outcome.cores for p, outcome in outcomes.items()}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "real_s2.md").write_text(markdown(results, notes))
  figure_predictions = outcomes["patch"].predictions if "patch" in outcomes else {}
  if {"gan"} < figure_predictions.keys():
    baselines = [m for m in figure_predictions if m != "gan"]
    best = min(baselines, key=lambda m: results["patch"][m]["l1"]["mean"])
    save_figure(splits["patch"], {"GAN": figure_predictions["gan"], best: figure_predictions[best]},
                args.out / "real_s2.png")
  return {"benchmark": "real_s2", "data": str(args.data), **common.environment(),
          "jobs": job_count(args), "cores": cores, "results": results,
          "goal": goal(results), "train_s": seconds,
          "wall_s": round(time.perf_counter() - start, 1)}


def main(argv=None) -> None:
  args = parse_args(argv)
  _set_up_process()
  if args.workdir is not None:
    print(json.dumps(run(args, args.workdir)))
    return
  with tempfile.TemporaryDirectory(prefix="real_s2_") as workdir:
    print(json.dumps(run(args, Path(workdir))))


if __name__ == "__main__":
  main()
