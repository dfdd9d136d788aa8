"""SEN2NAIP v2: NAIP (2.5 m) and Sentinel-2-like (10 m) RGBN pairs over the USA,
read from any of its distributions (see docs/data.md), detected by layout:

* TACO v2 (``*.tacozip``, or a folder holding ``COLLECTION.json``), the format tacotoolbox
  writes today: read with the official reader, ``tacoreader``. Each sample is a folder whose
  items ``lr`` and ``hr`` (else the first and second item) are GeoTIFFs that GDAL opens in
  place; ``split`` gives the split. A ``.tacozip`` may also stay remote (``--remote``:
  ``https://``, ``gs://``, ``s3://``): tacoreader reads its metadata in byte ranges and GDAL
  each sample's GeoTIFF (``/vsicurl/``, ``/vsigs/``, ``/vsis3/``), so nothing is downloaded
  whole.
* TACO v1 (``*.taco``, ``*.part.taco``, ``*.tortilla``, e.g. ``sen2naipv2-crosssensor.taco``),
  the format SEN2NAIP v2 is distributed in, read by the parser below (tested against the legacy
  reader ``tacoreader.v1`` on a file that tacotoolbox's last v1 writer made, and about 3x
  faster than it: 4 against 13 ms per sample on a 2-core Xeon, with no pandas). Bytes 0:2 magic
  (``WX`` TACO, ``#y`` tortilla), 2:10 footer offset, 10:18 footer length (uint64 LE); the
  footer is a Parquet table with a row per sample: ``tortilla:offset`` / ``tortilla:length``
  of a nested tortilla whose own footer lists the sample's items (item 0 = LR, item 1 = HR) as
  GeoTIFFs, read in place through GDAL's ``/vsisubfile/``; ``tortilla:data_split`` gives the
  split.
* ML-STAC (``main.json`` + ``<split>/mls/metadata.parquet`` + a data file per split):
  the data file is ``#y`` + uint64 LE header length + a JSON header
  ``{datapoint_id: [begin, length]}`` + blobs, each an HDF5 file with datasets
  ``input`` (LR) and ``target`` (HR), channel-first RGBN, and ``attrs["metadata"]``,
  a Python-literal dict with rasterio ``CRS``/``Affine`` objects (``hr_profile``,
  ``lr_profile``). That literal is parsed with a restricted evaluator, never ``eval``.

Config ``hr`` emits the NAIP patches, ``lr`` the Sentinel-2 ones. Bands are R, G,
B, NIR (B04, B03, B02, B08) stored as reflectance x 10000 (uint16), kept as is.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime
import io
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_datasets as tfds
from rasterio import CRS, Affine
from rasterio.io import MemoryFile

from data_prep import splits
from data_prep.patch_builder import PatchBuilder, PatchBuilderConfig, SourceItem
from data_prep.raster import BandLayout, SkipItem
from nirgan_jax import contract, errors
from nirgan_jax.errors import import_extra

if TYPE_CHECKING:
  import pyarrow as pa

RGBN = BandLayout(red=1, green=2, blue=3, nir=4, count=4)
ITEM_INDEX = {"lr": 0, "hr": 1}
GSD_M = {"lr": 10.0, "hr": 2.5}
SENSOR = {"lr": "sentinel2", "hr": "naip"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation",
               "test": "test"}
_HEADER = struct.Struct("<2sQQ")  # magic, footer offset, footer length
_TACO_MAGICS = (b"WX", b"#y")


@dataclasses.dataclass(kw_only=True)
class Sen2NaipConfig(PatchBuilderConfig):
  resolution: str = "hr"  # hr | lr


def _prep_module(name: str):
  """pyarrow or h5py: only SEN2NAIP's containers need them (the ``prep`` extra)."""
  return import_extra(name, "reading SEN2NAIP", "prep")


def read_span(f, offset: int, length: int, what: str) -> bytes:
  """``length`` bytes at ``offset`` of the open file ``f``, after checking that the span lies
  inside the file: a corrupt length field must not make us allocate terabytes."""
  check_span(os.fstat(f.fileno()).st_size, offset, length, what)
  f.seek(offset)
  data = f.read(length)
  if len(data) != length:
    raise SkipItem(f"truncated: {what} of {length} bytes at byte {offset} is cut short")
  return data


def check_span(file_size: int, offset: int, length: int, what: str) -> None:
  if offset < 0 or length < 0 or offset + length > file_size:
    raise SkipItem(f"truncated or corrupt: {what} declares {length} bytes at byte {offset}, "
                   f"but the file holds {file_size}")


# --------------------------------------------------------------------------- TACO


def read_tortilla_footer(path: Path, base: int = 0) -> pa.Table:
  """The footer table of the tortilla starting at byte ``base`` of ``path``."""
  with path.open("rb") as f:
    f.seek(base)
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
      raise SkipItem(f"truncated tortilla header at byte {base}")
    magic, offset, length = _HEADER.unpack(head)
    if magic not in _TACO_MAGICS:
      raise SkipItem(f"not a TACO/tortilla container (magic {magic!r} at byte {base})")
    footer = read_span(f, base + offset, length, "the tortilla footer")
  pa, pq = _prep_module("pyarrow"), _prep_module("pyarrow.parquet")
  try:
    return pq.read_table(io.BytesIO(footer))
  except (pa.ArrowException, OSError) as e:
    raise SkipItem(f"unreadable tortilla footer ({e})") from e


def vsisubfile(path: Path, offset: int, length: int) -> str:
  return f"/vsisubfile/{offset}_{length},{path}"


# --------------------------------------------------------------------------- TACO v2


@contextlib.contextmanager
def _without_duckdb_extension_downloads(tacoreader) -> Iterator[None]:
  """tacoreader opens each dataset with a DuckDB connection on which it runs ``INSTALL
  spatial``, a download from extensions.duckdb.org, for bounding-box queries that a build never
  makes. While the block runs its backends get a plain in-memory connection instead."""
  backend = getattr(getattr(tacoreader, "storage", None), "base", None)
  backend = getattr(backend, "TacoBackend", None)
  if backend is None or not hasattr(backend, "_setup_duckdb_connection"):
    yield
    return
  duckdb = _prep_module("duckdb")
  original = backend._setup_duckdb_connection
  backend._setup_duckdb_connection = lambda self: duckdb.connect(":memory:")
  try:
    yield
  finally:
    backend._setup_duckdb_connection = original


def read_taco_v2(path: str) -> list[dict]:
  """Every item of a TACO v2 dataset (``.tacozip`` or folder) as a row of its level-1 table:
  ``l0:id``, ``l0:split`` (if the dataset has splits), ``l0:stac:time_start``,
  ``l0:stac:centroid`` (WKB), ``l1:id``, ``l1:internal:gdal_vsi`` (a path GDAL opens), ...;
  read with the official ``tacoreader``."""
  tacoreader = _prep_module("tacoreader")
  try:
    with _without_duckdb_extension_downloads(tacoreader):
      dataset = tacoreader.load(str(path))
      try:
        rows = dataset.sql("SELECT * FROM l1").to_pylist()
      finally:
        dataset.close()
  except Exception as e:  # tacoreader raises its own, pyarrow's and DuckDB's errors alike
    raise SkipItem(f"not a readable TACO v2 dataset ({type(e).__name__}: "
                   f"{errors.one_line(e)})") from e
  return rows


def _wkb_point(data) -> tuple[float, float] | None:
  """(x, y) of a WKB point (either byte order), as tacotoolbox writes ``stac:centroid``."""
  if not isinstance(data, bytes) or len(data) != 21:
    return None
  order = "<" if data[0] == 1 else ">"
  if struct.unpack(f"{order}I", data[1:5])[0] != 1:
    return None
  return struct.unpack(f"{order}dd", data[5:21])


# --------------------------------------------------------------------------- ML-STAC

_CONSTRUCTORS = {("Affine",): Affine, ("CRS", "from_epsg"): CRS.from_epsg,
                 ("CRS", "from_wkt"): CRS.from_wkt, ("CRS", "from_string"): CRS.from_string,
                 ("CRS", "from_dict"): CRS.from_dict, ("CRS",): CRS}


def parse_metadata_literal(text: str):
  """A Python-literal dict that may contain ``Affine(...)`` and ``CRS.from_*(...)`` calls,
  evaluated without ``eval``: anything else (names, attributes, other calls) is refused."""

  def value(node):
    if isinstance(node, ast.Constant):
      return node.value
    if isinstance(node, ast.Dict):
      return {value(k): value(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, (ast.List, ast.Tuple)):
      items = [value(e) for e in node.elts]
      return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
      return -value(node.operand)
    if isinstance(node, ast.Call):
      func = node.func
      name = ((func.id,) if isinstance(func, ast.Name) else
              (func.value.id, func.attr) if isinstance(func, ast.Attribute)
              and isinstance(func.value, ast.Name) else None)
      if name in _CONSTRUCTORS and not node.keywords:
        return _CONSTRUCTORS[name](*[value(a) for a in node.args])
    raise ValueError(f"unsupported expression in metadata: {ast.dump(node)[:80]}")

  return value(ast.parse(text.strip(), mode="eval").body)


def read_mlstac_index(data_file: Path) -> tuple[int, dict[str, list[int]]]:
  """(first blob byte, {datapoint_id: [begin, length]}) of an ML-STAC data file."""
  with data_file.open("rb") as f:
    head = f.read(10)
    if len(head) < 10 or head[:2] != b"#y":
      raise SkipItem("not an ML-STAC data file (magic '#y' missing)")
    (length,) = struct.unpack("<Q", head[2:])
    header = read_span(f, 10, length, "the ML-STAC header")
  try:
    index = json.loads(header)
  except json.JSONDecodeError as e:
    raise SkipItem(f"unreadable ML-STAC header ({e})") from e
  return 10 + length, index


# --------------------------------------------------------------------------- builder


class Sen2Naip(PatchBuilder):
  """SEN2NAIP v2 NAIP (hr) or Sentinel-2 (lr) RGB + NIR patches."""

  name = "sen2naip"
  VERSION = tfds.core.Version(contract.VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  # A sample is 520 px of NAIP (130 px of Sentinel-2): one patch per sample, as large as it
  # allows, so that NAIP can also be shown at 5 m (512 native px for a 256 px example).
  BUILDER_CONFIGS = [
      Sen2NaipConfig(name="hr", resolution="hr", patch_size=512,
                     description="NAIP RGBN, 2.5 m, 512 px patches"),
      Sen2NaipConfig(name="lr", resolution="lr", patch_size=128,
                     description="Sentinel-2 RGBN, 10 m, 128 px patches"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download SEN2NAIP v2 from Hugging Face, either a TACO variant of tacofoundation/SEN2NAIPv2
  (e.g. sen2naipv2-crosssensor.taco or all sen2naipv2-unet.000N.part.taco parts) into
  manual_dir, or an ML-STAC variant (tacofoundation/SEN2NAIPv2-real, ...-synthethic1/2) so
  that manual_dir holds main.json and <split>/mls/{metadata.parquet,<data file>}. TACO v2
  files (.tacozip, or folders holding COLLECTION.json) are read too, and remote .tacozip files
  in place with --remote URL (https://, gs://, s3://)."""
  DESCRIPTION = __doc__
  CITATION = """@article{aybar2025sen2naipv2,
  title={SEN2NAIP: A large-scale dataset for Sentinel-2 Image Super-Resolution},
  author={Aybar, Cesar and Montero, David and Contreras, Julio and Donike, Simon and
          Kalaitzis, Freddie and G{\\'o}mez-Chova, Luis}, journal={Scientific Data}, year={2024}}"""
  LICENSE = "CC0-1.0"
  HOMEPAGE = "https://huggingface.co/datasets/tacofoundation/SEN2NAIPv2"

  REMOTE_INPUTS = "TACO v2 .tacozip files (https://, gs://, s3://)"

  def _discover(self, manual_dir: Path | None) -> list[SourceItem]:
    items = []
    for url in self.remote_inputs:
      items += self._discover_taco_v2(url)
    if manual_dir is None:
      return items
    v2 = sorted(manual_dir.rglob("*.tacozip")) + sorted(
        p.parent for p in manual_dir.rglob("COLLECTION.json") if (p.parent / "DATA").is_dir())
    for dataset in v2:
      items += self._discover_taco_v2(dataset)
    v1 = sorted(p for suffix in ("*.taco", "*.tortilla") for p in manual_dir.rglob(suffix))
    for taco in v1:
      items += self._discover_taco(taco)
    for metadata in sorted(manual_dir.glob("*/mls/metadata.parquet")):
      items += self._discover_mlstac(metadata)
    return items

  def _discover_taco_v2(self, path: Path | str) -> list[SourceItem]:
    """The samples of a local TACO v2 dataset, or of a remote ``.tacozip`` (a URL)."""
    try:
      rows = read_taco_v2(path)
    except SkipItem as e:
      self.report.add_skipped(str(path), e.reason)
      return []
    samples: dict[str, list[dict]] = {}
    for row in rows:
      samples.setdefault(str(row["l0:id"]), []).append(row)
    resolution = self.builder_config.resolution
    items = []
    for sample_id, sample_items in samples.items():
      sample_items.sort(key=lambda r: r.get("l1:internal:offset") or 0)  # the writer's order
      by_id = {str(r["l1:id"]).lower(): r for r in sample_items}
      item = by_id.get(resolution) or (sample_items[ITEM_INDEX[resolution]]
                                       if len(sample_items) > ITEM_INDEX[resolution] else None)
      head = sample_items[0]
      split = SPLIT_NAMES.get(str(head.get("l0:split") or "").lower())
      if split is None:
        centroid = _wkb_point(head.get("l0:stac:centroid"))
        split = splits.location_split(*centroid) if centroid else "train"
      time = head.get("l0:stac:time_start")
      items.append(SourceItem(f"{PurePosixPath(str(path)).name}:{sample_id}", split, {
          "kind": "taco_v2", "vsi": item["l1:internal:gdal_vsi"] if item else None,
          "date": time.date().isoformat() if isinstance(time, datetime.datetime) else ""}))
    self.report.add_note(f"{path}: TACO v2, {len(samples)} samples (tacoreader)")
    return items

  def _discover_taco(self, path: Path) -> list[SourceItem]:
    try:
      footer = read_tortilla_footer(path).to_pylist()
    except SkipItem as e:
      self.report.add_skipped(str(path), e.reason)
      return []
    self.report.add_note(f"{path}: TACO v1, {len(footer)} samples")
    items = []
    for row in footer:
      sample = f"{path.name}:{row.get('tortilla:id')}"
      split = SPLIT_NAMES.get(str(row.get("tortilla:data_split", "")).lower())
      if split is None:
        centroid = _parse_point(row.get("stac:centroid"))
        split = splits.location_split(*centroid) if centroid else "train"
      items.append(SourceItem(sample, split, {
          "kind": "taco", "path": path, "offset": int(row["tortilla:offset"]),
          "date": _epoch_to_iso(row.get("stac:time_start"))}))
    return items

  def _discover_mlstac(self, metadata: Path) -> list[SourceItem]:
    split_dir = metadata.parent
    split = SPLIT_NAMES.get(split_dir.parent.name.lower(), "train")
    pa, pq = _prep_module("pyarrow"), _prep_module("pyarrow.parquet")
    try:
      rows = pq.read_table(metadata).to_pylist()
    except (pa.ArrowException, OSError) as e:
      self.report.add_skipped(str(metadata), f"unreadable metadata.parquet ({e})")
      return []
    self.report.add_note(f"{metadata.parent.parent}: ML-STAC, {len(rows)} samples")
    items = []
    for row in rows:
      data_file = split_dir / Path(str(row.get("url", ""))).name
      row_split = SPLIT_NAMES.get(str(row.get("split", "")).lower(), split)
      items.append(SourceItem(f"{split_dir.parent.name}/{row['datapoint_id']}", row_split, {
          "kind": "mlstac", "data_file": data_file, "datapoint_id": row["datapoint_id"]}))
    return items

  def _patches(self, item: SourceItem):
    kind = item.extra["kind"]
    if kind == "taco_v2":
      yield from self._taco_v2_patches(item)
    elif kind == "taco":
      yield from self._taco_patches(item)
    else:
      yield from self._mlstac_patches(item)

  def _tile_sample(self, raster: str, item: SourceItem, date: str = ""):
    """The patches of a sample's RGBN GeoTIFF (reflectance x 10000) at this config's
    resolution."""
    resolution = self.builder_config.resolution
    yield from self._tile_raster(raster, RGBN, lambda dn: dn / contract.REFLECTANCE_SCALE,
                                 sensor=SENSOR[resolution], date=date,
                                 source_name=f"{item.source}/{resolution}")

  def _taco_v2_patches(self, item: SourceItem):
    resolution = self.builder_config.resolution
    if item.extra["vsi"] is None:
      raise SkipItem(f"sample has no {resolution} item and fewer than "
                     f"{ITEM_INDEX[resolution] + 1} items")
    yield from self._tile_sample(item.extra["vsi"], item, date=item.extra["date"])

  def _taco_patches(self, item: SourceItem):
    path, base = item.extra["path"], item.extra["offset"]
    rows = read_tortilla_footer(path, base).to_pylist()
    resolution = self.builder_config.resolution
    if len(rows) <= ITEM_INDEX[resolution]:
      raise SkipItem(f"sample has {len(rows)} items, no {resolution.upper()} image")
    leaf = rows[ITEM_INDEX[resolution]]
    offset, length = base + int(leaf["tortilla:offset"]), int(leaf["tortilla:length"])
    check_span(path.stat().st_size, offset, length, f"{resolution.upper()} image")
    subfile = vsisubfile(path, offset, length)
    yield from self._tile_sample(subfile, item, date=item.extra["date"])

  def _mlstac_patches(self, item: SourceItem):
    data_file: Path = item.extra["data_file"]
    if not data_file.is_file():
      raise SkipItem(f"data file {data_file.name} is missing")
    start, index = read_mlstac_index(data_file)
    if item.extra["datapoint_id"] not in index:
      raise SkipItem(f"datapoint {item.extra['datapoint_id']} not in {data_file.name}")
    begin, length = index[item.extra["datapoint_id"]]
    with data_file.open("rb") as f:
      blob = read_span(f, start + int(begin), int(length), f"blob in {data_file.name}")
    resolution = self.builder_config.resolution
    h5py = _prep_module("h5py")
    try:
      with h5py.File(io.BytesIO(blob), "r") as h5:
        image = np.asarray(h5["target" if resolution == "hr" else "input"])
        metadata = parse_metadata_literal(str(h5.attrs["metadata"]))
    except (OSError, KeyError, ValueError, SyntaxError) as e:
      raise SkipItem(f"unreadable HDF5 sample ({e})") from e
    profile = metadata.get(f"{resolution}_profile")
    if profile is None:
      hr = metadata.get("hr_profile")
      if hr is None:
        raise SkipItem("metadata has no hr_profile/lr_profile (no georeferencing)")
      # Same footprint as the HR image, at this image's pixel size.
      scale = hr["width"] / image.shape[-1]
      profile = {"crs": hr["crs"], "transform": hr["transform"] @ Affine.scale(scale)}
    if image.ndim != 3 or image.shape[0] < 4:
      raise SkipItem(f"{resolution.upper()} image has shape {image.shape}, expected (>=4, H, W)")
    with MemoryFile() as memory:
      with memory.open(driver="GTiff", width=image.shape[2], height=image.shape[1], count=4,
                       dtype=image.dtype, crs=profile["crs"],
                       transform=profile["transform"]) as dst:
        dst.write(image[:4])
      yield from self._tile_sample(memory.name, item)


def _parse_point(wkt) -> tuple[float, float] | None:
  """(lon, lat) of a ``POINT (lon lat)`` WKT string."""
  if not isinstance(wkt, str) or not wkt.upper().startswith("POINT"):
    return None
  try:
    lon, lat = (float(v) for v in wkt[wkt.index("(") + 1:wkt.index(")")].split())
  except ValueError:
    return None
  return lon, lat


def _epoch_to_iso(seconds) -> str:
  if seconds is None:
    return ""
  try:
    return datetime.datetime.fromtimestamp(float(seconds), datetime.UTC).date().isoformat()
  except (TypeError, ValueError, OverflowError):
    return ""

