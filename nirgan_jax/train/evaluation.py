"""Evaluation during training: metrics over the validation set, overall and per sensor,
identical on every process, and prediction panels for TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from nirgan_jax import contract
from nirgan_jax import metrics as metrics_lib
from nirgan_jax.data import pipeline
from nirgan_jax.infer import figures
from nirgan_jax.train import mesh as mesh_lib

MODEL_INPUTS = ("rgb", "nir", "valid", "lonlat")


def evaluate(eval_fn, g_params, satclip_params, dataset, mesh, global_batch: int,
             reader: Mapping[str, int] | None = None) -> dict[str, float]:
  """Mean of every metric over one pass, overall and per sensor (``<metric>/<sensor>``).
  ``reader``: ``pipeline.make_iterator``'s threads and workers, as training reads with."""
  means = metrics_lib.GroupedMeans(contract.SENSORS)
  for batch in pipeline.eval_batches(dataset, global_batch, jax.process_index(),
                                     jax.process_count(), **(reader or {})):
    inputs = mesh_lib.shard_batch(mesh, {k: batch[k] for k in MODEL_INPUTS})
    _, metrics = eval_fn(g_params, satclip_params, inputs)
    # Every process sums the whole global batch, so all agree on the result (the plateau
    # schedule and the best checkpoint depend on it).
    labels = mesh_lib.shard_batch(mesh, {k: batch[k] for k in ("mask", "sensor_id")})
    metrics, labels = (jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), t)
        for t in (metrics, labels))
    means.add(metrics, labels["mask"], labels["sensor_id"])
  return {f"val_{k}": v for k, v in means.result().items()}


def prediction_panels(eval_fn, g_params, satclip_params, dataset, mesh, global_batch: int,
                      num_images: int) -> np.ndarray:
  """Panel strips (``figures.PANEL_TITLES``) of the first ``num_images`` eval examples:
  (N, H, W', 3) uint8, the same examples at every step."""
  # One batch: threads only, no worker processes to start for it.
  batch = next(pipeline.eval_batches(dataset, global_batch, jax.process_index(),
                                     jax.process_count(), workers=0))
  inputs = mesh_lib.shard_batch(mesh, {k: batch[k] for k in MODEL_INPUTS + ("mask",)})
  pred, _ = eval_fn(g_params, satclip_params, {k: inputs[k] for k in MODEL_INPUTS})
  rgb, nir, pred, mask = (np.asarray(multihost_utils.process_allgather(x, tiled=True))
                          for x in (inputs["rgb"], inputs["nir"], pred, inputs["mask"]))
  keep = np.flatnonzero(mask)[:num_images]
  return figures.panel_strips(rgb[keep], nir[keep], pred[keep])
