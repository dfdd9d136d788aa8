"""Grain input pipeline over the TFDS ArrayRecord datasets of ``data_prep``.

Training, per source::

    tfds.data_source -> MapDataset -> shuffle(seed) -> repeat
        -> random_map(resolution, crop, flips/rotations, scale) -> [process_index::process_count]

then the sources are mixed by weight (``MapDataset.mix``), batched per host and
read with threads and, optionally, worker processes. Every random choice comes
from Grain's per-record generator (seeded by (seed, index)), so batches are the
same with 0 or N workers and after a checkpoint restore. The per-example
randomness is drawn before the per-process slice, so an example gets the same
crop and resolution whatever the number of hosts, and the global order does not
depend on it either.

``MapDataset.mix`` is used rather than ``IterDataset.mix`` because it keeps the
pipeline index-addressable: its checkpoint state is one position, restored
exactly. The mixture is a deterministic function of the weights, so a run must
resume with the weights it started with: ``pipeline_fingerprint`` is saved with a
checkpoint and ``check_resumable`` refuses a changed one, naming what changed.

Every pixel of an example is real: an example shown at a coarser resolution is cut
from enough native pixels to fill ``image_size``, and a source whose stored patches are
too small for a configured resolution is refused at start (``check_fillable``). Pixels
that are no-data in the source are marked 0 in ``valid``, at every resolution.

Evaluation: one pass in order, no augmentation, centre crop at native resolution
(unless configured), the last batch padded and masked so every example counts once.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from nirgan_jax import contract, errors, paths
from nirgan_jax.data import transforms


class MissingDataError(errors.NirganError, FileNotFoundError):
  """A configured source has no built dataset (or only one of an older data contract)."""


class UnfillableResolutionError(errors.NirganError, ValueError):
  """A configured resolution needs more native pixels than the stored patches have."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One training or evaluation source (a ``config.data.sources`` entry)."""

  name: str  # TFDS "<dataset>/<config>", e.g. "s2_100k/default"
  data_dir: str
  split: str = "train"
  weight: float = 1.0
  native_gsd_m: float = 10.0  # 0: each example's stored gsd_m (sources mixing sensors)
  derived_gsd_m: tuple[float, ...] = ()
  prob_native: float = 1.0

  @classmethod
  def from_config(cls, source: ml_collections.ConfigDict | dict) -> SourceSpec:
    fields = dict(source)
    fields["derived_gsd_m"] = tuple(float(g) for g in fields.get("derived_gsd_m", ()))
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise errors.ConfigError(f"unknown source keys {sorted(unknown)} in "
                             f"{fields.get('name', fields)}")
    return cls(**fields)


IN_MEMORY_PREFIX = "memory:"
# Entry-point group naming the builder class of each source (``data_prep`` registers them), so
# that this package can describe and build sources without importing ``data_prep``.
SOURCES_ENTRY_POINTS = "nirgan_jax.sources"


def source_builders() -> dict[str, type]:
  """Dataset name -> its builder class (``download_instructions()``, ``HOMEPAGE``,
  ``LICENSE``, ``MANUAL_DOWNLOAD_INSTRUCTIONS``, ``build_generated``)."""
  return {ep.name: ep.load()
          for ep in importlib.metadata.entry_points(group=SOURCES_ENTRY_POINTS)}
_in_memory_sources: dict[str, InMemorySource] = {}


class InMemorySource:
  """Examples in the data contract's stored form (uint16 ``rgb``/``nir``, uint8 ``valid``,
  ``lon``, ``lat``, ``gsd_m``, ``sensor``, ...) held in memory: a source that needs no TFDS
  or TensorFlow, for benchmarks and accelerator hosts without them. Every split is the same
  examples. Configure it as ``name: "memory:<name>"`` after ``register``."""

  def __init__(self, examples: Sequence[dict[str, Any]]):
    self.examples = list(examples)

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.examples[index]

  @property
  def patch_size(self) -> int:
    return int(self.examples[0]["rgb"].shape[0])

  def register(self, name: str) -> str:
    """Makes this source ``open_source``'s answer to ``memory:<name>``; returns that."""
    _in_memory_sources[name] = self
    return IN_MEMORY_PREFIX + name


def source_specs(data_cfg: ml_collections.ConfigDict, split: str) -> list[SourceSpec]:
  """``config.data.sources`` (short name -> source) as specs for ``split``, in name order,
  rooted at ``config.data.data_dir``."""
  data_dir = os.fspath(paths.as_path(data_cfg.data_dir))
  return [SourceSpec.from_config({"data_dir": data_dir, "split": split, **source.to_dict()})
          for _, source in sorted(data_cfg.sources.items())]


def open_source(spec: SourceSpec):
  """The TFDS data source of ``spec`` (or its registered ``InMemorySource``), or a clear
  error naming the command that builds it."""
  if spec.name.startswith(IN_MEMORY_PREFIX):
    name = spec.name.removeprefix(IN_MEMORY_PREFIX)
    if name not in _in_memory_sources:
      raise MissingDataError(f"source {spec.name!r}: no in-memory source of that name is "
                             "registered (InMemorySource.register)")
    return _in_memory_sources[name]
  import tensorflow_datasets as tfds
  from google.protobuf import json_format

  try:
    source = tfds.data_source(spec.name, split=spec.split, data_dir=spec.data_dir,
                              download=False)
  except json_format.ParseError as e:  # a dataset_info.json that is not JSON
    raise MissingDataError(f"source {spec.name!r} in {spec.data_dir}: its dataset_info.json is "
                           f"damaged ({errors.one_line(e)}). Rebuild it with: "
                           f"{build_command(spec)}") from e
  except (KeyError, ValueError, AssertionError, FileNotFoundError,
          tfds.core.registered.DatasetNotFoundError) as e:
    older = _older_builds(spec)
    problem = (f"has only builds of an older data contract ({', '.join(older)}; this code reads "
               f"{contract.VERSION})" if older else f"is not built ({errors.one_line(e)})")
    raise MissingDataError(f"source {spec.name!r} split {spec.split!r} {problem} in "
                           f"{spec.data_dir}. Build it with: {build_command(spec)}") from e
  if contract.VALID not in source.dataset_info.features:
    raise MissingDataError(
        f"source {spec.name!r} in {spec.data_dir} is a build of data contract "
        f"{source.dataset_info.version} without the per-pixel validity mask; this code reads "
        f"{contract.VERSION}. Rebuild it with: {build_command(spec)}")
  return source


def build_command(spec: SourceSpec, manual_dir: bool = True) -> str:
  """The command that builds ``spec``'s dataset; ``manual_dir``: from a raw archive (RAW)."""
  dataset, _, config = spec.name.partition("/")
  return (f"python -m data_prep.build {dataset} {'--config ' + config + ' ' if config else ''}"
          f"{'--manual_dir RAW ' if manual_dir else ''}--data_dir {spec.data_dir}")


def check_built(specs: Sequence[SourceSpec]) -> None:
  """Refuses, in one error, every source of ``specs`` without a build in its data_dir: for
  each, where its raw data come from (page, licence, what to download) and the command that
  builds it; then how to run with no download at all. Looks for the builds' files only, so a
  missing source costs no TFDS lookup (``open_source`` judges the builds that are there)."""
  missing: dict[tuple[str, str], SourceSpec] = {}
  for spec in specs:
    folder = paths.as_path(spec.data_dir).joinpath(*spec.name.split("/"))
    if not spec.name.startswith(IN_MEMORY_PREFIX) and not any(
        folder.glob("*/dataset_info.json")):
      missing.setdefault((spec.name, spec.data_dir), spec)
  if missing:
    raise MissingDataError(missing_sources_message(list(missing.values())))


def missing_sources_message(missing: Sequence[SourceSpec]) -> str:
  builders = source_builders()
  names = ", ".join(spec.name for spec in missing)
  data_dirs = ", ".join(sorted({spec.data_dir for spec in missing}))
  verb = "is" if len(missing) == 1 else "are"
  lines = [f"{len(missing)} source{'s' * (len(missing) > 1)} of the config {verb} not built in "
           f"{data_dirs}: {names}. Build each once (RAW: the folder holding its download):"]
  for spec in missing:
    builder = builders.get(spec.name.split("/")[0])
    if builder is None:
      lines.append(f"  {spec.name}: no data_prep builder of that name "
                   f"(known: {', '.join(sorted(builders))})")
      continue
    raw = builder.download_instructions()
    origin = (f"Raw data: {raw} Page: {builder.HOMEPAGE or 'none'}; licence: "
              f"{builder.LICENSE or 'see the page'}." if raw else "Generated, no download.")
    lines.append(f"  {spec.name}: {origin}")
    lines.append(f"    {build_command(spec, manual_dir=bool(raw))}")
  lines.append("To run without downloading anything: python -m nirgan_jax.train --config "
               "configs/demo.py --workdir runs/demo (generates its data); a recipe on real "
               "imagery that ships with the repository: configs/s2_real.py (README, "
               "\"Real imagery\").")
  return "\n".join(lines)


def _older_builds(spec: SourceSpec) -> list[str]:
  """Versions of ``spec``'s dataset present in its data_dir other than the current one."""
  folder = paths.as_path(spec.data_dir).joinpath(*spec.name.split("/"))
  if not folder.is_dir():
    return []
  return sorted(p.parent.name for p in folder.glob("*/dataset_info.json")
                if p.parent.name != contract.VERSION)


def stored_patch_size(source) -> int:
  """Side in native pixels of the patches of an opened ``source``."""
  if isinstance(source, InMemorySource):
    return source.patch_size
  return int(source.dataset_info.features["rgb"].shape[0])


def check_fillable(spec: SourceSpec, patch_size: int, image_size: int,
                   multiscale: bool = True) -> None:
  """Refuses a resolution of ``spec`` whose ``image_size`` px examples need more native
  pixels than its ``patch_size`` px patches hold (they would have to be padded)."""
  native = spec.native_gsd_m
  if not native:  # each example's own gsd: only that one can be shown
    if spec.derived_gsd_m and multiscale:
      raise UnfillableResolutionError(
          f"source {spec.name!r}: derived_gsd_m {list(spec.derived_gsd_m)} needs a fixed "
          f"native_gsd_m (0 takes each example's own gsd_m)")
    gsds = [0.0]
  elif multiscale:
    gsds = list(transforms.gsd_probabilities(native, spec.derived_gsd_m, spec.prob_native))
  else:
    gsds = [native]
  for gsd in gsds:
    needed = transforms.native_window(image_size, gsd / native) if native else image_size
    if needed > patch_size:
      raise UnfillableResolutionError(unfillable_message(spec, gsd, image_size, needed,
                                                         patch_size))


def unfillable_message(spec: SourceSpec, gsd: float, image_size: int, needed: int,
                       patch_size: int) -> str:
  native = spec.native_gsd_m
  derived = bool(native) and gsd != native
  resolution = f"{gsd:g} m" if gsd else "its native gsd"
  of_native = f" of {native:g} m" if derived else ""
  fix = f"drop {gsd:g} m from its derived_gsd_m, " if derived else ""
  return (f"source {spec.name!r}: {resolution} at image_size {image_size} needs {needed} px "
          f"patches{of_native}, but it is built with {patch_size} px; {fix}lower "
          f"data.image_size, or rebuild it with --patch_size {needed}")


# The stored band arrays of an example, in the order of the model's four bands.
BANDS = ("rgb", "nir")


class ExampleTransform(grain.transforms.RandomMap):
  """Stored example -> model input at a chosen resolution, cropped and augmented.

  The resolution is chosen first; a window of ``ceil(image_size * factor)`` native
  pixels is cut and area-averaged by ``factor`` (cheaper than resampling the whole
  patch, and still the exact mean of the native pixels), then cropped to ``image_size``.
  The validity mask goes the same way: a coarse pixel is valid only where all its native
  pixels are (``transforms.area_resample_valid``).
  """

  def __init__(self, spec: SourceSpec, image_size: int, augment: bool,
               multiscale: bool | None = None, source_index: int = 0,
               illumination_gain: tuple[float, float] = (1.0, 1.0)):
    self.spec = spec
    self.image_size = image_size
    self.augment = augment  # random crop, flips and quarter turns (else centre crop)
    self.multiscale = augment if multiscale is None else multiscale  # random resolution
    self.source_index = source_index  # position of ``spec`` among the pipeline's sources
    # Range of one gain on all four bands (``transforms.illumination_gain``) when
    # augmenting; (1, 1) draws nothing, so other augmentations keep their random streams.
    self.illumination_gain = tuple(float(g) for g in illumination_gain)

  # The stages of random_map, in the order it runs them (and draws from ``rng``);
  # benchmarks/profile_pipeline.py times each.

  def choose_gsd(self, element: dict[str, Any], rng: np.random.Generator) -> tuple[float, float]:
    """(gsd to show the example at, its factor over the native gsd)."""
    spec = self.spec
    native = spec.native_gsd_m or float(element["gsd_m"])  # 0: the example's own
    gsd = (transforms.choose_gsd(rng, native, spec.derived_gsd_m, spec.prob_native)
           if self.multiscale else native)
    return gsd, gsd / native

  def native_window(self, element: dict[str, Any], gsd: float, factor: float,
                    rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """The window of native pixels the example is cut from: its bands as float reflectance,
    (H, W, 3) RGB and (H, W, 1) NIR, and its (H, W, 1) stored 0/1 mask."""
    size = self.image_size
    height, width = element["rgb"].shape[:2]
    window = transforms.native_window(size, factor)
    if window > min(height, width):
      raise UnfillableResolutionError(unfillable_message(self.spec, gsd, size, window,
                                                         min(height, width)))
    if self.augment:
      top = int(rng.integers(0, height - window + 1))
      left = int(rng.integers(0, width - window + 1))
    else:
      top, left = (height - window) // 2, (width - window) // 2
    rows, cols = slice(top, top + window), slice(left, left + window)
    # The window only (a stored patch is up to 16x larger), and each band array on its own:
    # NumPy copies an array of 3 or 5 interleaved channels through inner loops of 3 or 5
    # values, so joining the bands (or the mask) into one array would cost more than all
    # the arithmetic.
    bands = [transforms.to_reflectance(element[key][rows, cols]) for key in BANDS]
    return bands, element[contract.VALID][rows, cols]

  def crop(self, bands: list[np.ndarray], valid: np.ndarray,
           rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """``image_size`` px of the (resampled) window: views of the bands and mask."""
    size = self.image_size
    h, w = valid.shape[:2]
    if self.augment:
      top, left = transforms.random_crop_offsets(rng, h, w, size)
    else:
      top, left = (h - size) // 2, (w - size) // 2
    return ([transforms.crop(band, size, top, left) for band in bands],
            transforms.crop(valid, size, top, left))

  def apply_gain(self, bands: list[np.ndarray], valid: np.ndarray,
                 rng: np.random.Generator) -> list[np.ndarray]:
    if self.augment and self.illumination_gain != (1.0, 1.0):
      gain = np.float32(transforms.illumination_gain(rng, bands, valid, *self.illumination_gain))
      bands = [band * gain for band in bands]
    return bands

  def orient(self, bands: list[np.ndarray], valid: np.ndarray,
             rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """A random flip / quarter turn of the bands and mask when augmenting (views: batching
    copies them), the mask as a float32 copy (never a view of a stored array)."""
    if self.augment:
      k, flip = int(rng.integers(0, 4)), bool(rng.random() < 0.5)
      bands = [transforms.dihedral(band, k, flip) for band in bands]
      valid = transforms.dihedral(valid, k, flip)
    return bands, valid.astype(np.float32)

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    gsd, factor = self.choose_gsd(element, rng)
    bands, valid = self.native_window(element, gsd, factor, rng)
    if factor > 1:
      bands, valid = transforms.area_resample_valid(bands, valid, factor)
    bands, valid = self.crop(bands, valid, rng)
    bands, valid = self.orient(self.apply_gain(bands, valid, rng), valid, rng)
    return {
        **dict(zip(BANDS, bands, strict=True)),
        contract.VALID: valid,
        "lonlat": np.array([element["lon"], element["lat"]], np.float32),
        "gsd_m": np.float32(gsd),
        "sensor_id": np.int32(contract.sensor_id(_text(element["sensor"]))),
        "source_index": np.int32(self.source_index),
    }


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def source_dataset(spec: SourceSpec, image_size: int, seed: int, process_index: int,
                   process_count: int, augment: bool = True, source_index: int = 0,
                   illumination_gain: tuple[float, float] = (1.0, 1.0)) -> grain.MapDataset:
  """One source, shuffled, repeated and sliced for this process (training order); refuses
  a configured resolution its stored patches cannot fill."""
  source = open_source(spec)
  check_fillable(spec, stored_patch_size(source), image_size, multiscale=augment)
  dataset = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
  dataset = dataset.random_map(
      ExampleTransform(spec, image_size, augment, source_index=source_index,
                       illumination_gain=illumination_gain), seed=seed)
  return dataset[process_index::process_count]


def check_weights(specs: Sequence[SourceSpec]) -> None:
  """Refuses a mixture with a weight that is not positive."""
  weights = [spec.weight for spec in specs]
  if any(w <= 0 for w in weights):
    raise errors.ConfigError(f"data.sources: every weight must be positive, got "
                             f"{dict(zip((s.name for s in specs), weights, strict=True))}")


def train_dataset(specs: Sequence[SourceSpec], image_size: int, global_batch_size: int,
                  seed: int, process_index: int = 0, process_count: int = 1,
                  augment: bool = True,
                  illumination_gain: tuple[float, float] = (1.0, 1.0)) -> grain.MapDataset:
  """Mixed, batched training dataset of this process: ``global_batch_size / process_count``
  rows per batch. Each source gets its own seed offset so they shuffle independently; each
  row's ``source_index`` is its source's position in ``specs``."""
  if global_batch_size % process_count:
    raise errors.ConfigError(f"global batch {global_batch_size} does not divide over "
                             f"{process_count} processes")
  datasets = [source_dataset(spec, image_size, seed + i, process_index, process_count, augment,
                             source_index=i, illumination_gain=illumination_gain)
              for i, spec in enumerate(specs)]
  check_weights(specs)
  weights = [spec.weight for spec in specs]
  mixed = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
  return mixed.batch(global_batch_size // process_count, drop_remainder=True)


def make_iterator(dataset: grain.MapDataset, read_threads: int = 8, prefetch_buffer: int = 64,
                  workers: int = 0, per_worker_buffer: int = 2):
  """A checkpointable iterator (``get_state``/``set_state``) over ``dataset``.

  Buffers are sized for ~512 KB records: the Grain default (16 threads, 500 buffered)
  holds ~250 MB per host.
  """
  if workers > 0 and hasattr(dataset, "enable_shared_memory_output"):
    # The workers then make each batch in shared memory, and it reaches this process without
    # a copy (Grain does this by itself only for a batch of an IterDataset): about a quarter
    # more batches/s from one worker on 2 cores. On a copy: ``dataset`` is left as it was.
    dataset = copy.copy(dataset)
    dataset.enable_shared_memory_output()
  iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                       prefetch_buffer_size=prefetch_buffer))
  if workers > 0:
    iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=per_worker_buffer))
  return iter(iterable)


AUTO_WORKERS = "auto"
# "auto" sizes the workers for this much more than the step consumes: reading measured
# alone is faster than reading beside the loop's own host work.
WORKER_HEADROOM = 1.25


def host_cores() -> int:
  """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def choose_workers(pipeline_rate: float, step_rate: float, batch_size: int, cores: int) -> int:
  """Worker processes for ``make_iterator`` that keep up with ``step_rate`` steps/s of
  ``batch_size`` examples when one process reads ``pipeline_rate`` examples/s: 0 when the
  main process alone does, else one per ``pipeline_rate`` needed, at most ``cores - 1`` (a
  core stays with the main process)."""
  needed = step_rate * batch_size * WORKER_HEADROOM
  if pipeline_rate >= needed:
    return 0
  wanted = math.ceil(needed / pipeline_rate) if pipeline_rate > 0 else cores
  return max(0, min(wanted, cores - 1))


def measure_pipeline_rate(dataset: grain.MapDataset, read_threads: int = 8,
                          prefetch_buffer: int = 64, seconds: float = 2.0) -> float:
  """Examples/s that one process reads from ``dataset`` (of batches) with ``read_threads``
  threads, over the batches read in about ``seconds``. Timed from the iterator's start and
  blind to batches still in flight, so it errs low (towards more workers)."""
  iterator = make_iterator(dataset, read_threads, prefetch_buffer)
  start, examples = time.perf_counter(), 0
  try:
    while True:
      examples += len(jax.tree.leaves(next(iterator))[0])
      if (elapsed := time.perf_counter() - start) >= seconds:
        return examples / elapsed
  finally:
    iterator.close()


def eval_dataset(specs: Sequence[SourceSpec], image_size: int) -> grain.MapDataset:
  """Every example of every source once, in order, centre-cropped at native resolution."""
  datasets = []
  for i, spec in enumerate(specs):
    source = open_source(spec)
    check_fillable(spec, stored_patch_size(source), image_size, multiscale=False)
    datasets.append(grain.MapDataset.source(source).random_map(
        ExampleTransform(spec, image_size, augment=False, source_index=i), seed=0))
  return datasets[0] if len(datasets) == 1 else grain.MapDataset.concatenate(datasets)


class PaddedEvalShard:
  """The examples of one process's share of an evaluation pass (round-robin), padded at the
  end with masked zero rows up to a whole number of batches; a random-access source, so it
  reads through Grain like the training data."""

  def __init__(self, dataset: grain.MapDataset, process_index: int, process_count: int,
               local_batch: int):
    self.examples = dataset[process_index::process_count]
    self.template = dataset[0]  # the shape of a padding row
    per_process = math.ceil(len(dataset) / process_count)  # the same on every process
    self.length = math.ceil(per_process / local_batch) * local_batch

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if index < len(self.examples):
      return {**self.examples[index], "mask": np.float32(1.0)}
    return {**{k: np.zeros_like(v) for k, v in self.template.items()}, "mask": np.float32(0.0)}


def eval_batches(dataset: grain.MapDataset, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, read_threads: int = 8, prefetch_buffer: int = 64,
                 workers: int = 0, per_worker_buffer: int = 2):
  """This process's batches of one evaluation pass, each with a ``mask`` (1 = real), read
  with the same threads and worker processes as training.

  Examples are dealt round-robin to processes; every process yields the same number of
  batches (padded with zero rows, mask 0), as a collective eval step needs, and every
  example is in exactly one batch of one process.
  """
  if global_batch_size % process_count:
    raise errors.ConfigError(f"global batch {global_batch_size} does not divide over "
                             f"{process_count} processes")
  local = global_batch_size // process_count
  shard = PaddedEvalShard(dataset, process_index, process_count, local)
  return make_iterator(grain.MapDataset.source(shard).batch(local), read_threads,
                       prefetch_buffer, workers, per_worker_buffer)


def pipeline_fingerprint(specs: Sequence[SourceSpec], image_size: int, global_batch_size: int,
                         seed: int) -> dict[str, Any]:
  """What fixes the training order: saved with a checkpoint, compared on resume.

  ``data_dir`` is left out (a dataset may move); everything that changes which example or
  which random draw comes next is in.
  """
  return {
      "image_size": image_size, "global_batch_size": global_batch_size, "seed": seed,
      "sources": [{k: v for k, v in dataclasses.asdict(s).items() if k != "data_dir"}
                  for s in specs],
  }


def check_resumable(saved: dict[str, Any], current: dict[str, Any]) -> None:
  """Raises if a checkpoint's pipeline differs from the configured one: a saved iterator
  position only means the same thing for the same sources, weights, batch and seed."""
  saved = json_round_trip(saved)
  current = json_round_trip(current)
  if saved == current:
    return
  changes = [f"{key}: checkpoint {saved.get(key)!r}, config {current.get(key)!r}"
             for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
  raise errors.ConfigError("the input pipeline differs from the checkpoint's, so its saved "
                           "position would not resume the same sequence (start a new workdir, "
                           "or restore the old settings): " + "; ".join(changes))


def json_round_trip(value: Any) -> Any:
  """Tuples become lists, as they do in the JSON a checkpoint stores."""
  return json.loads(json.dumps(value))


def build_missing(specs: list[SourceSpec]) -> None:
  """Builds the generated sources (the demo) among ``specs`` that are not built yet; others
  must be built by the user from their raw archives. The builders are found through the
  ``SOURCES_ENTRY_POINTS``, so this package never imports ``data_prep``. Process 0 builds
  while the others wait."""
  if jax.process_index() == 0:
    builders = source_builders()
    for spec in sorted({dataclasses.replace(s, split="", weight=0.0) for s in specs},
                       key=lambda s: s.name):
      dataset, _, config_name = spec.name.partition("/")
      builder = builders.get(dataset)
      if (builder is not None and not builder.MANUAL_DOWNLOAD_INSTRUCTIONS
          and builder.build_generated(spec.data_dir, config_name or None)):
        logging.info("built %s in %s", spec.name, spec.data_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("nirgan_jax.data.pipeline.build_missing")
