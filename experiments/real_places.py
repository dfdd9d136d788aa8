"""How the real-imagery recipe does on places it never saw: leave-places-out cross-validation
over every vendored real Sentinel-2 place, the GAN beside its baselines on the same pixels.

    python -m experiments.real_places [--out experiments/results/real_places]
        [--models gan,mlp,linear,cnn] [--seeds 0,1] [--folds 0,1,2,3,4] [--jobs 2]
        [--steps_scale 1.0] [--gan_override KEY=VALUE ...]

The 27 places (``PLACES``: the ten S2-100K patches of ``tests/data/s2_100k_10`` and the 17
places of ``tests/data/s2_more``; the dates and levels of one place, and places a few tens of
kilometres apart, stay together) are split into the five folds of ``FOLDS``, fixed here
before any run. For each fold, model and seed, ``configs/s2_real.py`` (its variant for the
baselines) trains through the real training loop on the places of the other folds, read
from the ``data_prep`` builds of the two folders, then predicts every image of the fold's
places whole with tiled inference.

Every model is scored on the same pixels: valid under the builders' nodata rule, 8 px
from an image's edge (``evaluation`` protocol ``border8_same11``). Scores are pooled over the
pixels of a fold: MAE of NIR, NDVI MAE (from the prediction clipped to reflectance [0, 1]),
SSIM (window 11, 'same' padding) and the Jaccard index of the vegetation masks NDVI > 0.3
from predicted against true NIR. The
table gives each model's mean over folds (each fold first averaged over seeds) with the
standard deviation and range over folds, and every fold. ``linear fit on the test pixels``
is a least-squares map of RGB to NIR fitted on a fold's held-out pixels themselves: it says
how much of NIR a per-pixel linear map could explain there, and no model could train it.

Results are appended to ``<out>/results.jsonl`` as each run ends; a new invocation skips the
runs found there, so a stop loses at most the runs in progress. ``<out>/runs/`` keeps each
run's workdir with the places it held out (``split.json``): a workdir is never reused for
another split. ``--gan_override`` measures a candidate recipe: config overrides of the GAN
(``model.generator.correction_gate=True``), recorded as a model of its own
(``gan[model.generator.correction_gate=True]``) beside the others. Writes
``<out>/real_places.md`` and prints one JSON line of the summary.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging

from configs import s2_real
from data_prep import build, patch_builder, raster, rgbn_geotiff
from data_prep.s2_100k import L2A_BANDS, S2_NODATA
from nirgan_jax import contract, errors, evaluation, metrics
from nirgan_jax.data import pipeline
from nirgan_jax.infer import tiled
from nirgan_jax.infer.model import Model
from nirgan_jax.models import config as model_config
from nirgan_jax.train import checkpointing, loop, summaries

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
S2_100K = TEST_DATA / "s2_100k_10"
S2_MORE = TEST_DATA / "s2_more"
MODELS = ("linear", "mlp", "gan", "cnn")  # the order runs are started in: cheapest first
BORDER = 8  # px left out at every image edge
# Whole images predicted, scored but for a border, SSIM over the reflect-padded map.
PROTOCOL = evaluation.Protocol(metrics.SSIM_WINDOW, "same", border_px=BORDER)
BASE_SEED = 42  # configs/multiscale.py's; seed s trains with BASE_SEED + s
AS_TRAINED = ", weights as trained"  # a GAN's row without its weight average
ORACLE = "linear fit on the test pixels"
SCORES = {"mae": "MAE", "ndvi_mae": "NDVI MAE", "ssim": "SSIM", "vegetation_iou": "veg. IoU"}

# Place -> the files of its images (S2-100K: one patch each).
PLACES = {
    "arizona_desert": ("patch_33188.tif",),
    "ellesmere_arctic": ("patch_445.tif",),
    "nwt_boreal": ("patch_8845.tif",),
    "zambia_vegetation": ("patch_502692.tif",),
    "libya_desert": ("patch_70541.tif",),
    "greenland_ice": ("patch_25630.tif",),
    "mediterranean_water": ("patch_752389.tif",),
    "russia_cropland": ("patch_286743.tif",),
    "w_australia_red_soil": ("patch_526850.tif",),
    "japan_mixed": ("patch_511198.tif",),
    "s_brazil": ("terramind_l2a_282D_485L_3_3.tif",),
    "tanzania": ("terramind_l2a_38D_378R_2_3.tif",),
    "chile": ("terramind_l2a_433D_629L_3_1.tif",),
    "hudson_bay_snow": ("terramind_l2a_609U_541L_3_0.tif",),
    "denmark": ("terramind_l2a_637U_59R_1_3.tif",),
    "upper_austria_a": ("bigearthnet_S2A_MSIL2A_20170613T101031_87_48.tif",),
    "upper_austria_b": ("bigearthnet_S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP.tif",),
    "upper_austria_fields": ("ftw_austria_2dates.tif",),
    "ireland": ("bigearthnet_S2A_MSIL2A_20170617T113321_36_85.tif",
                "bigearthnet_S2A_MSIL2A_20170617T113321_4_55.tif"),
    "portugal": ("bigearthnet_S2A_MSIL2A_20171221T112501_56_35.tif",),
    "finland_karelia": ("bigearthnet_S2B_MSIL2A_20170924T93020_69_24.tif",
                        "bigearthnet_S2B_MSIL2A_20180204T94161_57_38.tif"),
    "romania_crops": ("eurosat_AnnualCrop_1.tif",),
    "bavaria_pasture": ("eurosat_Pasture_300.tif",),
    "finland_lake": ("eurosat_SeaLake_3000.tif",),
    "punjab": ("ssl4eo_s2a_0000200_20200604T054639_20200604T054831_T43RCP.tif",
               "ssl4eo_s2a_0000200_20200813T054639_20200813T054952_T43RCP.tif",
               "ssl4eo_s2c_0000200_20200604T054639_20200604T054831_T43RCP.tif",
               "ssl4eo_s2c_0000200_20200823T054639_20200823T055618_T43RCP.tif"),
    "bahia_a": ("fao_ssl4eo_000000_20180710T125311_20180710T125627_T24KVE.tif",),
    "espirito_santo_b": ("fao_ssl4eo_000001_20180302T125301_20180302T125304_T24KUF.tif",),
}
# Fixed before any run: surfaces spread over the folds (snow and ice, deserts, water,
# vegetation, cropland), the three Upper Austrian places (under 50 km apart) in one fold and
# the two Brazilian coastal places (70 km) in one.
FOLDS = (
    ("arizona_desert", "mediterranean_water", "upper_austria_a", "upper_austria_b",
     "upper_austria_fields", "romania_crops"),
    ("ellesmere_arctic", "libya_desert", "s_brazil", "ireland", "bahia_a", "espirito_santo_b"),
    ("nwt_boreal", "w_australia_red_soil", "tanzania", "denmark", "punjab"),
    ("greenland_ice", "russia_cropland", "chile", "portugal", "finland_lake"),
    ("zambia_vegetation", "japan_mixed", "hudson_bay_snow", "finland_karelia",
     "bavaria_pasture"),
)
PLACE_OF_FILE = {fn: place for place, files in PLACES.items() for fn in files}


@dataclasses.dataclass(frozen=True)
class Image:
  """A held-out image as the builders read it: reflectance quantised as stored."""

  place: str
  name: str
  reflectance: np.ndarray  # (H, W, 4) R, G, B, NIR
  valid: np.ndarray  # (H, W) bool: the builders' nodata rule
  lonlat: tuple[float, float]

  @property
  def scored(self) -> np.ndarray:
    """(H, W) bool: the pixels every model is scored on (``PROTOCOL``)."""
    mask = PROTOCOL.scored_pixels((1, *self.valid.shape), self.valid[None, ..., None])
    return np.asarray(mask)[0, ..., 0] > 0


def _read_image(place: str, name: str, path: Path, bands: list[int], scale: float,
                offset: float, nodata: float | None, default_nodata: float) -> Image:
  with raster.open_raster(path) as src:
    dn = raster.read_bands(src, bands)
    nodata = next(v for v in (nodata, src.nodata, default_nodata) if v is not None)
    lonlat = raster.raster_centre_lonlat(src)
  valid = ~raster.invalid_mask(dn, nodata)
  stored = contract.to_stored_reflectance((dn.astype(np.float64) - offset) / scale)
  reflectance = np.moveaxis(stored, 0, -1).astype(np.float32) / contract.REFLECTANCE_SCALE
  return Image(place, name, np.where(valid[..., None], reflectance, 0.0), valid, lonlat)


@functools.cache
def read_images() -> tuple[Image, ...]:
  """Every image of every place, whole (read once per process)."""
  images = []
  with (S2_100K / "index.csv").open(newline="") as f:
    for row in csv.DictReader(f):
      fn = Path(row["fn"]).name
      images.append(_read_image(PLACE_OF_FILE[fn], fn, S2_100K / "images" / fn,
                                L2A_BANDS.indexes, contract.REFLECTANCE_SCALE, 0.0, None,
                                S2_NODATA))
  _, rows = patch_builder.read_csv(S2_MORE / "index.csv")
  for row in rows:
    image = rgbn_geotiff.parse_row(S2_MORE, row)
    images.append(_read_image(PLACE_OF_FILE[image.path.name], image.name, image.path,
                              list(image.bands), image.scale, image.offset, image.nodata,
                              rgbn_geotiff.DEFAULT_NODATA))
  return tuple(images)


def check_places() -> None:
  """Every place in exactly one fold, every vendored file in exactly one place."""
  in_folds = [p for fold in FOLDS for p in fold]
  if sorted(in_folds) != sorted(PLACES):
    raise errors.NirganError(f"FOLDS and PLACES disagree: {sorted(set(in_folds) ^ set(PLACES))}")
  files = {p.name for p in (S2_100K / "images").glob("*.tif")}
  files |= {p.name for p in (S2_MORE / "images").glob("*.tif")}
  if files != set(PLACE_OF_FILE):
    raise errors.NirganError(f"vendored images without a place, or places without their "
                             f"images: {sorted(files ^ set(PLACE_OF_FILE))}")


# --- Training data: the builders' output, by place --------------------------------------

@functools.cache
def build_sources(data_dir: Path) -> dict[str, list[dict]]:
  """Builds (or reuses) both folders with ``data_prep`` and returns each config source's
  examples, every split, in the stored form (read once per process: a job process trains
  many runs)."""
  out = {}
  for key, dataset, folder in (("s2_100k", "s2_100k", S2_100K),
                               ("s2_more", "rgbn_geotiff", S2_MORE)):
    builder, _ = build.build(dataset, data_dir, manual_dir=folder)
    name = f"{builder.name}/{builder.builder_config.name}"
    examples = []
    for split in builder.info.splits:
      source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
      examples += [source[i] for i in range(len(source))]
    out[key] = examples
  return out


def place_of_example(example: dict) -> str:
  source_id = example["source_id"]
  source_id = source_id.decode() if isinstance(source_id, bytes) else str(source_id)
  return PLACE_OF_FILE[source_id.split("[")[0].rsplit(":", 1)[0]]


def training_examples(sources: dict[str, list[dict]], fold: int) -> dict[str, list[dict]]:
  held_out = set(FOLDS[fold])
  return {key: [ex for ex in examples if place_of_example(ex) not in held_out]
          for key, examples in sources.items()}


def split_record(sources: dict[str, list[dict]], fold: int) -> dict:
  """What a run's workdir was trained on: its held-out places and a digest of the ids of
  its training examples."""
  train = training_examples(sources, fold)
  ids = sorted(str(ex["source_id"]) for examples in train.values() for ex in examples)
  return {"fold": fold, "held_out": sorted(FOLDS[fold]),
          "training_examples": len(ids),
          "training_digest": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]}


def config_digest(config) -> str:
  """A short fingerprint of every setting of a run's config."""
  return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


def claim_workdir(workdir: Path, record: dict) -> None:
  """Writes ``record`` (the split, and the config's digest) into a new ``workdir``, or refuses
  one trained on another split or with another config."""
  path = workdir / "split.json"
  if path.is_file():
    saved = json.loads(path.read_text())
    if saved.get("held_out") != record["held_out"] or saved.get("fold") != record["fold"]:
      raise errors.NirganError(
          f"{workdir}: trained with places {saved.get('held_out')} held out (fold "
          f"{saved.get('fold')}), not {record['held_out']} (fold {record['fold']}); use "
          "another --out")
    if saved != record:
      raise errors.NirganError(
          f"{workdir}: trained with another config or training set (config digest "
          f"{saved.get('config_digest')}, now {record.get('config_digest')}); use another --out")
    return
  workdir.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=1) + "\n")


def run_config(model: str, sources: dict[str, str], seed: int, steps_scale: float):
  config = s2_real.get_config(model)
  for key, name in sources.items():
    config.data.sources[key].name = name
  config.data.build_missing = False
  config.seed = BASE_SEED + seed
  steps = max(2, round(config.train.num_train_steps * steps_scale))
  # One evaluation (on training places: an in-memory source has no other split) and one
  # checkpoint, at the end: the held-out places are scored here, by tiled prediction.
  config.train.update(num_train_steps=steps, eval_every=steps, image_every=0,
                      log_every=min(config.train.log_every, steps))
  return config


# --- Scoring --------------------------------------------------------------------------

def image_sums(image: Image, prediction: np.ndarray) -> dict:
  """One image's pixel sums and counts of every score (``evaluation.PooledScores``)."""
  pred = np.nan_to_num(prediction, nan=0.0)[None, ..., None].astype(np.float32)
  scores = PROTOCOL.scores(image.reflectance[None, ..., :3], pred, image.reflectance[None, ..., 3:],
                           image.valid[None, ..., None])
  return {"image": image.name, "place": image.place,
          **evaluation.PooledScores().add(scores).sums}


def pooled(images: list[dict]) -> dict[str, float]:
  """The scores pooled over the pixels of ``images`` (``image_sums`` records)."""
  pool = evaluation.PooledScores()
  for image in images:
    pool.merge(image)
  return pool.result()


def oracle_predictions(images: list[Image]) -> list[np.ndarray]:
  """NIR = w . RGB + b fitted by least squares on the scored pixels of ``images``."""
  design = lambda im: np.concatenate([im.reflectance[..., :3],
                                      np.ones_like(im.reflectance[..., :1])], axis=-1)
  x = np.concatenate([design(im)[im.scored] for im in images])
  y = np.concatenate([im.reflectance[..., 3][im.scored] for im in images])
  w = np.linalg.lstsq(x, y, rcond=None)[0]
  return [(design(im) @ w).astype(np.float32) for im in images]


def predict(config, workdir: Path, images: list[Image], average: bool) -> list[np.ndarray]:
  """Every image whole, tiled as ``nirgan-predict`` does, with the run's last step."""
  params, _, step = checkpointing.restore_weights(workdir, "latest", average)
  model = Model(model_config.model_sections(config), {"generator": params["generator"]},
                f"{workdir} step {step}")
  return [tiled.predict_image(model, tiled.ArraySource(im.reflectance[..., :3], im.valid,
                                                       im.lonlat)) for im in images]


# --- Runs -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
  fold: int
  model: str  # one of MODELS
  seed: int
  overrides: tuple[tuple[str, Any], ...] = ()  # config overrides of a candidate recipe

  @property
  def label(self) -> str:
    """The model's name in the results: with its overrides, if any."""
    if not self.overrides:
      return self.model
    return f"{self.model}[{','.join(f'{k}={v!r}' for k, v in self.overrides)}]"

  @property
  def key(self) -> tuple:
    return (self.fold, self.label, self.seed)


def parse_override(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise ValueError(f"{text!r} is not KEY=VALUE")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value  # a bare string


def train_and_score(run: Run, out: Path, steps_scale: float) -> list[dict]:
  """Trains ``run`` (or resumes it) in its workdir and returns its result records."""
  flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags
  logging.set_verbosity(logging.INFO)
  start = time.perf_counter()
  sources = build_sources(out / "tfds")
  name = hashlib.sha256(run.label.encode()).hexdigest()[:8] if run.overrides else run.model
  workdir = out / "runs" / f"fold{run.fold}" / f"{name}_seed{run.seed}"
  names = {key: pipeline.InMemorySource(examples).register(f"real_places_fold{run.fold}_{key}")
           for key, examples in training_examples(sources, run.fold).items()}
  config = run_config(run.model, names, run.seed, steps_scale)
  for key, value in run.overrides:
    *parents, leaf = key.split(".")
    section = config
    for parent in parents:
      section = section[parent]
    if leaf not in section:
      raise errors.NirganError(f"--gan_override {key}: no such config field")
    section[leaf] = value
  claim_workdir(workdir, {**split_record(sources, run.fold),
                          "config_digest": config_digest(config)})
  loop.train_and_evaluate(config, str(workdir), writer=summaries.LoggingWriter())
  images = [im for im in read_images() if im.place in FOLDS[run.fold]]
  records = []
  variants = [(run.label, True)]
  if config.optim.ema_decay > 0:  # what the average changes, on the very same run
    variants.append((run.label + AS_TRAINED, False))
  for name, average in variants:
    predictions = predict(config, workdir, images, average)
    records.append({"fold": run.fold, "model": name, "seed": run.seed,
                    "images": [image_sums(im, p) for im, p in zip(images, predictions,
                                                                   strict=True)]})
  seconds = round(time.perf_counter() - start, 1)
  return [{**r, "seconds": seconds} for r in records]


def oracle_records(folds: list[int]) -> list[dict]:
  images = read_images()
  records = []
  for fold in folds:
    held = [im for im in images if im.place in FOLDS[fold]]
    records.append({"fold": fold, "model": ORACLE, "seed": 0, "seconds": 0.0,
                    "images": [image_sums(im, p) for im, p in
                               zip(held, oracle_predictions(held), strict=True)]})
  return records


def read_results(path: Path) -> list[dict]:
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_results(path: Path, records: list[dict]) -> None:
  with path.open("a") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _pin_and_follow(cores: list[set[int]], parent: int, counter) -> None:
  """A job process: on cores of its own (XLA sizes its thread pool by them when it starts),
  ending when the experiment's process does."""
  with counter.get_lock():
    index = counter.value
    counter.value += 1
  os.sched_setaffinity(0, cores[index % len(cores)])

  def exit_with_parent():
    while os.getppid() == parent:
      time.sleep(2)
    os._exit(1)

  threading.Thread(target=exit_with_parent, daemon=True).start()


def core_groups(jobs: int) -> list[set[int]]:
  """This process's cores in ``jobs`` disjoint sets (all of them to each job when fewer)."""
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < jobs:
    return [set(cores)] * jobs
  return [set(cores[i::jobs]) for i in range(jobs)]


def pending_runs(args: argparse.Namespace, done: set[tuple]) -> list[Run]:
  runs = [Run(fold, model, seed, args.gan_overrides if model == "gan" else ())
          for model in MODELS if model in args.models
          for seed in args.seeds for fold in args.folds]
  return [r for r in runs if r.key not in done]


def run_all(args: argparse.Namespace) -> None:
  results_path = args.out / "results.jsonl"
  done = {(r["fold"], r["model"], r["seed"]) for r in read_results(results_path)}
  missing_oracle = [f for f in args.folds if (f, ORACLE, 0) not in done]
  if missing_oracle:
    append_results(results_path, oracle_records(missing_oracle))
  runs = pending_runs(args, done)
  if not runs:
    return
  build_sources(args.out / "tfds")  # once, before the jobs read it
  # glibc's malloc on transparent huge pages: 512x fewer page faults for the steps' large
  # temporary buffers (a GAN step of configs/s2_small.py: 0.51 s -> 0.41 s on 2 cores).
  os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  spawn = multiprocessing.get_context("spawn")  # a fresh JAX runtime in each job
  jobs = min(args.jobs, len(runs))
  counter = spawn.Value("i", 0)
  with concurrent.futures.ProcessPoolExecutor(
      jobs, mp_context=spawn, initializer=_pin_and_follow,
      initargs=(core_groups(jobs), os.getpid(), counter)) as pool:
    running = {pool.submit(train_and_score, run, args.out, args.steps_scale): run
               for run in runs}
    for finished in concurrent.futures.as_completed(running):
      run = running[finished]
      append_results(results_path, finished.result())
      print(f"[real_places] fold {run.fold} {run.label} seed {run.seed}: done",
            file=sys.stderr, flush=True)


# --- Summary --------------------------------------------------------------------------

def summarise(records: list[dict]) -> dict:
  """model -> per-fold scores (mean over seeds), mean, std and range over folds."""
  by_model: dict[str, dict[int, list[dict]]] = {}
  for r in records:
    by_model.setdefault(r["model"], {}).setdefault(r["fold"], []).append(pooled(r["images"]))
  summary = {}
  for model, folds in by_model.items():
    per_fold = {f: {k: float(np.mean([s[k] for s in seeds])) for k in SCORES}
                for f, seeds in sorted(folds.items())}
    runs = sum(len(s) for s in folds.values())
    values = {k: np.array([v[k] for v in per_fold.values()]) for k in SCORES}
    summary[model] = {
        "folds": len(per_fold), "runs": runs, "per_fold": per_fold,
        "mean": {k: round(float(v.mean()), 4) for k, v in values.items()},
        "std": {k: round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)
                for k, v in values.items()},
        "range": {k: [round(float(v.min()), 4), round(float(v.max()), 4)]
                  for k, v in values.items()}}
  return summary


def markdown(summary: dict) -> str:
  order = sorted(summary, key=lambda m: (m == ORACLE, m))
  lines = ["| model | folds x seeds | " + " | ".join(SCORES.values()) + " |",
           "|---|---|" + "---|" * len(SCORES)]
  for model in order:
    s = summary[model]
    cells = [f"{s['mean'][k]:.3f} ± {s['std'][k]:.3f} ({s['range'][k][0]:.3f}-"
             f"{s['range'][k][1]:.3f})" for k in SCORES]
    lines.append(f"| {model} | {s['folds']} x {s['runs'] // max(s['folds'], 1)} | "
                 + " | ".join(cells) + " |")
  lines += ["", "Per fold (MAE / NDVI MAE / SSIM / veg. IoU):", "",
            "| model | " + " | ".join(f"fold {f}" for f in range(len(FOLDS))) + " |",
            "|---|" + "---|" * len(FOLDS)]
  for model in order:
    per_fold = summary[model]["per_fold"]
    cells = [" / ".join(f"{per_fold[f][k]:.3f}" for k in SCORES) if f in per_fold else "-"
             for f in range(len(FOLDS))]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "real_places")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--folds", default=",".join(map(str, range(len(FOLDS)))))
  parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one per process")
  parser.add_argument("--steps_scale", type=float, default=1.0,
                      help="multiplies every config's num_train_steps (smoke tests)")
  parser.add_argument("--gan_override", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override of the GAN: a candidate recipe (repeatable)")
  args = parser.parse_args(argv)
  try:
    args.gan_overrides = tuple(parse_override(o) for o in args.gan_override)
  except ValueError as e:
    parser.error(f"--gan_override: {e}")
  args.models = [m for m in args.models.split(",") if m]
  if not args.models or set(args.models) - set(MODELS):
    parser.error(f"--models takes names from {MODELS}, got {args.models}")
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.folds = [int(f) for f in args.folds.split(",") if f]
  except ValueError as e:
    parser.error(f"--seeds and --folds take comma-separated integers ({e})")
  if not args.seeds or not args.folds or set(args.folds) - set(range(len(FOLDS))):
    parser.error(f"--folds takes numbers below {len(FOLDS)}, --seeds at least one seed")
  if args.jobs < 1:
    parser.error(f"--jobs must be at least 1, got {args.jobs}")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  try:
    check_places()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run_all(args)
  except errors.NirganError as e:
    raise SystemExit(f"error: {e}") from None
  records = read_results(args.out / "results.jsonl")
  summary = summarise(records)
  (args.out / "real_places.md").write_text(markdown(summary))
  train_s = {}
  for r in records:
    train_s.setdefault(r["model"].removesuffix(AS_TRAINED), {})[f"{r['fold']}/{r['seed']}"] = (
        r["seconds"])
  print(json.dumps({"experiment": "real_places", "folds": len(FOLDS), "places": len(PLACES),
                    "summary": {m: {k: s[k] for k in ("folds", "runs", "mean", "std", "range")}
                                for m, s in summary.items()},
                    "run_s": train_s, "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
  main()
