"""NDVI time series of one place from dated RGB (or RGBN) GeoTIFFs, with predicted NIR.

    python -m nirgan_jax.timeseries FOLDER --model MODEL --out ndvi.png [--window 128]
        [--bands 1,2,3] [--nir_band 4] [--scale 10000] [--offset 0] [--lonlat LON,LAT]
        [--overwrite]

Each raster's date comes from its file name (2023-06-01, 2023_06_01 or 20230601) or, failing
that, from its tags (TIFFTAG_DATETIME, DATE, ACQUISITION_DATE). For each date the NIR is
predicted over the central ``window`` px, read straight from the file with context around
it and tiled as ``predict`` does (``geotiff``, ``tiled``), and the mean NDVI of the window's
valid pixels is plotted, beside the true NDVI where the raster has a NIR band (4-band RGBN;
``--nir_band``), above a row of RGB thumbnails.
The values go to a CSV next to the plot (``--csv`` to choose).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from tqdm import tqdm

from nirgan_jax import errors, indices, paths
from nirgan_jax.infer import figures, geotiff, outputs, predict, tiled
from nirgan_jax.infer.model import Model, load_model

DATE_PATTERNS = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})_(\d{2})_(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
)
DATE_TAGS = ("TIFFTAG_DATETIME", "DATE", "date", "ACQUISITION_DATE", "acquisition_date",
             "DATE_ACQUIRED")
CONTEXT_PX = 32  # predicted around the window so that the window sees real context
MAX_THUMBNAILS = 12


@dataclasses.dataclass
class Observation:
  date: dt.date
  path: Path
  ndvi_pred: float
  ndvi_true: float | None
  valid_pixels: int
  thumbnail: np.ndarray  # (h, w, 3) uint8


def _valid_date(year: str, month: str, day: str) -> dt.date | None:
  try:
    return dt.date(int(year), int(month), int(day))
  except ValueError:
    return None


def parse_date(path: Path, tags: dict[str, str]) -> dt.date:
  for pattern in DATE_PATTERNS:
    for match in pattern.finditer(path.stem):
      date = _valid_date(*match.groups())
      if date is not None:
        return date
  for key in DATE_TAGS:
    if key in tags:
      match = re.match(r"\s*(\d{4})[-:/_]?(\d{2})[-:/_]?(\d{2})", tags[key])
      if match and (date := _valid_date(*match.groups())) is not None:
        return date
  raise geotiff.RasterError(f"{path}: no date in the file name (e.g. 2023-06-01) or in the "
                            f"tags ({', '.join(DATE_TAGS)})")


def central_window(height: int, width: int, size: int) -> Window:
  h, w = min(size, height), min(size, width)
  return Window((width - w) // 2, (height - h) // 2, w, h)


def mean_ndvi(red: np.ndarray, nir: np.ndarray, valid: np.ndarray) -> float:
  """The mean textbook NDVI over the ``valid`` pixels where it is defined (NaN if none)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    ndvi = indices.ndvi(red, nir, eps=0)
  valid = valid & np.isfinite(ndvi)
  return float(ndvi[valid].mean()) if valid.any() else float("nan")


def observe(model: Model, path: Path, options: predict.Options, window_px: int,
            nir_band: int) -> Observation:
  """Predicts the central window of one raster and measures its NDVI (and the true NDVI if
  the raster has band ``nir_band``)."""
  with geotiff.open_raster(path) as src:
    date = parse_date(path, src.tags())
    window = central_window(src.height, src.width, window_px)
    top, left = max(0, window.row_off - CONTEXT_PX), max(0, window.col_off - CONTEXT_PX)
    bottom = min(src.height, window.row_off + window.height + CONTEXT_PX)
    right = min(src.width, window.col_off + window.width + CONTEXT_PX)
    context = geotiff.GeoTiffSource(src, options.bands, options.scale,
                                    Window(left, top, right - left, bottom - top),
                                    options.lonlat, options.offset)
    nir = tiled.predict_image(model, context, options.tile, options.overlap,
                              options.batch_size)
    has_nir = 0 < nir_band <= src.count
    bands = list(options.bands) + ([nir_band] if has_nir else [])
    data = geotiff.radiometry(src, bands, options.scale, options.offset).reflectance(
        src.read(bands, window=window))
    valid = (src.read_masks(bands, window=window).all(axis=0) > 0) & np.isfinite(data).all(0)
  reflectance = np.clip(data, 0, 1)
  inner = (slice(window.row_off - top, window.row_off - top + window.height),
           slice(window.col_off - left, window.col_off - left + window.width))
  pred = np.clip(nir[inner], 0, 1)
  valid &= np.isfinite(pred)
  red = reflectance[0]
  ndvi_true = mean_ndvi(red, reflectance[3], valid) if has_nir else None
  return Observation(date, path, mean_ndvi(red, pred, valid), ndvi_true, int(valid.sum()),
                     figures.rgb_display(np.moveaxis(reflectance[:3], 0, -1)))


def plot(observations: list[Observation], title: str):
  dates = [o.date for o in observations]
  fig = figures.plt.figure(figsize=(10, 5.5), layout="constrained")
  grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.2))
  ax = fig.add_subplot(grid[0])
  ax.plot(dates, [o.ndvi_pred for o in observations], "o-", color="tab:green",
          label="NDVI with predicted NIR")
  true = [(o.date, o.ndvi_true) for o in observations if o.ndvi_true is not None]
  if true:
    ax.plot(*zip(*true, strict=True), "s--", color="black", label="NDVI with true NIR")
  ax.set_ylabel("mean NDVI (central window)")
  ax.set_ylim(-1, 1)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  ax.set_title(title, fontsize=10)
  fig.autofmt_xdate()
  shown = observations
  if len(shown) > MAX_THUMBNAILS:
    picks = np.linspace(0, len(shown) - 1, MAX_THUMBNAILS).round().astype(int)
    shown = [observations[i] for i in picks]
  thumbs = grid[1].subgridspec(1, len(shown))
  for i, o in enumerate(shown):
    tax = fig.add_subplot(thumbs[0, i])
    tax.imshow(o.thumbnail)
    tax.set_title(o.date.isoformat(), fontsize=7)
    tax.axis("off")
  return fig


def csv_text(observations: list[Observation]) -> str:
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["date", "file", "ndvi_predicted", "ndvi_true", "valid_pixels"])
  for o in observations:
    writer.writerow([o.date.isoformat(), o.path.name, f"{o.ndvi_pred:.6f}",
                     "" if o.ndvi_true is None else f"{o.ndvi_true:.6f}", o.valid_pixels])
  return out.getvalue()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m nirgan_jax.timeseries",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("folder", help="folder of dated GeoTIFFs of one place")
  parser.add_argument("--model", required=True, help="model directory or NIR-GAN .ckpt")
  parser.add_argument("--out", required=True, help="plot to write (.png)")
  parser.add_argument("--csv", default=None, help="CSV to write (default: OUT with .csv)")
  parser.add_argument("--window", type=int, default=128, help="central window, px")
  parser.add_argument("--bands", default="1,2,3", help="1-based red,green,blue band indices")
  parser.add_argument("--nir_band", type=int, default=4,
                      help="band of the true NIR, used where a raster has it (0: never)")
  parser.add_argument("--scale", type=float, default=None,
                      help="(DN - offset) / scale = reflectance (default as predict)")
  parser.add_argument("--offset", type=float, default=None, help="see --scale (default 0)")
  parser.add_argument("--lonlat", default=None, help="LON,LAT for rasters without a CRS")
  parser.add_argument("--tile", type=int, default=tiled.TILE)
  parser.add_argument("--overlap", type=int, default=tiled.OVERLAP)
  predict.add_compute_dtype_argument(parser)
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  out = paths.as_path(args.out)
  csv_path = paths.as_path(args.csv) if args.csv else out.with_suffix(".csv")
  for path in (out, csv_path):
    outputs.check_new(path, args.overwrite)
    outputs.check_writable(path)
  folder = paths.local_path(args.folder, "the time series is read from a local folder")
  if not folder.is_dir():
    raise predict.PredictError(f"{folder}: not a folder")
  rasters = predict.expand_inputs([str(folder)])
  options = predict.options_from_args(args)
  model = load_model(args.model, compute_dtype=args.compute_dtype)
  for path in rasters:
    predict.check_input(path, options, model.uses_location)
    with geotiff.open_raster(path) as src:
      parse_date(path, src.tags())  # an undated raster fails before any prediction
  observations = []
  for path in tqdm(rasters, desc="dates", unit="raster", disable=args.quiet):
    observations.append(observe(model, path, options, args.window, args.nir_band))
  observations.sort(key=lambda o: o.date)
  fig = plot(observations, f"{folder.name}: {len(observations)} dates")
  image = io.BytesIO()
  fig.savefig(image, format="png", dpi=120)
  figures.plt.close(fig)
  outputs.write_files_atomic({csv_path: csv_text(observations).encode(),
                              out: image.getvalue()})
  print(f"wrote {out} and {csv_path} ({len(observations)} dates)")
  return 0


if __name__ == "__main__":
  errors.run(main)
