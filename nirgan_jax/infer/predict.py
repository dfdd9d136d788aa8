"""Predicts a near-infrared band for RGB GeoTIFFs of any size.

    python -m nirgan_jax.predict IN.tif [IN2.tif | FOLDER ...] --model MODEL --out OUT
        [--bands 1,2,3] [--scale 10000] [--tile 256] [--overlap 32] [--batch_size 4]
        [--output nir|rgbn|ndvi] [--dtype float32|uint16] [--cog] [--lonlat LON,LAT]
        [--match_histogram REF.tif [--match_band 1] [--match_scale 10000]] [--overwrite]

MODEL is a model directory (``nirgan_jax.export`` or ``nirgan_jax.import_torch``) or an
original NIR-GAN ``.ckpt``. The raster is read window by window and predicted in
overlapping tiles, blended with a smooth window (``tiling``); memory is bounded by one strip
of tiles. Each tile's SatCLIP location is its centre, from the raster's CRS (``--lonlat`` for
rasters without one). Outputs keep the CRS, transform and the input's nodata mask, and are
written to a temporary file renamed at the end, so a failure leaves no partial output.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio import warp
from rasterio.windows import Window
from tqdm import tqdm

from nirgan_jax import model_io, tiling
from nirgan_jax.import_torch import CheckpointError
from nirgan_jax.inference import Model, load_model

RASTER_SUFFIXES = (".tif", ".tiff")
OUTPUTS = ("nir", "rgbn", "ndvi")
DTYPES = ("float32", "uint16")
UINT16_SCALE = 10_000  # reflectance x 10000, as Sentinel-2 products
UINT16_NODATA = 65_535
DEFAULT_SCALES = {"uint8": 255.0, "uint16": 10_000.0, "int16": 10_000.0}
GDAL_CACHE_MB = 128


class PredictError(RuntimeError):
  """Bad input or output; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Options:
  bands: tuple[int, int, int] = (1, 2, 3)
  scale: float | None = None  # DN / scale = reflectance; None: by dtype (DEFAULT_SCALES, else 1)
  tile: int = 256
  overlap: int = 32
  batch_size: int = 4
  output: str = "nir"
  dtype: str = "float32"
  cog: bool = False
  lonlat: tuple[float, float] | None = None
  match_histogram: str | None = None
  match_band: int = 1
  match_scale: float | None = None
  overwrite: bool = False


# --------------------------------------------------------------------------- reading


def open_raster(path: Path) -> rasterio.DatasetReader:
  if not path.exists():
    raise PredictError(f"{path}: no such file")
  try:
    return rasterio.open(path)
  except rasterio.errors.RasterioIOError as e:
    raise PredictError(f"{path}: not a readable raster ({e})") from e


def input_scale(src: rasterio.DatasetReader, scale: float | None) -> float:
  return scale if scale is not None else DEFAULT_SCALES.get(src.dtypes[0], 1.0)


def check_input(path: Path, options: Options, needs_location: bool) -> None:
  """Every problem that can be seen before predicting, named with the file."""
  with open_raster(path) as src:
    if max(options.bands) > src.count or min(options.bands) < 1:
      raise PredictError(f"{path}: has {src.count} band(s); --bands {options.bands} needs "
                         f"{max(options.bands)}")
    if needs_location and options.lonlat is None and src.crs is None:
      raise PredictError(f"{path}: has no CRS, so tile locations are unknown; pass "
                         "--lonlat LON,LAT (the model injects SatCLIP)")
    # A decimated look at the mask: cheap even for a 10,000 px scene.
    factor = max(1, math.ceil(max(src.height, src.width) / 1024))
    shape = (max(1, src.height // factor), max(1, src.width // factor))
    mask = src.read_masks(list(options.bands), out_shape=(3, *shape))
    if not mask.all(axis=0).any():
      raise PredictError(f"{path}: every pixel is nodata")


def read_tile(src: rasterio.DatasetReader, t: tiling.Tile, bands: Sequence[int],
              scale: float) -> tuple[np.ndarray, np.ndarray]:
  """(tile, tile, 3) reflectance, reflect-padded where the tile lies outside the raster, and
  the (tile, tile) validity mask (False outside the raster)."""
  top, left = max(t.row, 0), max(t.col, 0)
  bottom, right = min(t.row + t.size, src.height), min(t.col + t.size, src.width)
  window = Window(left, top, right - left, bottom - top)
  data = src.read(list(bands), window=window).astype(np.float32) / scale
  valid = src.read_masks(list(bands), window=window).all(axis=0)
  data = np.clip(np.nan_to_num(np.moveaxis(data, 0, -1)), 0.0, 1.0)
  pad = ((top - t.row, t.row + t.size - bottom), (left - t.col, t.col + t.size - right))
  if any(p for side in pad for p in side):
    mode = "reflect" if min(data.shape[:2]) > 1 else "edge"
    data = np.pad(data, pad + ((0, 0),), mode=mode)
    valid = np.pad(valid, pad, constant_values=False)
  return data, valid


def tile_lonlat(src: rasterio.DatasetReader, batch: Sequence[tiling.Tile],
                lonlat: tuple[float, float] | None) -> np.ndarray:
  """(B, 2) lon/lat of each tile's centre (clipped to the raster)."""
  if lonlat is not None:
    return np.tile(np.asarray(lonlat, np.float32), (len(batch), 1))
  # The centre of the part of each tile that lies inside the raster.
  rows = [(max(t.row, 0) + min(t.row + t.size, src.height)) / 2 for t in batch]
  cols = [(max(t.col, 0) + min(t.col + t.size, src.width)) / 2 for t in batch]
  xs, ys = rasterio.transform.xy(src.transform, rows, cols, offset="ul")
  lons, lats = warp.transform(src.crs, "EPSG:4326", np.atleast_1d(xs), np.atleast_1d(ys))
  return np.stack([lons, lats], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- prediction


def _batches(items: list, size: int) -> Iterator[list]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def predict_nir(model: Model, src: rasterio.DatasetReader, options: Options,
                write_rows, progress: tqdm | None = None) -> int:
  """Predicts NIR for ``src``; ``write_rows(first_row, (n, W) float32)`` receives each
  finished band of rows (the generator's raw output, NaN where the input is nodata). Returns
  the valid pixel count."""
  scale = input_scale(src, options.scale)
  # The generator's training context (config.pad) comes from the neighbouring pixels inside
  # the raster and from reflection outside it, so tiles go through the generator unpadded.
  all_tiles = tiling.tiles(src.height, src.width, options.tile, options.overlap, model.pad)
  blender = tiling.StripBlender(src.height, src.width, options.tile, channels=2)
  valid_pixels = 0
  for batch in _batches(all_tiles, options.batch_size):
    pairs = [read_tile(src, t, options.bands, scale) for t in batch]
    rgb = np.stack([p[0] for p in pairs])
    # A fixed batch shape: one compilation for every raster and the last, short batch.
    rgb = np.concatenate([rgb, np.zeros((options.batch_size - len(batch), *rgb.shape[1:]),
                                        rgb.dtype)])
    lonlat = tile_lonlat(src, batch, options.lonlat) if model.uses_location else None
    if lonlat is not None:
      lonlat = np.concatenate([lonlat, np.zeros((options.batch_size - len(batch), 2),
                                                np.float32)])
    nir = model(rgb, lonlat, pad=False)
    for t, (_, valid), pred in zip(batch, pairs, nir, strict=False):
      stacked = np.concatenate([pred, valid[..., None].astype(np.float32)], axis=-1)
      for first, rows in blender.add(t, stacked):
        valid_pixels += _emit(write_rows, first, rows)
    if progress is not None:
      progress.update(len(batch))
  for first, rows in blender.finish():
    valid_pixels += _emit(write_rows, first, rows)
  return valid_pixels


def _emit(write_rows, first: int, rows: np.ndarray) -> int:
  # Channel 1 is the blended validity: a pixel is valid where every tile saw it valid.
  nir, valid = rows[..., 0], rows[..., 1] > 0.999
  write_rows(first, np.where(valid, nir, np.nan).astype(np.float32))
  return int(valid.sum())


# --------------------------------------------------------------------------- writing


def _profile(src: rasterio.DatasetReader, count: int, dtype: str) -> dict:
  profile = dict(driver="GTiff", height=src.height, width=src.width, count=count, dtype=dtype,
                 crs=src.crs, transform=src.transform, tiled=True, blockxsize=256,
                 blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
  profile["nodata"] = UINT16_NODATA if dtype == "uint16" else float("nan")
  if dtype == "float32":
    profile["predictor"] = 3
  return profile


def _to_dtype(reflectance: np.ndarray, dtype: str) -> np.ndarray:
  if dtype == "float32":
    return reflectance.astype(np.float32)
  scaled = np.clip(np.round(np.nan_to_num(reflectance) * UINT16_SCALE), 0, UINT16_NODATA - 1)
  return np.where(np.isnan(reflectance), UINT16_NODATA, scaled).astype(np.uint16)


def match_histogram(nir_path: Path, options: Options) -> None:
  """Matches the predicted NIR's histogram to a reference NIR band, in place."""
  from skimage import exposure

  ref_path = Path(options.match_histogram)
  with open_raster(ref_path) as ref:
    if options.match_band > ref.count:
      raise PredictError(f"{ref_path}: has {ref.count} band(s), --match_band is "
                         f"{options.match_band}")
    values = ref.read(options.match_band, masked=True).astype(np.float64)
    values = values.compressed() / input_scale(ref, options.match_scale)
  values = values[np.isfinite(values)]
  if values.size == 0:
    raise PredictError(f"{ref_path}: the reference band holds no valid pixel")
  with rasterio.open(nir_path, "r+") as dst:
    nir = dst.read(1)
    valid = np.isfinite(nir)
    nir[valid] = exposure.match_histograms(nir[valid], values).astype(np.float32)
    dst.write(nir, 1)


def write_product(src: rasterio.DatasetReader, nir_path: Path, out_path: Path,
                  options: Options) -> None:
  """The requested product (NIR, RGBN or NDVI) from the predicted NIR, strip by strip."""
  scale = input_scale(src, options.scale)
  count = 4 if options.output == "rgbn" else 1
  dtype = "float32" if options.output == "ndvi" else options.dtype
  with rasterio.open(nir_path) as nir_src, rasterio.open(out_path, "w",
                                                         **_profile(src, count, dtype)) as dst:
    for row in range(0, src.height, options.tile):
      window = Window(0, row, src.width, min(options.tile, src.height - row))
      # Reflectance cannot be negative: the generator's tanh output is clipped to [0, 1].
      nir = np.clip(nir_src.read(1, window=window), 0.0, 1.0)
      if options.output == "nir":
        dst.write(_to_dtype(nir, dtype), 1, window=window)
        continue
      rgb = src.read(list(options.bands), window=window).astype(np.float32) / scale
      rgb = np.where(np.isnan(nir), np.nan, np.clip(rgb, 0, 1))
      if options.output == "rgbn":
        dst.write(_to_dtype(np.concatenate([rgb, nir[None]]), dtype), window=window)
      else:
        with np.errstate(invalid="ignore", divide="ignore"):
          ndvi = (nir - rgb[0]) / (nir + rgb[0])
        dst.write(ndvi.astype(np.float32), 1, window=window)
    dst.update_tags(NIRGAN_PRODUCT=options.output, NIRGAN_SOURCE=str(Path(src.name).name))
    if options.output == "rgbn":
      dst.descriptions = ("red", "green", "blue", "nir (predicted)")
    else:
      dst.descriptions = ("nir (predicted)" if options.output == "nir" else "ndvi",)


def predict_file(model: Model, in_path: Path, out_path: Path, options: Options,
                 progress: bool = True) -> Path:
  """Predicts ``in_path`` into ``out_path`` atomically; returns ``out_path``."""
  # Every raster is read and written strip by strip once: GDAL's block cache (by default 5 %
  # of the machine's memory) would only hold blocks that are never read again.
  with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
    return _predict_file(model, in_path, out_path, options, progress)


def _predict_file(model: Model, in_path: Path, out_path: Path, options: Options,
                  progress: bool) -> Path:
  with open_raster(in_path) as src, tempfile.TemporaryDirectory(
      prefix=f".{out_path.name}.", dir=out_path.parent) as tmp:
    nir_path = Path(tmp) / "nir.tif"
    with rasterio.open(nir_path, "w", **_profile(src, 1, "float32")) as nir_dst:

      def write_rows(first, rows):
        nir_dst.write(rows, 1, window=Window(0, first, src.width, rows.shape[0]))

      n_tiles = len(tiling.tiles(src.height, src.width, options.tile, options.overlap,
                                 model.pad))
      with tqdm(total=n_tiles, desc=in_path.name, unit="tile", disable=not progress) as bar:
        valid = predict_nir(model, src, options, write_rows, bar)
    if valid == 0:
      raise PredictError(f"{in_path}: every pixel is nodata")
    if options.match_histogram:
      match_histogram(nir_path, options)
    product = Path(tmp) / "product.tif"
    write_product(src, nir_path, product, options)
    if options.cog:
      cog = Path(tmp) / "cog.tif"
      rasterio.shutil.copy(product, cog, driver="COG", compress="deflate",
                           BIGTIFF="IF_SAFER")
      product = cog
    if out_path.exists():
      out_path.unlink()  # only reached with --overwrite
    os.replace(product, out_path)
  return out_path


# --------------------------------------------------------------------------- CLI


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
  paths = []
  for name in inputs:
    path = Path(name)
    if path.is_dir():
      found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
      if not found:
        raise PredictError(f"{path}: folder holds no .tif/.tiff file")
      paths += found
    else:
      paths.append(path)
  return paths


def output_paths(inputs: list[Path], out: Path, options: Options) -> list[Path]:
  """OUT is a file for one input file (if it ends in .tif/.tiff), else a folder."""
  if len(inputs) == 1 and out.suffix.lower() in RASTER_SUFFIXES:
    paths = [out]
  else:
    if out.exists() and not out.is_dir():
      raise PredictError(f"{out}: must be a folder for several inputs")
    paths = [out / f"{p.stem}_{options.output}.tif" for p in inputs]
  for path in paths:
    if path.exists() and not options.overwrite:
      raise PredictError(f"{path}: output exists (pass --overwrite to replace it)")
  return paths


def _check_writable(path: Path) -> None:
  folder = path.parent
  while not folder.exists():
    folder = folder.parent
  if not folder.is_dir():
    raise PredictError(f"{path}: cannot write there ({folder} is a file, not a folder)")
  if not os.access(folder, os.W_OK):
    raise PredictError(f"{path}: cannot write there ({folder} is not writable)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m nirgan_jax.predict",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("inputs", nargs="+", help="GeoTIFF files or folders of them")
  parser.add_argument("--model", required=True, help="model directory or NIR-GAN .ckpt")
  parser.add_argument("--out", required=True, help="output file (one input) or folder")
  parser.add_argument("--bands", default="1,2,3", help="1-based red,green,blue band indices")
  parser.add_argument("--scale", type=float, default=None,
                      help="DN / scale = reflectance (default: 255 for uint8, 10000 for "
                           "(u)int16, 1 for float)")
  parser.add_argument("--tile", type=int, default=256, help="tile size, px (multiple of 4)")
  parser.add_argument("--overlap", type=int, default=32, help="tile overlap, px (multiple of 4)")
  parser.add_argument("--batch_size", type=int, default=4, help="tiles per forward pass")
  parser.add_argument("--output", choices=OUTPUTS, default="nir")
  parser.add_argument("--dtype", choices=DTYPES, default="float32",
                      help="float32 reflectance or uint16 reflectance x 10000 (nir, rgbn)")
  parser.add_argument("--cog", action="store_true", help="write a cloud-optimized GeoTIFF")
  parser.add_argument("--lonlat", default=None, help="LON,LAT for rasters without a CRS")
  parser.add_argument("--match_histogram", default=None, metavar="REF.tif",
                      help="match the predicted NIR's histogram to this reference NIR")
  parser.add_argument("--match_band", type=int, default=1, help="band of the reference")
  parser.add_argument("--match_scale", type=float, default=None,
                      help="DN / scale = reflectance for the reference (default by dtype)")
  parser.add_argument("--inject_style", default="multiply", choices=("multiply", "add"),
                      help="injection style of an original .ckpt")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> Options:
  """Options from parsed arguments (``predict``'s, or another tool's with the same names)."""
  try:
    bands = tuple(int(b) for b in args.bands.split(","))
    lonlat = tuple(float(v) for v in args.lonlat.split(",")) if args.lonlat else None
  except ValueError as e:
    raise PredictError(f"--bands/--lonlat: {e}") from e
  if len(bands) != 3:
    raise PredictError(f"--bands needs 3 indices (red,green,blue), got {args.bands!r}")
  if lonlat is not None and (len(lonlat) != 2 or not -180 <= lonlat[0] <= 180
                             or not -90 <= lonlat[1] <= 90):
    raise PredictError(f"--lonlat needs LON,LAT in degrees, got {args.lonlat!r}")
  if args.tile % tiling.ALIGN or args.overlap % tiling.ALIGN or not (
      0 <= args.overlap < args.tile):
    raise PredictError(f"--tile {args.tile} and --overlap {args.overlap} must be multiples of "
                       f"{tiling.ALIGN} with 0 <= overlap < tile")
  # Every other Options field the command line has; a caller's parser may have fewer.
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
           if f.name not in ("bands", "lonlat") and hasattr(args, f.name)}
  return Options(bands=bands, lonlat=lonlat, **given)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    options = options_from_args(args)
    inputs = expand_inputs(args.inputs)
    outputs = output_paths(inputs, Path(args.out), options)
    for path in outputs:
      _check_writable(path)
    model = load_model(args.model, inject_style=args.inject_style)
    for path in inputs:
      check_input(path, options, model.uses_location)
    if options.match_histogram:
      with open_raster(Path(options.match_histogram)):
        pass
    for in_path, out_path in zip(inputs, outputs, strict=True):
      out_path.parent.mkdir(parents=True, exist_ok=True)
      predict_file(model, in_path, out_path, options, progress=not args.quiet)
      print(f"wrote {out_path}")
  except (PredictError, model_io.ModelDirError, CheckpointError, OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
