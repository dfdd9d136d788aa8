"""The TFDS builder every source shares: discovery, tiling loop, validity, report.

A source subclasses ``PatchBuilder`` and implements two methods:

* ``_discover(manual_dir) -> list[SourceItem]``: the inputs (files, archive members)
  with their split, found in the user's local copy of the raw archive;
* ``_patches(item) -> Iterator[Patch]``: the patches of one input.

Everything else (features, splits, progress, the nodata threshold, the skip report,
unique keys) lives here. An input that raises ``SkipItem`` is recorded with its
reason and the build goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import multiprocessing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from data_prep import raster
from data_prep.raster import SkipItem
from data_prep.report import BuildReport
from nirgan_jax import contract, errors


def read_csv(path: Path, required: Iterable[str] = ()) -> tuple[list[str], list[dict[str, str]]]:
  """(column names, rows) of a CSV file of the raw archive; one that is not UTF-8 CSV or lacks
  a ``required`` column stops the build, naming the file."""
  try:
    with path.open(newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      fields, rows = list(reader.fieldnames or ()), list(reader)
  except (UnicodeDecodeError, csv.Error) as e:
    raise errors.NirganError(f"{path}: not a UTF-8 CSV file ({e})") from e
  missing = set(required) - set(fields)
  if missing:
    raise errors.NirganError(f"{path}: missing columns {sorted(missing)} (has {fields})")
  return fields, rows


@dataclasses.dataclass(frozen=True)
class SourceItem:
  """One input of a build: a file or archive member, its split and what discovery knows."""

  source: str
  split: str
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Patch:
  """One example before encoding: reflectance as float (bands last) plus metadata."""

  rgb: np.ndarray  # (P, P, 3) float reflectance (NaN allowed where invalid)
  nir: np.ndarray  # (P, P, 1)
  lon: float
  lat: float
  gsd_m: float
  sensor: str
  source_id: str
  date: str = ""
  level: str = ""
  nodata: np.ndarray | None = None  # (P, P) bool: the source's no-data pixels (NaN aside)

  @functools.cached_property
  def valid(self) -> np.ndarray:
    """(P, P) bool: pixels that are finite in every band and not marked no-data."""
    valid = np.isfinite(self.rgb).all(axis=-1) & np.isfinite(self.nir).all(axis=-1)
    return valid if self.nodata is None else valid & ~self.nodata

  @property
  def invalid_share(self) -> float:
    return 1.0 - float(self.valid.mean())

  def to_example(self) -> dict[str, Any]:
    valid = self.valid[..., None]
    return {
        "rgb": contract.to_stored_reflectance(np.where(valid, self.rgb, 0.0)),
        "nir": contract.to_stored_reflectance(np.where(valid, self.nir, 0.0)),
        contract.VALID: valid.astype(np.uint8),
        "lon": np.float64(self.lon),
        "lat": np.float64(self.lat),
        "gsd_m": np.float32(self.gsd_m),
        "sensor": self.sensor,
        "source_id": self.source_id,
        "date": self.date,
        "level": self.level,
    }


@dataclasses.dataclass(kw_only=True)
class PatchBuilderConfig(tfds.core.BuilderConfig):
  # Side of a stored patch in native pixels. The input pipeline cuts ceil(image_size * gsd /
  # native gsd) of them for an example shown at a coarser gsd, so a source's default is sized
  # for the coarsest resolution the training recipe derives from it (configs/multiscale.py).
  patch_size: int = 256
  stride: int | None = None  # default: patch_size (no overlap)
  max_invalid_share: float = 0.05  # patches with more nodata/NaN pixels are skipped

  @property
  def patch_stride(self) -> int:
    return self.stride or self.patch_size


class PatchBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the NIR-GAN source builders (array_record, contract features, skip report)."""

  # What inputs the builder reads in place from URLs (``build --remote``); "" for none.
  REMOTE_INPUTS = ""
  DESCRIPTION = ""
  CITATION = ""
  LICENSE = ""
  HOMEPAGE = ""

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self.report = BuildReport(self.name)
    self.num_workers = 1  # processes reading inputs; set before download_and_prepare
    self.remote_inputs: list[str] = []  # URLs read in place (``REMOTE_INPUTS``), likewise
    self._pool = None

  @classmethod
  def build_generated(cls, data_dir: str, config: str | None = None) -> bool:
    """Builds this generated source (one that needs no download) unless it is built already;
    True if it built. The training program calls it, through the ``nirgan_jax.sources`` entry
    point, when ``data.build_missing`` is on."""
    from data_prep import build  # build imports every builder module

    if cls.MANUAL_DOWNLOAD_INSTRUCTIONS:
      raise errors.UsageError(f"{cls.name} is not generated: it needs --manual_dir")
    _, report = build.build(cls.name, data_dir, config=config)
    return report is not None

  def inputs_description(self, manual_dir: Path | None) -> str:
    """Where this build's inputs come from, for messages."""
    return ", ".join([str(manual_dir)] * (manual_dir is not None) + self.remote_inputs)

  @classmethod
  def download_instructions(cls) -> str:
    """``MANUAL_DOWNLOAD_INSTRUCTIONS`` as one line, for error messages."""
    return " ".join((cls.MANUAL_DOWNLOAD_INSTRUCTIONS or "").split())

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=contract.features(self.builder_config.patch_size),
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION or None,
        license=self.LICENSE or None,
    )

  def _split_generators(self, dl_manager):
    manual_dir = None
    if self.MANUAL_DOWNLOAD_INSTRUCTIONS:
      try:
        manual_dir = Path(dl_manager.manual_dir)
      except AssertionError:  # TFDS: none given, or empty (``build`` refuses the latter first)
        if not self.remote_inputs:
          raise
    items = self._discover(manual_dir)
    by_split: dict[str, list[SourceItem]] = {}
    for item in items:
      by_split.setdefault(item.split, []).append(item)
    generators = {}
    for split, split_items in sorted(by_split.items()):
      # TFDS refuses an empty split; find out now whether this one has any valid example
      # (reading only up to the first one) and leave it out, reported, if not.
      examples = self._generate_examples(split, split_items)
      first = next(examples, None)
      if first is None:
        self.report.add_note(f"split {split!r} left out: all its {len(split_items)} inputs "
                             f"were skipped")
        continue
      generators[split] = itertools.chain([first], examples)
    if not generators:
      skipped = self.report.skipped  # the report is written only by a build that succeeds
      first = f"; first: {skipped[0]['source']}: {skipped[0]['reason']}" if skipped else ""
      raise FileNotFoundError(f"{self.inputs_description(manual_dir)}: no usable {self.name} "
                              f"inputs found "
                              f"({len(items)} listed, all skipped{first}). "
                              f"{self.download_instructions()}".rstrip())
    return generators

  def _generate_examples(self, split: str, items: list[SourceItem]):
    progress = tqdm(total=len(items), desc=f"{self.name} {split}", unit="file", leave=False)
    for records in self._convert_all(items):
      progress.update()
      for kind, key, value in records:
        if kind == "skip":
          self.report.add_skipped(key, value, split)
        else:
          self.report.add_written(split)
          yield key, value
    progress.close()

  def _convert(self, item: SourceItem) -> list[tuple[str, str, Any]]:
    """One input -> ("example", key, example) and ("skip", source, reason) records.

    The whole input is read first, so that a file failing half-way adds no patches.
    """
    try:
      patches = list(self._patches(item))
    except SkipItem as e:
      return [("skip", item.source, e.reason)]
    records = []
    for patch in patches:
      if patch.invalid_share > self.builder_config.max_invalid_share:
        records.append(("skip", patch.source_id,
                        f"nodata/NaN share {patch.invalid_share:.1%} exceeds "
                        f"{self.builder_config.max_invalid_share:.1%}"))
      else:
        records.append(("example", patch.source_id, patch.to_example()))
    return records

  def _convert_all(self, items: list[SourceItem]) -> Iterator[list[tuple[str, str, Any]]]:
    """``_convert`` over ``items`` in order, in ``num_workers`` processes when above 1."""
    if self.num_workers <= 1:
      yield from map(self._convert, items)
      return
    if self._pool is None:
      # spawn, not fork: the parent has TensorFlow's threads running.
      self._pool = multiprocessing.get_context("spawn").Pool(self.num_workers)
    task = (type(self), self.builder_config, str(self.data_dir_root))
    # Bounded windows keep finished-but-unwritten examples from piling up in memory.
    window = self.num_workers * 8
    for start in range(0, len(items), window):
      yield from self._pool.imap(_convert_in_worker,
                                 [(*task, item) for item in items[start:start + window]])

  def close_workers(self) -> None:
    if self._pool is not None:
      self._pool.close()
      self._pool.join()
      self._pool = None

  def _tile_raster(self, path: Path, layout: raster.BandLayout, to_reflectance, sensor: str,
                   default_nodata: float | None = None, date: str = "",
                   locate=None, gsd_m: float | None = None, source_name: str | None = None,
                   invalid=None, nodata: float | None = None, level: str = ""
                   ) -> Iterator[Patch]:
    """Patches of one raster: RGBN bands per ``layout``, reflectance from
    ``to_reflectance(dn_float64)``, centres from the raster's CRS and transform (for an
    unreferenced raster: ``locate(window) -> (lon, lat)``, with its ``gsd_m``). ``invalid(dn)`` may
    flag source-specific no-data pixels beyond NaN and the nodata value, which is ``nodata``
    if given, else the file's, else ``default_nodata``. Patch ids are
    ``<source_name or file name>:<row>,<col>``."""
    cfg = self.builder_config
    with raster.open_raster(path) as src:
      raster.check_band_count(src, layout)
      gsd = gsd_m if gsd_m is not None else raster.ground_sampling_distance(src)
      if nodata is None:
        nodata = src.nodata if src.nodata is not None else default_nodata
      windows = list(raster.tile_windows(src.height, src.width, cfg.patch_size,
                                         cfg.patch_stride))
      if not windows:
        raise SkipItem(f"{src.width}x{src.height} px is smaller than the patch "
                       f"({cfg.patch_size} px)")
      for window in windows:
        dn = raster.read_bands(src, layout.indexes, window)
        reflectance = to_reflectance(dn.astype(np.float64))
        lon, lat = locate(window) if locate else raster.window_centre_lonlat(src, window)
        extra_invalid = invalid(dn) if invalid is not None else None
        yield Patch(rgb=reflectance[:3].transpose(1, 2, 0),
                    nir=reflectance[3:].transpose(1, 2, 0),
                    lon=lon, lat=lat, gsd_m=gsd, sensor=sensor, date=date, level=level,
                    source_id=f"{source_name or path.name}:{window.row_off},{window.col_off}",
                    nodata=raster.invalid_mask(dn, nodata, extra_invalid))

  def _discover(self, manual_dir: Path | None) -> list[SourceItem]:
    raise NotImplementedError

  def _patches(self, item: SourceItem) -> Iterator[Patch]:
    raise NotImplementedError


_WORKER_BUILDERS: dict = {}


def _convert_in_worker(task):
  """Converts one item in a worker process, with a builder made on first use.

  Built here rather than in a Pool initializer: an initializer that fails makes the
  Pool respawn workers forever, while an exception in a task reaches the parent.
  """
  builder_cls, config, data_dir, item = task
  key = (builder_cls, config.name, data_dir)
  if key not in _WORKER_BUILDERS:
    registered = {c.name for c in builder_cls.BUILDER_CONFIGS}
    # TFDS refuses a config object named like a registered one: pass those by name.
    spec = config.name if config.name in registered else config
    _WORKER_BUILDERS[key] = builder_cls(config=spec, data_dir=data_dir)
  return _WORKER_BUILDERS[key]._convert(item)
