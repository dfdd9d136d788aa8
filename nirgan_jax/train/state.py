"""Train states of the two networks: Adam with the learning rate in its state (so the plateau
schedule can set it), the generator's optionally with an exponential moving average (EMA) of
its weights, created already replicated over the mesh."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from flax.training import train_state
from jax.sharding import Mesh

from nirgan_jax.models.nirgan import NIRGAN
from nirgan_jax.train.mesh import replicated


class TrainState(train_state.TrainState):
  """Flax's train state, plus an exponential moving average of the params if ``ema_decay`` > 0.

  The average is bias-corrected: after update t it is the mean of the params after updates
  1..t weighted by ``ema_decay ** (t - i)``, so the initial weights never linger in it (a plain
  EMA started from them would keep ``ema_decay ** t`` of them). It is what evaluation,
  checkpoint selection and export use (``eval_params``); training never reads it.
  """

  ema_params: Any = None
  ema_decay: float = struct.field(pytree_node=False, default=0.0)

  @classmethod
  def create(cls, *, apply_fn, params, tx, ema_decay: float = 0.0, **kwargs) -> TrainState:
    ema_params = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
    return super().create(apply_fn=apply_fn, params=params, tx=tx, ema_params=ema_params,
                          ema_decay=ema_decay, **kwargs)

  def apply_gradients(self, *, grads, **kwargs) -> TrainState:
    new = super().apply_gradients(grads=grads, **kwargs)
    if self.ema_params is None:
      return new
    # Weight of the newest params in the bias-corrected mean: 1 at the first update.
    updates = jnp.asarray(new.step, jnp.float32)
    newest = (1 - self.ema_decay) / (1 - self.ema_decay ** updates)
    return new.replace(ema_params=optax.incremental_update(new.params, self.ema_params, newest))

  @property
  def eval_params(self) -> Any:
    return self.params if self.ema_params is None else self.ema_params

  def stored(self) -> train_state.TrainState:
    """What a checkpoint holds as this state: Flax's train state, without the average (stored
    apart, so that checkpoints without one keep their layout)."""
    return train_state.TrainState(step=self.step, apply_fn=self.apply_fn, params=self.params,
                                  tx=self.tx, opt_state=self.opt_state)

  def with_params(self, params: Any) -> TrainState:
    """This state with ``params`` (and its average restarted from them)."""
    ema_params = None if self.ema_params is None else jax.tree.map(jnp.copy, params)
    return self.replace(params=params, ema_params=ema_params)


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
  return (TrainState.create(apply_fn=nirgan.generator.apply, params=g_params, tx=tx_g,
                            ema_decay=nirgan.config.optim.ema_decay),
          TrainState.create(apply_fn=nirgan.discriminator.apply, params=d_params, tx=tx_d))


def create_train_states(nirgan: NIRGAN, rng: jax.Array, image_size: int,
                        mesh: Mesh) -> tuple[TrainState, TrainState]:
  """Generator and discriminator train states, created already replicated over ``mesh``."""
  init = jax.jit(_init_states, static_argnums=(0, 2), out_shardings=replicated(mesh))
  return init(nirgan, rng, image_size)
