import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nirgan_jax import models
from nirgan_jax.models import config as model_config

from conftest import rbg_key, tiny_config


def _param_count(module, *inputs):
  return models.count_params(jax.eval_shape(module.init, jax.random.key(0), *inputs))


def test_parameter_counts_equal_the_original():
  config = model_config.get_config()
  rgb = jnp.zeros((1, 64, 64, 3))
  embedding = jnp.zeros((1, 256))

  config.model.injection.style = "none"
  assert _param_count(models.build_generator(config), rgb) == 11_371_905

  config.model.injection.style = "multiply"
  with_injection = _param_count(models.build_generator(config), rgb, embedding)
  assert with_injection == 11_371_905 + 4_210_688 + 1  # Dense + learnable scale

  config.model.injection.post_correction = True
  assert _param_count(models.build_generator(config), rgb, embedding) == with_injection + 1

  assert _param_count(models.build_discriminator(config), jnp.zeros((1, 64, 64, 4))) == 2_765_761
  assert _param_count(models.build_location_encoder(config), jnp.zeros((1, 2))) == 157_440


@pytest.mark.parametrize("style", ["multiply", "add", "concat", "none"])
def test_generator_styles_on_non_square_input(style):
  config = tiny_config(style)
  generator = models.build_generator(config)
  rgb = jax.random.uniform(jax.random.key(0), (2, 40, 56, 3))
  embedding = jax.random.normal(jax.random.key(1), (2, 16))
  variables = jax.jit(generator.init)(rbg_key(2), rgb, embedding)
  apply = jax.jit(generator.apply)
  out = apply(variables, rgb, embedding)
  assert out.shape == (2, 40, 56, 1)
  assert out.dtype == jnp.float32
  assert bool(jnp.all(jnp.abs(out) <= 1.0))
  if style != "none":  # the location must change the output
    other = apply(variables, rgb, embedding[::-1])
    assert float(jnp.max(jnp.abs(out - other))) > 0
  if style == "concat":
    assert variables["params"]["conv_in"]["kernel"].shape[2] == 4


def test_generator_needs_an_embedding_when_injecting():
  generator = models.build_generator(tiny_config("multiply"))
  with pytest.raises(ValueError, match="needs a SatCLIP embedding"):
    generator.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_fixed_injection_scale_is_not_a_parameter():
  config = tiny_config("add")
  config.model.injection.learn_scale = False
  variables = jax.eval_shape(models.build_generator(config).init,
                             jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 16)))
  assert "injection_scale" not in variables["params"]


@pytest.mark.parametrize("build,shape", [
    ("generator", (2, 36, 44, 3)), ("discriminator", (2, 36, 44, 4))])
def test_conv_backends_agree_on_whole_networks(build, shape):
  config = tiny_config("multiply")
  config.model.generator.dropout_rate = 0.0
  outputs = []
  for impl in ("xla", "matmul"):
    config.model.conv_impl = impl
    net = getattr(models, f"build_{build}")(config)
    args = [jax.random.uniform(jax.random.key(0), shape)]
    if build == "generator":
      args.append(jax.random.normal(jax.random.key(1), (2, 16)))
    variables = jax.jit(net.init)(rbg_key(2), *args)
    outputs.append(np.asarray(jax.jit(net.apply)(variables, *args)))
  np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)


def test_patchgan_receptive_output_shape():
  config = model_config.get_config()
  d = models.build_discriminator(config)
  out_shape = jax.eval_shape(lambda x: d.init_with_output(jax.random.key(0), x)[0],
                             jnp.zeros((1, 256, 256, 4)))
  assert out_shape.shape == (1, 30, 30, 1)  # pix2pix's 70x70 PatchGAN on 256 px


def test_bfloat16_compute_keeps_float32_params():
  config = tiny_config("multiply")
  config.compute_dtype = "bfloat16"
  generator = models.build_generator(config)
  rgb = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3))
  variables = jax.jit(generator.init)(rbg_key(1), rgb, jnp.ones((1, 16)))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  out = jax.jit(generator.apply)(variables, rgb, jnp.ones((1, 16)))
  config.compute_dtype = "float32"
  ref = jax.jit(models.build_generator(config).apply)(variables, rgb, jnp.ones((1, 16)))
  assert out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out - ref))) < 0.1


def test_radiometry_path_keeps_the_absolute_brightness_instance_norm_removes():
  """A scene and the same scene twice as bright plus an offset (snow against rock, desert
  against soil) are one and the same to the reference generator after its first instance
  norm; the radiometry path tells them apart. Off, it adds no parameter: imported
  reference checkpoints keep their exact tree."""
  config = tiny_config("none")
  reference = models.build_generator(config)
  config.model.generator.update(radiometry_depth=2, radiometry_hidden=8)
  with_path = models.build_generator(config)
  scene = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3)) * 0.4
  rgb = jnp.concatenate([scene, 2 * scene + 0.1])
  ref_vars = reference.init(rbg_key(0), rgb)
  vars_ = with_path.init(rbg_key(0), rgb)
  assert set(vars_["params"]) - set(ref_vars["params"]) == {"radiometry"}
  ref_out = reference.apply(ref_vars, rgb)
  np.testing.assert_allclose(ref_out[0], ref_out[1], atol=3e-3)  # up to the norms' epsilon
  out = with_path.apply(vars_, rgb)
  assert float(jnp.abs(out[0] - out[1]).mean()) > 0.05
  # Without the ResNet's contribution the output is the per-pixel map, through the tanh.
  zeroed = jax.tree.map(jnp.zeros_like, vars_["params"]["conv_out"])
  only_path = with_path.apply({"params": {**vars_["params"], "conv_out": zeroed}}, rgb)
  mlp = models.MLPNIR(hidden=8, depth=2)
  expected = jnp.tanh(mlp.apply({"params": vars_["params"]["radiometry"]}, rgb))
  np.testing.assert_allclose(only_path, expected, atol=1e-6)


def test_correction_gate_starts_from_the_radiometry_path_alone_and_learns():
  config = tiny_config("none")
  config.model.generator.update(radiometry_depth=2, radiometry_hidden=8, correction_gate=True)
  generator = models.build_generator(config)
  rgb = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3)) * 0.4
  variables = generator.init(rbg_key(0), rgb)
  assert float(variables["params"]["correction_gate"]) == 0.0
  mlp = models.MLPNIR(hidden=8, depth=2)
  expected = jnp.tanh(mlp.apply({"params": variables["params"]["radiometry"]}, rgb))
  np.testing.assert_allclose(generator.apply(variables, rgb), expected, atol=1e-6)
  # The gate has a gradient from the start (the ResNet's weights get theirs once it moves).
  loss = lambda params: jnp.mean(jnp.abs(generator.apply({"params": params}, rgb) - 0.3))
  grads = jax.grad(loss)(variables["params"])
  assert float(jnp.abs(grads["correction_gate"])) > 0
  config.model.generator.radiometry_depth = 0
  with pytest.raises(ValueError, match="correction_gate needs the radiometry path"):
    models.build_generator(config).init(rbg_key(0), rgb)
