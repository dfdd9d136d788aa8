"""The NIR-GAN training and evaluation steps, data parallel over a 1-D mesh.

One iteration (as in the original, see DESIGN.md):

1. reflect-pad the RGB by ``config.pad`` px, run the generator once, crop back;
2. update D on (real, stop_gradient(fake)) with loss_D = loss(fake) + loss(real);
3. update G against the *updated* D.

The original ran G's forward twice (once per Lightning optimizer); G's parameters
do not change during the D update, so the forward of step 1 is kept with
``jax.vjp`` and its pullback gives G's gradient: the same numbers, one forward less.

The steps are pure functions of (states, frozen SatCLIP params, batch, rng).
``make_train_step`` jits one over the mesh: batch sharded on "data", states
replicated and donated. XLA inserts the gradient all-reduce; the result equals a
single-device step on the whole batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax.sharding import Mesh

from nirgan_jax import losses, metrics, models
from nirgan_jax.mesh import batch_sharded, replicated
from nirgan_jax.models import layers

TrainState = train_state.TrainState
STEP_SECTIONS = ("pad", "compute_dtype", "model", "satclip", "loss", "optim")
Batch = dict[str, jax.Array]


def make_optimizer(optim_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam whose learning rate lives in the optimizer state, so a schedule can set it."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=optim_cfg.lr, b1=optim_cfg.b1,
                                              b2=optim_cfg.b2)


def learning_rate(state: TrainState) -> jax.Array:
  return state.opt_state.hyperparams["learning_rate"]


def with_learning_rate(state: TrainState, lr: float | jax.Array) -> TrainState:
  """A copy of ``state`` whose optimizer uses ``lr`` from the next update on."""
  hyperparams = dict(state.opt_state.hyperparams)
  hyperparams["learning_rate"] = jnp.asarray(lr, hyperparams["learning_rate"].dtype)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


@dataclasses.dataclass(frozen=True)
class NIRGAN:
  """The three networks of NIR-GAN and the config that built them (static, hashable)."""

  config: ml_collections.FrozenConfigDict
  generator: models.Generator
  discriminator: models.PatchDiscriminator
  encoder: models.LocationEncoder | None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> NIRGAN:
    # Only the sections the networks and the step read: hashable, and a change elsewhere
    # (data, logging) does not retrace the step.
    frozen = ml_collections.FrozenConfigDict(
        {key: config[key] for key in STEP_SECTIONS if key in config})
    encoder = models.build_location_encoder(config) if models.uses_location(config) else None
    return cls(frozen, models.build_generator(config), models.build_discriminator(config),
               encoder)

  def embed(self, satclip_params: Any, lonlat: jax.Array) -> jax.Array | None:
    """SatCLIP embedding of each (lon, lat); frozen, so no gradient flows into it."""
    if self.encoder is None:
      return None
    return jax.lax.stop_gradient(self.encoder.apply(satclip_params, lonlat))

  def generate(self, g_params: Any, rgb: jax.Array, embedding: jax.Array | None, *,
               dropout_rng: jax.Array | None = None, pad: int | None = None) -> jax.Array:
    """Pad, run G, crop: (B, H, W, 3) -> (B, H, W, 1) float32.

    ``pad`` defaults to ``config.pad``; tiled inference passes 0 and brings its own context.
    Dropout (if the config enables it) is active only when ``dropout_rng`` is given.
    """
    pad = self.config.pad if pad is None else pad
    x = layers.pad_spatial(rgb, pad, "reflect")
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    out = self.generator.apply({"params": g_params}, x, embedding,
                               deterministic=dropout_rng is None, rngs=rngs)
    h, w = rgb.shape[1:3]
    return out[:, pad:pad + h, pad:pad + w, :]

  def discriminate(self, d_params: Any, rgb: jax.Array, nir: jax.Array) -> jax.Array:
    return self.discriminator.apply({"params": d_params}, jnp.concatenate([rgb, nir], axis=-1))


def init_location_encoder(nirgan: NIRGAN, rng: jax.Array) -> Any:
  """Randomly initialised SatCLIP params (tests and demos; real runs import a checkpoint)."""
  if nirgan.encoder is None:
    return {}
  return nirgan.encoder.init(rng, jnp.zeros((1, 2), jnp.float32))


def _init_states(nirgan: NIRGAN, rng: jax.Array, image_size: int) -> tuple[TrainState, TrainState]:
  g_rng, d_rng = jax.random.split(rng)
  size = image_size + 2 * nirgan.config.pad
  rgb = jnp.zeros((1, size, size, 3), jnp.float32)
  embedding = None
  if nirgan.encoder is not None:
    embedding = jnp.zeros((1, nirgan.config.satclip.embed_dim), jnp.float32)
  g_params = nirgan.generator.init(g_rng, rgb, embedding)["params"]
  d_params = nirgan.discriminator.init(
      d_rng, jnp.zeros((1, image_size, image_size, 4), jnp.float32))["params"]
  tx_g = make_optimizer(nirgan.config.optim)
  tx_d = make_optimizer(nirgan.config.optim)
  return (TrainState.create(apply_fn=nirgan.generator.apply, params=g_params, tx=tx_g),
          TrainState.create(apply_fn=nirgan.discriminator.apply, params=d_params, tx=tx_d))


def create_train_states(nirgan: NIRGAN, rng: jax.Array, image_size: int,
                        mesh: Mesh) -> tuple[TrainState, TrainState]:
  """Generator and discriminator train states, created already replicated over ``mesh``."""
  init = jax.jit(_init_states, static_argnums=(0, 2), out_shardings=replicated(mesh))
  return init(nirgan, rng, image_size)


def _select(keep_new: jax.Array, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def train_step(g_state: TrainState, d_state: TrainState, satclip_params: Any, batch: Batch,
               rng: jax.Array, *, nirgan: NIRGAN) -> tuple[TrainState, TrainState, dict]:
  """One D update then one G update. ``batch``: rgb (B,H,W,3), nir (B,H,W,1), lonlat (B,2).

  If any loss is not finite, neither network is updated (``metrics["nonfinite"]`` is 1)
  so that nothing non-finite ever reaches the parameters.
  """
  cfg = nirgan.config
  rgb, nir = batch["rgb"], batch["nir"]
  embedding = nirgan.embed(satclip_params, batch.get("lonlat"))
  dropout_rng = None
  if cfg.model.generator.dropout_rate > 0:
    dropout_rng = jax.random.fold_in(rng, g_state.step)

  fake, generator_pullback = jax.vjp(
      lambda params: nirgan.generate(params, rgb, embedding, dropout_rng=dropout_rng),
      g_state.params)

  def d_loss_fn(d_params):
    # Real and fake pairs in one pass: instance norm keeps the samples independent.
    logits = nirgan.discriminate(d_params, jnp.concatenate([rgb, rgb]),
                                 jnp.concatenate([nir, jax.lax.stop_gradient(fake)]))
    real_logits, fake_logits = jnp.split(logits, 2)
    return losses.discriminator_loss(real_logits, fake_logits, cfg.loss.gan_mode)

  adversarial = cfg.loss.lambda_gan != 0  # 0: a plain regression (the baselines), no D
  if adversarial:
    (d_loss, d_parts), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_state.params)
    new_d_state = d_state.apply_gradients(grads=d_grads)
  else:
    d_loss, d_parts, new_d_state = jnp.zeros(()), {}, d_state

  def g_loss_fn(pred):
    fake_logits = nirgan.discriminate(new_d_state.params, rgb, pred) if adversarial else None
    return losses.generator_loss(fake_logits, rgb, pred, nir, cfg.loss)

  (g_loss, g_parts), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
  (g_grads,) = generator_pullback(d_fake)
  new_g_state = g_state.apply_gradients(grads=g_grads)

  finite = jnp.isfinite(d_loss) & jnp.isfinite(g_loss)
  new_d_state = _select(finite, new_d_state, d_state)
  new_g_state = _select(finite, new_g_state, g_state)

  out = {**d_parts, **g_parts, "g_lr": learning_rate(g_state), "d_lr": learning_rate(d_state),
         "nonfinite": 1.0 - finite.astype(jnp.float32)}
  for name in ("injection_scale", "post_correction"):
    if name in g_state.params:
      out[name] = g_state.params[name]
  return new_g_state, new_d_state, out


def eval_step(g_params: Any, satclip_params: Any, batch: Batch, *, nirgan: NIRGAN,
              ssim_window: int = 11) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Prediction and per-example metrics (each (B,)) on a batch, without augmentation."""
  embedding = nirgan.embed(satclip_params, batch.get("lonlat"))
  pred = nirgan.generate(g_params, batch["rgb"], embedding)
  return pred, metrics.image_metrics(batch["rgb"], pred, batch["nir"], ssim_window)


def make_train_step(nirgan: NIRGAN, mesh: Mesh):
  """``train_step`` jitted over ``mesh``; the two states are donated.

  Call as ``g_state, d_state, metrics = step(g_state, d_state, satclip_params, batch, rng)``
  with ``batch`` sharded on "data" (see ``mesh.shard_batch``).
  """
  rep, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(
      lambda g, d, s, b, r: train_step(g, d, s, b, r, nirgan=nirgan),
      in_shardings=(rep, rep, rep, data, rep),
      out_shardings=(rep, rep, rep),
      donate_argnums=(0, 1),
  )


def make_eval_step(nirgan: NIRGAN, mesh: Mesh, ssim_window: int = 11):
  rep, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(
      lambda g, s, b: eval_step(g, s, b, nirgan=nirgan, ssim_window=ssim_window),
      in_shardings=(rep, rep, data),
      out_shardings=(data, data),
  )
