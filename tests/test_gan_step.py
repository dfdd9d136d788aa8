import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from nirgan_jax import evaluation, models
from nirgan_jax import metrics as metrics_lib
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train import state as train_state
from nirgan_jax.train import step as gan_step

from conftest import load_config, tiny_config

IMAGE = 32


def _batch(n=8, seed=0):
  """RGB with spatial structure and a NIR that is a fixed function of it (learnable)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, IMAGE), np.linspace(0, 1, IMAGE), indexing="ij")
  phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 3))
  freq = rng.uniform(2, 6, size=(n, 1, 1, 3))
  rgb = 0.25 + 0.2 * np.sin(freq * (xx + yy)[None, :, :, None] * np.pi + phase)
  nir = np.clip(1.6 * rgb[..., 1:2] - 0.6 * rgb[..., 0:1] + 0.1, 0, 1)
  lonlat = np.stack([rng.uniform(-180, 180, n), rng.uniform(-80, 80, n)], -1)
  return {"rgb": rgb.astype(np.float32), "nir": nir.astype(np.float32),
          "lonlat": lonlat.astype(np.float32)}


def _setup(config, devices):
  nirgan = models.NIRGAN.from_config(config)
  mesh = mesh_lib.make_data_mesh(devices)
  key = jax.random.key(0, impl=config.rng_impl)
  g_state, d_state = train_state.create_train_states(nirgan, key, IMAGE, mesh)
  satclip_params = models.init_location_encoder(nirgan, jax.random.key(1, impl=config.rng_impl))
  return nirgan, mesh, g_state, d_state, satclip_params


def _run(config, devices, steps, batch):
  nirgan, mesh, g, d, s = _setup(config, devices)
  step = gan_step.make_train_step(nirgan, mesh)
  sharded = mesh_lib.shard_batch(mesh, batch)
  history = []
  for _ in range(steps):
    g, d, m = step(g, d, s, sharded, jax.random.key(2, impl=config.rng_impl))
    history.append(jax.device_get(m))
  return g, d, history


def _recording_gradients(state):
  """``state`` with an optimiser that leaves the params as they are and keeps the gradients of
  its last update as its state: what a step computes, before any optimiser transforms it."""
  keep = optax.GradientTransformation(
      init=lambda params: jax.tree.map(jnp.zeros_like, params),
      update=lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))
  tx = optax.inject_hyperparams(lambda learning_rate: keep)(learning_rate=1.0)
  return state.replace(tx=tx, opt_state=tx.init(state.params))


def _first_step_gradients(config, devices, batch):
  """The metrics and the (G, D) gradients of one train step on ``devices``."""
  nirgan, mesh, g, d, s = _setup(config, devices)
  step = gan_step.make_train_step(nirgan, mesh)
  g, d, metrics = step(_recording_gradients(g), _recording_gradients(d), s,
                       mesh_lib.shard_batch(mesh, batch), jax.random.key(2, impl=config.rng_impl))
  assert g.params["conv_in"]["kernel"].sharding.spec == jax.sharding.PartitionSpec()
  flat = lambda state: traverse_util.flatten_dict(jax.device_get(state.opt_state.inner_state))
  return jax.device_get(metrics), {"G": flat(g), "D": flat(d)}


def summation_bound(n_terms: int) -> float:
  """The relative difference two float32 sums of the same ``n_terms`` terms, added in any two
  orders, can have: each is within ``n u sum|x|`` of the exact sum (u = 2**-24, Higham,
  "Accuracy and Stability of Numerical Algorithms", 2nd ed., eq. 4.4)."""
  return 2 * n_terms * 2.0**-24


def test_sharded_step_equals_single_device_step():
  """Sharding changes only the order of the batch reductions (the losses' means and the
  gradients' sums over examples and pixels, then an all-reduce over devices): the losses and
  the gradients, before the optimiser, agree within float32 summation error. (After Adam they
  need not: a component with a near-zero gradient moves by +-lr on either sign of its noise.)"""
  assert jax.device_count() > 1, "needs XLA_FLAGS=--xla_force_host_platform_device_count=N"
  config = tiny_config("multiply")
  config.model.conv_impl = "xla"
  batch = _batch()
  m_sharded, g_sharded = _first_step_gradients(config, jax.devices(), batch)
  m_single, g_single = _first_step_gradients(config, jax.devices()[:1], batch)

  # The longest reduction: D's real and fake pairs, over every example and pixel.
  n, height, width, _ = batch["rgb"].shape
  bound = summation_bound(2 * n * height * width)
  for key in ("d_total", "d_real", "d_fake", "g_total", "g_l1", "g_gan"):
    assert m_sharded[key] == pytest.approx(m_single[key], rel=bound), key
  for name in ("G", "D"):
    # sum|x| taken at the scale of the network's largest gradient component (measured: the
    # differences are about a thousandth of the bound; a missing or doubled share is not).
    scale = max(float(np.max(np.abs(v))) for v in g_single[name].values())
    for path, value in g_sharded[name].items():
      diff = float(np.max(np.abs(value - g_single[name][path])))
      assert diff <= bound * scale, f"{name} {'/'.join(path)} gradient differs by {diff}"
  # Not vacuous: a step that left out a device's share of the batch is far outside the bound.
  m_half, g_half = _first_step_gradients(config, jax.devices()[:1],
                                         jax.tree.map(lambda x: x[: n // 2], batch))
  assert m_half["g_l1"] != pytest.approx(m_single["g_l1"], rel=bound)


def test_tiny_model_overfits_a_fixed_batch():
  config = tiny_config("multiply")
  config.optim.lr = 2e-3
  nirgan, mesh, g, d, s = _setup(config, jax.devices())
  step = gan_step.make_train_step(nirgan, mesh)
  batch = mesh_lib.shard_batch(mesh, _batch())
  key = jax.random.key(2, impl=config.rng_impl)
  l1 = []
  for _ in range(100):
    g, d, m = step(g, d, s, batch, key)
    l1.append(float(m["g_l1"]))
  assert np.all(np.isfinite(l1))
  assert min(l1[-5:]) < l1[0] / 5, f"L1 went from {l1[0]:.4f} to {l1[-1]:.4f}"


@pytest.mark.parametrize("style", ["none", "add", "concat"])
def test_every_injection_style_trains(style):
  config = tiny_config(style)
  config.model.conv_impl = "xla"
  config.loss.lambda_ssim = 1.0  # every optional loss term on, once
  config.loss.lambda_hist = 1.0
  config.loss.lambda_rs = 1.0
  g, d, history = _run(config, jax.devices(), 2, _batch())
  for m in history:
    assert all(np.isfinite(v) for v in m.values())
    assert m["nonfinite"] == 0.0
  assert {"g_ssim", "g_hist", "g_rs", "g_rs_ndvi"} <= set(history[0])
  assert ("injection_scale" in history[0]) == (style in ("add",))
  assert g.step == 2 and d.step == 2


def test_train_step_honours_the_valid_mask():
  config = tiny_config("multiply")
  config.model.conv_impl = "xla"
  config.loss.lambda_ssim = 1.0
  config.loss.lambda_rs = 1.0
  batch = _batch()
  all_valid = {**batch, "valid": np.ones(batch["nir"].shape, np.float32)}
  # A mask of ones is the same arithmetic, weighted: equal within float32 summation error.
  m0, g0 = _first_step_gradients(config, jax.devices(), batch)
  m1, g1 = _first_step_gradients(config, jax.devices(), all_valid)
  n, height, width, _ = batch["rgb"].shape
  bound = summation_bound(2 * n * height * width)
  for key, value in m0.items():
    assert m1[key] == pytest.approx(value, rel=bound, abs=1e-7), key
  for name in ("G", "D"):
    scale = max(float(np.max(np.abs(v))) for v in g0[name].values())
    for path, value in g1[name].items():
      assert float(np.max(np.abs(value - g0[name][path]))) <= bound * scale, (name, path)

  # A nodata block, with garbage under it in the true NIR.
  holed = {**all_valid, "valid": all_valid["valid"].copy(), "nir": batch["nir"].copy()}
  holed["valid"][:, :, IMAGE // 2:] = 0.0
  holed["nir"][:, :, IMAGE // 2:] = 5.0
  _, _, h2 = _run(config, jax.devices(), 1, holed)
  assert h2[0]["nonfinite"] == 0.0 and all(np.isfinite(v) for v in h2[0].values())
  assert h2[0]["g_l1"] < 1.0  # the garbage (5.0) is not counted


def test_nonfinite_loss_leaves_the_states_unchanged():
  config = tiny_config("multiply")
  config.model.conv_impl = "xla"
  config.optim.ema_decay = 0.9
  nirgan, mesh, g, d, s = _setup(config, jax.devices())
  step = gan_step.make_train_step(nirgan, mesh)
  key = jax.random.key(2, impl="rbg")
  g, d, _ = step(g, d, s, mesh_lib.shard_batch(mesh, _batch()), key)  # average != weights
  bad = _batch()
  bad["nir"][0, 0, 0, 0] = np.nan
  before = jax.device_get((g.step, g.params, g.ema_params, d.params))
  g, d, m = step(g, d, s, mesh_lib.shard_batch(mesh, bad), key)
  assert float(m["nonfinite"]) == 1.0
  assert not np.isfinite(float(m["g_l1"]))
  jax.tree.map(np.testing.assert_array_equal, before,
               jax.device_get((g.step, g.params, g.ema_params, d.params)))


def test_weight_average_is_the_bias_corrected_mean_of_the_updates():
  decay, params = 0.8, {"w": jnp.array([1.0, -2.0])}
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.5),
                                        ema_decay=decay)
  assert state.eval_params is state.ema_params
  after_each = []
  for t in range(1, 5):
    state = state.apply_gradients(grads={"w": jnp.array([t, 1.0 - t])})
    after_each.append(np.asarray(state.params["w"]))
  # Update i weighs decay ** (4 - i); the initial weights not at all.
  weights = decay ** np.arange(3, -1, -1)
  expected = (weights[:, None] * np.stack(after_each)).sum(0) / weights.sum()
  np.testing.assert_allclose(np.asarray(state.ema_params["w"]), expected, rtol=1e-6)
  assert not np.allclose(expected, after_each[-1])

  plain = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.5))
  plain = plain.apply_gradients(grads={"w": jnp.ones(2)})
  assert plain.ema_params is None and plain.eval_params is plain.params


def test_nonfinite_gradient_with_a_finite_loss_leaves_the_states_unchanged(monkeypatch):
  """sqrt(|x| * 0) is 0 but its gradient is inf * 0 = NaN: a finite loss whose gradient is
  not, as bf16 overflow in a backward pass can give."""
  from nirgan_jax.train import losses

  l1_loss = losses.l1_loss
  monkeypatch.setattr(losses, "l1_loss", lambda pred, target, valid=None: (
      l1_loss(pred, target, valid) + jnp.mean(jnp.sqrt(jnp.abs(pred - target) * 0.0))))
  config = tiny_config("none")
  nirgan, mesh, g, d, s = _setup(config, jax.devices())
  step = gan_step.make_train_step(nirgan, mesh)
  before = jax.device_get((g.params, g.opt_state, d.params, d.opt_state))
  g, d, m = step(g, d, s, mesh_lib.shard_batch(mesh, _batch()), jax.random.key(2, impl="rbg"))
  assert np.isfinite(float(m["g_l1"])) and float(m["nonfinite"]) == 1.0
  after = jax.device_get((g.params, g.opt_state, d.params, d.opt_state))
  jax.tree.map(np.testing.assert_array_equal, before, after)


def test_learning_rate_is_injectable():
  config = tiny_config("none")
  nirgan = models.NIRGAN.from_config(config)
  mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
  g, _ = train_state.create_train_states(nirgan, jax.random.key(0, impl="rbg"), IMAGE, mesh)
  assert float(train_state.learning_rate(g)) == pytest.approx(2e-4)
  g = train_state.with_learning_rate(g, 2e-5)
  assert float(train_state.learning_rate(g)) == pytest.approx(2e-5)


def test_eval_step_returns_per_example_metrics():
  config = tiny_config("multiply")
  config.model.conv_impl = "xla"
  nirgan, mesh, g, _, s = _setup(config, jax.devices())
  eval_step = gan_step.make_eval_step(nirgan, mesh, evaluation.Protocol(5))
  pred, metrics = eval_step(g.params, s, mesh_lib.shard_batch(mesh, _batch()))
  assert pred.shape == (8, IMAGE, IMAGE, 1)
  assert metrics["l1"].shape == (8,)
  assert jnp.all(jnp.isfinite(metrics["psnr"]))

  batch = _batch()
  batch["valid"] = np.ones(batch["nir"].shape, np.float32)
  batch["valid"][:4, :, :10] = 0.0
  pred, masked = eval_step(g.params, s, mesh_lib.shard_batch(mesh, batch))
  expected = metrics_lib.image_metrics(batch["rgb"], pred, batch["nir"], 5,
                                       valid=batch["valid"])
  for key, value in expected.items():
    np.testing.assert_allclose(np.asarray(masked[key]), np.asarray(value), rtol=1e-5, err_msg=key)
  assert not np.allclose(np.asarray(masked["l1"][:4]), np.asarray(metrics["l1"][:4]))


@pytest.mark.parametrize("kind", ["linear", "mlp", "cnn"])
def test_baselines_regress_without_a_discriminator(kind):
  config = load_config("baselines")
  config.model.generator.kind = kind
  config.model.conv_impl = "xla"
  config.model.baseline.hidden = 16
  config.optim.lr = 1e-2
  config.pad = 4
  nirgan, mesh, g, d, s = _setup(config, jax.devices())
  assert nirgan.encoder is None
  d_before = jax.device_get(d.params)
  step = gan_step.make_train_step(nirgan, mesh)
  batch = mesh_lib.shard_batch(mesh, _batch())
  l1 = []
  for _ in range(30):
    g, d, m = step(g, d, s, batch, jax.random.key(2, impl="rbg"))
    l1.append(float(m["g_l1"]))
  assert "d_total" not in m and "g_gan" not in m
  assert min(l1[-5:]) < l1[0] / 2, f"{kind}: L1 went from {l1[0]:.4f} to {l1[-1]:.4f}"
  jax.tree.map(np.testing.assert_array_equal, d_before, jax.device_get(d.params))
