"""Import of the original PyTorch NIR-GAN and SatCLIP checkpoints.

    python -m nirgan_jax.import_torch nirgan NIRGAN.ckpt --out DIR [--inject_style multiply]
        [--input_order rgb|bgr]
    python -m nirgan_jax.import_torch satclip SATCLIP.ckpt --out DIR

Both write a model directory (``nirgan_jax.infer.model_dir``); either path may be local or a cloud
URI (``gs://``). The architecture (ngf,
number of ResNet blocks, ndf, PatchGAN depth, SatCLIP degree and widths,
post-correction) is read off the tensor shapes; what shapes cannot tell (the
injection style, the harmonics convention when the checkpoint does not record it)
comes from flags. The original's S2-100K loader fed B02, B03, B04 (blue first) as "RGB", so
its S2-100K checkpoints expect BGR: ``--input_order bgr`` reverses the colour input channels
of the first convolutions (G's, and D's, whose input is colour + NIR) so that the imported
model takes RGB like every other; the choice is recorded in the config's ``source``.

Checkpoints are pickles. They are opened with ``torch.load(weights_only=True)``,
which executes no code from the file; a file that needs more is refused with the
names of the objects it would have to construct.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from nirgan_jax import errors, models, paths
from nirgan_jax.errors import NirganError, import_extra
from nirgan_jax.infer import model_dir
from nirgan_jax.models import config as model_config
from nirgan_jax.models import generator as generator_lib

NIRGAN_PREFIXES = ("netG.", "netD.", "satclip_model.encoder_model.")
NIRGAN_IGNORED_PREFIXES = ("criterionGAN.",)
SATCLIP_PREFIX = "model.location."
SATCLIP_IGNORED_PREFIXES = ("model.visual.",)
INPUT_ORDERS = ("rgb", "bgr")


class CheckpointError(NirganError):
  """A checkpoint cannot be read or does not fit the architecture."""


# --------------------------------------------------------------------------- loading


def load_torch_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(state_dict as float32 numpy, hyper_parameters) of a Lightning ``.ckpt`` or a state_dict."""
  import pickle

  torch = import_extra("torch", f"{path}: reading a PyTorch checkpoint", "torch")

  path = paths.as_path(path)  # local or cloud: torch reads it through a file object
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  try:
    with path.open("rb") as f, warnings.catch_warnings():
      # Said of any plain pickle; the weights-only unpickler reads it or refuses it below.
      warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
      ckpt = torch.load(f, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    try:
      with path.open("rb") as f:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # the file may not even be a zip archive
      needed = []
    detail = f" It would construct: {', '.join(needed)}." if needed else ""
    raise CheckpointError(
        f"{path}: refused: the checkpoint holds Python objects beyond tensors and plain "
        f"containers, and loading it would run code from the file.{detail} Re-save only "
        f"its 'state_dict' (and plain-dict 'hyper_parameters') with torch.save from an "
        f"environment you trust.") from e
  except Exception as e:
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                          f"({errors.one_line(e)})") from e

  if not isinstance(ckpt, dict):
    raise CheckpointError(f"{path}: expected a dict, found {type(ckpt).__name__}")
  state_dict = ckpt.get("state_dict", ckpt)
  hyper_parameters = ckpt.get("hyper_parameters") or {}
  for name, value in (("state_dict", state_dict), ("hyper_parameters", hyper_parameters)):
    if not isinstance(value, dict):
      raise CheckpointError(f"{path}: its {name} is a {type(value).__name__}, not a dict")
  arrays = {}
  for key, value in state_dict.items():
    if isinstance(value, torch.Tensor):
      arrays[key] = value.detach().to(torch.float32).numpy()
  if not arrays:
    raise CheckpointError(f"{path}: holds no tensors (neither a state_dict nor a Lightning "
                          f"checkpoint)")
  return arrays, hyper_parameters


# --------------------------------------------------------------------------- key mapping

# Torch layout -> Flax layout.
_CONV = lambda w: w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
_CONV_T = lambda w: w.transpose(2, 3, 0, 1)  # (in, out, kh, kw) -> (kh, kw, in, out)
_LINEAR = lambda w: w.T  # (out, in) -> (in, out)
_SAME = lambda w: w
_SCALAR = lambda w: w.reshape(())


@dataclasses.dataclass(frozen=True)
class Tensor:
  torch_key: str
  flax_path: tuple[str, ...]
  transform: Callable[[np.ndarray], np.ndarray]


def _layer(torch_prefix: str, flax_prefix: tuple[str, ...], weight_transform) -> list[Tensor]:
  return [Tensor(f"{torch_prefix}.weight", (*flax_prefix, "kernel"), weight_transform),
          Tensor(f"{torch_prefix}.bias", (*flax_prefix, "bias"), _SAME)]


def generator_tensors(config: ml_collections.ConfigDict, prefix: str = "netG.") -> list[Tensor]:
  """pix2pix ``ResnetGenerator(_inject)``'s ``nn.Sequential`` indices -> our names."""
  g = config.model.generator
  n_down = generator_lib.N_DOWNSAMPLING
  out = _layer(f"{prefix}model.1", ("conv_in",), _CONV)
  out += _layer(f"{prefix}model.4", ("down_0",), _CONV)
  out += _layer(f"{prefix}model.7", ("down_1",), _CONV)
  first_block = 1 + 3 * (n_down + 1)  # pad, conv, norm, relu + n_down x (conv, norm, relu)
  second_conv = 6 if g.dropout_rate > 0 else 5
  for i in range(g.n_blocks):
    block = f"{prefix}model.{first_block + i}.conv_block"
    out += _layer(f"{block}.1", (f"block_{i}", "conv_0"), _CONV)
    out += _layer(f"{block}.{second_conv}", (f"block_{i}", "conv_1"), _CONV)
  up = first_block + g.n_blocks
  for i in range(n_down):
    out += _layer(f"{prefix}model.{up + 3 * i}", (f"up_{i}",), _CONV_T)
  out += _layer(f"{prefix}model.{up + 3 * n_down + 1}", ("conv_out",), _CONV)
  if config.model.injection.style != "none":
    out += _layer(f"{prefix}fc", ("injection", "dense"), _LINEAR)
    if config.model.injection.learn_scale:
      out.append(Tensor(f"{prefix}scale_param", ("injection_scale",), _SCALAR))
  if config.model.injection.post_correction:
    out.append(Tensor(f"{prefix}post_correction_param", ("post_correction",), _SCALAR))
  return out


def discriminator_tensors(config: ml_collections.ConfigDict,
                          prefix: str = "netD.") -> list[Tensor]:
  """``NLayerDiscriminator``: convs at 0, then every third index (conv, norm, LeakyReLU)."""
  n_layers = config.model.discriminator.n_layers
  out = _layer(f"{prefix}model.0", ("conv_0",), _CONV)
  for n in range(1, n_layers + 2):
    out += _layer(f"{prefix}model.{2 + 3 * (n - 1)}", (f"conv_{n}",), _CONV)
  return out


def satclip_tensors(config: ml_collections.ConfigDict, prefix: str) -> list[Tensor]:
  """SIREN ``nnet.layers.<k>`` and ``nnet.last_layer`` -> ``layers_<k>``, ``last_layer``."""
  out = []
  for k in range(config.satclip.num_hidden_layers):
    out += _layer(f"{prefix}nnet.layers.{k}", ("params", f"layers_{k}"), _LINEAR)
  out += _layer(f"{prefix}nnet.last_layer", ("params", "last_layer"), _LINEAR)
  return out


def _fill(state_dict: dict[str, np.ndarray], tensors: Iterable[Tensor], target: Any,
          problems: list[str]) -> Any:
  """Builds a Flax tree shaped like ``target`` (from ``jax.eval_shape``) out of ``state_dict``."""
  expected = traverse_util.flatten_dict(target)
  tensors = list(tensors)
  mapped = {t.flax_path for t in tensors}
  if mapped != set(expected):  # the mapping and the Flax model disagree: a bug here
    raise AssertionError(f"mapping/model mismatch: {sorted(mapped ^ set(expected))}")
  flat = {}
  for t in tensors:
    if t.torch_key not in state_dict:
      problems.append(f"missing key {t.torch_key}")
      continue
    tensor = state_dict[t.torch_key]
    want = tuple(expected[t.flax_path].shape)
    try:
      value = t.transform(tensor)
    except ValueError:  # a tensor of another rank than the layer's
      value = None
    if value is None or value.shape != want:
      got = "" if value is None else f" gives {value.shape},"
      problems.append(f"shape mismatch for {t.torch_key}: checkpoint {tuple(tensor.shape)}"
                      f"{got} model expects {want}")
      continue
    flat[t.flax_path] = value.astype(np.float32)
  return traverse_util.unflatten_dict(flat)


def _unexpected(state_dict, used: set[str], prefixes, ignored) -> list[str]:
  return [f"unexpected key {k}" for k in sorted(state_dict)
          if k not in used and not k.startswith(tuple(ignored))
          and (not prefixes or k.startswith(tuple(prefixes)))]


def _raise_if(problems: list[str], what: str) -> None:
  if problems:
    raise CheckpointError(f"{what} does not fit the architecture: {'; '.join(problems)}")


# --------------------------------------------------------------------------- inference of sizes


def _count(state_dict, pattern: str) -> int:
  regex = re.compile(pattern)
  return len({m.group(1) for k in state_dict if (m := regex.fullmatch(k))})


def infer_satclip_sizes(state_dict: dict[str, np.ndarray], prefix: str) -> dict[str, int]:
  """legendre_polys, dim_hidden, num_hidden_layers and embed_dim from the SIREN's shapes."""
  first = state_dict.get(f"{prefix}nnet.layers.0.weight")
  last = state_dict.get(f"{prefix}nnet.last_layer.weight")
  if first is None or last is None:
    raise CheckpointError(f"no SatCLIP SIREN under '{prefix}nnet.' (need layers.0 and "
                          f"last_layer)")
  legendre_polys = math.isqrt(first.shape[1])
  if legendre_polys**2 != first.shape[1]:
    raise CheckpointError(f"{prefix}nnet.layers.0.weight has {first.shape[1]} inputs, not a "
                          f"square number of spherical harmonics")
  return dict(legendre_polys=legendre_polys, dim_hidden=int(first.shape[0]),
              num_hidden_layers=_count(state_dict, re.escape(f"{prefix}nnet.layers.") +
                                       r"(\d+)\.weight"),
              embed_dim=int(last.shape[0]))


def nirgan_config_from_state_dict(state_dict: dict[str, np.ndarray], inject_style: str,
                                  harmonics: str) -> ml_collections.ConfigDict:
  """The architecture config of a NIR-GAN checkpoint, sizes read off its tensors."""
  config = model_config.get_config()
  conv_in = state_dict.get("netG.model.1.weight")
  if conv_in is None:
    raise CheckpointError("no generator first conv 'netG.model.1.weight': not a NIR-GAN "
                          "checkpoint")
  g = config.model.generator
  g.ngf = int(conv_in.shape[0])
  g.n_blocks = _count(state_dict, r"netG\.model\.(\d+)\.conv_block\.1\.weight")
  if _count(state_dict, r"netG\.model\.(\d+)\.conv_block\.6\.weight"):
    g.dropout_rate = 0.5  # pix2pix's use_dropout puts Dropout(0.5) at conv_block.4
  has_fc = "netG.fc.weight" in state_dict
  inj = config.model.injection
  if has_fc:
    if inject_style not in ("multiply", "add"):
      raise CheckpointError(f"checkpoint has the injection Dense 'netG.fc'; inject style must "
                            f"be multiply or add, got {inject_style!r}")
    inj.style = inject_style
    inj.map_size = math.isqrt(state_dict["netG.fc.weight"].shape[0])
    inj.learn_scale = "netG.scale_param" in state_dict
  else:
    inj.style = "none"
  inj.post_correction = "netG.post_correction_param" in state_dict

  d = config.model.discriminator
  d0 = state_dict.get("netD.model.0.weight")
  if d0 is not None:
    d.ndf = int(d0.shape[0])
    d.n_layers = _count(state_dict, r"netD\.model\.(\d+)\.weight") - 2

  if has_fc:
    config.satclip.update(infer_satclip_sizes(state_dict, "satclip_model.encoder_model."))
  config.satclip.harmonics = harmonics
  return config


def satclip_config_from_checkpoint(state_dict, hyper_parameters,
                                   harmonics: str | None) -> ml_collections.ConfigDict:
  le_type = hyper_parameters.get("le_type", "sphericalharmonics")
  pe_type = hyper_parameters.get("pe_type", "siren")
  if le_type != "sphericalharmonics" or pe_type != "siren":
    raise CheckpointError(f"SatCLIP location encoder le_type={le_type!r}, pe_type={pe_type!r} "
                          f"is not supported (only sphericalharmonics + siren)")
  config = model_config.get_config()
  config.satclip.update(infer_satclip_sizes(state_dict, SATCLIP_PREFIX))
  config.satclip.harmonics = (
      harmonics or hyper_parameters.get("harmonics_calculation") or "analytic")
  recorded = hyper_parameters.get("legendre_polys")
  if recorded is not None and int(recorded) != config.satclip.legendre_polys:
    raise CheckpointError(f"hyper_parameters say legendre_polys={recorded} but the SIREN "
                          f"takes {config.satclip.legendre_polys}**2 inputs")
  return config


# --------------------------------------------------------------------------- conversion


def convert_satclip(state_dict, config, prefix: str, problems: list[str]) -> Any:
  encoder = models.build_location_encoder(config)
  target = jax.eval_shape(encoder.init, jax.random.key(0), jnp.zeros((1, 2)))
  return _fill(state_dict, satclip_tensors(config, prefix), target, problems)


def convert_nirgan(state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict,
                   ignored_prefixes: Iterable[str] = NIRGAN_IGNORED_PREFIXES) -> dict[str, Any]:
  """{"generator", "discriminator", "satclip"} params of a NIR-GAN state_dict.

  The discriminator is converted when the checkpoint has one (inference-only
  checkpoints may not); the SatCLIP encoder when the generator uses it.
  """
  problems: list[str] = []
  generator = models.build_generator(config)
  size = 64
  embed = jnp.zeros((1, config.satclip.embed_dim)) if models.uses_location(config) else None
  g_target = jax.eval_shape(generator.init, jax.random.key(0), jnp.zeros((1, size, size, 3)),
                            embed)["params"]
  g_tensors = generator_tensors(config)
  params = {"generator": _fill(state_dict, g_tensors, g_target, problems)}
  used = {t.torch_key for t in g_tensors}

  if any(k.startswith("netD.") for k in state_dict):
    discriminator = models.build_discriminator(config)
    d_target = jax.eval_shape(discriminator.init, jax.random.key(0),
                              jnp.zeros((1, size, size, 4)))["params"]
    d_tensors = discriminator_tensors(config)
    params["discriminator"] = _fill(state_dict, d_tensors, d_target, problems)
    used |= {t.torch_key for t in d_tensors}

  if models.uses_location(config):
    prefix = "satclip_model.encoder_model."
    params["satclip"] = convert_satclip(state_dict, config, prefix, problems)
    used |= {t.torch_key for t in satclip_tensors(config, prefix)}

  problems += _unexpected(state_dict, used, NIRGAN_PREFIXES, ignored_prefixes)
  _raise_if(problems, "NIR-GAN checkpoint")
  return params


def taking_rgb(params: dict[str, Any], input_order: str) -> dict[str, Any]:
  """``params`` of a model trained on colour channels in ``input_order``, changed to take
  RGB: for "bgr" the first three input channels of G's first conv and D's first conv are
  reversed (any further input channel, D's NIR, stays)."""
  if input_order not in INPUT_ORDERS:
    raise CheckpointError(f"input order must be one of {INPUT_ORDERS}, got {input_order!r}")
  if input_order == "rgb":
    return params

  def reversed_colours(layer):
    kernel = layer["kernel"]  # (kh, kw, in, out)
    order = [2, 1, 0, *range(3, kernel.shape[2])]
    return {**layer, "kernel": kernel[:, :, order, :]}

  out = dict(params)
  out["generator"] = {**params["generator"],
                      "conv_in": reversed_colours(params["generator"]["conv_in"])}
  if "discriminator" in params:
    out["discriminator"] = {**params["discriminator"],
                            "conv_0": reversed_colours(params["discriminator"]["conv_0"])}
  return out


def import_nirgan(path: str | os.PathLike, inject_style: str = "multiply",
                  harmonics: str | None = None, input_order: str = "rgb"
                  ) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  """(params, config) of a NIR-GAN checkpoint; the model takes RGB whatever ``input_order``
  (the colour order the checkpoint was trained on) is."""
  state_dict, hyper_parameters = load_torch_checkpoint(path)
  harmonics = harmonics or _recorded_harmonics(hyper_parameters) or "analytic"
  try:
    config = nirgan_config_from_state_dict(state_dict, inject_style, harmonics)
    params = taking_rgb(convert_nirgan(state_dict, config), input_order)
  except CheckpointError as e:
    raise CheckpointError(f"{path}: {e}") from e
  config.source = ml_collections.ConfigDict(dict(
      format="pytorch", checkpoint=paths.as_path(path).name, input_order=input_order))
  return params, config


def import_satclip(path: str | os.PathLike, harmonics: str | None = None
                   ) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
  state_dict, hyper_parameters = load_torch_checkpoint(path)
  try:
    config = satclip_config_from_checkpoint(state_dict, hyper_parameters, harmonics)
    problems: list[str] = []
    params = convert_satclip(state_dict, config, SATCLIP_PREFIX, problems)
    used = {t.torch_key for t in satclip_tensors(config, SATCLIP_PREFIX)}
    problems += _unexpected(state_dict, used, (), SATCLIP_IGNORED_PREFIXES)
    _raise_if(problems, "SatCLIP checkpoint")
  except CheckpointError as e:
    raise CheckpointError(f"{path}: {e}") from e
  return {"satclip": params}, config


def _recorded_harmonics(hyper_parameters: dict[str, Any]) -> str | None:
  """NIR-GAN may record SatCLIP's own hyper-parameters, flat or nested."""
  if "harmonics_calculation" in hyper_parameters:
    return hyper_parameters["harmonics_calculation"]
  for value in hyper_parameters.values():
    if isinstance(value, dict) and "harmonics_calculation" in value:
      return value["harmonics_calculation"]
  return None


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m nirgan_jax.import_torch",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("kind", choices=("nirgan", "satclip"), help="which checkpoint")
  parser.add_argument("checkpoint", help="PyTorch Lightning .ckpt or a saved state_dict")
  parser.add_argument("--out", required=True, help="model directory to write")
  parser.add_argument("--inject_style", default="multiply", choices=("multiply", "add"),
                      help="NIR-GAN injection style the checkpoint was trained with")
  parser.add_argument("--harmonics", choices=("analytic", "closed-form"), default=None,
                      help="SatCLIP harmonics convention (default: as recorded, else analytic)")
  parser.add_argument("--input_order", choices=INPUT_ORDERS, default="rgb",
                      help="colour order the NIR-GAN checkpoint was trained on: bgr for the "
                           "original's S2-100K checkpoints; the imported model takes RGB")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser.parse_args(argv)


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  out = paths.as_path(args.out)
  if out.exists() and not args.overwrite:
    raise errors.UsageError(f"{out}: output exists (pass --overwrite to replace it)")
  model_dir.check_output(out, args.overwrite)
  if args.kind == "nirgan":
    params, config = import_nirgan(args.checkpoint, args.inject_style, args.harmonics,
                                   args.input_order)
  else:
    params, config = import_satclip(args.checkpoint, args.harmonics)
  model_dir.save_model_dir(out, params, config, overwrite=args.overwrite)
  counts = ", ".join(f"{name} {models.count_params(tree):,}" for name, tree in params.items())
  print(f"wrote {out} ({counts} parameters)")
  return 0


if __name__ == "__main__":
  errors.run(main)
