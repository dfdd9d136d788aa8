"""The data contract between ``data_prep/`` (writer) and the input pipeline (reader).

One example is one patch at its native resolution:

    rgb       uint16 (P, P, 3)  reflectance x 10000, R, G, B
    nir       uint16 (P, P, 1)  reflectance x 10000 (S2 B08, L8 B5, SPOT B3, NAIP band 4)
    lon, lat  float64           patch centre, EPSG:4326 degrees (stored losslessly)
    gsd_m     float32           ground sampling distance
    sensor    text              one of SENSORS
    source_id text              file and window the patch came from
    date      text              ISO date, "" if unknown

Big tensors are stored with ``encoding="bytes"`` (the default int64-list encoding
is ~20x slower to write and 2x slower to read).

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
_UINT16_MAX = np.iinfo(np.uint16).max


def features(patch_size: int) -> tfds.features.FeaturesDict:
  import tensorflow_datasets as tfds

  as_bytes = tfds.features.Encoding.BYTES
  return tfds.features.FeaturesDict({
      "rgb": tfds.features.Tensor(shape=(patch_size, patch_size, 3), dtype=np.uint16,
                                  encoding=as_bytes),
      "nir": tfds.features.Tensor(shape=(patch_size, patch_size, 1), dtype=np.uint16,
                                  encoding=as_bytes),
      # Bytes-encoded: a Scalar float64 is serialised through float32 (0.4 m of error).
      "lon": tfds.features.Tensor(shape=(), dtype=np.float64, encoding=as_bytes,
                                  doc="patch centre longitude, EPSG:4326"),
      "lat": tfds.features.Tensor(shape=(), dtype=np.float64, encoding=as_bytes,
                                  doc="patch centre latitude, EPSG:4326"),
      "gsd_m": tfds.features.Scalar(dtype=np.float32, doc="ground sampling distance, metres"),
      "sensor": tfds.features.Text(doc=f"one of {SENSORS}"),
      "source_id": tfds.features.Text(doc="file and window the patch came from"),
      "date": tfds.features.Text(doc="acquisition date (ISO), empty if unknown"),
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
