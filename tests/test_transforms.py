import math
import os
import subprocess
import sys

import numpy as np
import pytest

from nirgan_jax.data import transforms

from conftest import REPO


def test_area_resample_equals_block_means_for_integer_factors():
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 1, (12, 8, 3)).astype(np.float32)
  out = transforms.area_resample(image, 4)
  assert out.shape == (3, 2, 3)
  expected = image.reshape(3, 4, 2, 4, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  # The general weight matrices (used for non-integer factors) give the same block means.
  rows, cols = transforms.area_weights(12, 3), transforms.area_weights(8, 2)
  np.testing.assert_allclose(np.einsum("ih,hwc,jw->ijc", rows, image, cols), expected, rtol=1e-6)


def test_area_resample_non_integer_factor_on_a_known_pattern():
  """6 m -> 10 m (factor 5/3) on a 1-D ramp: each output is the exact mean over its span."""
  ramp = np.arange(10, dtype=np.float32)[None, :, None].repeat(5, axis=0)  # x = column index
  out = transforms.area_resample(ramp, 10 / 6)
  assert out.shape == (3, 6, 1)
  # Output cell i spans [i f, (i + 1) f) with f = 5/3; the mean of a step function x = floor(t)
  # over that span, computed by integrating the steps.
  f = 10 / 6
  for i in range(6):
    a, b = i * f, (i + 1) * f
    cells = np.arange(10)
    overlap = np.clip(np.minimum(b, cells + 1) - np.maximum(a, cells), 0, None)
    assert out[0, i, 0] == pytest.approx(float((overlap * cells).sum() / f), rel=1e-6)


def test_area_resample_preserves_the_mean_and_does_not_alias():
  # A checkerboard at the Nyquist frequency: strided subsampling keeps one colour, area
  # averaging gives the mean grey.
  board = (np.indices((16, 16)).sum(axis=0) % 2).astype(np.float32)[..., None]
  out = transforms.area_resample(board, 2)
  np.testing.assert_allclose(out, 0.5)
  assert board[::2, ::2].mean() == 0.0


def test_area_resample_refuses_upsampling():
  with pytest.raises(ValueError, match="coarsening"):
    transforms.area_resample(np.zeros((4, 4, 1)), 0.5)


def test_crop_refuses_to_pad():
  image = np.arange(48, dtype=np.float32).reshape(6, 8, 1)
  np.testing.assert_array_equal(transforms.crop(image, 4, 2, 3), image[2:6, 3:7])
  for top, left in ((3, 0), (0, 5), (-1, 0)):
    with pytest.raises(ValueError, match="leaves the 6x8 image"):
      transforms.crop(image, 4, top, left)


def test_native_window_is_exact_for_float_ratios():
  assert transforms.native_window(256, 0.3 / 0.1) == 768  # 2.9999999999999996
  assert transforms.native_window(256, 2.5 / 1.5) == 427
  assert transforms.native_window(32, 6.0 / 1.5) == 128


def test_coarse_pixels_are_valid_only_where_all_their_native_pixels_are():
  rng = np.random.default_rng(1)
  image = rng.uniform(0.1, 0.9, (8, 8, 2)).astype(np.float32)
  valid = np.ones((8, 8), np.float32)
  valid[1, 2] = 0  # one of the 4 pixels of coarse (0, 1)
  valid[6:8, 6:8] = 0  # all of coarse (3, 3)
  (values,), coarse_valid = transforms.area_resample_valid(
      [np.where(valid[..., None] > 0, image, 0)], valid[..., None], 2)
  np.testing.assert_array_equal(coarse_valid[..., 0], valid.reshape(4, 2, 4, 2).all(axis=(1, 3)))
  block_means = image.reshape(4, 2, 4, 2, 2).mean(axis=(1, 3))
  keep = coarse_valid[..., 0] > 0
  np.testing.assert_allclose(values[keep], block_means[keep], rtol=1e-6)
  # The partly valid pixel is the mean of its valid native pixels, the empty one 0: finite.
  np.testing.assert_allclose(values[0, 1], image[0:2, 2:4][valid[0:2, 2:4] > 0].mean(axis=0),
                             rtol=1e-6)
  np.testing.assert_array_equal(values[3, 3], 0)
  assert np.isfinite(values).all()


def test_a_native_pixel_partly_under_a_coarse_one_invalidates_it():
  """10 -> 3 px (factor 10/3): native column 3 lies a third under coarse column 0 and two
  thirds under coarse column 1, so both are invalid; coarse column 2 is not."""
  valid = np.ones((10, 10, 1), np.float32)
  valid[:, 3] = 0
  (values,), coarse_valid = transforms.area_resample_valid([np.ones((10, 10, 1), np.float32)],
                                                           valid, 10 / 3)
  np.testing.assert_array_equal(coarse_valid[..., 0], [[0, 0, 1]] * 3)
  np.testing.assert_allclose(values, 1.0, rtol=1e-6)  # means over the valid pixels only


def test_dihedral_group_and_reflectance():
  image = np.arange(6).reshape(2, 3, 1)
  seen = {transforms.dihedral(image, k, f).tobytes() + bytes(transforms.dihedral(
      image, k, f).shape) for k in range(4) for f in (False, True)}
  assert len(seen) == 8
  stored = np.array([0, 5000, 10000, 20000], np.uint16)
  np.testing.assert_allclose(transforms.to_reflectance(stored), [0, 0.5, 1, 1])
  assert not np.isnan(transforms.to_reflectance(np.array([np.nan]))).any()


def test_choose_gsd_respects_prob_native():
  rng = np.random.default_rng(0)
  picks = [transforms.choose_gsd(rng, 2.5, (5.0, 10.0), 0.25) for _ in range(4000)]
  share_native = picks.count(2.5) / len(picks)
  assert share_native == pytest.approx(0.25, abs=0.03)
  assert set(picks) == {2.5, 5.0, 10.0}
  assert transforms.gsd_probabilities(2.5, (5.0, 10.0), 0.25) == {2.5: 0.25, 5.0: 0.375,
                                                                  10.0: 0.375}
  assert transforms.choose_gsd(rng, 30.0, (10.0,), 0.0) == 30.0  # never finer than native
  assert transforms.gsd_probabilities(30.0, (10.0,), 0.0) == {30.0: 1.0}


def test_illumination_gain_keeps_ndvi_and_reflectance_within_one():
  rng = np.random.default_rng(0)
  image = rng.uniform(0.01, 0.5, (16, 16, 4)).astype(np.float32)
  valid = np.ones((16, 16, 1), np.float32)
  gains = [transforms.illumination_gain(rng, [image], valid, 0.5, 1.8) for _ in range(2000)]
  assert min(gains) >= 0.5 and max(gains) <= 1.0 / image.max() + 1e-6
  assert np.median(gains) == pytest.approx(1.0, abs=0.1)  # log-uniform around 1 here
  bright = image.copy()
  bright[3, 4, 0] = 0.9
  assert all(transforms.illumination_gain(rng, [bright], valid, 1.5, 2.0) <= 1 / 0.9 + 1e-6
             for _ in range(50))
  # No-data pixels do not cap the gain.
  valid[3, 4] = 0
  assert transforms.illumination_gain(np.random.default_rng(1), [bright], valid, 1.5, 1.5) == (
      pytest.approx(min(1.5, 1 / image.max())))
  gain = transforms.illumination_gain(rng, [image], np.ones_like(valid), 0.5, 1.8)
  ndvi = lambda x: (x[..., 3] - x[..., 0]) / (x[..., 3] + x[..., 0])
  np.testing.assert_allclose(ndvi(image * gain), ndvi(image), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [2, 3, 4, 5, 6, 8, 9])
def test_block_mean_is_bit_identical_to_numpys_mean(dtype, factor):
  """The fast block mean adds each block in NumPy's own order: the pipeline's examples are
  what they were before it, to the last bit (above SEQUENTIAL_BLOCK_MAX it is NumPy's mean)."""
  rng = np.random.default_rng(factor)
  image = rng.uniform(0, 1, (8 * factor, 6 * factor, 5)).astype(dtype)
  expected = image.reshape(8, factor, 6, factor, 5).mean(axis=(1, 3), dtype=dtype)
  out = transforms.block_mean(image, factor)
  assert out.dtype == dtype
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(transforms.area_resample(image.astype(np.float32), factor),
                                image.astype(np.float32).reshape(8, factor, 6, factor, 5).mean(
                                    axis=(1, 3), dtype=np.float32))


def test_illumination_gain_caps_by_the_same_maximum_as_a_masked_max():
  """Over the example's band arrays (RGB and NIR, as the pipeline passes them)."""
  rng = np.random.default_rng(3)
  image = rng.uniform(0.0, 0.9, (32, 32, 4)).astype(np.float32)
  for valid in (np.ones((32, 32, 1), np.float32),
                (rng.random((32, 32, 1)) < 0.7).astype(np.float32),
                np.zeros((32, 32, 1), np.float32)):
    brightest = float(np.max(image, where=valid > 0, initial=0.0))
    for seed in range(20):
      expected = math.exp(np.random.default_rng(seed).uniform(math.log(1.5), math.log(2.0)))
      expected = min(expected, 1.0 / brightest) if brightest > 0 else expected
      bands = [image[..., :3], image[..., 3:]]
      assert transforms.illumination_gain(np.random.default_rng(seed), bands, valid,
                                          1.5, 2.0) == expected


_RESAMPLE_IN_A_FRESH_PROCESS = """
import hashlib, numpy as np
from nirgan_jax.data import transforms
rng = np.random.default_rng(0)
image = rng.random((384, 384, 5), dtype=np.float32)
valid = (rng.random((384, 384, 1)) > 0.01).astype(np.float32)
(means,), mask = transforms.area_resample_valid([image], valid, 1.5)
print(hashlib.sha256(means.tobytes() + mask.tobytes()).hexdigest())
"""


def test_non_integer_resampling_gives_the_same_bits_whatever_blas_threads_a_machine_has():
  """A matrix product through OpenBLAS splits its sums by the thread count, so its bits
  depend on the machine's cores; the banded resampling uses no BLAS."""
  outputs = set()
  for threads in ("1", "2", "4"):
    process = subprocess.run([sys.executable, "-c", _RESAMPLE_IN_A_FRESH_PROCESS], cwd=REPO,
                             env={**os.environ, "OPENBLAS_NUM_THREADS": threads},
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    outputs.add(process.stdout.strip())
  assert len(outputs) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, factor", [((384, 384, 5), 1.5), ((101, 77, 2), 2.5),
                                           ((512, 512, 3), 4 / 3), ((64, 64, 1), 1.25),
                                           ((10, 10, 1), 7.3), ((90, 60, 2), 3.0)])
def test_banded_resampling_equals_the_dense_matrix_product(shape, factor, dtype):
  image = np.random.default_rng(1).random(shape).astype(dtype)
  height, width = shape[:2]
  rows = transforms.area_weights(height, max(1, round(height / factor))).astype(dtype)
  cols = transforms.area_weights(width, max(1, round(width / factor))).astype(dtype)
  dense = np.einsum("ih,hwc,jw->ijc", rows, image, cols, optimize=True)
  banded = transforms.area_resample(image, factor, dtype)
  assert banded.dtype == dtype and banded.shape == dense.shape
  np.testing.assert_allclose(banded, dense, rtol=4 * np.finfo(dtype).eps, atol=0)
