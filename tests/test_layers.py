import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nirgan_jax.models import layers

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _nchw(x):
  return torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)


def _nhwc(t):
  return t.permute(0, 2, 3, 1).detach().numpy()


@pytest.mark.parametrize("kernel,stride,cin,cout,h,w", [
    (3, 1, 8, 5, 9, 11),     # 72 features per pixel: im2col
    (3, 2, 8, 5, 10, 13),    # strided im2col, odd/even sizes
    (7, 1, 3, 4, 12, 12),    # the generator's input conv
    (4, 2, 4, 6, 11, 9),     # PatchGAN conv
    (4, 2, 64, 16, 10, 10),  # 1024 features: one matmul per tap
    (3, 1, 64, 16, 8, 8),    # Winograd F(2x2, 3x3), even output
    (3, 1, 32, 8, 9, 12),    # Winograd with odd output sizes (partial tiles)
    (7, 1, 16, 1, 12, 10),   # one output channel: output-side accumulation
])
def test_conv_backends_match_torch(kernel, stride, cin, cout, h, w):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, h, w, cin)).astype(np.float32)
  k = rng.normal(size=(kernel, kernel, cin, cout)).astype(np.float32) * 0.1
  ref = _nhwc(F.conv2d(_nchw(x), torch.from_numpy(k).permute(3, 2, 0, 1), stride=stride))
  for fn in (layers.conv2d_matmul, layers.conv2d_xla):
    got = np.asarray(fn(jnp.asarray(x), jnp.asarray(k), stride))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding,output_padding,h,w", [
    (3, 2, 1, 1, 5, 7),  # the generator's upsampling, non-square
    (4, 2, 1, 0, 6, 5),
    (3, 1, 1, 0, 4, 4),
    (5, 3, 2, 1, 4, 6),
])
def test_conv_transpose_backends_match_torch(kernel, stride, padding, output_padding, h, w):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, h, w, 6)).astype(np.float32)
  weight = rng.normal(size=(6, 4, kernel, kernel)).astype(np.float32)  # torch (in, out, kh, kw)
  ref = _nhwc(F.conv_transpose2d(_nchw(x), torch.from_numpy(weight), stride=stride,
                                 padding=padding, output_padding=output_padding))
  k = jnp.asarray(weight.transpose(2, 3, 0, 1))
  for fn in (layers.conv_transpose2d_matmul, layers.conv_transpose2d_xla):
    got = np.asarray(fn(jnp.asarray(x), k, stride, padding, output_padding))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


def test_instance_norm_matches_torch():
  x = np.random.default_rng(2).normal(3.0, 2.0, size=(3, 7, 5, 4)).astype(np.float32)
  ref = _nhwc(F.instance_norm(_nchw(x), eps=1e-5))
  np.testing.assert_allclose(np.asarray(layers.instance_norm(jnp.asarray(x))), ref, atol=1e-5)


@pytest.mark.parametrize("size", [(42, 42), (138, 138), (20, 33)])
def test_bilinear_resize_matches_torch_interpolate(size):
  x = np.random.default_rng(3).normal(size=(2, 16, 16, 1)).astype(np.float32)
  ref = _nhwc(F.interpolate(_nchw(x), size=size, mode="bilinear", align_corners=False))
  got = np.asarray(layers.resize_bilinear(jnp.asarray(x), *size))
  np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("mode,torch_pad", [("reflect", torch.nn.ReflectionPad2d),
                                            ("replicate", torch.nn.ReplicationPad2d),
                                            ("zero", torch.nn.ZeroPad2d)])
def test_padding_matches_torch(mode, torch_pad):
  x = np.random.default_rng(4).normal(size=(1, 6, 5, 2)).astype(np.float32)
  ref = _nhwc(torch_pad(3)(_nchw(x)))
  np.testing.assert_array_equal(np.asarray(layers.pad_spatial(jnp.asarray(x), 3, mode)), ref)


def test_unknown_options_are_rejected():
  with pytest.raises(ValueError, match="conv_impl"):
    layers.resolve_conv_impl("cudnn")
  with pytest.raises(ValueError, match="padding_type"):
    layers.pad_spatial(jnp.zeros((1, 4, 4, 1)), 1, "circular")
  with pytest.raises(ValueError, match="norm"):
    layers.normalize(jnp.zeros((1, 4, 4, 1)), "batch")


@pytest.mark.parametrize("kernel,stride,cin,cout", [
    (7, 1, 16, 1),   # output-side conv: hand-written VJP
    (3, 1, 32, 8),   # Winograd
    (4, 2, 8, 16),   # strided im2col
])
def test_matmul_conv_gradients_match_xla(kernel, stride, cin, cout):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 13, 11, cin)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)).astype(np.float32) * 0.1)
  out_shape = jax.eval_shape(lambda: layers.conv2d_xla(x, k, stride)).shape
  ct = jnp.asarray(rng.normal(size=out_shape).astype(np.float32))
  grads = [jax.jit(lambda x, k, fn=fn: jax.vjp(lambda a, b: fn(a, b, stride), x, k)[1](ct))(x, k)
           for fn in (layers.conv2d_matmul, layers.conv2d_xla)]
  for got, want in zip(grads[0], grads[1], strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)


def test_conv_transpose_gradients_match_xla():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(2, 5, 7, 6)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 6, 4)).astype(np.float32) * 0.1)
  ct = jnp.asarray(rng.normal(size=(2, 10, 14, 4)).astype(np.float32))
  grads = [jax.vjp(lambda a, b, fn=fn: fn(a, b, 2, 1, 1), x, k)[1](ct)
           for fn in (layers.conv_transpose2d_matmul, layers.conv_transpose2d_xla)]
  for got, want in zip(grads[0], grads[1], strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
