"""Pictures of predictions with fixed colour scales, so that figures from different steps,
runs and models compare by eye.

``panel_strip`` makes one uint8 image per example (for TensorBoard image logs);
``comparison_figure`` a matplotlib figure with titles and colour bars (for reports).
Inputs are reflectances in [0, 1]: RGB (H, W, 3), NIR (H, W) or (H, W, 1).
"""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")  # headless: never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nirgan_jax import indices  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Scale:
  """A fixed colour scale: values are clipped to [vmin, vmax] and mapped through ``cmap``."""

  vmin: float
  vmax: float
  cmap: str

  def apply(self, values: np.ndarray) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8."""
    normed = np.clip((np.asarray(values, np.float32) - self.vmin) / (self.vmax - self.vmin), 0, 1)
    rgba = matplotlib.colormaps[self.cmap](np.nan_to_num(normed, nan=0.0))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


NIR_SCALE = Scale(0.0, 0.6, "gray")
INDEX_SCALE = Scale(-1.0, 1.0, "RdYlGn")
WATER_INDEX_SCALE = Scale(-1.0, 1.0, "RdBu")
ERROR_SCALE = Scale(0.0, 0.2, "inferno")
# Surface reflectance is mostly below 0.3: this gain shows RGB at a natural brightness.
RGB_GAIN = 3.0

PANEL_TITLES = ("RGB", "true NIR", "predicted NIR", "true NDVI", "predicted NDVI",
                "|error| NIR")


def rgb_display(rgb: np.ndarray, gain: float = RGB_GAIN) -> np.ndarray:
  """(H, W, 3) reflectance -> (H, W, 3) uint8 with a fixed gain."""
  return (np.clip(np.nan_to_num(np.asarray(rgb, np.float32)) * gain, 0, 1) * 255 + 0.5
          ).astype(np.uint8)


def _band(nir: np.ndarray) -> np.ndarray:
  nir = np.asarray(nir, np.float32)
  return nir[..., 0] if nir.ndim == 3 else nir


def _index(name: str, rgb: np.ndarray, nir: np.ndarray) -> np.ndarray:
  """Index ``name`` as (H, W), NaN (not drawn) where it is not counted (EVI on clouds)."""
  rgb = np.asarray(rgb, np.float32)
  value = np.asarray(indices.compute_index(name, rgb, _band(nir)[..., None]))[..., 0]
  support = indices.index_support(name, rgb)
  return value if support is None else np.where(support[..., 0], value, np.nan)


def panel_strip(rgb: np.ndarray, nir_true: np.ndarray, nir_pred: np.ndarray,
                separator: int = 2) -> np.ndarray:
  """One example as a row of the ``PANEL_TITLES`` panels: (H, 6 W + 5 separator, 3) uint8."""
  panels = [
      rgb_display(rgb),
      NIR_SCALE.apply(_band(nir_true)),
      NIR_SCALE.apply(_band(nir_pred)),
      INDEX_SCALE.apply(_index("ndvi", rgb, nir_true)),
      INDEX_SCALE.apply(_index("ndvi", rgb, nir_pred)),
      ERROR_SCALE.apply(np.abs(_band(nir_pred) - _band(nir_true))),
  ]
  gap = np.full((panels[0].shape[0], separator, 3), 255, np.uint8)
  row = [panels[0]]
  for panel in panels[1:]:
    row += [gap, panel]
  return np.concatenate(row, axis=1)


def panel_strips(rgb: np.ndarray, nir_true: np.ndarray, nir_pred: np.ndarray) -> np.ndarray:
  """A batch as (N, H, W', 3) uint8 strips (what ``writer.write_images`` takes)."""
  return np.stack([panel_strip(*example) for example in zip(rgb, nir_true, nir_pred, strict=True)])


def comparison_figure(rgb: np.ndarray, nir_true: np.ndarray | None,
                      nir_pred: np.ndarray | dict[str, np.ndarray],
                      titles: list[str] | None = None,
                      index_names: tuple[str, ...] = ("ndvi", "ndwi", "evi")) -> plt.Figure:
  """A figure with one row per example: RGB, true NIR, then each model's predicted NIR and
  |error|, then for each of ``index_names`` the true index and each model's, each with its
  colour bar. ``nir_pred`` is one model's predictions or ``{model name: predictions}``.
  Without ``nir_true`` (RGB-only inputs) the true and error panels are left out."""
  rgb = np.asarray(rgb)
  preds = ({name: np.asarray(p) for name, p in nir_pred.items()} if isinstance(nir_pred, dict)
           else {"predicted": np.asarray(nir_pred)})
  rows = []
  for i in range(rgb.shape[0]):
    cells = [("RGB", rgb_display(rgb[i]), None)]
    if nir_true is not None:
      cells.append(("true NIR", _band(nir_true[i]), NIR_SCALE))
    for model, pred in preds.items():
      cells.append((f"{model} NIR", _band(pred[i]), NIR_SCALE))
      if nir_true is not None:
        cells.append((f"{model} |error|", np.abs(_band(pred[i]) - _band(nir_true[i])),
                      ERROR_SCALE))
    for name in index_names:
      scale = WATER_INDEX_SCALE if name == "ndwi" else INDEX_SCALE
      if nir_true is not None:
        cells.append((f"true {name.upper()}", _index(name, rgb[i], nir_true[i]), scale))
      for model, pred in preds.items():
        cells.append((f"{model} {name.upper()}", _index(name, rgb[i], pred[i]), scale))
    rows.append(cells)
  n_cols = len(rows[0])
  fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 2.3 * len(rows)),
                           squeeze=False, layout="constrained")
  for r, cells in enumerate(rows):
    for c, (title, image, scale) in enumerate(cells):
      ax = axes[r, c]
      if scale is None:
        ax.imshow(image)
      else:
        shown = ax.imshow(image, cmap=scale.cmap, vmin=scale.vmin, vmax=scale.vmax)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(title, fontsize=8)
    if titles is not None:
      axes[r, 0].set_ylabel(titles[r], fontsize=8)
  return fig
