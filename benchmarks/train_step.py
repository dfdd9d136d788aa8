"""Training-step speed: one full NIR-GAN iteration (G forward, D update, G update) for the
full config (ngf 64, 9 blocks, SatCLIP L=10 multiply injection, 256 px + 10 px pad) and a
tiny one, on a data-parallel mesh of all local devices.

    python -m benchmarks.train_step [--batch 1 4] [--dtype float32 bfloat16] [--torch]
        [--torch_dtype float32 bfloat16] [--torch_batch 32]

Prints one JSON line. ``--torch`` also times the original's iteration with the PyTorch
reference of ``benchmarks/torch_reference.py`` (D step, then G step with its own G forward,
as under Lightning's two optimizers) in the same run, on the same device (CUDA when
present), in each ``--torch_dtype`` (bfloat16: autocast and channels_last).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import common
from nirgan_jax import models
from nirgan_jax.models import layers
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train import state as train_state
from nirgan_jax.train import step as gan_step

SIZES = common.SIZES


def make_config(size: str, dtype: str, conv_impl: str):
  """The full recipe's model, losses and optimiser (``common.recipe_config``)."""
  config = common.recipe_config(size)
  config.compute_dtype = dtype
  config.model.conv_impl = conv_impl
  return config


def synthetic_batch(batch: int, image: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {"rgb": rng.uniform(0, 0.3, (batch, image, image, 3)).astype(np.float32),
          "nir": rng.uniform(0, 0.5, (batch, image, image, 1)).astype(np.float32),
          "lonlat": np.stack([rng.uniform(-180, 180, batch),
                              rng.uniform(-60, 60, batch)], -1).astype(np.float32)}


def bench_jax(size: str, batch: int, dtype: str, conv_impl: str, repeats: int) -> dict:
  config = make_config(size, dtype, conv_impl)
  image = config.data.image_size
  nirgan = models.NIRGAN.from_config(config)
  mesh = mesh_lib.make_data_mesh()
  g, d = train_state.create_train_states(nirgan, jax.random.key(0, impl="rbg"), image, mesh)
  satclip = models.init_location_encoder(nirgan, jax.random.key(1, impl="rbg"))
  data = mesh_lib.shard_batch(mesh, synthetic_batch(batch, image))
  rng = jax.random.key(2, impl="rbg")
  step = gan_step.make_train_step(nirgan, mesh)

  start = time.perf_counter()
  compiled = step.lower(g, d, satclip, data, rng).compile()
  compile_s = time.perf_counter() - start
  g, d, metrics = compiled(g, d, satclip, data, rng)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    g, d, metrics = compiled(g, d, satclip, data, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return {"size": size, "batch": batch, "dtype": dtype,
          "conv_impl": layers.resolve_conv_impl(conv_impl), "compile_s": round(compile_s, 2),
          "g_l1": round(float(metrics["g_l1"]), 5), **common.summary(times, batch)}


def bench_torch(batch: int, dtype: str, repeats: int) -> dict:
  import torch
  from torch.nn import functional as F

  from benchmarks import torch_reference

  device = common.torch_device()
  memory_format = torch.channels_last if dtype == "bfloat16" else torch.contiguous_format
  recipe = common.recipe_config("full")  # the PyTorch side mirrors its loss and optimiser
  netG = torch_reference.InjectGenerator().to(device, memory_format=memory_format)
  netD = torch_reference.PatchDiscriminator().to(device, memory_format=memory_format)
  encoder = torch_reference.LocationEncoder().to(device).eval()
  adam = dict(lr=recipe.optim.lr, betas=(recipe.optim.b1, recipe.optim.b2))
  opt_g = torch.optim.Adam(netG.parameters(), **adam)
  opt_d = torch.optim.Adam(netD.parameters(), **adam)
  pad, size = recipe.pad, recipe.data.image_size
  data = {k: torch.from_numpy(v).to(device) for k, v in synthetic_batch(batch, size).items()}
  rgb = data["rgb"].permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
  nir = data["nir"].permute(0, 3, 1, 2).contiguous(memory_format=memory_format)

  def iteration():
    with common.torch_precision(dtype, device):
      with torch.no_grad():
        embedding = encoder(data["lonlat"])
      padded = F.pad(rgb, (pad,) * 4, mode="reflect")
      # D step (Lightning optimizer 0): G forward, D on fake (detached) and real.
      fake = netG(padded, embedding)[:, :, pad:pad + size, pad:pad + size]
      pred_fake = netD(torch.cat([rgb, fake.detach()], 1))
      pred_real = netD(torch.cat([rgb, nir], 1))
      loss_d = F.mse_loss(pred_fake, torch.zeros_like(pred_fake)) + F.mse_loss(
          pred_real, torch.ones_like(pred_real))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    with common.torch_precision(dtype, device):
      # G step (optimizer 1): a second G forward, then the adversarial + L1 loss (lsgan).
      fake = netG(padded, embedding)[:, :, pad:pad + size, pad:pad + size]
      pred_fake = netD(torch.cat([rgb, fake], 1))
      loss_g = (recipe.loss.lambda_gan * F.mse_loss(pred_fake, torch.ones_like(pred_fake))
                + recipe.loss.lambda_l1 * F.l1_loss(fake, nir))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()

  times = common.time_torch(iteration, repeats)
  return {"size": "full", "batch": batch, "dtype": dtype, "framework": "torch",
          "device": str(device), "threads": torch.get_num_threads(),
          **common.summary(times, batch)}


def main() -> None:
  common.run_sweep("train_step", __doc__.split("\n\n")[0], SIZES, layers.CONV_IMPLS,
                   bench_jax, bench_torch)


if __name__ == "__main__":
  main()
