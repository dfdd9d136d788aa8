"""Predicts a near-infrared band for RGB GeoTIFFs of any size.

    python -m nirgan_jax.predict IN.tif [IN2.tif | FOLDER ...] --model MODEL --out OUT
        [--bands 1,2,3] [--scale 10000] [--offset 1000] [--tile 256] [--overlap 32]
        [--batch_size 4] [--compute_dtype float32|bfloat16]
        [--output nir|rgbn|ndvi] [--dtype float32|uint16] [--cog] [--co KEY=VALUE ...]
        [--preview LOOK.png] [--lonlat LON,LAT]
        [--match_histogram REF.tif [--match_band 1] [--match_scale 10000]] [--overwrite]

MODEL is a model directory (``nirgan_jax.export`` or ``nirgan_jax.import_torch``) or an
original NIR-GAN ``.ckpt``, local or on cloud storage (``gs://``); the GeoTIFFs are local
files. The raster is read window by window (``geotiff``) and predicted
in overlapping tiles, blended with a smooth window (``tiled``, ``tile_grid``); memory is bounded
by one strip of tiles. Each tile's SatCLIP location is its centre, from the raster's CRS
(``--lonlat`` for rasters without one). Outputs (``products``) keep the CRS, transform and
the input's nodata mask, and are written to a temporary file renamed at the end
(``outputs``), so a failure leaves no partial output.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window
from tqdm import tqdm

from nirgan_jax import errors, models, paths
from nirgan_jax.errors import NirganError
from nirgan_jax.infer import geotiff, outputs, products, tile_grid, tiled
from nirgan_jax.infer.model import Model, load_model

RASTER_SUFFIXES = (".tif", ".tiff")
PREVIEW_PX = 1024  # the longest side of a preview's panels, at most
# GDAL reads and writes through local files here (and the output's atomic rename needs them).
LOCAL_INPUT = ("GeoTIFF inputs are local files, or remote as gs://, s3://, http(s):// or /vsi... "
               "paths")
LOCAL_REFERENCE = "the histogram reference is read from the local filesystem"
LOCAL_OUTPUT = "GeoTIFF outputs are written on the local filesystem"
GDAL_CACHE_MB = 128


class PredictError(NirganError):
  """A bad command line or input list; the message names the argument or the file."""


@dataclasses.dataclass(frozen=True)
class Options:
  bands: tuple[int, int, int] = (1, 2, 3)
  # (DN - offset) / scale = reflectance; neither given: the bands' GDAL scale/offset, else
  # by dtype (geotiff.radiometry)
  scale: float | None = None
  offset: float | None = None
  tile: int = tiled.TILE
  overlap: int = tiled.OVERLAP
  batch_size: int = tiled.BATCH_SIZE
  output: str = "nir"
  dtype: str = "float32"
  cog: bool = False
  lonlat: tuple[float, float] | None = None
  match_histogram: str | None = None
  match_band: int = 1
  match_scale: float | None = None
  overwrite: bool = False
  # GDAL creation options of the written file (the COG driver's with --cog), KEY=VALUE
  creation_options: tuple[str, ...] = ()
  preview: str | None = None  # a PNG of RGB, predicted NIR and NDVI (a folder: one per input)


# --------------------------------------------------------------------------- prediction


def predict_file(model: Model, in_path: Path | str, out_path: Path, options: Options,
                 progress: bool = True, preview_path: Path | None = None) -> Path:
  """Predicts ``in_path`` into ``out_path`` atomically (and its preview into
  ``preview_path``); returns ``out_path``."""
  # Every raster is read and written strip by strip once: GDAL's block cache (by default 5 %
  # of the machine's memory) would only hold blocks that are never read again.
  with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20, **geotiff.READ_OPTIONS):
    return _predict_file(model, in_path, out_path, options, progress, preview_path)


def _predict_file(model: Model, in_path: Path | str, out_path: Path, options: Options,
                  progress: bool, preview_path: Path | None) -> Path:
  # The scratch folder outlives the output's temporary, so that a write that failed for a full
  # disk is found to have (``outputs.replacing``) before the scratch files are removed.
  out_path.parent.mkdir(parents=True, exist_ok=True)
  with (geotiff.open_raster(in_path) as src,
        tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as scratch,
        outputs.replacing(out_path) as final):
    source = geotiff.GeoTiffSource(src, options.bands, options.scale, lonlat=options.lonlat,
                                   offset=options.offset)
    nir_path = Path(scratch) / "nir.tif"
    with rasterio.open(nir_path, "w", **products.geotiff_profile(source, 1, "float32")) as nir:

      def write_rows(first, rows):
        nir.write(rows, 1, window=Window(0, first, source.width, rows.shape[0]))

      n_tiles = len(tiled.image_tiles(model, source.height, source.width, options.tile,
                                      options.overlap))
      with tqdm(total=n_tiles, desc=geotiff.raster_name(in_path), unit="tile",
                disable=not progress) as bar:
        valid = tiled.predict_tiles(model, source, write_rows, options.tile, options.overlap,
                                    options.batch_size, bar)
    if valid == 0:
      raise geotiff.RasterError(f"{in_path}: every pixel is nodata")
    if options.match_histogram:
      products.match_histogram(nir_path,
                               paths.local_path(options.match_histogram, LOCAL_REFERENCE),
                               options.match_band, options.match_scale)
    creation = creation_options(options.creation_options)
    product = Path(scratch) / "product.tif" if options.cog else final
    products.write_product(source, nir_path, product, options.output, options.dtype,
                           options.tile, {} if options.cog else creation)
    if options.cog:
      rasterio.shutil.copy(product, final, driver="COG",
                           **{"compress": "deflate", "bigtiff": "IF_SAFER", **creation})
    if preview_path is not None:
      write_preview(source, nir_path, preview_path)
  return out_path


def write_preview(source: geotiff.GeoTiffSource, nir_path: Path, path: Path,
                  max_side: int = PREVIEW_PX) -> None:
  """A quick look at ``path`` (PNG): RGB, predicted NIR and NDVI side by side, with the fixed
  colour scales of ``infer.figures``, decimated to at most ``max_side`` px a side."""
  factor = max(1, math.ceil(max(source.height, source.width) / max_side))
  shape = (max(1, source.height // factor), max(1, source.width // factor))
  from nirgan_jax.infer import figures  # matplotlib: only for previews

  with rasterio.open(nir_path) as nir_src:
    nir = np.clip(nir_src.read(1, out_shape=shape), 0, 1)  # NaN (nodata) stays blank
  stored = source.dataset.read(source.bands, window=source.window, out_shape=(3, *shape))
  rgb = np.clip(np.nan_to_num(np.moveaxis(source.radiometry.reflectance(stored), 0, -1)), 0, 1)
  rgb[np.isnan(nir)] = 0.0
  figure = figures.comparison_figure(rgb[None], None, nir[None, ..., None],
                                     index_names=("ndvi",),
                                     titles=[geotiff.raster_name(source.dataset.name)])
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120)
  figures.plt.close(figure)
  outputs.write_bytes_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------- CLI


def expand_inputs(inputs: Sequence[str]) -> list[Path | str]:
  """Local files, the rasters of local folders, and remote rasters as GDAL paths."""
  rasters: list[Path | str] = []
  for name in inputs:
    remote = geotiff.remote_path(name)
    if remote is not None:
      rasters.append(remote)
      continue
    path = paths.local_path(name, LOCAL_INPUT)
    if path.is_dir():
      found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
      if not found:
        raise PredictError(f"{path}: folder holds no .tif/.tiff file")
      rasters += found
    else:
      rasters.append(path)
  return rasters


def output_paths(inputs: list[Path | str], out: Path, options: Options) -> list[Path]:
  """OUT is a file for one input file (if it ends in .tif/.tiff), else a folder."""
  if len(inputs) == 1 and out.suffix.lower() in RASTER_SUFFIXES:
    paths = [out]
  else:
    if out.exists() and not out.is_dir():
      raise PredictError(f"{out}: must be a folder for several inputs")
    stems = [Path(geotiff.raster_name(p)).stem for p in inputs]
    paths = [out / f"{stem}_{options.output}.tif" for stem in stems]
  first_input = {}
  for in_path, path in zip(inputs, paths, strict=True):
    if path in first_input:
      raise errors.UsageError(f"{first_input[path]} and {in_path} would both be written to "
                              f"{path}: predict them into different --out folders")
    first_input[path] = in_path
  for path in paths:
    outputs.check_new(path, options.overwrite)
  return paths


def preview_paths(inputs: list[Path | str], options: Options) -> list[Path | None]:
  """Where each input's preview goes: ``--preview`` itself for one input and a .png name,
  else ``<input stem>_preview.png`` in the ``--preview`` folder; None without ``--preview``."""
  if options.preview is None:
    return [None] * len(inputs)
  target = paths.local_path(options.preview, "previews are written on the local filesystem")
  if target.suffix.lower() == ".png":
    if len(inputs) > 1:
      raise errors.UsageError(f"--preview {target}: {len(inputs)} inputs need a folder")
    found = [target]
  else:
    if target.exists() and not target.is_dir():
      raise PredictError(f"--preview {target}: must be a folder for several inputs")
    found = [target / f"{Path(geotiff.raster_name(p)).stem}_preview.png" for p in inputs]
  for path in found:
    outputs.check_new(path, options.overwrite)
    outputs.check_writable(path)
  return found


def check_input(path: Path | str, options: Options, needs_location: bool) -> None:
  """Every problem that can be seen before predicting, named with the file."""
  with geotiff.open_raster(path) as src:
    if max(options.bands) > src.count or min(options.bands) < 1:
      raise geotiff.RasterError(f"{path}: has {src.count} band(s); --bands {options.bands} "
                                f"needs {max(options.bands)}")
    geotiff.check_values(path, src, options.scale, options.bands)
    if needs_location and options.lonlat is None and src.crs is None:
      raise geotiff.RasterError(f"{path}: has no CRS, so tile locations are unknown; pass "
                                "--lonlat LON,LAT (the model injects SatCLIP)")
    # A decimated look at the mask: cheap even for a 10,000 px scene.
    factor = max(1, math.ceil(max(src.height, src.width) / 1024))
    shape = (max(1, src.height // factor), max(1, src.width // factor))
    try:
      mask = src.read_masks(list(options.bands), out_shape=(3, *shape)).all(axis=0)
      mask &= np.isfinite(src.read(list(options.bands), out_shape=(3, *shape))).all(axis=0)
    except rasterio.errors.RasterioIOError as e:
      raise geotiff.unreadable(path, e) from e
    if not mask.any():
      raise geotiff.RasterError(f"{path}: every pixel is nodata")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m nirgan_jax.predict",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("inputs", nargs="+", help="GeoTIFF files or folders of them")
  parser.add_argument("--model", required=True, help="model directory or NIR-GAN .ckpt")
  parser.add_argument("--out", required=True, help="output file (one input) or folder")
  parser.add_argument("--bands", default="1,2,3", help="1-based red,green,blue band indices")
  parser.add_argument("--scale", type=float, default=None,
                      help="(DN - offset) / scale = reflectance (default: the bands' GDAL "
                           "scale/offset metadata, else 255 for uint8, 10000 for (u)int16, 1 "
                           "for float)")
  parser.add_argument("--offset", type=float, default=None,
                      help="see --scale (default 0; 1000 for Sentinel-2 L2A of processing "
                           "baseline 04.00 or later without GDAL metadata)")
  parser.add_argument("--tile", type=int, default=tiled.TILE,
                      help="tile size, px (multiple of 4)")
  parser.add_argument("--overlap", type=int, default=tiled.OVERLAP,
                      help="tile overlap, px (multiple of 4)")
  parser.add_argument("--batch_size", type=int, default=tiled.BATCH_SIZE,
                      help="tiles per forward pass")
  parser.add_argument("--output", choices=products.PRODUCTS, default="nir")
  parser.add_argument("--dtype", choices=products.DTYPES, default="float32",
                      help="float32 reflectance or uint16 reflectance x 10000 (nir, rgbn)")
  parser.add_argument("--cog", action="store_true", help="write a cloud-optimized GeoTIFF")
  parser.add_argument("--preview", default=None, metavar="PNG",
                      help="also write a quick look: RGB, predicted NIR and NDVI side by side "
                           "with fixed colour scales (a folder for several inputs)")
  parser.add_argument("--co", action="append", default=[], metavar="KEY=VALUE",
                      help="GDAL creation option of the output (the COG driver's with --cog), "
                           "e.g. COMPRESS=LZW; repeatable")
  parser.add_argument("--lonlat", default=None, help="LON,LAT for rasters without a CRS")
  parser.add_argument("--match_histogram", default=None, metavar="REF.tif",
                      help="match the predicted NIR's histogram to this reference NIR")
  parser.add_argument("--match_band", type=int, default=1, help="band of the reference")
  parser.add_argument("--match_scale", type=float, default=None,
                      help="DN / scale = reflectance for the reference (default by dtype)")
  add_compute_dtype_argument(parser)
  parser.add_argument("--inject_style", default="multiply", choices=("multiply", "add"),
                      help="injection style of an original .ckpt")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


def add_compute_dtype_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--compute_dtype", choices=tuple(models.COMPUTE_DTYPES), default="float32",
                      help="precision of the generator's convolutions: float32 (the "
                           "default, whatever precision the model trained in) or bfloat16, "
                           "faster on GPUs, TPUs and CPUs with native bf16 (docs/tools.md "
                           "gives its error)")


def options_from_args(args: argparse.Namespace) -> Options:
  """Options from parsed arguments (``predict``'s, or another tool's with the same names)."""
  try:
    bands = tuple(int(b) for b in args.bands.split(","))
    lonlat = tuple(float(v) for v in args.lonlat.split(",")) if args.lonlat else None
  except ValueError as e:
    raise errors.UsageError(f"--bands/--lonlat: {e}") from e
  if len(bands) != 3 or min(bands) < 1:
    raise errors.UsageError(f"--bands needs 3 indices >= 1 (red,green,blue), got {args.bands!r}")
  if lonlat is not None and (len(lonlat) != 2 or not -180 <= lonlat[0] <= 180
                             or not -90 <= lonlat[1] <= 90):
    raise errors.UsageError(f"--lonlat needs LON,LAT in degrees, got {args.lonlat!r}")
  if args.tile % tile_grid.ALIGN or args.overlap % tile_grid.ALIGN or not (
      0 <= args.overlap < args.tile):
    raise errors.UsageError(f"--tile {args.tile} and --overlap {args.overlap} must be "
                            f"multiples of {tile_grid.ALIGN} with 0 <= overlap < tile")
  check_positive(args, "scale", "match_scale", "batch_size", "match_band")
  co = tuple(getattr(args, "co", None) or ())
  creation_options(co)  # refused here, before any work
  # Every other Options field the command line has; a caller's parser may have fewer.
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
           if f.name not in ("bands", "lonlat", "creation_options") and hasattr(args, f.name)}
  return Options(bands=bands, lonlat=lonlat, creation_options=co, **given)


def creation_options(pairs: Sequence[str]) -> dict[str, str]:
  """``KEY=VALUE`` strings as GDAL creation options (keys lower-cased, as rasterio's)."""
  options = {}
  for pair in pairs:
    key, equals, value = pair.partition("=")
    if not equals or not key.strip():
      raise errors.UsageError(f"--co {pair!r}: expected KEY=VALUE (a GDAL creation option)")
    options[key.strip().lower()] = value
  return options


def check_positive(args: argparse.Namespace, *names: str) -> None:
  """Refuses a given ``--name`` (absent or None: its default applies) that is not > 0."""
  for name in names:
    value = getattr(args, name, None)
    if value is not None and not value > 0:
      raise errors.UsageError(f"--{name} must be > 0, got {value}")


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  outputs.quiet_libtiff_fallback_errors()
  options = options_from_args(args)
  inputs = expand_inputs(args.inputs)
  out_paths = output_paths(inputs, paths.local_path(args.out, LOCAL_OUTPUT), options)
  for path in out_paths:
    outputs.check_writable(path)
  model = load_model(args.model, inject_style=args.inject_style,
                     compute_dtype=args.compute_dtype)
  with rasterio.Env(**geotiff.READ_OPTIONS):
    for path in inputs:
      check_input(path, options, model.uses_location)
  if options.match_histogram:
    with geotiff.open_raster(paths.local_path(options.match_histogram, LOCAL_REFERENCE)):
      pass
  previews = preview_paths(inputs, options)
  for in_path, out_path, preview in zip(inputs, out_paths, previews, strict=True):
    predict_file(model, in_path, out_path, options, progress=not args.quiet,
                 preview_path=preview)
    print(f"wrote {out_path}" + (f" and {preview}" if preview else ""))
  return 0


if __name__ == "__main__":
  errors.run(main)
