"""The data contract between ``data_prep/`` (writer) and the input pipeline (reader).

One example is one patch at its native resolution:

    rgb       uint16 (P, P, 3)  reflectance x 10000, R, G, B
    nir       uint16 (P, P, 1)  reflectance x 10000 (S2 B08, L8 B5, SPOT B3, NAIP band 4)
    valid     uint8  (P, P, 1)  1 where every band holds data, 0 where any is NaN or
                                no-data (rgb and nir hold 0 there: never a target)
    lon, lat  float64           patch centre, EPSG:4326 degrees (stored losslessly)
    gsd_m     float32           ground sampling distance
    sensor    text              one of SENSORS
    source_id text              file and window the patch came from
    date      text              ISO date, "" if unknown
    level     text              processing level as the source names it (e.g. L1C top of
                                atmosphere, L2A surface reflectance, TOA), "" if unknown

``P`` is the build's patch size (each source has a default, sized for the coarsest
resolution the training recipe derives from it). Big tensors are stored with
``encoding="bytes"`` (the default int64-list encoding is ~20x slower to write and 2x
slower to read).

``REFLECTANCE_SCALE`` is the one home of the x 10000 convention: the builders, the input
pipeline and the inference tools (uint16 outputs, default input scales) all read it here,
which is why TensorFlow Datasets is imported only by ``features``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

# Index = ``sensor_id`` in the input pipeline: append, never reorder.
SENSORS = ("landsat8", "sentinel2", "spot6", "naip", "aerial", "other")
REFLECTANCE_SCALE = 10000.0  # stored DN = reflectance x REFLECTANCE_SCALE
VALID = "valid"  # the per-pixel validity mask: a feature of every example and a batch key
# TFDS version of every builder: a change to what examples hold gets a new one, so that a
# build of the old contract is never read as the new.
VERSION = "1.2.0"
RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": "Per-pixel validity mask `valid`; per-source default patch sizes (large enough "
             "for the coarsest resolution the training recipe derives); a raster at most a "
             "quarter patch larger than the tiling gives centred windows instead of an extra "
             "near-duplicate one.",
    "1.2.0": "Processing level `level` (e.g. L1C, L2A, TOA) of every example.",
}
_UINT16_MAX = np.iinfo(np.uint16).max


def features(patch_size: int) -> tfds.features.FeaturesDict:
  import tensorflow_datasets as tfds

  as_bytes = tfds.features.Encoding.BYTES
  return tfds.features.FeaturesDict({
      "rgb": tfds.features.Tensor(shape=(patch_size, patch_size, 3), dtype=np.uint16,
                                  encoding=as_bytes),
      "nir": tfds.features.Tensor(shape=(patch_size, patch_size, 1), dtype=np.uint16,
                                  encoding=as_bytes),
      VALID: tfds.features.Tensor(shape=(patch_size, patch_size, 1), dtype=np.uint8,
                                  encoding=as_bytes,
                                  doc="1 where the pixel holds data, 0 where it is no-data"),
      # Bytes-encoded: a Scalar float64 is serialised through float32 (0.4 m of error).
      "lon": tfds.features.Tensor(shape=(), dtype=np.float64, encoding=as_bytes,
                                  doc="patch centre longitude, EPSG:4326"),
      "lat": tfds.features.Tensor(shape=(), dtype=np.float64, encoding=as_bytes,
                                  doc="patch centre latitude, EPSG:4326"),
      "gsd_m": tfds.features.Scalar(dtype=np.float32, doc="ground sampling distance, metres"),
      "sensor": tfds.features.Text(doc=f"one of {SENSORS}"),
      "source_id": tfds.features.Text(doc="file and window the patch came from"),
      "date": tfds.features.Text(doc="acquisition date (ISO), empty if unknown"),
      "level": tfds.features.Text(doc="processing level (e.g. L1C, L2A, TOA), empty if unknown"),
  })


def to_stored_reflectance(reflectance: np.ndarray) -> np.ndarray:
  """Float reflectance -> uint16 reflectance x 10000 (rounded, clipped to the uint16 range).

  Negative reflectances (atmospheric over-correction) clip to 0.
  """
  scaled = np.rint(np.asarray(reflectance, np.float64) * REFLECTANCE_SCALE)
  return np.clip(scaled, 0, _UINT16_MAX).astype(np.uint16)


def sensor_id(sensor: str) -> int:
  if sensor not in SENSORS:
    raise ValueError(f"unknown sensor {sensor!r}; known: {SENSORS}")
  return SENSORS.index(sensor)
