"""The full NIR-GAN recipe: the reference architecture, losses and optimiser.

Variants import this file and override. Architecture knobs (``pad``,
``compute_dtype``, ``model``, ``satclip``) come from ``nirgan_jax.models.config``.
"""

import ml_collections

from nirgan_jax import metrics
from nirgan_jax.models import config as model_config


def get_config() -> ml_collections.ConfigDict:
  config = model_config.get_config()
  config.seed = 42
  # PRNG for parameter init and dropout. "rbg" (XLA's RngBitGenerator) compiles about 5x
  # faster than "threefry2x32" on CPU and is fast on TPU; values differ between the two.
  config.rng_impl = "rbg"

  config.loss = ml_collections.ConfigDict()
  config.loss.gan_mode = "lsgan"  # lsgan | vanilla
  config.loss.lambda_gan = 1.0
  config.loss.lambda_l1 = 100.0
  config.loss.lambda_ssim = 0.0
  config.loss.ssim_window = metrics.SSIM_WINDOW  # the original's window
  config.loss.lambda_hist = 0.0  # EMD between softmax-CDF histograms
  config.loss.lambda_rs = 0.0  # remote-sensing index loss, off as in the original
  config.loss.rs_criterion = "l1"  # l1 | l2
  config.loss.rs_weights = ml_collections.ConfigDict(dict(
      ndvi=0.33, ndwi=0.33, evi=0.33, savi=0.0, msavi=0.0, gndvi=0.0))

  config.optim = ml_collections.ConfigDict(dict(lr=2e-4, b1=0.5, b2=0.999))
  # Evaluation, checkpoint selection and export use an exponential moving average of the
  # generator's weights with this decay (it averages over about 1 / (1 - decay) steps);
  # 0 (the original) uses the weights as trained.
  config.optim.ema_decay = 0.0
  # ReduceLROnPlateau on val L1 for G and D (PyTorch semantics). The original configures
  # factor 0.5 but never passes it, so it ran with PyTorch's default 0.1: kept here.
  config.optim.plateau = ml_collections.ConfigDict(dict(
      factor=0.1, patience=5, threshold=1e-4, min_lr=0.0))

  # Input pipeline (nirgan_jax/data/pipeline.py). Sources are mixed by weight; the seed's
  # patch counts: Landsat-8 20k, Sentinel-2 75k, SPOT-6 15k, NAIP 35k. Each example is shown
  # at its native ground sampling distance with prob_native, else at one of derived_gsd_m
  # (area-averaged). Build the datasets with `python -m data_prep.build`. The seed's Landsat-8
  # set was a private Earth Engine export of LANDSAT/LC08/C02/T1_TOA; SSL4EO-L's TOA scenes are
  # public (CC0) patches of the same collection, 8-bit up to 0.4 reflectance. An export of your
  # own reads as landsat8/rgbn_toa.
  config.data = ml_collections.ConfigDict()
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.image_size = 256
  config.data.batch_size_per_device = 8
  # Keyed by a short name (sorted by it), so each knob overrides on the command line, e.g.
  # --config.data.sources.naip.weight=50000.
  # Every pixel of an example is real, so a gsd needs image_size * gsd / native_gsd_m native
  # pixels in the stored patches; training refuses to start if a build's patches are smaller.
  # With each source's default patch size (in native px; `--patch_size` at build time):
  #   landsat8/ssl4eo_toa 256 (30 m)   a 264 px SSL4EO-L scene: native only
  #   s2_100k/default     256 (10 m)   S2-100K patches are 256 px: native only
  #   sen2naip/hr         512 (2.5 m)  a 520 px SEN2NAIP sample: up to 5 m
  #   worldstrat/hr      1024 (1.5 m)  a 1,054 px WorldStrat scene: up to 6 m (SPOT's own MS)
  config.data.sources = ml_collections.ConfigDict(dict(
      landsat8=source("landsat8/ssl4eo_toa", 20_000, 30.0, (), 1.0),
      naip=source("sen2naip/hr", 35_000, 2.5, (5.0,), 0.5),
      sentinel2=source("s2_100k/default", 75_000, 10.0, (), 1.0),
      spot6=source("worldstrat/hr", 15_000, 1.5, (2.5, 5.0, 6.0), 0.25),
  ))
  # One brightness factor on RGB and NIR together per training example, log-uniform in
  # this range and lowered where a reflectance would pass 1: a change of illumination,
  # which leaves NDVI unchanged. (1, 1): off, as in the original.
  config.data.illumination_gain = (1.0, 1.0)
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.read_threads = 8
  config.data.prefetch_buffer = 64  # batches of ~512 KB records: the Grain default is 500
  # Worker processes per host (mp_prefetch); "auto": as many as the measured step needs.
  config.data.workers = ml_collections.FieldReference("auto", field_type=object)
  config.data.per_worker_buffer = 2
  config.data.device_prefetch = 2  # batches sharded onto the devices ahead of the step
  config.data.build_missing = False  # build generated sources (the demo) if absent

  config.train = ml_collections.ConfigDict(dict(
      num_train_steps=500_000,
      log_every=100,
      eval_every=5_000,  # evaluation and checkpoint
      eval_ssim_window=metrics.SSIM_WINDOW,
      image_every=5_000,  # prediction panels in TensorBoard (0: never)
      num_images=4,  # eval examples shown in the panels
      keep_best=3,  # checkpoints kept by val L1, besides the latest
      # skip | halt: what a NaN/inf loss does (never saved either way). Either is acted on at
      # the next log step, which names the skipped steps: no step waits for the host.
      on_nonfinite="skip",
      # With several processes, every this many steps they agree whether a SIGTERM arrived
      # (a collective); a single process checks after every step at no cost.
      stop_check_every=10,
  ))

  # Fine-tuning: start from these weights instead of random ones (ignored when the workdir
  # already holds a checkpoint, which is resumed). A model directory (export, import_torch),
  # an original NIR-GAN .ckpt, or another run's workdir at step `step` (best|latest|N).
  # The optimizer states start fresh.
  config.init = ml_collections.ConfigDict(dict(checkpoint="", step="best", discriminator=True))
  return config


def source(name: str, weight: float, native_gsd_m: float, derived_gsd_m: tuple,
           prob_native: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name=name, weight=weight, native_gsd_m=native_gsd_m,
                                        derived_gsd_m=derived_gsd_m, prob_native=prob_native))
