"""Every config file loads, passes validation and builds its networks; the full recipe has
the reference values and the variants change only what they are for."""

import csv
import re

import jax
import numpy as np
import pytest
import rasterio

from data_prep import build
from nirgan_jax import errors, models
from nirgan_jax.data import pipeline as input_pipeline
from nirgan_jax.train import config_checks

from conftest import REPO, TINY_CONFIG, load_config, load_config_file, load_config_module

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_builds(name):
  config = load_config(name)
  config_checks.validate_config(config)
  nirgan = models.NIRGAN.from_config(config)
  assert (nirgan.encoder is None) == (config.model.injection.style == "none")
  specs = input_pipeline.source_specs(config.data, config.data.train_split)
  assert specs and all(s.weight > 0 for s in specs)


def test_full_recipe_has_the_reference_values():
  c = load_config("multiscale")
  assert (c.data.image_size, c.pad, c.data.batch_size_per_device) == (256, 10, 8)
  assert (c.model.generator.ngf, c.model.generator.n_blocks) == (64, 9)
  assert (c.model.discriminator.ndf, c.model.discriminator.n_layers) == (64, 3)
  assert c.model.injection.style == "multiply" and c.model.injection.scale_init == 0.01
  assert c.model.injection.learn_scale and c.satclip.legendre_polys == 10
  assert (c.loss.gan_mode, c.loss.lambda_l1, c.loss.lambda_gan) == ("lsgan", 100.0, 1.0)
  assert c.loss.lambda_rs == 0.0 and c.loss.lambda_hist == 0.0
  assert (c.optim.lr, c.optim.b1, c.optim.plateau.patience) == (2e-4, 0.5, 5)
  weights = {k: s.weight for k, s in c.data.sources.items()}
  assert weights == {"landsat8": 20_000, "sentinel2": 75_000, "spot6": 15_000, "naip": 35_000}
  resolutions = {k: (s.native_gsd_m, tuple(s.derived_gsd_m), s.prob_native)
                 for k, s in c.data.sources.items()}
  assert resolutions == {"landsat8": (30.0, (), 1.0), "sentinel2": (10.0, (), 1.0),
                         "naip": (2.5, (5.0,), 0.5), "spot6": (1.5, (2.5, 5.0, 6.0), 0.25)}


@pytest.mark.parametrize("name", CONFIGS + ["tests/configs/tiny"])
def test_every_configured_resolution_fits_the_default_patch_sizes(name):
  """Built with each source's default --patch_size, every example of every configured gsd is
  cut from real pixels (the pipeline would refuse the source otherwise)."""
  config = load_config_file(TINY_CONFIG) if name.startswith("tests/") else load_config(name)
  for spec in input_pipeline.source_specs(config.data, config.data.train_split):
    dataset, _, config_name = spec.name.partition("/")
    patch_size = next(c.patch_size for c in build.BUILDERS[dataset].BUILDER_CONFIGS
                      if c.name == config_name)
    input_pipeline.check_fillable(spec, patch_size, config.data.image_size)


@pytest.mark.parametrize("workers", ["auto", 0, 3, "3"])
def test_data_workers_is_auto_or_a_count(workers):
  config = load_config_file(TINY_CONFIG)
  config.data.workers = workers
  config_checks.validate_config(config)


@pytest.mark.parametrize("workers", ["many", -1, 1.5])
def test_other_data_workers_are_refused_in_one_line(workers):
  config = load_config_file(TINY_CONFIG)
  config.data.workers = workers
  message = re.escape(f"invalid config value data.workers={workers!r}")
  with pytest.raises(errors.ConfigError, match=f"^{message}$"):
    config_checks.validate_config(config)


def _differences(a, b, prefix=""):
  keys = set(a) | set(b)
  out = set()
  for key in keys:
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      out |= _differences(a[key], b[key], f"{prefix}{key}.")
    elif a.get(key) != b.get(key):
      out.add(prefix + key)
  return out


@pytest.mark.parametrize("variant", ["gan", "linear", "mlp", "cnn"])
def test_real_places_recipe_is_the_small_recipe_on_both_real_folders(variant):
  """configs/s2_real.py changes only the data of configs/s2_small.py (and the GAN's adversarial
  weight, chosen on the leave-places-out folds), and mixes its two sources in proportion to
  the pixels they store."""
  small = load_config_module(REPO / "configs" / "s2_small.py").get_config(variant)
  module = load_config_module(REPO / "configs" / "s2_real.py")
  real = module.get_config(variant)
  config_checks.validate_config(real)
  changed = _differences(small.to_dict(), real.to_dict())
  assert changed == {"data.sources.sentinel2", "data.sources.s2_100k", "data.sources.s2_more",
                     "data.train_split"} | ({"loss.lambda_gan"} if variant == "gan" else set())
  if variant == "gan":
    assert (small.loss.lambda_gan, real.loss.lambda_gan) == (1.0, 0.1)
  pixels = {}
  for key, folder in (("s2_100k", "s2_100k_10"), ("s2_more", "s2_more")):
    pixels[key] = 0
    with (REPO / "tests" / "data" / folder / "index.csv").open() as f:
      for row in csv.DictReader(f):
        with rasterio.open(REPO / "tests" / "data" / folder / "images" / row["fn"]) as src:
          pixels[key] += src.width * src.height
  assert pixels == {"s2_100k": module.S2_100K_PIXELS, "s2_more": module.S2_MORE_PIXELS}
  weights = {k: s.weight for k, s in real.data.sources.items()}
  assert weights["s2_more"] / weights["s2_100k"] == pytest.approx(
      pixels["s2_more"] / pixels["s2_100k"])


@pytest.mark.parametrize("variant", ["linear", "mlp", "cnn"])
def test_small_real_set_baselines_change_only_the_model_loss_and_optimiser(variant):
  module = load_config_module(REPO / "configs" / "s2_small.py")
  baseline = module.get_config(variant)
  config_checks.validate_config(baseline)
  assert _differences(module.get_config().to_dict(), baseline.to_dict()) == {
      "model.generator.kind", "model.baseline.hidden", "pad", "loss.lambda_gan",
      "loss.lambda_ssim", "optim.lr", "optim.b1", "optim.ema_decay"}
  with pytest.raises(ValueError, match="variant must be one of"):
    module.get_config("resnet")


@pytest.mark.parametrize("variant", ["linear", "mlp", "cnn"])
def test_small_real_set_baselines_pad_just_their_receptive_field(variant):
  """Their context padding, narrower than the GAN's, gives the loss pixels the very same
  prediction as the GAN's 8 px would."""
  module = load_config_module(REPO / "configs" / "s2_small.py")
  config = module.get_config(variant)
  nirgan = models.NIRGAN.from_config(config)
  rgb = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3)) * 0.5
  params = nirgan.generator.init(jax.random.key(1), rgb)["params"]
  wide = module.get_config().pad
  assert config.pad < wide
  np.testing.assert_allclose(nirgan.generate(params, rgb, None),
                             nirgan.generate(params, rgb, None, pad=wide), atol=1e-6)


@pytest.mark.parametrize("name,changed", [
    ("no_satclip", {"model.injection.style"}),
    ("s2_only", {"data.sources.landsat8", "data.sources.naip", "data.sources.spot6",
                 "data.sources.sentinel2.weight"}),
    ("rs_losses", {"loss.lambda_rs", "loss.lambda_hist"}),
    ("baselines", {"model.generator.kind", "model.injection.style", "loss.lambda_gan",
                   "optim.lr", "optim.b1"}),
])
def test_variants_override_only_their_own_knobs(name, changed):
  base, variant = load_config("multiscale").to_dict(), load_config(name).to_dict()
  assert _differences(base, variant) == changed
