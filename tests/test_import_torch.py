"""PyTorch checkpoint import: a reference torch model with the original key layout is
saved as a Lightning-style .ckpt, converted, and must give the same outputs."""

import re
import sys

import jax
import numpy as np
import pytest

from nirgan_jax import models
from nirgan_jax.errors import NirganError
from nirgan_jax.infer import import_torch, model_dir

torch = pytest.importorskip("torch")
from benchmarks import torch_reference as ref  # noqa: E402

LONLAT = np.array([[13.4, 52.5], [-122.3, 47.6], [151.2, -33.9], [0.0, 0.0]], np.float32)
ARCH = dict(ngf=8, n_blocks=9, ndf=8, n_layers=3)


def _save_nirgan(path, post_correction=False, convention="analytic", **arch):
  torch.manual_seed(0)
  module = ref.NIRGANModule(**{**ARCH, **arch}, post_correction=post_correction)
  module.satclip_model.encoder_model.convention = convention
  ref.randomize_(module, torch.Generator().manual_seed(1))
  torch.save({"state_dict": module.state_dict(), "epoch": 3, "global_step": 1200,
              "hyper_parameters": {"harmonics_calculation": convention, "lr": 2e-4}}, path)
  return module.eval()


@pytest.fixture(scope="module")
def nirgan_ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt") / "nirgan.ckpt"
  module = _save_nirgan(path, post_correction=True, convention="closed-form")
  return path, module


def test_nirgan_checkpoint_converts_to_identical_outputs(nirgan_ckpt, tmp_path):
  path, module = nirgan_ckpt
  out_dir = tmp_path / "model"
  assert import_torch.main(["nirgan", str(path), "--out", str(out_dir)]) == 0
  params, config = model_dir.load_model_dir(out_dir)

  assert config.model.generator.ngf == 8 and config.model.generator.n_blocks == 9
  assert config.model.injection.post_correction
  assert config.satclip.legendre_polys == 10 and config.satclip.harmonics == "closed-form"
  assert config.model.discriminator.n_layers == 3

  # SatCLIP embeddings.
  with torch.no_grad():
    torch_embed = module.satclip_model.encoder_model(torch.from_numpy(LONLAT))
  encoder = models.build_location_encoder(config)
  embed = jax.jit(encoder.apply)(params["satclip"], LONLAT)
  np.testing.assert_allclose(np.asarray(embed), torch_embed.numpy(), atol=1e-4)

  # Generator, 64 x 64 with injection (driven by the same embedding for both).
  rgb = np.random.default_rng(0).uniform(size=(4, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    torch_nir = module.netG(torch.from_numpy(rgb).permute(0, 3, 1, 2), torch_embed)
  config.model.conv_impl = "xla"
  generator = models.build_generator(config)
  nir = jax.jit(generator.apply)({"params": params["generator"]}, rgb, torch_embed.numpy())
  np.testing.assert_allclose(np.asarray(nir), torch_nir.permute(0, 2, 3, 1).numpy(), atol=1e-4)

  # Discriminator.
  pair = np.concatenate([rgb, np.asarray(nir)], -1)
  with torch.no_grad():
    torch_logits = module.netD(torch.from_numpy(pair).permute(0, 3, 1, 2))
  logits = jax.jit(models.build_discriminator(config).apply)(
      {"params": params["discriminator"]}, pair)
  np.testing.assert_allclose(np.asarray(logits), torch_logits.permute(0, 2, 3, 1).numpy(),
                             atol=1e-4)


def test_bgr_checkpoint_imports_as_a_model_that_takes_rgb(nirgan_ckpt, tmp_path):
  path, module = nirgan_ckpt
  out_dir = tmp_path / "model"
  assert import_torch.main(["nirgan", str(path), "--out", str(out_dir), "--input_order",
                            "bgr"]) == 0
  params, config = model_dir.load_model_dir(out_dir)
  assert config.source.input_order == "bgr" and config.source.checkpoint == path.name
  config.model.conv_impl = "xla"

  rgb = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  bgr = np.ascontiguousarray(rgb[..., ::-1])
  with torch.no_grad():
    embed = module.satclip_model.encoder_model(torch.from_numpy(LONLAT[:2]))
    torch_nir = module.netG(torch.from_numpy(bgr).permute(0, 3, 1, 2), embed)
  nir = jax.jit(models.build_generator(config).apply)(
      {"params": params["generator"]}, rgb, embed.numpy())
  np.testing.assert_allclose(np.asarray(nir), torch_nir.permute(0, 2, 3, 1).numpy(), atol=1e-4)

  nir = np.asarray(nir)
  with torch.no_grad():
    torch_logits = module.netD(torch.from_numpy(np.concatenate([bgr, nir], -1)).permute(0, 3, 1, 2))
  logits = jax.jit(models.build_discriminator(config).apply)(
      {"params": params["discriminator"]}, np.concatenate([rgb, nir], -1))
  np.testing.assert_allclose(np.asarray(logits), torch_logits.permute(0, 2, 3, 1).numpy(),
                             atol=1e-4)

  _, rgb_config = import_torch.import_nirgan(path)
  assert rgb_config.source.input_order == "rgb"
  with pytest.raises(import_torch.CheckpointError, match="input order"):
    import_torch.import_nirgan(path, input_order="grb")


def test_generator_mapping_uses_the_original_sequential_indices():
  config = import_torch.nirgan_config_from_state_dict(
      {"netG.model.1.weight": np.zeros((64, 3, 7, 7))}, "multiply", "analytic")
  config.model.generator.n_blocks = 9
  keys = {t.torch_key: t.flax_path for t in import_torch.generator_tensors(config)}
  assert keys["netG.model.4.weight"] == ("down_0", "kernel")
  assert keys["netG.model.10.conv_block.5.weight"] == ("block_0", "conv_1", "kernel")
  assert keys["netG.model.18.conv_block.1.bias"] == ("block_8", "conv_0", "bias")
  assert keys["netG.model.19.weight"] == ("up_0", "kernel")
  assert keys["netG.model.22.weight"] == ("up_1", "kernel")
  assert keys["netG.model.26.weight"] == ("conv_out", "kernel")
  d_keys = [t.torch_key for t in import_torch.discriminator_tensors(config)]
  assert [k for k in d_keys if k.endswith("weight")] == [
      f"netD.model.{i}.weight" for i in (0, 2, 5, 8, 11)]


def test_satclip_checkpoint_import(tmp_path):
  torch.manual_seed(3)
  encoder = ref.LocationEncoder(legendre_polys=10, convention="analytic")
  state = {f"model.location.{k}": v for k, v in encoder.state_dict().items()}
  state["model.visual.conv1.weight"] = torch.zeros(8, 3, 3, 3)  # image tower: ignored
  path = tmp_path / "satclip.ckpt"
  torch.save({"state_dict": state, "hyper_parameters": {
      "legendre_polys": 10, "embed_dim": 256, "capacity": 256, "num_hidden_layers": 2,
      "le_type": "sphericalharmonics", "pe_type": "siren"}}, path)

  params, config = import_torch.import_satclip(path)
  assert config.satclip.harmonics == "analytic"  # SatCLIP's default when not recorded
  with torch.no_grad():
    expected = encoder(torch.from_numpy(LONLAT)).numpy()
  got = jax.jit(models.build_location_encoder(config).apply)(params["satclip"], LONLAT)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)


def test_problems_are_reported_by_name(nirgan_ckpt, tmp_path):
  path, _ = nirgan_ckpt
  state = torch.load(path, weights_only=True)["state_dict"]
  del state["netG.model.7.bias"]
  state["netD.model.2.weight"] = torch.zeros(16, 8, 3, 3)
  state["netG.extra_head.weight"] = torch.zeros(3)
  state["criterionGAN.real_label"] = torch.tensor(1.0)  # known buffer: ignored
  broken = tmp_path / "broken.ckpt"
  torch.save({"state_dict": state}, broken)
  with pytest.raises(import_torch.CheckpointError) as info:
    import_torch.import_nirgan(broken)
  message = str(info.value)
  assert str(broken) in message
  assert "missing key netG.model.7.bias" in message
  assert "shape mismatch for netD.model.2.weight" in message
  assert "unexpected key netG.extra_head.weight" in message
  assert "criterionGAN" not in message


class _Payload:
  def __reduce__(self):
    return (print, ("this would run on load",))


def test_checkpoints_needing_code_are_refused(tmp_path, capsys):
  path = tmp_path / "evil.ckpt"
  torch.save({"state_dict": {"netG.model.1.weight": torch.zeros(1)}, "x": _Payload()}, path)
  out_dir = tmp_path / "out"
  assert import_torch.main(["nirgan", str(path), "--out", str(out_dir)]) == 1
  captured = capsys.readouterr()
  assert str(path) in captured.err and "refused" in captured.err
  assert "this would run on load" not in captured.out + captured.err
  assert not out_dir.exists()


def test_missing_and_non_checkpoint_files(tmp_path, capsys):
  assert import_torch.main(["satclip", str(tmp_path / "nope.ckpt"), "--out",
                            str(tmp_path / "o")]) == 1
  assert "no such file" in capsys.readouterr().err
  text = tmp_path / "notes.ckpt"
  text.write_text("not a checkpoint")
  assert import_torch.main(["satclip", str(text), "--out", str(tmp_path / "o")]) == 1
  assert "notes.ckpt" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_existing_output_needs_overwrite(nirgan_ckpt, tmp_path, capsys):
  path, _ = nirgan_ckpt
  out_dir = tmp_path / "model"
  out_dir.mkdir()
  assert import_torch.main(["nirgan", str(path), "--out", str(out_dir)]) == 2
  assert "--overwrite" in capsys.readouterr().err


def test_without_torch_the_error_names_the_extra(nirgan_ckpt, monkeypatch):
  path, _ = nirgan_ckpt
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
  expected = f"{path}: reading a PyTorch checkpoint needs torch: pip install 'nirgan-jax[torch]'"
  with pytest.raises(NirganError, match=f"^{re.escape(expected)}$"):
    import_torch.import_nirgan(path)
