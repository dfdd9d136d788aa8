"""How predicted NIR is scored, in one place: a ``Protocol`` names what the metrics see (the
whole prediction or its centre crop, or all but a border) and how SSIM is computed (window and
padding), and ``Protocol.scores`` gives every metric per example with the pixel counts that
pool them. The training loop's evaluation, ``nirgan-evaluate`` and the real-imagery
cross-validation all score through it.

Protocols are named for what they do: ``centre240_same11`` (the original NIR-GAN's results
table: the centre 240 px of each prediction, an 11 px SSIM window over the reflect-padded
'same' map, as ``kornia.metrics.ssim``; ``nirgan-evaluate``'s default), ``whole_valid11`` (every
pixel, SSIM only where its window fits, as dm-pix; the training loop's, with its window from
``train.eval_ssim_window``), ``border8_same11`` (all but 8 px at each edge; the real-imagery
cross-validation, which predicts whole images).

Two ways to average: per example (``metrics.GroupedMeans``, the loop's and the CLI's tables)
or pooled over pixels (``PooledScores``, for images of different sizes). ``COUNTS`` are the
pixel counts ``Protocol.scores`` adds for pooling; ``per_example`` drops them.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp

from nirgan_jax import errors, indices, metrics

COUNTS = ("pixels", "ssim_pixels", "vegetation_intersection", "vegetation_union")
ORIGINAL_CROP_PX = 240  # the original's results table scores the centre 240 px


@dataclasses.dataclass(frozen=True)
class Protocol:
  """What the metrics see and how SSIM is computed: the centre ``crop_px`` of a prediction
  (None: all of it), ``border_px`` left out at each edge, and the SSIM window and padding
  (``metrics.ssim_map``)."""

  ssim_window: int = metrics.SSIM_WINDOW
  ssim_padding: str = "valid"
  crop_px: int | None = None
  border_px: int = 0

  def __post_init__(self):
    if self.ssim_padding not in metrics.SSIM_PADDINGS:
      raise errors.UsageError(f"SSIM padding must be one of {metrics.SSIM_PADDINGS}, got "
                              f"{self.ssim_padding!r}")
    if self.crop_px is not None and self.border_px:
      raise errors.UsageError("a protocol scores a centre crop or all but a border, not both")

  @property
  def name(self) -> str:
    where = (f"centre{self.crop_px}" if self.crop_px is not None
             else f"border{self.border_px}" if self.border_px else "whole")
    return f"{where}_{self.ssim_padding}{self.ssim_window}"

  def describe(self) -> str:
    where = (f"the centre {self.crop_px} px of each prediction" if self.crop_px is not None
             else f"all but {self.border_px} px at each edge" if self.border_px
             else "every pixel of each prediction")
    padding = ("reflect-padded 'same' map, as kornia" if self.ssim_padding == "same"
               else "where the window fits, as dm-pix")
    return (f"protocol {self.name}: {where}; SSIM window {self.ssim_window} (Gaussian sigma "
            f"{metrics.SSIM_SIGMA}, {padding}); PSNR max 1, capped at "
            f"{metrics.PSNR_MAX_DB:.0f} dB; L1; L2; NDVI/NDWI/EVI MAE from the prediction "
            f"clipped to [0, 1] (EVI where its denominator stays >= "
            f"{indices.EVI_MIN_DENOMINATOR}); vegetation IoU (NDVI > "
            f"{metrics.VEGETATION_NDVI})")

  def centre_crop(self, images: jax.Array | None) -> jax.Array | None:
    """The centre ``crop_px`` of (B, H, W, C) images (top-left of centre when odd), or all."""
    if images is None or self.crop_px is None:
      return images
    size = self.crop_px
    top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
    return images[:, top:top + size, left:left + size]

  def scored_pixels(self, shape: tuple[int, ...], valid: jax.Array | None) -> jax.Array | None:
    """``valid`` (B, H, W, 1) without the ``border_px`` at each edge. The border is masked, not
    cropped: the images' own edges still pad the SSIM filter, and a pixel whose SSIM window
    reaches into the border does not count."""
    if not self.border_px:
      return valid
    b = self.border_px
    inner = jnp.zeros(shape[:3] + (1,), jnp.float32).at[:, b:shape[1] - b, b:shape[2] - b].set(1)
    return inner if valid is None else inner * valid.astype(jnp.float32)

  def min_size(self) -> int:
    """The smallest image side this protocol can score."""
    return max(self.crop_px or 0, self.ssim_window + 2 * self.border_px)

  def scores(self, rgb: jax.Array, pred_nir: jax.Array, true_nir: jax.Array,
             valid: jax.Array | None = None) -> dict[str, jax.Array]:
    """Every metric of ``metrics.image_metrics`` per example (B,), with its
    ``weight/<metric>``, and ``pixels`` (valid pixels scored), ``ssim_pixels`` (pixels whose
    SSIM window is all valid) and ``vegetation_intersection`` / ``vegetation_union``, which
    pool the per-example values over pixels (``PooledScores``). Traceable: jit it, or call it
    inside a jitted step."""
    rgb, pred_nir, true_nir, valid = (self.centre_crop(x)
                                      for x in (rgb, pred_nir, true_nir, valid))
    valid = self.scored_pixels(pred_nir.shape, valid)
    out = metrics.image_metrics(rgb, pred_nir, true_nir, self.ssim_window, valid,
                                ssim_padding=self.ssim_padding)
    batch = pred_nir.shape[0]
    mask = (jnp.ones(pred_nir.shape, jnp.float32) if valid is None
            else valid.astype(jnp.float32))
    ssim_mask = metrics.ssim_window_weights(mask, self.ssim_window, self.ssim_padding)
    intersection, union = metrics.vegetation_overlap(rgb, pred_nir, true_nir, valid)
    count = lambda x: jnp.sum(x.reshape(batch, -1), axis=-1)
    return {**out, "pixels": count(mask), "ssim_pixels": count(ssim_mask),
            "vegetation_intersection": intersection, "vegetation_union": union}


_NAME = re.compile(r"^(whole|centre(\d+)|border(\d+))_(same|valid)(\d+)$")


def protocol_named(name: str) -> Protocol:
  """The protocol a name like ``centre240_same11``, ``whole_valid7`` or ``border8_same11``
  describes."""
  match = _NAME.match(name)
  if not match:
    raise errors.UsageError(f"protocol {name!r}: expected whole_, centre<px>_ or border<px>_ "
                            "then same<window> or valid<window>, e.g. centre240_same11")
  _, crop, border, padding, window = match.groups()
  return Protocol(int(window), padding, int(crop) if crop else None, int(border or 0))


ORIGINAL = Protocol(metrics.SSIM_WINDOW, "same", crop_px=ORIGINAL_CROP_PX)  # centre240_same11


class PooledScores:
  """MAE, NDVI MAE, SSIM and the vegetation IoU pooled over every scored pixel of the
  examples added (a large image weighs more than a small one)."""

  SUMS = ("pixels", "mae_sum", "ndvi_mae_sum", "ssim_pixels", "ssim_sum",
          "vegetation_intersection", "vegetation_union")

  def __init__(self):
    self.sums = dict.fromkeys(self.SUMS, 0.0)

  def add(self, scores: dict) -> PooledScores:
    """Adds the examples of one ``Protocol.scores`` result."""
    scores = jax.device_get(scores)
    pixels, ssim_pixels = scores["pixels"], scores["ssim_pixels"]
    self.sums["pixels"] += float(pixels.sum())
    self.sums["mae_sum"] += float((scores["l1"] * pixels).sum())
    self.sums["ndvi_mae_sum"] += float((scores["ndvi_mae"] * pixels).sum())
    self.sums["ssim_pixels"] += float(ssim_pixels.sum())
    self.sums["ssim_sum"] += float((scores["ssim"] * ssim_pixels).sum())
    for key in ("vegetation_intersection", "vegetation_union"):
      self.sums[key] += float(scores[key].sum())
    return self

  def merge(self, sums: dict[str, float]) -> PooledScores:
    """Adds the ``sums`` of another pool (as stored)."""
    for key in self.SUMS:
      self.sums[key] += sums[key]
    return self

  def result(self) -> dict[str, float]:
    s = self.sums
    union = s["vegetation_union"]
    return {"mae": s["mae_sum"] / s["pixels"], "ndvi_mae": s["ndvi_mae_sum"] / s["pixels"],
            "ssim": s["ssim_sum"] / s["ssim_pixels"],
            "vegetation_iou": s["vegetation_intersection"] / union if union else 1.0}


def per_example(scores: dict) -> dict:
  """``Protocol.scores`` without the pixel counts: the metrics and their weights."""
  return {k: v for k, v in scores.items() if k not in COUNTS}
