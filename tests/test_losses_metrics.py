import itertools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nirgan_jax import indices, metrics
from nirgan_jax.metrics import GroupedMeans
from nirgan_jax.models import builders
from nirgan_jax.models.discriminator import receptive_fields
from nirgan_jax.train import losses

from conftest import load_config, rbg_key, tiny_config


def _rgbn(seed=0, shape=(2, 16, 16)):
  rng = np.random.default_rng(seed)
  rgb = rng.uniform(0.0, 0.4, size=(*shape, 3)).astype(np.float32)
  nir = rng.uniform(0.0, 0.6, size=(*shape, 1)).astype(np.float32)
  return jnp.asarray(rgb), jnp.asarray(nir)


def _values(m):
  """The metrics of ``image_metrics`` without their weights."""
  return {k: v for k, v in m.items() if not k.startswith(metrics.WEIGHT_PREFIX)}


def test_indices_textbook_values():
  red, green, blue, nir = 0.1, 0.2, 0.05, 0.5
  assert indices.ndvi(red, nir, eps=0) == pytest.approx(0.4 / 0.6)
  assert indices.ndwi(green, nir, eps=0) == pytest.approx(-0.3 / 0.7)
  assert indices.evi(red, nir, blue, eps=0) == pytest.approx(2.5 * 0.4 / (0.5 + 0.6 - 0.375 + 1))
  assert indices.evi2(red, nir, eps=0) == pytest.approx(2.5 * 0.4 / (0.5 + 0.24 + 1))
  assert indices.savi(red, nir, eps=0) == pytest.approx(1.5 * 0.4 / 1.1)
  assert indices.gndvi(green, nir, eps=0) == pytest.approx(0.3 / 0.7)
  # MSAVI equals (2N + 1 - sqrt((2N + 1)^2 - 8(N - R))) / 2.
  expected = (2 * nir + 1 - np.sqrt((2 * nir + 1) ** 2 - 8 * (nir - red))) / 2
  assert float(indices.msavi(red, nir, eps=0)) == pytest.approx(expected, rel=1e-6)


def test_evi_is_counted_only_where_its_denominator_stays_away_from_zero():
  # The standard EVI's denominator N + 6R - 7.5B + 1 is 0 near R, N, B = 0.45, 0.55, 0.5667.
  rgb = np.array([[0.45, 0.3, 0.5667], [0.1, 0.2, 0.05]], np.float32)
  nir = np.array([[0.55], [0.5]], np.float32)
  assert abs(float(indices.evi(rgb[0, 0], nir[0, 0], rgb[0, 2]))) > 100
  np.testing.assert_array_equal(indices.index_support("evi", rgb), [[False], [True]])
  value = indices.compute_index("evi", rgb, nir)
  assert value[0, 0] == 0.0
  assert value[1, 0] == pytest.approx(float(indices.evi(0.1, 0.5, 0.05)))
  assert indices.index_support("ndvi", rgb) is None


@pytest.mark.parametrize("name", indices.INDEX_NAMES)
def test_indices_are_nan_free_with_gradients_on_zeros(name):
  rgb = jnp.zeros((1, 4, 4, 3))
  nir = jnp.zeros((1, 4, 4, 1))
  value, grad = jax.value_and_grad(lambda n: jnp.sum(indices.compute_index(name, rgb, n)))(nir)
  assert np.isfinite(float(value))
  assert np.all(np.isfinite(np.asarray(grad)))


# Reflectance levels of the sweep: exact 0 and 1, and the levels of EVI's pole.
LEVELS = np.array([0.0, 0.1, 0.25, 0.45, 0.55, 0.5667, 0.8, 1.0], np.float32)


def _cube():
  """Every (R, G, B, true N, predicted N) of LEVELS^5 as (8, 64, 64) images."""
  grid = np.array(list(itertools.product(LEVELS, repeat=5)), np.float32).reshape(8, 64, 64, 5)
  return jnp.asarray(grid[..., :3]), jnp.asarray(grid[..., 3:4]), jnp.asarray(grid[..., 4:5])


def _within(value, low, high, tol=1e-5):
  value = np.asarray(value)
  assert np.all(np.isfinite(value))
  assert value.min() >= low - tol and value.max() <= high + tol, (value.min(), value.max())


@jax.jit
def _everything(rgb, true, pred):
  """Every index, loss (with its gradient) and metric of the images."""
  out = {f"index/{name}": indices.compute_index(name, rgb, true) for name in indices.INDEX_NAMES}
  for name in indices.INDEX_NAMES:
    for criterion in losses.RS_CRITERIA:
      loss = lambda p, name=name, criterion=criterion: losses.rs_index_loss(
          rgb, p, true, {name: 1.0}, criterion)[0]
      out[f"rs/{name}/{criterion}"], out[f"grad/rs/{name}/{criterion}"] = (
          jax.value_and_grad(loss)(pred))
  for name in ("l1_loss", "ssim_loss", "emd_histogram_loss"):
    out[name], out[f"grad/{name}"] = jax.value_and_grad(getattr(losses, name))(pred, true)
  for mode in losses.GAN_MODES:
    out[f"gan/{mode}"] = losses.gan_loss(20.0 * (pred - 0.5), True, mode)
  for padding in metrics.SSIM_PADDINGS:
    m = metrics.image_metrics(rgb, pred, true, ssim_padding=padding)
    out.update({f"metric/{padding}/{k}": v for k, v in m.items()})
  return out


def test_every_index_loss_and_metric_is_finite_and_bounded_on_the_reflectance_cube():
  rgb, true, pred = _cube()
  zeros = (jnp.zeros_like(rgb), jnp.zeros_like(true), jnp.zeros_like(pred))
  for images in ((rgb, true, pred), zeros):
    out = jax.device_get(_everything(*images))
    for name in indices.INDEX_NAMES:
      low, high = indices.INDEX_BOUNDS[name]
      _within(out[f"index/{name}"], low, high)
      _within(out[f"rs/{name}/l1"], 0.0, high - low)
      _within(out[f"rs/{name}/l2"], 0.0, (high - low) ** 2)
    for name, limit in (("l1_loss", 1.0), ("ssim_loss", 2.0), ("emd_histogram_loss", 1.0)):
      _within(out[name], 0.0, limit)
    for key, value in out.items():
      if key.startswith(("grad/", "gan/")):
        _within(value, -np.inf, np.inf)
    for padding in metrics.SSIM_PADDINGS:
      m = {k.split("/", 2)[2]: v for k, v in out.items() if k.startswith(f"metric/{padding}/")}
      _within(m["l1"], 0.0, 1.0)
      _within(m["l2"], 0.0, 1.0)
      _within(m["psnr"], 0.0, metrics.PSNR_MAX_DB)
      _within(m["ssim"], -1.0, 1.0)
      for name in metrics.INDEX_METRICS:
        low, high = indices.INDEX_BOUNDS[name]
        _within(m[f"{name}_mae"], 0.0, high - low)


def test_psnr_of_an_exact_match_is_capped():
  rgb, nir = _rgbn()
  m = metrics.image_metrics(rgb, nir, nir)
  np.testing.assert_array_equal(np.asarray(m["psnr"]), metrics.PSNR_MAX_DB)
  means = GroupedMeans(("a",))
  means.add(jax.device_get(m), np.ones(2), np.zeros(2))
  assert means.result()["psnr"] == metrics.PSNR_MAX_DB


def test_gan_losses():
  logits = jnp.array([0.5, -1.0, 2.0])
  assert float(losses.gan_loss(logits, True, "lsgan")) == pytest.approx(
      np.mean((np.array([0.5, -1.0, 2.0]) - 1) ** 2))
  assert float(losses.gan_loss(logits, False, "lsgan")) == pytest.approx(
      np.mean(np.array([0.5, -1.0, 2.0]) ** 2))
  bce = np.mean(np.log1p(np.exp(-np.array([0.5, -1.0, 2.0]))))
  assert float(losses.gan_loss(logits, True, "vanilla")) == pytest.approx(bce, rel=1e-6)
  weighted = losses.gan_loss(logits, False, "lsgan", jnp.array([1.0, 0.0, 1.0]))
  assert float(weighted) == pytest.approx((0.25 + 4.0) / 2)
  with pytest.raises(ValueError, match="gan_mode"):
    losses.gan_loss(logits, True, "wgan")


def test_discriminator_loss_has_no_half_factor():
  total, parts = losses.discriminator_loss(jnp.ones((2, 3, 3, 1)), jnp.ones((2, 3, 3, 1)), "lsgan")
  assert float(total) == pytest.approx(1.0)  # fake term 1, real term 0: sum, not average
  assert float(parts["d_fake"]) == pytest.approx(1.0)


@pytest.mark.parametrize("window", [5, 11])
def test_ssim_valid_filtering_equals_dm_pix(window):
  rgb, nir = _rgbn(shape=(2, 24, 24))
  pred = jnp.clip(nir + 0.05 * jnp.sin(10 * rgb[..., :1]), 0, 1)
  assert float(losses.ssim_loss(nir, nir, window)) == pytest.approx(0.0, abs=1e-6)
  expected = dm_pix.ssim(pred, nir, max_val=1.0, filter_size=window)
  assert float(losses.ssim_loss(pred, nir, window)) == pytest.approx(
      1 - float(expected.mean()), abs=1e-5)
  m = metrics.image_metrics(rgb, pred, nir, ssim_window=window)
  np.testing.assert_allclose(np.asarray(m["ssim"]), np.asarray(expected), atol=1e-5)
  np.testing.assert_allclose(np.asarray(m["psnr"]),
                             -10 * np.log10(np.mean((np.asarray(pred - nir)) ** 2, axis=(1, 2, 3))),
                             rtol=1e-5)


def test_emd_histogram_loss():
  _, nir = _rgbn()
  assert float(losses.emd_histogram_loss(nir, nir)) == pytest.approx(0.0, abs=1e-7)
  # Hand computation for one image.
  a = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
  b = np.array([3.0, 2.0, 1.0, 0.0], np.float32)
  cdf = lambda v: np.cumsum(np.exp(v) / np.exp(v).sum())
  expected = np.mean(np.abs(cdf(a) - cdf(b)))
  got = losses.emd_histogram_loss(a.reshape(1, 2, 2, 1), b.reshape(1, 2, 2, 1))
  assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_rs_index_loss_weights_and_criteria(criterion):
  rgb, nir = _rgbn()
  pred = nir * 0.8
  weights = {"ndvi": 0.5, "evi": 0.25, "ndwi": 0.0}
  total, terms = losses.rs_index_loss(rgb, pred, nir, weights, criterion)
  assert set(terms) == {"ndvi", "evi"}
  crit = (lambda d: np.mean(np.abs(d))) if criterion == "l1" else (lambda d: np.mean(d**2))
  ndvi = crit(np.asarray(indices.compute_index("ndvi", rgb, pred) -
                         indices.compute_index("ndvi", rgb, nir)))
  assert float(terms["ndvi"]) == pytest.approx(ndvi, rel=1e-5)
  assert float(total) == pytest.approx(0.5 * float(terms["ndvi"]) + 0.25 * float(terms["evi"]))


def test_evi_terms_average_over_its_support_only():
  rgb, nir = _rgbn()
  rgb = rgb.at[0, :, :4, 2].set(0.9)  # a blue-bright strip: EVI is not counted there
  pred = nir * 0.8
  support = np.asarray(indices.index_support("evi", rgb))
  assert 0 < support.mean() < 1
  diff = np.abs(np.asarray(indices.evi(rgb[..., :1], pred, rgb[..., 2:]) -
                           indices.evi(rgb[..., :1], nir, rgb[..., 2:])))
  _, terms = losses.rs_index_loss(rgb, pred, nir, {"evi": 1.0})
  assert float(terms["evi"]) == pytest.approx(diff[support].mean(), rel=1e-5)
  m = metrics.image_metrics(rgb, pred, nir)
  assert float(m["evi_mae"][0]) == pytest.approx(diff[0][support[0]].mean(), rel=1e-5)


def test_generator_loss_combines_weighted_terms():
  loss_config = load_config("multiscale").loss
  assert loss_config.ssim_window == 11  # the original's window
  loss_config.lambda_ssim, loss_config.lambda_hist, loss_config.lambda_rs = 2.0, 3.0, 4.0
  rgb, nir = _rgbn()
  pred = nir * 0.9
  logits = jnp.full((2, 2, 2, 1), 0.25)
  total, parts = losses.generator_loss(logits, rgb, pred, nir, loss_config)
  expected = (parts["g_gan"] + 100 * parts["g_l1"] + 2 * parts["g_ssim"] + 3 * parts["g_hist"]
              + 4 * parts["g_rs"])
  assert float(total) == pytest.approx(float(expected), rel=1e-6)
  assert float(parts["g_gan"]) == pytest.approx(0.75**2)
  assert {"g_rs_ndvi", "g_rs_ndwi", "g_rs_evi"} <= set(parts)


def test_metrics_are_per_example():
  rgb, nir = _rgbn(shape=(3, 24, 24))
  pred = nir.at[0].add(0.1)
  m = metrics.image_metrics(rgb, pred, nir)
  names = {"l1", "l2", "psnr", "ssim", "ndvi_mae", "ndwi_mae", "evi_mae", "vegetation_iou"}
  assert set(m) == names | {metrics.WEIGHT_PREFIX + n for n in names}
  for value in m.values():
    assert value.shape == (3,)
  assert float(m["l1"][0]) == pytest.approx(0.1, rel=1e-4)
  assert float(m["l1"][1]) == 0.0
  assert float(m["ssim"][1]) == pytest.approx(1.0)
  assert all(np.all(np.asarray(m[metrics.WEIGHT_PREFIX + n]) == 1.0) for n in names)


def test_index_metrics_stay_bounded_for_predictions_below_zero():
  """A prediction near -red made NDVI MAE unbounded (one such pixel in 256: 208); indices now
  see the prediction clipped to [0, 1], so NDVI MAE is at most 2."""
  rgb = jnp.full((1, 16, 16, 3), 0.05)
  true = jnp.full((1, 16, 16, 1), 0.3)
  pred = true.at[0, 3, 4, 0].set(-0.05 + 1e-7)
  m = metrics.image_metrics(rgb, pred, true)
  assert 0 < float(m["ndvi_mae"][0]) <= 2.0 / 256 + 1e-6
  assert float(m["l1"][0]) == pytest.approx(0.35 / 256, rel=1e-4)  # L1 sees the raw value


def test_vegetation_iou_is_the_jaccard_index_of_ndvi_above_0_3():
  red = 0.1
  rgb = jnp.full((2, 4, 4, 3), red)
  ndvi_nir = lambda ndvi: red * (1 + ndvi) / (1 - ndvi)
  true = jnp.full((2, 4, 4, 1), ndvi_nir(0.1)).at[:, :2].set(ndvi_nir(0.6))  # 8 vegetated
  pred = true.at[0, 0].set(ndvi_nir(0.1)).at[0, 3].set(ndvi_nir(0.5))  # 4 lost, 4 added
  m = metrics.image_metrics(rgb, pred, true)
  assert float(m["vegetation_iou"][0]) == pytest.approx(4 / 12)
  assert float(m["vegetation_iou"][1]) == pytest.approx(1.0)
  valid = jnp.ones((2, 4, 4, 1)).at[0, 3].set(0)  # the added pixels are nodata
  inter, union = metrics.vegetation_overlap(rgb, pred, true, valid)
  np.testing.assert_allclose(inter, [4, 8])
  np.testing.assert_allclose(union, [8, 8])
  bare = metrics.image_metrics(rgb, jnp.full_like(true, 0.1), jnp.full_like(true, 0.1))
  assert float(bare[metrics.WEIGHT_PREFIX + "vegetation_iou"][0]) == 0.0  # nothing to overlap


def test_grouped_means_ignore_padding_and_split_by_sensor():
  means = GroupedMeans(("a", "b"))
  means.add({"psnr": np.array([10.0, 20.0, np.inf])}, np.array([1, 1, 0]), np.array([0, 1, 0]))
  means.add({"psnr": np.array([30.0, np.inf])}, np.array([1, 0]), np.array([1, 1]))
  assert means.result() == {"psnr": 20.0, "psnr/a": 10.0, "psnr/b": 25.0}
  assert means.counts == {"psnr": 3.0, "psnr/a": 1.0, "psnr/b": 2.0}


def test_grouped_means_leave_out_examples_a_metric_does_not_count():
  means = GroupedMeans(("a", "b"))
  means.add({"l1": np.array([0.1, 0.3, 0.0]), "evi_mae": np.array([0.5, 0.0, 0.0]),
             "weight/l1": np.array([1.0, 1.0, 0.0]), "weight/evi_mae": np.array([1.0, 0.0, 0.0])},
            np.array([1, 1, 1]), np.array([0, 1, 1]))
  assert means.result() == pytest.approx({"l1": 0.2, "l1/a": 0.1, "l1/b": 0.3, "evi_mae": 0.5,
                                          "evi_mae/a": 0.5})
  assert means.counts["l1"] == 2.0 and means.counts["evi_mae"] == 1.0


# --------------------------------------------------------------------------- nodata

CROP = 24  # the valid columns; the nodata block fills columns CROP.. of every row


def _with_nodata_block(rgb, nir, pred, fill=np.nan):
  """(rgb, nir, pred, valid) with the columns from CROP on marked nodata and set to ``fill``:
  values there must not matter."""
  valid = jnp.ones(nir.shape, jnp.float32).at[:, :, CROP:].set(0.0)
  spoil = lambda x: jnp.where(valid > 0, x, fill)
  return spoil(rgb), spoil(nir), spoil(pred), valid


def _crop(*images):
  return tuple(x[:, :, :CROP] for x in images)


def _pair(shape=(2, 32, 32)):
  rgb, nir = _rgbn(seed=1, shape=shape)
  pred = jnp.clip(nir * 0.8 + 0.1 * rgb[..., 1:2], 0, 1)
  return rgb, nir, pred


def test_a_nodata_block_gives_the_losses_of_the_cropped_patch():
  rgb, nir, pred = _pair()
  m_rgb, m_nir, m_pred, valid = _with_nodata_block(rgb, nir, pred)
  c_rgb, c_nir, c_pred = _crop(rgb, nir, pred)
  loss_config = load_config("multiscale").loss
  loss_config.lambda_gan = 0.0
  loss_config.lambda_ssim, loss_config.lambda_hist, loss_config.lambda_rs = 1.0, 1.0, 1.0
  loss_config.rs_weights = {name: 1.0 for name in indices.INDEX_NAMES}

  @jax.jit
  def all_losses(rgb, nir, pred, valid=None):
    # generator_loss holds L1, SSIM (window 11), the EMD and every index term (L1 and L2).
    (total, parts), grad = jax.value_and_grad(
        lambda p: losses.generator_loss(None, rgb, p, nir, loss_config, valid), has_aux=True)(pred)
    rs_l2 = losses.rs_index_loss(rgb, pred, nir, dict(loss_config.rs_weights), "l2", valid)[1]
    return {**parts, **{f"l2_{k}": v for k, v in rs_l2.items()}}, grad

  masked, masked_grad = all_losses(m_rgb, m_nir, m_pred, valid)
  cropped, _ = all_losses(c_rgb, c_nir, c_pred)
  assert set(masked) == set(cropped) and len(masked) == 5 + 2 * len(indices.INDEX_NAMES)
  # SSIM averages the windows that hold only valid pixels: with 'valid' filtering those are
  # exactly the windows of the cropped patch. The rest are per-pixel means.
  for name, value in cropped.items():
    np.testing.assert_allclose(float(masked[name]), float(value), rtol=2e-6, err_msg=name)
  # Nothing flows back to the nodata pixels, and NaN there reaches neither value nor gradient.
  assert np.all(np.isfinite(np.asarray(masked_grad)))
  assert np.all(np.asarray(masked_grad)[:, :, CROP:] == 0)


@pytest.mark.parametrize("padding", metrics.SSIM_PADDINGS)
def test_a_nodata_block_gives_the_metrics_of_the_cropped_patch(padding):
  rgb, nir, pred = _pair()
  # Example 0 has the nodata block, example 1 is all valid.
  m_rgb, m_nir, m_pred, valid = _with_nodata_block(rgb, nir, pred, fill=0.0)
  valid = valid.at[1].set(1.0)
  m_rgb, m_nir, m_pred = (x.at[1].set(y[1]) for x, y in ((m_rgb, rgb), (m_nir, nir),
                                                         (m_pred, pred)))
  masked = metrics.image_metrics(m_rgb, m_pred, m_nir, valid=valid, ssim_padding=padding)
  cropped = metrics.image_metrics(*_crop(rgb[:1], pred[:1], nir[:1]), ssim_padding=padding)
  whole = metrics.image_metrics(rgb[1:], pred[1:], nir[1:], ssim_padding=padding)
  for name in _values(masked):
    if name == "ssim" and padding == "same":
      continue
    np.testing.assert_allclose(float(masked[name][0]), float(cropped[name][0]), rtol=2e-6)
    np.testing.assert_allclose(float(masked[name][1]), float(whole[name][0]), rtol=2e-6)
  if padding == "same":
    # The reflect-padded map of the cropped patch, over the pixels whose window in the full
    # patch holds only valid pixels (it is not mirrored at the nodata boundary).
    half = (11 - 1) - (11 - 1) // 2
    cropped_map = metrics.ssim_map(*_crop(pred[:1], nir[:1]), 11, "same")
    np.testing.assert_allclose(float(masked["ssim"][0]),
                               float(cropped_map[:, :, :CROP - half].mean()), rtol=2e-6)
    np.testing.assert_allclose(float(masked["ssim"][1]), float(whole["ssim"][0]), rtol=2e-6)


def test_an_example_without_valid_pixels_scores_zero_with_weight_zero():
  rgb, nir, pred = _pair()
  valid = jnp.ones_like(nir).at[0].set(0.0)
  m = metrics.image_metrics(rgb.at[0].set(np.nan), pred, nir, valid=valid)
  for name, value in _values(m).items():
    assert np.all(np.isfinite(np.asarray(value))), name
    assert float(value[0]) == 0.0 and float(m[metrics.WEIGHT_PREFIX + name][0]) == 0.0, name
    assert float(m[metrics.WEIGHT_PREFIX + name][1]) == 1.0, name
  means = GroupedMeans(("a",))
  means.add(jax.device_get(m), np.ones(2), np.zeros(2))
  assert means.result()["l1"] == pytest.approx(float(m["l1"][1]))
  assert means.counts["l1"] == 1.0


def test_patch_weights_follow_the_discriminators_receptive_fields():
  config = tiny_config("none")
  # Without instance norm, whose statistics span the whole image, a logit depends exactly on
  # the pixels under its convolutions' receptive field.
  config.model.discriminator.norm = "none"
  n_layers = config.model.discriminator.n_layers
  discriminator = builders.build_discriminator(config)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 32, 40, 4)), jnp.float32)
  params = discriminator.init(rbg_key(0), x)
  rows, cols = (receptive_fields(size, n_layers) for size in (32, 40))
  jacobian = jax.jit(jax.jacrev(lambda z: discriminator.apply(params, z)[0, ..., 0]))(x)
  assert jacobian.shape[:2] == (len(rows[0]), len(cols[0]))
  for i, j in itertools.product(range(len(rows[0])), range(len(cols[0]))):
    touched = np.argwhere(np.abs(np.asarray(jacobian[i, j, 0])).sum(-1) > 0)
    assert (touched[:, 0].min(), touched[:, 0].max() + 1) == (rows[0][i], rows[1][i])
    assert (touched[:, 1].min(), touched[:, 1].max() + 1) == (cols[0][j], cols[1][j])

  valid = np.ones((1, 32, 40, 1), np.float32)
  valid[:, :, 25:] = 0.0
  weights = np.asarray(losses.patch_weights(jnp.asarray(valid), n_layers))
  for i, j in itertools.product(range(len(rows[0])), range(len(cols[0]))):
    share = valid[0, rows[0][i]:rows[1][i], cols[0][j]:cols[1][j]].mean()
    assert weights[0, i, j, 0] == float(share >= losses.MIN_PATCH_VALID_SHARE)
  assert 0 < weights.mean() < 1
  assert np.all(np.asarray(losses.patch_weights(jnp.ones_like(valid), n_layers)) == 1.0)


def test_d_loss_ignores_the_logits_it_masks():
  rng = np.random.default_rng(0)
  real, fake = (jnp.asarray(rng.normal(size=(2, 6, 6, 1)), jnp.float32) for _ in range(2))
  weights = jnp.ones_like(real).at[:, :, 4:].set(0.0)
  total, parts = losses.discriminator_loss(real, fake, "lsgan", weights)
  other, _ = losses.discriminator_loss(real.at[:, :, 4:].set(1e6), fake.at[:, :, 4:].set(-7.0),
                                       "lsgan", weights)
  assert float(total) == float(other)
  kept_real, kept_fake = np.asarray(real)[:, :, :4], np.asarray(fake)[:, :, :4]
  assert float(total) == pytest.approx(np.mean(kept_fake**2) + np.mean((kept_real - 1) ** 2),
                                       rel=1e-6)
  assert float(parts["d_real_logit"]) == pytest.approx(kept_real.mean(), rel=1e-5)
  unmasked, _ = losses.discriminator_loss(real, fake, "lsgan", jnp.ones_like(real))
  assert float(unmasked) == pytest.approx(float(losses.discriminator_loss(real, fake,
                                                                          "lsgan")[0]), rel=1e-6)
