"""TensorBoard event files written without TensorFlow, behind CLU's ``MetricWriter`` interface.

CLU's writers write through ``tf.summary``, and ``clu.metric_writers`` imports TensorFlow (about
1.5 GB installed) for that alone. ``EventFileWriter`` writes the records ``tf.summary`` writes
(TensorFlow 2's scalar, image and text formats, TensorBoard's hyperparameter format) with
the protocol buffers that TensorBoard itself ships (it imports no TensorFlow), and opens its
files through ``etils.epath``: a ``gs://`` workdir gets its events as a local one does.

``MetricWriter`` is the part of ``clu.metric_writers.MetricWriter`` this project writes
(scalars, images, texts, hyperparameters): CLU's own writers satisfy it, and the writers here
can be passed where CLU's interface is expected for those calls.
"""

from __future__ import annotations

import abc
import io
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.compat.proto.types_pb2 import DT_FLOAT, DT_STRING
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionStartInfo

from nirgan_jax import paths

EVENT_FILE_PREFIX = "events.out.tfevents"


class MetricWriter(abc.ABC):
  """What a training run writes: CLU's ``MetricWriter`` methods this project calls."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Numbers (Python or 0-d arrays) at ``step``."""

  @abc.abstractmethod
  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """(N, H, W, C) or (H, W, C) arrays, C in 1, 3, 4: uint8, or floats in [0, 1]."""

  @abc.abstractmethod
  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Markdown text at ``step``."""

  @abc.abstractmethod
  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The run's hyperparameters (str, bool, int or float values), once per run."""

  @abc.abstractmethod
  def flush(self) -> None:
    """Makes everything written so far readable."""

  def close(self) -> None:
    self.flush()


class LoggingWriter(MetricWriter):
  """Writes scalars, texts and hyperparameters to the INFO log (and the shapes of images)."""

  def write_scalars(self, step, scalars):
    values = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(scalars.items()))
    logging.info("[%d] %s", step, values)

  def write_images(self, step, images):
    logging.info("[%d] Got images: %s.", step, {k: np.shape(v) for k, v in images.items()})

  def write_texts(self, step, texts):
    logging.info("[%d] Got texts: %s.", step, dict(texts))

  def write_hparams(self, hparams):
    logging.info("[Hyperparameters] %s", dict(hparams))

  def flush(self):
    pass


class MultiWriter(MetricWriter):
  """Writes everything to each of ``writers``."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self._writers = tuple(writers)

  def write_scalars(self, step, scalars):
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def write_images(self, step, images):
    for writer in self._writers:
      writer.write_images(step, images)

  def write_texts(self, step, texts):
    for writer in self._writers:
      writer.write_texts(step, texts)

  def write_hparams(self, hparams):
    for writer in self._writers:
      writer.write_hparams(hparams)

  def flush(self):
    for writer in self._writers:
      writer.flush()

  def close(self):
    for writer in self._writers:
      writer.close()


class EventFileWriter(MetricWriter):
  """TensorBoard events in ``logdir``, local or on cloud storage.

  Records are kept in memory and written out by ``flush``, which also runs when a write comes
  ``flush_secs`` after the last flush (``tf.summary``'s default period). A local file is
  appended to; objects on cloud storage cannot be appended to, so there each flush writes a new
  event file, named to sort after the previous one (TensorBoard reads every event file of a
  folder, in the order of their names).
  """

  def __init__(self, logdir: str | os.PathLike, flush_secs: float = 120.0):
    self._logdir = paths.as_path(logdir)
    self._append = not paths.is_cloud(logdir)
    self._flush_secs = flush_secs
    self._name = f"{EVENT_FILE_PREFIX}.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
    self._parts = 0
    self._pending: list[bytes] = []
    self._last_flush = time.monotonic()
    self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def write_scalars(self, step, scalars):
    self._add_summary(step, [
        _value(tag, "scalars", _tensor(tensor_pb2.TensorProto(dtype=DT_FLOAT,
                                                               float_val=[float(value)])))
        for tag, value in scalars.items()])

  def write_images(self, step, images):
    self._add_summary(step, [_image_value(tag, np.asarray(image))
                             for tag, image in images.items()])

  def write_texts(self, step, texts):
    self._add_summary(step, [
        _value(tag, "text", _tensor(tensor_pb2.TensorProto(dtype=DT_STRING,
                                                           string_val=[text.encode()])))
        for tag, text in texts.items()])

  def write_hparams(self, hparams):
    start = SessionStartInfo()
    for name, value in hparams.items():
      if isinstance(value, str):
        start.hparams[name].string_value = value
      elif isinstance(value, bool):
        start.hparams[name].bool_value = value
      else:
        start.hparams[name].number_value = float(value)
    content = HParamsPluginData(session_start_info=start, version=0).SerializeToString()
    # hparams summaries carry a null scalar tensor, as TensorBoard's own writer gives them.
    null = tensor_pb2.TensorProto(dtype=DT_FLOAT, float_val=[0.0])
    self._add_summary(0, [_value("_hparams_/session_start_info", "hparams", null, content)])

  def flush(self):
    if not self._pending:
      return
    data = b"".join(self._pending)
    if self._append:
      self._logdir.mkdir(parents=True, exist_ok=True)
      with (self._logdir / self._name).open("ab") as f:
        f.write(data)
    else:
      with (self._logdir / f"{self._name}.{self._parts:06d}").open("wb") as f:
        f.write(data)
      self._parts += 1
    self._pending = []
    self._last_flush = time.monotonic()

  def _add_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    self._add(event_pb2.Event(wall_time=time.time(), step=int(step),
                              summary=summary_pb2.Summary(value=values)))

  def _add(self, event: event_pb2.Event) -> None:
    self._pending.append(_record(event.SerializeToString()))
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()


def create_default_writer(logdir: str | os.PathLike, just_logging: bool = False) -> MetricWriter:
  """TensorBoard events in ``logdir`` and the log, as ``clu.metric_writers`` makes them; only
  the log where ``just_logging`` (the other processes of a multi-host run)."""
  if just_logging:
    return LoggingWriter()
  return MultiWriter([EventFileWriter(logdir), LoggingWriter()])


# --------------------------------------------------------------------------- the record format


def _record(data: bytes) -> bytes:
  """One TFRecord: length, its checksum, the data, the data's checksum (little-endian)."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


def _tensor(proto: tensor_pb2.TensorProto, shape: Sequence[int] = ()) -> tensor_pb2.TensorProto:
  proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
      dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in shape]))
  return proto


def _value(tag: str, plugin: str, tensor: tensor_pb2.TensorProto,
           content: bytes = b"") -> summary_pb2.Summary.Value:
  metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content))
  return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


def _image_value(tag: str, images: np.ndarray) -> summary_pb2.Summary.Value:
  """``tf.summary.image``'s format: a string tensor [width, height, PNG, PNG, ...]."""
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image {tag!r}: shape {images.shape} is not (N, H, W, 1, 3 or 4)")
  if images.dtype != np.uint8:
    images = np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
  _, height, width, _ = images.shape
  encoded = [str(width).encode(), str(height).encode(), *map(_png, images)]
  return _value(tag, "images", _tensor(
      tensor_pb2.TensorProto(dtype=DT_STRING, string_val=encoded), [len(encoded)]))


def _png(image: np.ndarray) -> bytes:
  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return buffer.getvalue()

