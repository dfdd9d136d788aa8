"""The training loop against the bare step: how much of the step's speed the loop delivers.

    python -m benchmarks.train_loop [--size tiny] [--batch 8] [--steps 300] [--log_every 50]
        [--workers 0|N|auto] [--source memory|tfds]

In one run: (1) the jitted training step alone on a resident batch, (2) the real
``train_and_evaluate`` on the same model and batch size, fed by the Grain pipeline (transforms,
sharding, device prefetch, checkpoints at the end). ``--source memory`` (default) feeds the
loop from an ``InMemorySource`` of random patches, which needs neither TFDS nor TensorFlow;
``--source tfds`` from the built demo dataset. The loop's rate is its ``train/steps_per_s``
over the log periods after the first (which holds the compile). Prints one JSON line with
both rates and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import ml_collections
import numpy as np
from absl import flags

from benchmarks import common, train_step
from configs import demo
from nirgan_jax import models
from nirgan_jax.data import pipeline
from nirgan_jax.train import checkpointing, loop, summaries
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train import state as train_state
from nirgan_jax.train import step as gan_step

PATCH_MARGIN = 32  # stored patches are this much larger than the crops: random crops vary


class RecordingWriter(summaries.MetricWriter):
  """Keeps the scalars the loop writes; drops images, texts and hyper-parameters."""

  def __init__(self):
    self.scalars: dict[str, dict[int, float]] = {}

  def write_scalars(self, step, scalars):
    for key, value in scalars.items():
      self.scalars.setdefault(key, {})[int(step)] = float(value)

  def write_images(self, step, images):
    pass

  def write_texts(self, step, texts):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass


def random_examples(count: int, patch: int, seed: int = 0) -> list[dict]:
  """Stored examples in the data contract's form: smooth random reflectance x 10000."""
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(count):
    base = rng.uniform(500, 4000, (1, 1, 4))
    texture = rng.normal(0, 300, (patch, patch, 4))
    values = np.clip(base + texture, 0, 10_000).astype(np.uint16)
    examples.append({
        "rgb": values[..., :3], "nir": values[..., 3:], "valid": np.ones((patch, patch, 1),
                                                                          np.uint8),
        "lon": np.float64(rng.uniform(-180, 180)), "lat": np.float64(rng.uniform(-60, 60)),
        "gsd_m": np.float32(10.0), "sensor": b"sentinel2", "source_id": f"random_{i}".encode(),
        "date": b""})
  return examples


def make_config(args) -> ml_collections.ConfigDict:
  recipe = common.recipe_config(args.size)
  config = demo.get_config()
  config.pad = recipe.pad
  config.compute_dtype = args.dtype
  config.model.generator.update(ngf=recipe.model.generator.ngf,
                                n_blocks=recipe.model.generator.n_blocks)
  config.model.discriminator.ndf = recipe.model.discriminator.ndf
  config.data.image_size = recipe.data.image_size
  config.data.batch_size_per_device = args.batch
  config.data.workers = args.workers
  if args.source == "memory":
    name = pipeline.InMemorySource(
        random_examples(args.examples, recipe.data.image_size + PATCH_MARGIN)).register("benchmark")
    config.data.sources.demo.name = name
    config.data.sources.demo.native_gsd_m = 10.0
    config.data.build_missing = False
  else:
    config.data.data_dir = args.data_dir
  config.train.num_train_steps = args.steps
  config.train.log_every = args.log_every
  config.train.eval_every = args.steps
  config.train.image_every = 0
  return config


def bare_step_rate(config: ml_collections.ConfigDict, repeats: int) -> float:
  """Steps/s of the jitted step alone, on a batch already on the devices."""
  nirgan = models.NIRGAN.from_config(config)
  mesh = mesh_lib.make_data_mesh()
  image = config.data.image_size
  g, d = train_state.create_train_states(nirgan, jax.random.key(0, impl="rbg"), image, mesh)
  satclip = models.init_location_encoder(nirgan, jax.random.key(1, impl="rbg"))
  batch = train_step.synthetic_batch(config.data.batch_size_per_device * jax.device_count(),
                                     image)
  batch["valid"] = np.ones_like(batch["nir"])
  batch = mesh_lib.shard_batch(mesh, batch)
  rng = jax.random.key(2, impl="rbg")
  step = gan_step.make_train_step(nirgan, mesh)
  g, d, metrics = step(g, d, satclip, batch, rng)  # compile and warm up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(repeats):
    g, d, metrics = step(g, d, satclip, batch, rng)
  jax.block_until_ready(metrics)
  return repeats / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", default="tiny", choices=sorted(train_step.SIZES))
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--batch", type=int, default=8, help="per device")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--workers", type=lambda v: v if v == "auto" else int(v), default=0,
                      help='Grain worker processes, or "auto" (reported as chosen)')
  parser.add_argument("--examples", type=int, default=256, help="in-memory source size")
  parser.add_argument("--source", default="memory", choices=("memory", "tfds"))
  parser.add_argument("--data_dir", default="data/tfds", help="--source tfds: the demo's")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags

  config = make_config(args)
  bare = bare_step_rate(config, repeats=args.log_every)
  writer = RecordingWriter()
  with tempfile.TemporaryDirectory(prefix="nirgan-loop-") as workdir:
    loop.train_and_evaluate(config, workdir, writer=writer)
    manager = checkpointing.open_read_only(workdir)
    reader = checkpointing.restore_metadata(manager, manager.latest_step())["reader"]
  rates = writer.scalars["train/steps_per_s"]
  steady = [rate for step, rate in sorted(rates.items())[1:]]  # the first holds the compile
  loop_rate = statistics.median(steady)
  global_batch = args.batch * jax.device_count()
  common.emit({
      "benchmark": "train_loop", **common.environment(), "size": args.size,
      "dtype": args.dtype, "global_batch": global_batch, "source": args.source,
      "workers": args.workers, "workers_used": reader["workers"], "steps": args.steps,
      "bare_step_per_s": round(bare, 3), "loop_step_per_s": round(loop_rate, 3),
      "loop_images_per_s": round(loop_rate * global_batch, 1),
      "ratio": round(loop_rate / bare, 3),
      "loop_period_rates": [round(r, 3) for r in steady],
      "peak_rss_mb": round(common.peak_rss_mb(), 1)})


if __name__ == "__main__":
  main()
