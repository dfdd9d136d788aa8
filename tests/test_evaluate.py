"""evaluate: the metrics table of a model and baselines, overall and per sensor, on the real
S2-100K samples and on the multi-sensor demo data; the nirgan protocol against a NumPy
re-implementation of the original's metrics (kornia's SSIM)."""

import csv

import numpy as np
import pytest
import rasterio
from test_predict import save_tiny_model

from data_prep import build
from nirgan_jax import evaluate, evaluation, metrics, models
from nirgan_jax.infer import model as inference
from nirgan_jax.infer import model_dir
from nirgan_jax.models import config as model_config

from conftest import TEST_DATA, load_config, rbg_key

S2_SAMPLE = TEST_DATA / "s2_100k_sample"


def save_baseline(path, kind):
  config = load_config("baselines")
  config.model.generator.kind = kind
  config.model.baseline.hidden = 8
  nirgan = models.NIRGAN.from_config(config)
  params = nirgan.generator.init(rbg_key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  return model_dir.save_model_dir(path, {"generator": params}, model_config.model_sections(config))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  return {"gan": save_tiny_model(root / "gan"), "linear": save_baseline(root / "linear", "linear"),
          "cnn": save_baseline(root / "cnn", "cnn")}


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


# --------------------------------------------------------------------------- the original's metrics


def kornia_gaussian(window, sigma=1.5):
  """kornia.filters.get_gaussian_kernel1d: x = arange(window) - window // 2 (+0.5 if even)."""
  x = np.arange(window, dtype=np.float64) - window // 2 + (0.5 if window % 2 == 0 else 0.0)
  gauss = np.exp(-(x**2) / (2 * sigma**2))
  return gauss / gauss.sum()


def kornia_filter2d_separable(image, kernel):
  """kornia.filters.filter2d_separable on a (H, W) image, border 'reflect', padding 'same':
  along x, then along y, each pass reflect-padded by (k - 1) // 2 in front and the rest
  behind (torch's 'reflect': the edge pixel is not repeated), then correlated."""
  k = len(kernel)
  front, rear = (k - 1) // 2, k - 1 - (k - 1) // 2
  padded = np.pad(image, ((0, 0), (front, rear)), mode="reflect")
  along_x = sum(kernel[i] * padded[:, i:i + image.shape[1]] for i in range(k))
  padded = np.pad(along_x, ((front, rear), (0, 0)), mode="reflect")
  return sum(kernel[i] * padded[i:i + image.shape[0], :] for i in range(k))


def kornia_ssim_map(img1, img2, window=11, max_val=1.0, eps=1e-12):
  """kornia.metrics.ssim(img1, img2, window, padding='same') of (H, W) images, in float64."""
  img1, img2 = np.asarray(img1, np.float64), np.asarray(img2, np.float64)
  kernel = kornia_gaussian(window)
  blur = lambda x: kornia_filter2d_separable(x, kernel)
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  mu1, mu2 = blur(img1), blur(img2)
  sigma1 = blur(img1**2) - mu1**2
  sigma2 = blur(img2**2) - mu2**2
  sigma12 = blur(img1 * img2) - mu1 * mu2
  num = (2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)
  den = (mu1**2 + mu2**2 + c1) * (sigma1 + sigma2 + c2)
  return num / (den + eps)


def original_metrics(nir, pred, valid=None, crop=240):
  """The original's results table for one (H, W, 1) example (its ``get_results_table``):
  centre ``crop`` px, kornia SSIM window 11 mean, kornia PSNR max 1, L1, L2 (float64).

  With ``valid``, this project's mask semantics: the pixel means over valid pixels, the SSIM
  map over the pixels whose (reflect-padded) window holds only valid pixels.
  """
  top = (nir.shape[0] - crop) // 2
  centre = lambda x: np.asarray(x, np.float64)[top:top + crop, top:top + crop, 0]
  nir, pred = centre(nir), centre(pred)
  valid = np.ones_like(nir) if valid is None else centre(valid)
  windows = np.lib.stride_tricks.sliding_window_view(np.pad(valid, 5, mode="reflect"), (11, 11))
  window_valid = windows.min(axis=(-2, -1))
  mean = lambda x, w: (x * w).sum() / w.sum()
  mse = mean((nir - pred) ** 2, valid)
  return {"ssim": mean(kornia_ssim_map(nir, pred), window_valid),
          "psnr": 10 * np.log10(1.0 / mse), "l1": mean(np.abs(nir - pred), valid), "l2": mse}


def _fixed_pair(size=256, seed=7):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / 17.0
  nir = 0.3 + 0.15 * np.sin(xx) * np.cos(0.7 * yy) + rng.normal(0, 0.03, (size, size))
  pred = 0.8 * nir + 0.05 + rng.normal(0, 0.02, (size, size))
  rgb = rng.uniform(0.02, 0.3, (size, size, 3))
  as_batch = lambda x: np.clip(x, 0, 1).astype(np.float32).reshape(1, size, size, -1)
  return as_batch(rgb), as_batch(nir), as_batch(pred)


def test_numpy_kornia_reference_follows_torch_reflect_padding():
  torch = pytest.importorskip("torch")
  _, nir, pred = _fixed_pair(size=40)
  kernel = torch.tensor(kornia_gaussian(11), dtype=torch.float64)

  def filter2d_separable(x):  # kornia.filters.filter2d_separable's two passes, in torch
    x = torch.nn.functional.pad(x, (5, 5, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, 11))
    x = torch.nn.functional.pad(x, (0, 0, 5, 5), mode="reflect")
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, 11, 1))

  image = nir[0, ..., 0].astype(np.float64)
  expected = filter2d_separable(torch.from_numpy(image)[None, None])[0, 0].numpy()
  np.testing.assert_allclose(kornia_filter2d_separable(image, kornia_gaussian(11)), expected,
                             atol=1e-12)


def test_original_protocol_reproduces_the_originals_metrics_on_a_fixed_pair():
  rgb, nir, pred = _fixed_pair()
  protocol = evaluation.protocol_named("centre240_same11")
  assert protocol == evaluation.ORIGINAL
  assert (protocol.crop_px, protocol.ssim_window, protocol.ssim_padding) == (240, 11, "same")
  got = evaluate.score(rgb, pred, nir, None, protocol)
  expected = original_metrics(nir[0], pred[0])
  for name, value in expected.items():
    assert float(got[name][0]) == pytest.approx(value, abs=1e-4, rel=1e-5), name
  # The whole map, not only its mean.
  crop = slice(8, 248)
  np.testing.assert_allclose(
      np.asarray(metrics.ssim_map(nir[:, crop, crop], pred[:, crop, crop], 11, "same"))[0, ..., 0],
      kornia_ssim_map(nir[0, crop, crop, 0], pred[0, crop, crop, 0]), atol=1e-4)
  # The other protocol scores the whole crop with 'valid' filtering.
  other = evaluate.score(rgb, pred, nir, None, evaluation.protocol_named("whole_valid11"))
  assert float(other["l1"][0]) == pytest.approx(float(np.mean(np.abs(nir - pred))), rel=1e-5)
  assert abs(float(other["ssim"][0]) - expected["ssim"]) > 1e-4


def test_protocol_options_are_checked(tmp_path, model_dirs, capsys):
  args = ["--model", str(model_dirs["gan"]), "--dataset", "s2_100k/default", "--data_dir",
          str(tmp_path), "--out", str(tmp_path / "eval")]
  assert evaluate.main(args + ["--image_size", "128"]) == 2
  assert "--protocol centre240_same11 needs images of at least 240 px" in (
      capsys.readouterr().err)
  assert evaluate.main(args + ["--protocol", "nirgan"]) == 2
  assert "protocol 'nirgan': expected whole_, centre<px>_ or border<px>_" in (
      capsys.readouterr().err)
  assert not (tmp_path / "eval").exists()


def test_real_s2_samples_table_matches_direct_computation(tmp_path, model_dirs):
  builder, _ = build.build("s2_100k", tmp_path / "tfds", S2_SAMPLE)
  split = "+".join(sorted(builder.info.splits))
  out = tmp_path / "eval"
  assert evaluate.main(["--model", str(model_dirs["gan"]), "--baselines", str(model_dirs["linear"]),
                        f"mine={model_dirs['cnn']}", "--dataset", "s2_100k/default", "--data_dir",
                        str(tmp_path / "tfds"), "--split", split, "--protocol", "whole_valid11",
                        "--image_size", "128", "--batch_size", "2", "--figures", "2", "--out",
                        str(out), "--quiet"]) == 0
  rows = _rows(out / "metrics.csv")
  assert [(r["model"], r["sensor"]) for r in rows] == [
      ("nirgan", "all"), ("linear", "all"), ("mine", "all"),
      ("nirgan", "sentinel2"), ("linear", "sentinel2"), ("mine", "sentinel2")]
  assert all(r["examples"] == "3" for r in rows)
  text = (out / "metrics.md").read_text()
  assert "| nirgan | all | 3 |" in text
  assert "centre 128 px crops; protocol whole_valid11: every pixel of each prediction; SSIM " \
         "window 11" in text
  for name in ("nirgan", "linear", "mine"):
    assert (out / f"figures_{name}.png").stat().st_size > 10_000

  # The linear model's L1, computed here from the GeoTIFFs: centre 128 px of bands 4,3,2 / 8,
  # over the pixels where no band is no-data (DN 0).
  model = inference.load_model(model_dirs["linear"])
  errors = []
  for rgb, nir, valid in _s2_samples(128):
    pred = model(rgb[None])
    errors.append(np.abs(pred[0] - nir)[valid].mean())
  assert float(rows[1]["l1"]) == pytest.approx(np.mean(errors), rel=1e-4)


def _s2_samples(size):
  """(rgb, nir, valid) of the centre ``size`` px of each S2-100K sample."""
  for path in sorted((S2_SAMPLE / "images").glob("*.tif")):
    with rasterio.open(path) as src:
      off = (src.height - size) // 2
      bands = src.read([4, 3, 2, 8]).astype(np.float32)[:, off:off + size, off:off + size]
    valid = np.moveaxis((bands > 0).all(axis=0, keepdims=True), 0, -1)
    bands = np.moveaxis(np.clip(bands / 10_000, 0, 1), 0, -1)
    yield bands[..., :3], bands[..., 3:], valid


def test_real_s2_samples_under_the_original_protocol(tmp_path, model_dirs):
  builder, _ = build.build("s2_100k", tmp_path / "tfds", S2_SAMPLE)
  split = "+".join(sorted(builder.info.splits))
  out = tmp_path / "eval"
  assert evaluate.main(["--model", f"linear={model_dirs['linear']}", "--dataset",
                        "s2_100k/default", "--data_dir", str(tmp_path / "tfds"), "--split", split,
                        "--out", str(out), "--quiet"]) == 0
  assert "centre 256 px crops; protocol centre240_same11: the centre 240 px of each " \
         "prediction" in (out / "metrics.md").read_text()
  row = _rows(out / "metrics.csv")[0]
  model = inference.load_model(model_dirs["linear"])
  # Two of the samples have a few no-data pixels inside the centre 240 px.
  expected = [original_metrics(nir, np.asarray(model(rgb[None]))[0], valid)
              for rgb, nir, valid in _s2_samples(256)]
  for name in ("l1", "l2", "psnr", "ssim"):
    assert float(row[name]) == pytest.approx(np.mean([e[name] for e in expected]), rel=1e-4,
                                             abs=1e-4), name


def test_demo_data_is_reported_per_sensor(tmp_path, model_dirs):
  build.build("nirgan_demo", tmp_path / "tfds", config="small")
  out = tmp_path / "eval"
  assert evaluate.main(["--model", str(model_dirs["gan"]), "--dataset", "nirgan_demo/small",
                        "--data_dir", str(tmp_path / "tfds"), "--split", "validation+test",
                        "--protocol", "whole_valid11", "--image_size", "32", "--out", str(out),
                        "--quiet"]) == 0
  rows = _rows(out / "metrics.csv")
  overall = int(rows[0]["examples"])
  per_sensor = {r["sensor"]: int(r["examples"]) for r in rows[1:]}
  assert rows[0]["sensor"] == "all" and sum(per_sensor.values()) == overall
  assert len(per_sensor) >= 2
  for row in rows:
    assert all(np.isfinite(float(row[m])) for m in evaluate.METRIC_COLUMNS)


def test_missing_dataset_and_model_fail_clearly(tmp_path, model_dirs, capsys):
  assert evaluate.main(["--model", str(model_dirs["gan"]), "--dataset", "s2_100k/default",
                        "--data_dir", str(tmp_path / "nothing"), "--out",
                        str(tmp_path / "eval")]) == 1
  assert "python -m data_prep.build s2_100k" in capsys.readouterr().err
  assert evaluate.main(["--model", str(tmp_path / "nope"), "--dataset", "s2_100k/default",
                        "--data_dir", str(tmp_path), "--out", str(tmp_path / "eval")]) == 1
  assert "nope: no such model" in capsys.readouterr().err
  assert not (tmp_path / "eval").exists()


def test_existing_results_and_bad_arguments_are_refused(tmp_path, model_dirs, capsys):
  out = tmp_path / "eval"
  out.mkdir()
  (out / "metrics.md").write_text("an earlier evaluation")
  args = ["--model", str(model_dirs["gan"]), "--dataset", "s2_100k/default", "--data_dir",
          str(tmp_path / "nothing"), "--out", str(out)]
  assert evaluate.main(args) == 1
  assert "metrics.md: output exists (pass --overwrite" in capsys.readouterr().err
  assert evaluate.main(args + ["--batch_size", "0"]) == 2
  assert "--batch_size must be > 0" in capsys.readouterr().err
  assert (out / "metrics.md").read_text() == "an earlier evaluation"
  assert [p.name for p in out.iterdir()] == ["metrics.md"]
