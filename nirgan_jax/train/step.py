"""The NIR-GAN training and evaluation steps, data parallel over a 1-D mesh.

One iteration, as in the original:

1. reflect-pad the RGB by ``config.pad`` px, run the generator once, crop back;
2. update D on (real, stop_gradient(fake)) with loss_D = loss(fake) + loss(real);
3. update G against the *updated* D.

The original ran G's forward twice (once per Lightning optimizer); G's parameters
do not change during the D update, so the forward of step 1 is kept with
``jax.vjp`` and its pullback gives G's gradient: the same numbers, one forward less.

With a ``valid`` mask in the batch (B, H, W, 1; 1 = real data), every loss and metric counts
only valid pixels, and D sees the fake NIR only where the data is valid: elsewhere both of its
pairs carry the real NIR, so nodata cannot tell real from fake. The adversarial losses
average over the patch logits whose receptive field is at least half valid
(``losses.patch_weights``).

The steps are pure functions of (states, frozen SatCLIP params, batch, rng).
``make_train_step`` jits one over the mesh: batch sharded on "data", states
replicated and donated. XLA inserts the gradient all-reduce; the result equals a
single-device step on the whole batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from nirgan_jax import evaluation
from nirgan_jax.models.nirgan import NIRGAN
from nirgan_jax.train import losses
from nirgan_jax.train.mesh import batch_sharded, replicated
from nirgan_jax.train.state import TrainState, learning_rate

Batch = dict[str, jax.Array]


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _select(keep_new: jax.Array, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def train_step(g_state: TrainState, d_state: TrainState, satclip_params: Any, batch: Batch,
               rng: jax.Array, *, nirgan: NIRGAN) -> tuple[TrainState, TrainState, dict]:
  """One D update then one G update. ``batch``: rgb (B,H,W,3), nir (B,H,W,1), lonlat (B,2),
  optionally valid (B,H,W,1).

  If any loss or gradient is not finite, neither network is updated (``metrics["nonfinite"]``
  is 1) so that nothing non-finite ever reaches the parameters or the optimizer states.
  """
  config = nirgan.config
  rgb, nir, valid = batch["rgb"], batch["nir"], batch.get("valid")
  embedding = nirgan.embed(satclip_params, batch.get("lonlat"))
  dropout_rng = None
  if config.model.generator.dropout_rate > 0:
    dropout_rng = jax.random.fold_in(rng, g_state.step)

  fake, generator_pullback = jax.vjp(
      lambda params: nirgan.generate(params, rgb, embedding, dropout_rng=dropout_rng),
      g_state.params)

  logit_weights = None
  if valid is not None:
    logit_weights = losses.patch_weights(valid, config.model.discriminator.n_layers)

  def shown_to_d(pred):
    return pred if valid is None else jnp.where(valid > 0, pred, nir)

  def d_loss_fn(d_params):
    # Real and fake pairs in one pass: instance norm keeps the samples independent.
    logits = nirgan.discriminate(
        d_params, jnp.concatenate([rgb, rgb]),
        jnp.concatenate([nir, shown_to_d(jax.lax.stop_gradient(fake))]))
    real_logits, fake_logits = jnp.split(logits, 2)
    return losses.discriminator_loss(real_logits, fake_logits, config.loss.gan_mode, logit_weights)

  adversarial = config.loss.lambda_gan != 0  # 0: a plain regression (the baselines), no D
  if adversarial:
    (d_loss, d_parts), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_state.params)
    new_d_state = d_state.apply_gradients(grads=d_grads)
  else:
    d_loss, d_parts, new_d_state = jnp.zeros(()), {}, d_state

  def g_loss_fn(pred):
    fake_logits = None
    if adversarial:
      fake_logits = nirgan.discriminate(new_d_state.params, rgb, shown_to_d(pred))
    return losses.generator_loss(fake_logits, rgb, pred, nir, config.loss, valid, logit_weights)

  (g_loss, g_parts), loss_grad_wrt_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
  (g_grads,) = generator_pullback(loss_grad_wrt_fake)
  new_g_state = g_state.apply_gradients(grads=g_grads)

  # A finite loss can still have non-finite gradients (e.g. bf16 overflow in a backward pass).
  finite = (jnp.isfinite(d_loss) & jnp.isfinite(g_loss) & _all_finite(g_grads)
            & (_all_finite(d_grads) if adversarial else True))
  new_d_state = _select(finite, new_d_state, d_state)
  new_g_state = _select(finite, new_g_state, g_state)

  out = {**d_parts, **g_parts, "g_lr": learning_rate(g_state), "d_lr": learning_rate(d_state),
         "nonfinite": 1.0 - finite.astype(jnp.float32)}
  for name in ("injection_scale", "post_correction"):
    if name in g_state.params:
      out[name] = g_state.params[name]
  return new_g_state, new_d_state, out


def eval_step(g_params: Any, satclip_params: Any, batch: Batch, *, nirgan: NIRGAN,
              protocol: evaluation.Protocol) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Prediction and per-example metrics (each (B,), ``evaluation.Protocol.scores``) on a
  batch, without augmentation, over the batch's ``valid`` pixels if it has a mask."""
  embedding = nirgan.embed(satclip_params, batch.get("lonlat"))
  pred = nirgan.generate(g_params, batch["rgb"], embedding)
  return pred, evaluation.per_example(protocol.scores(batch["rgb"], pred, batch["nir"],
                                                      batch.get("valid")))


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


def make_eval_step(nirgan: NIRGAN, mesh: Mesh, protocol: evaluation.Protocol):
  rep, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(
      lambda g, s, b: eval_step(g, s, b, nirgan=nirgan, protocol=protocol),
      in_shardings=(rep, rep, data),
      out_shardings=(data, data),
  )
