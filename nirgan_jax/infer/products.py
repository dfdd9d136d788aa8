"""The GeoTIFF products made from a predicted NIR band: the NIR itself, RGBN (the input RGB
plus the NIR) or NDVI, as float32 reflectance (nodata NaN) or uint16 reflectance x 10000
(nodata 65535), with the input's CRS and transform; and the matching of the NIR's histogram
to a reference NIR band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from nirgan_jax import contract, indices
from nirgan_jax.infer import geotiff

PRODUCTS = ("nir", "rgbn", "ndvi")
DTYPES = ("float32", "uint16")
UINT16_NODATA = 65_535


def geotiff_profile(source: geotiff.GeoTiffSource, count: int, dtype: str) -> dict:
  """A tiled, compressed GeoTIFF with the georeferencing of ``source``."""
  profile = dict(driver="GTiff", height=source.height, width=source.width, count=count,
                 dtype=dtype, crs=source.crs, transform=source.transform, tiled=True,
                 blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
  profile["nodata"] = UINT16_NODATA if dtype == "uint16" else float("nan")
  if dtype == "float32":
    profile["predictor"] = 3
  return profile


def encode(reflectance: np.ndarray, dtype: str) -> np.ndarray:
  """Reflectance (NaN: nodata) as float32, or as uint16 reflectance x 10000."""
  if dtype == "float32":
    return reflectance.astype(np.float32)
  scaled = np.clip(np.round(np.nan_to_num(reflectance) * contract.REFLECTANCE_SCALE), 0,
                   UINT16_NODATA - 1)
  return np.where(np.isnan(reflectance), UINT16_NODATA, scaled).astype(np.uint16)


def match_histogram(nir_path: Path, reference: Path, band: int = 1,
                    scale: float | None = None) -> None:
  """Matches the histogram of the NIR at ``nir_path`` to band ``band`` of ``reference``
  (as reflectance: ``scale`` if given, else its GDAL scale/offset, else by dtype), in place."""
  from skimage import exposure

  with geotiff.open_raster(reference) as ref:
    if band > ref.count:
      raise geotiff.RasterError(f"{reference}: has {ref.count} band(s), --match_band is {band}")
    values = ref.read(band, masked=True).compressed()
    values = geotiff.radiometry(ref, [band], scale).reflectance(values[None])[0]
  values = values[np.isfinite(values)]
  if values.size == 0:
    raise geotiff.RasterError(f"{reference}: the reference band holds no valid pixel")
  with rasterio.open(nir_path, "r+") as dst:
    nir = dst.read(1)
    valid = np.isfinite(nir)
    nir[valid] = exposure.match_histograms(nir[valid], values).astype(np.float32)
    dst.write(nir, 1)


def ndvi_product(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
  """The textbook NDVI as float32, 0 where N + R = 0 (black pixels, where it is undefined),
  so that NaN only ever means nodata (a NaN band)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    ndvi = indices.ndvi(red, nir, eps=0)
  return np.where(red + nir == 0, 0.0, ndvi).astype(np.float32)


def write_product(source: geotiff.GeoTiffSource, nir_path: Path, out_path: Path,
                  product: str = "nir", dtype: str = "float32", strip_rows: int = 256,
                  creation_options: dict[str, str] | None = None) -> None:
  """Writes ``product`` of ``source`` and the NIR at ``nir_path`` (same size; NaN where the
  input is nodata) to ``out_path``, ``strip_rows`` rows at a time, with GDAL
  ``creation_options`` (lower-case keys) over ``geotiff_profile``'s. NDVI is always float32
  (``ndvi_product``)."""
  if product not in PRODUCTS or dtype not in DTYPES:
    raise ValueError(f"product {product!r} / dtype {dtype!r}: expected one of {PRODUCTS} / "
                     f"{DTYPES}")
  count = 4 if product == "rgbn" else 1
  dtype = "float32" if product == "ndvi" else dtype
  profile = {**geotiff_profile(source, count, dtype), **(creation_options or {})}
  with rasterio.open(nir_path) as nir_src, rasterio.open(out_path, "w", **profile) as dst:
    for row in range(0, source.height, strip_rows):
      rows = slice(row, min(row + strip_rows, source.height))
      window = Window(0, row, source.width, rows.stop - row)
      # Reflectance cannot be negative: the generator's tanh output is clipped to [0, 1].
      nir = np.clip(nir_src.read(1, window=window), 0.0, 1.0)
      if product == "nir":
        dst.write(encode(nir, dtype), 1, window=window)
        continue
      rgb = np.moveaxis(source.reflectance(rows, slice(0, source.width)), -1, 0)
      rgb = np.where(np.isnan(nir), np.nan, np.clip(rgb, 0, 1))
      if product == "rgbn":
        dst.write(encode(np.concatenate([rgb, nir[None]]), dtype), window=window)
      else:
        dst.write(ndvi_product(rgb[0], nir), 1, window=window)
    dst.update_tags(NIRGAN_PRODUCT=product, NIRGAN_SOURCE=geotiff.raster_name(source.dataset.name))
    if product == "rgbn":
      dst.descriptions = ("red", "green", "blue", "nir (predicted)")
    else:
      dst.descriptions = ("nir (predicted)" if product == "nir" else "ndvi",)
