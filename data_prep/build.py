"""Builds one NIR-GAN source as a TFDS ArrayRecord dataset.

    python -m data_prep.build <source> --manual_dir RAW --data_dir OUT [--remote URL ...]
        [--config NAME] [--patch_size N] [--stride N] [--max_invalid_share 0.05]
        [--option KEY=VALUE ...] [--workers N] [--record_compression zstd|snappy|uncompressed]
        [--overwrite]

Writes ``OUT/<source>/<config>/<version>/`` (readable with
``tfds.data_source("<source>/<config>", data_dir=OUT)``) and, next to it,
``build_report.json`` / ``build_report.txt``: examples per split and every skipped
input with its reason. TFDS writes into a temporary directory and renames it at
the end, so an interrupted build leaves nothing that opens as complete; re-running
over a finished build reuses it (``--overwrite`` rebuilds).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow_datasets as tfds

from data_prep.demo import Demo
from data_prep.landsat8 import Landsat8
from data_prep.rgbn_geotiff import RgbnGeotiff
from data_prep.s2_100k import S2100k
from data_prep.sen2naip import Sen2Naip
from data_prep.worldstrat import WorldStrat
from nirgan_jax import errors, paths

BUILDERS = {cls.name: cls for cls in (Demo, Landsat8, RgbnGeotiff, S2100k, Sen2Naip, WorldStrat)}
_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


def make_config(builder_cls, name: str | None, patch_size: int | None, stride: int | None,
                max_invalid_share: float | None, extra: dict | None = None):
  """A named config of ``builder_cls`` with overrides; overrides get their own config name
  (e.g. ``default_p512_s256``) so differently tiled builds never share a directory."""
  configs = {c.name: c for c in builder_cls.BUILDER_CONFIGS}
  name = name or builder_cls.BUILDER_CONFIGS[0].name
  if name not in configs:
    raise errors.NirganError(f"unknown config {name!r} for {builder_cls.name}; "
                             f"known: {sorted(configs)}")
  config = configs[name]
  changes, suffix = {}, ""
  if patch_size is not None and patch_size != config.patch_size:
    changes["patch_size"], suffix = patch_size, f"{suffix}_p{patch_size}"
  if stride is not None and stride != config.patch_stride:
    changes["stride"], suffix = stride, f"{suffix}_s{stride}"
  if max_invalid_share is not None and max_invalid_share != config.max_invalid_share:
    changes["max_invalid_share"] = max_invalid_share
    suffix = f"{suffix}_inv{round(max_invalid_share * 1000)}"
  for key, value in (extra or {}).items():
    if getattr(config, key) != value:
      changes[key], suffix = value, f"{suffix}_{key}{value}"
  if not changes:
    return config
  return dataclasses.replace(config, name=config.name + suffix, **changes)


def _tree_top(root: Path, depth: int = 3) -> set[Path]:
  """``root``, its ancestors and what lies up to ``depth`` levels below it, as they are now."""
  found = {p for p in (root, *root.parents) if p.exists()}
  level = [root]
  for _ in range(depth):
    level = [child for folder in level if folder.is_dir() for child in folder.iterdir()]
    found.update(level)
  return found


# How the ArrayRecord shards are compressed (each record alone, ``group_size:1``, as TFDS
# writes them). zstd (level 3) is TFDS's and the smallest; snappy and uncompressed records
# read 2-3.5x faster for 1.34x and 1.63x the disk (docs/data.md). snappy is the default: a
# training host's cores, not its disk, set the speed of the input pipeline, and reading a
# zstd record was half of an example's host time. Readers need no setting: each shard says
# how it is compressed.
RECORD_COMPRESSIONS = ("zstd", "snappy", "uncompressed")
DEFAULT_RECORD_COMPRESSION = "snappy"


@contextlib.contextmanager
def writing_records(compression: str) -> Iterator[None]:
  """While the block runs, TFDS writes ArrayRecord shards with ``compression``: TFDS has no
  setting for it, so the adapter it looks up for the format is swapped for one that passes
  the option to ArrayRecord's writer."""
  if compression == "zstd":
    yield
    return
  array_record = tfds.core.file_adapters.FileFormat.ARRAY_RECORD
  adapters = tfds.core.file_adapters.ADAPTER_FOR_FORMAT
  tfds_adapter = adapters[array_record]

  class Adapter(tfds_adapter):
    @classmethod
    def write_examples(cls, path, iterator):
      from array_record.python import array_record_module

      writer = array_record_module.ArrayRecordWriter(os.fspath(path),
                                                     f"group_size:1,{compression}")
      for _, serialized_example in iterator:
        writer.write(serialized_example)
      writer.close()

  adapters[array_record] = Adapter
  try:
    yield
  finally:
    adapters[array_record] = tfds_adapter


@contextlib.contextmanager
def removing_what_a_failure_adds(data_dir: str | os.PathLike) -> Iterator[None]:
  """If the block raises, removes the folders it created under ``data_dir`` (and
  ``data_dir`` itself) that are empty, with the bookkeeping files TFDS puts in them: before
  reading any input TFDS makes ``downloads/``, ``<source>/.config/metadata.json`` and the
  config and version folders, which a failed build must not leave behind. What existed
  before is never touched, and a folder holding anything else stays."""
  if paths.is_cloud(data_dir):  # object stores have no empty folders to leave behind
    yield
    return
  root = Path(data_dir).expanduser().absolute()
  before = _tree_top(root)
  try:
    yield
  except BaseException:
    for path in sorted(_tree_top(root) - before, key=lambda p: len(p.parts), reverse=True):
      with contextlib.suppress(OSError):
        if path.is_dir():
          path.rmdir()  # only if empty
        elif path.parent not in before:
          path.unlink()
    raise


def build(source: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None,
          config: str | None = None, patch_size: int | None = None, stride: int | None = None,
          max_invalid_share: float | None = None, overwrite: bool = False,
          extra: dict | None = None, workers: int = 1, remote: Sequence[str] = (),
          record_compression: str = DEFAULT_RECORD_COMPRESSION):
  """Builds ``source`` from ``manual_dir`` and/or the URLs ``remote`` (read in place, for
  builders with ``REMOTE_INPUTS``); returns (builder, report dict or None if an existing build
  was reused)."""
  if source not in BUILDERS:
    raise errors.NirganError(f"unknown source {source!r}; known: {sorted(BUILDERS)}")
  cls = BUILDERS[source]
  if record_compression not in RECORD_COMPRESSIONS:
    raise errors.UsageError(f"--record_compression must be one of {RECORD_COMPRESSIONS}, "
                            f"got {record_compression!r}")
  if remote and not cls.REMOTE_INPUTS:
    raise errors.UsageError(f"{source} reads no remote inputs: copy them into --manual_dir")
  if cls.MANUAL_DOWNLOAD_INSTRUCTIONS and (manual_dir is not None or not remote):
    if manual_dir is None:
      raise errors.UsageError(f"{source} needs --manual_dir. {cls.download_instructions()}")
    manual_dir = paths.local_path(manual_dir, "the raw archive is read from the local filesystem")
    if not manual_dir.is_dir() or not any(manual_dir.iterdir()):
      raise FileNotFoundError(f"{manual_dir}: manual_dir does not exist or is empty. "
                              f"{cls.download_instructions()}")
  builder_config = make_config(cls, config, patch_size, stride, max_invalid_share, extra)
  with removing_what_a_failure_adds(data_dir):
    builder = cls(data_dir=str(paths.as_path(data_dir)), config=builder_config)  # local or gs://
    if builder.is_prepared() and not overwrite:
      return builder, None
    # A build on gs:// would fail only after reading its inputs: TFDS hands the split files
    # to ArrayRecord's writer, which opens them as local files (its reader does read gs://).
    paths.local_path(data_dir, "TFDS writes the ArrayRecord files of a build with a writer "
                     "that opens local files only")
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.num_workers = workers
    builder.remote_inputs = list(remote)
    builder.report.add_note(f"records compressed with {record_compression}")
    try:
      with writing_records(record_compression):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir) if manual_dir else None, download_mode=mode,
            try_download_gcs=False))
    finally:
      builder.close_workers()
  builder.report.write(builder.data_dir)
  return builder, builder.report.to_dict()


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m data_prep.build",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("source", choices=sorted(BUILDERS))
  parser.add_argument("--data_dir", required=True, help="TFDS data directory to write")
  parser.add_argument("--manual_dir", help="local copy of the raw archive")
  parser.add_argument("--remote", action="append", default=[], metavar="URL",
                      help="an input read in place, without a local copy (sen2naip: a TACO v2 "
                           ".tacozip at https://, gs:// or s3://); repeatable")
  parser.add_argument("--config", help="builder config (default: the first)")
  parser.add_argument("--patch_size", type=int,
                      help="patch side in native pixels (default: the config's, e.g. 256 for "
                           "s2_100k, 512 for sen2naip hr, 1024 for worldstrat hr)")
  parser.add_argument("--stride", type=int, help="tiling stride (default: the patch size)")
  parser.add_argument("--max_invalid_share", type=float,
                      help="skip patches with a larger nodata/NaN share (default 0.05)")
  parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="any other field of the builder config, e.g. seed=3, "
                           "num_examples=1000 (demo) or boa_offset=1000 (s2_100k)")
  parser.add_argument("--workers", type=int, default=1,
                      help="processes reading and encoding inputs (default 1)")
  parser.add_argument("--record_compression", choices=RECORD_COMPRESSIONS,
                      default=DEFAULT_RECORD_COMPRESSION,
                      help="of the ArrayRecord shards: snappy (default), zstd (TFDS's, the "
                           "smallest: 0.75x the disk, reads 2-3.5x slower), uncompressed "
                           "(1.22x snappy's disk)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> None:
  """Refuses, before any work, tiling and worker counts that cannot work."""
  for name in ("patch_size", "stride", "workers"):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise errors.UsageError(f"--{name} must be >= 1, got {value}")
  share = args.max_invalid_share
  if share is not None and not 0 <= share <= 1:
    raise errors.UsageError(f"--max_invalid_share must be in [0, 1], got {share}")


def parse_options(options: list[str], builder_cls) -> dict:
  """``KEY=VALUE`` strings -> typed overrides of ``builder_cls``'s config fields."""
  fields = {f.name: f for f in dataclasses.fields(builder_cls.BUILDER_CONFIGS[0])}
  out = {}
  for option in options:
    key, sep, text = option.partition("=")
    # The TFDS fields (name, version, ...) identify a build: --config and the tiling flags
    # set them, never --option.
    if not sep or key not in fields or key in _BASE_FIELDS:
      raise errors.UsageError(f"--option {option!r}: expected KEY=VALUE with KEY one of "
                              f"{sorted(k for k in fields if k not in _BASE_FIELDS)}")
    current = getattr(builder_cls.BUILDER_CONFIGS[0], key)
    try:
      out[key] = type(current)(text) if current is not None else text
    except ValueError as e:
      raise errors.UsageError(f"--option {option!r}: {e}") from e
  return out


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  check_arguments(args)
  extra = parse_options(args.option, BUILDERS[args.source])
  try:
    builder, report = build(args.source, args.data_dir, args.manual_dir, args.config,
                            args.patch_size, args.stride, args.max_invalid_share,
                            args.overwrite, extra, args.workers, args.remote,
                            args.record_compression)
  except Exception as e:
    failure = errors.storage_failure(e, environment_only=True)
    if failure is None or failure.path:
      raise
    # A full or read-only disk under the shard writers' own errors, which name no file.
    raise errors.StorageError(args.data_dir, failure.errno) from e
  if report is None:
    print(f"{builder.data_dir}: already built (pass --overwrite to rebuild)")
    return 0
  print(builder.report.to_text())
  print(json.dumps(report))
  print(f"wrote {builder.data_dir}")
  return 0


if __name__ == "__main__":
  errors.run(main)
