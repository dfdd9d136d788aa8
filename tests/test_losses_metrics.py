import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nirgan_jax import indices, metrics
from nirgan_jax.train import losses

from conftest import load_config


def _rgbn(seed=0, shape=(2, 16, 16)):
  rng = np.random.default_rng(seed)
  rgb = rng.uniform(0.0, 0.4, size=(*shape, 3)).astype(np.float32)
  nir = rng.uniform(0.0, 0.6, size=(*shape, 1)).astype(np.float32)
  return jnp.asarray(rgb), jnp.asarray(nir)


def test_indices_textbook_values():
  red, green, blue, nir = 0.1, 0.2, 0.05, 0.5
  assert indices.ndvi(red, nir, eps=0) == pytest.approx(0.4 / 0.6)
  assert indices.ndwi(green, nir, eps=0) == pytest.approx(-0.3 / 0.7)
  assert indices.evi(red, nir, blue, eps=0) == pytest.approx(2.5 * 0.4 / (0.5 + 0.6 - 0.375 + 1))
  assert indices.savi(red, nir, eps=0) == pytest.approx(1.5 * 0.4 / 1.1)
  assert indices.gndvi(green, nir, eps=0) == pytest.approx(0.3 / 0.7)
  # MSAVI equals (2N + 1 - sqrt((2N + 1)^2 - 8(N - R))) / 2.
  expected = (2 * nir + 1 - np.sqrt((2 * nir + 1) ** 2 - 8 * (nir - red))) / 2
  assert float(indices.msavi(red, nir, eps=0)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", indices.INDEX_NAMES)
def test_indices_are_nan_free_with_gradients_on_zeros(name):
  rgb = jnp.zeros((1, 4, 4, 3))
  nir = jnp.zeros((1, 4, 4, 1))
  value, grad = jax.value_and_grad(lambda n: jnp.sum(indices.compute_index(name, rgb, n)))(nir)
  assert np.isfinite(float(value))
  assert np.all(np.isfinite(np.asarray(grad)))


def test_gan_losses():
  logits = jnp.array([0.5, -1.0, 2.0])
  assert float(losses.gan_loss(logits, True, "lsgan")) == pytest.approx(
      np.mean((np.array([0.5, -1.0, 2.0]) - 1) ** 2))
  assert float(losses.gan_loss(logits, False, "lsgan")) == pytest.approx(
      np.mean(np.array([0.5, -1.0, 2.0]) ** 2))
  bce = np.mean(np.log1p(np.exp(-np.array([0.5, -1.0, 2.0]))))
  assert float(losses.gan_loss(logits, True, "vanilla")) == pytest.approx(bce, rel=1e-6)
  with pytest.raises(ValueError, match="gan_mode"):
    losses.gan_loss(logits, True, "wgan")


def test_discriminator_loss_has_no_half_factor():
  total, parts = losses.discriminator_loss(jnp.ones((2, 3, 3, 1)), jnp.ones((2, 3, 3, 1)), "lsgan")
  assert float(total) == pytest.approx(1.0)  # fake term 1, real term 0: sum, not average
  assert float(parts["d_fake"]) == pytest.approx(1.0)


def test_ssim_loss_and_psnr_use_dm_pix():
  rgb, nir = _rgbn()
  pred = jnp.clip(nir + 0.05, 0, 1)
  assert float(losses.ssim_loss(nir, nir)) == pytest.approx(0.0, abs=1e-6)
  ssim5 = dm_pix.ssim(pred, nir, max_val=1.0, filter_size=5)
  assert float(losses.ssim_loss(pred, nir, window=5)) == pytest.approx(1 - float(ssim5.mean()))
  m = metrics.image_metrics(rgb, pred, nir, ssim_window=11)
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


def test_generator_loss_combines_weighted_terms():
  cfg = load_config("multiscale").loss
  cfg.lambda_ssim, cfg.lambda_hist, cfg.lambda_rs = 2.0, 3.0, 4.0
  rgb, nir = _rgbn()
  pred = nir * 0.9
  logits = jnp.full((2, 2, 2, 1), 0.25)
  total, parts = losses.generator_loss(logits, rgb, pred, nir, cfg)
  expected = (parts["g_gan"] + 100 * parts["g_l1"] + 2 * parts["g_ssim"] + 3 * parts["g_hist"]
              + 4 * parts["g_rs"])
  assert float(total) == pytest.approx(float(expected), rel=1e-6)
  assert float(parts["g_gan"]) == pytest.approx(0.75**2)
  assert {"g_rs_ndvi", "g_rs_ndwi", "g_rs_evi"} <= set(parts)


def test_metrics_are_per_example():
  rgb, nir = _rgbn(shape=(3, 24, 24))
  pred = nir.at[0].add(0.1)
  m = metrics.image_metrics(rgb, pred, nir)
  assert set(m) == {"l1", "l2", "psnr", "ssim", "ndvi_mae", "ndwi_mae", "evi_mae"}
  for value in m.values():
    assert value.shape == (3,)
  assert float(m["l1"][0]) == pytest.approx(0.1, rel=1e-4)
  assert float(m["l1"][1]) == 0.0
  assert float(m["ssim"][1]) == pytest.approx(1.0)


def test_grouped_means_ignore_padding_and_split_by_sensor():
  from nirgan_jax.metrics import GroupedMeans

  means = GroupedMeans(("a", "b"))
  means.add({"psnr": np.array([10.0, 20.0, np.inf])}, np.array([1, 1, 0]), np.array([0, 1, 0]))
  means.add({"psnr": np.array([30.0, np.inf])}, np.array([1, 0]), np.array([1, 1]))
  assert means.result() == {"psnr": 20.0, "psnr/a": 10.0, "psnr/b": 25.0}
  assert means.counts == {"psnr": 3.0, "psnr/a": 1.0, "psnr/b": 2.0}
