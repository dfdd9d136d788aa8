"""Generator forward speed: full NIR-GAN generator (ngf 64, 9 blocks, SatCLIP multiply
injection) on 256 px + 10 px reflect pad, and a tiny one.

    python -m benchmarks.generator_forward [--batch 1 4] [--dtype float32 bfloat16]
        [--conv_impl auto] [--torch]

Prints one JSON line. ``--torch`` also times the PyTorch reference generator of
``benchmarks/torch_reference.py`` in the same run, on the same device (CUDA when present), in each
``--torch_dtype`` (bfloat16: autocast and channels_last).
"""

from __future__ import annotations

import time

import jax

from benchmarks import common
from nirgan_jax import models

SIZES = common.SIZES


def build(size: str, dtype: str, conv_impl: str):
  config = common.recipe_config(size)
  config.model.conv_impl = conv_impl
  config.compute_dtype = dtype
  return models.build_generator(config), common.input_side(config)


def bench_jax(size: str, batch: int, dtype: str, conv_impl: str, repeats: int) -> dict:
  generator, side = build(size, dtype, conv_impl)
  rgb = jax.random.uniform(jax.random.key(0), (batch, side, side, 3))
  embedding = jax.random.normal(jax.random.key(1), (batch, 256))
  params = jax.jit(generator.init)(jax.random.key(2, impl="rbg"), rgb[:1], embedding[:1])
  forward = jax.jit(generator.apply)
  start = time.perf_counter()
  compiled = forward.lower(params, rgb, embedding).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(params, rgb, embedding))  # warm-up
  times = common.time_call(lambda: compiled(params, rgb, embedding), repeats)
  return {"size": size, "batch": batch, "dtype": dtype,
          "conv_impl": models.layers.resolve_conv_impl(conv_impl),
          "compile_s": round(compile_s, 2), **common.summary(times, batch)}


def bench_torch(batch: int, dtype: str, repeats: int) -> dict:
  import torch

  from benchmarks import torch_reference

  device = common.torch_device()
  memory_format = torch.channels_last if dtype == "bfloat16" else torch.contiguous_format
  generator = torch_reference.InjectGenerator().to(device, memory_format=memory_format).eval()
  side = common.input_side(common.recipe_config("full"))
  rgb = torch.rand(batch, 3, side, side, device=device).contiguous(memory_format=memory_format)
  embedding = torch.randn(batch, 256, device=device)

  def forward():
    with torch.no_grad(), common.torch_precision(dtype, device):
      return generator(rgb, embedding)

  times = common.time_torch(forward, repeats)
  return {"size": "full", "batch": batch, "dtype": dtype, "framework": "torch",
          "device": str(device), "threads": torch.get_num_threads(),
          **common.summary(times, batch)}


def main() -> None:
  common.run_sweep("generator_forward", __doc__.split("\n\n")[0], SIZES, models.layers.CONV_IMPLS,
                   bench_jax, bench_torch)


if __name__ == "__main__":
  main()
