"""Exports a trained generator for inference.

    python -m nirgan_jax.export --workdir runs/demo --out models/demo [--step best|latest|N]
        [--jax_export] [--overwrite]

Writes a model directory (``model_dir``: ``config.json`` with the architecture sections and
``params/`` with the generator and, if the model injects SatCLIP, the encoder) that
``predict`` and ``evaluate`` load without any training code, the same format the PyTorch
import writes; ``--workdir`` and ``--out`` may be local or cloud URIs (``gs://``).
``--jax_export`` adds ``generator.jax_export``: a serialized ``jax.export`` program of the
whole inference function (pad, SatCLIP embedding, generator, crop) with symbolic batch, height
and width, lowered for cpu, cuda and tpu; the weights stay in ``params/`` and are passed as
arguments (``load_exported``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax import export as jax_export

from nirgan_jax import errors, models, paths
from nirgan_jax.infer import model as infer_model
from nirgan_jax.infer import model_dir
from nirgan_jax.models import config as model_config
from nirgan_jax.models.generator import SIZE_MULTIPLE
from nirgan_jax.train import checkpointing

PLATFORMS = ("cpu", "cuda", "tpu")
# Height and width must be multiples of this (two stride-2 downsamplings, then back up).
MIN_SIZE = 16


def inference_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The architecture sections of a training config, for an inference artefact."""
  return model_config.model_sections(config)


def export_program(config: ml_collections.ConfigDict, params: dict[str, Any]) -> bytes:
  """Serialized ``jax.export`` of ``inference_fn`` with symbolic batch and spatial sizes
  (multiples of ``SIZE_MULTIPLE``, at least ``MIN_SIZE``) for every platform in ``PLATFORMS``."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.conv_impl = "xla"  # one lowering that every platform compiles well
  # Reflect padding needs each side longer than its pad: at least MIN_SIZE and pad + 1 px.
  quarter = -(-max(MIN_SIZE, config.pad + 1) // SIZE_MULTIPLE)
  b, h, w = jax_export.symbolic_shape(f"b, {SIZE_MULTIPLE}*h, {SIZE_MULTIPLE}*w",
                                      constraints=(f"h >= {quarter}", f"w >= {quarter}"))
  spec = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
  exported = jax_export.export(jax.jit(infer_model.inference_fn(config)), platforms=PLATFORMS)(
      spec(params["generator"]), spec(params.get("satclip", {})),
      jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32),
      jax.ShapeDtypeStruct((b, 2), jnp.float32))
  return exported.serialize()


def export_model(workdir: str | os.PathLike, out: str | os.PathLike, which: str | int = "best",
                 with_program: bool = False, overwrite: bool = False) -> epath.Path:
  """Writes the inference model directory of ``workdir``'s checkpoint ``which``."""
  out = paths.as_path(out)
  model_dir.check_output(out, overwrite)
  params, metadata, step = checkpointing.restore_weights(workdir, which)
  config = ml_collections.ConfigDict(metadata["config"])
  model_cfg = inference_config(config)
  if models.uses_location(config) and "satclip" not in params:
    raise checkpointing.CheckpointNotFoundError(
        f"{workdir}: step {step} injects SatCLIP but holds no satclip item")
  weights = {"generator": params["generator"]}
  if "satclip" in params:
    weights["satclip"] = params["satclip"]
  model_cfg.source = ml_collections.ConfigDict(dict(
      workdir=str(paths.as_path(workdir)), step=step, seed=config.seed))
  extra = {model_dir.EXPORTED_FILE: export_program(model_cfg, weights)} if with_program else {}
  return model_dir.save_model_dir(out, weights, model_cfg, overwrite=overwrite, extra_files=extra)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m nirgan_jax.export",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="training workdir (or its checkpoints/)")
  parser.add_argument("--out", required=True, help="model directory to write")
  parser.add_argument("--step", default="best", help="best (lowest val L1), latest, or a step")
  parser.add_argument("--jax_export", action="store_true",
                      help=f"also write {model_dir.EXPORTED_FILE} "
                           f"(jax.export for {', '.join(PLATFORMS)})")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser.parse_args(argv)


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.step not in ("best", "latest") and not args.step.isdigit():
    raise errors.UsageError(f"--step must be best, latest or a step number, got {args.step!r}")
  out = export_model(args.workdir, args.out, args.step, args.jax_export, args.overwrite)
  params, config = model_dir.load_model_dir(out)
  print(f"wrote {out} (step {config.source.step}; generator "
        f"{models.count_params(params['generator']):,} parameters"
        + (", SatCLIP encoder" if "satclip" in params else "")
        + (f", {model_dir.EXPORTED_FILE}" if args.jax_export else "") + ")")
  return 0


if __name__ == "__main__":
  errors.run(main)
