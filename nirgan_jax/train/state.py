"""Train states of the two networks: Adam with the learning rate in its state (so the plateau
schedule can set it), created already replicated over the mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax.sharding import Mesh

from nirgan_jax.models.nirgan import NIRGAN
from nirgan_jax.train.mesh import replicated

TrainState = train_state.TrainState


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
  return (TrainState.create(apply_fn=nirgan.generator.apply, params=g_params, tx=tx_g),
          TrainState.create(apply_fn=nirgan.discriminator.apply, params=d_params, tx=tx_d))


def create_train_states(nirgan: NIRGAN, rng: jax.Array, image_size: int,
                        mesh: Mesh) -> tuple[TrainState, TrainState]:
  """Generator and discriminator train states, created already replicated over ``mesh``."""
  init = jax.jit(_init_states, static_argnums=(0, 2), out_shardings=replicated(mesh))
  return init(nirgan, rng, image_size)
