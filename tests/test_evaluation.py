"""nirgan_jax.evaluation: protocols named for what they do, the pixel counts that pool their
scores, and one scoring path shared by the training loop, nirgan-evaluate and the real-places
experiment (they agree to 1e-6 on one dataset)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_prep import build
from experiments import real_places
from nirgan_jax import contract, errors, evaluate, evaluation, metrics, models
from nirgan_jax.data import pipeline
from nirgan_jax.infer.model import Model
from nirgan_jax.models import config as model_config
from nirgan_jax.train import evaluation as train_evaluation
from nirgan_jax.train import mesh as mesh_lib
from nirgan_jax.train import state as train_state
from nirgan_jax.train import step as gan_step

from conftest import tiny_config

IMAGE = 32


@pytest.mark.parametrize("name", ["centre240_same11", "whole_valid7", "border8_same11"])
def test_protocol_names_say_what_they_do_and_round_trip(name):
  protocol = evaluation.protocol_named(name)
  assert protocol.name == name
  assert evaluation.ORIGINAL.name == "centre240_same11"
  assert evaluation.Protocol(7).name == "whole_valid7"
  with pytest.raises(errors.UsageError, match="expected whole_"):
    evaluation.protocol_named("nirgan")


def test_a_border_is_masked_not_cropped_and_counts_pool_pixels():
  rng = np.random.default_rng(0)
  rgb = rng.uniform(0.02, 0.3, (2, 40, 40, 3)).astype(np.float32)
  nir = rng.uniform(0.1, 0.5, (2, 40, 40, 1)).astype(np.float32)
  pred = (nir + rng.normal(0, 0.02, nir.shape)).astype(np.float32)
  valid = np.ones_like(nir)
  valid[1, :20] = 0
  protocol = evaluation.protocol_named("border8_same11")
  scores = jax.device_get(protocol.scores(rgb, pred, nir, valid))
  np.testing.assert_array_equal(scores["pixels"], [24 * 24, 24 * 12])
  inner = np.abs(pred - nir)[:, 8:32, 8:32]
  assert scores["l1"][0] == pytest.approx(inner[0].mean(), rel=1e-5)
  assert scores["l1"][1] == pytest.approx(inner[1, 12:].mean(), rel=1e-5)
  # SSIM counts the pixels whose whole window lies in the scored region: 5 px further in.
  np.testing.assert_array_equal(scores["ssim_pixels"], [14 * 14, 14 * 2])
  pool = evaluation.PooledScores().add(scores)
  assert pool.result()["mae"] == pytest.approx(
      (inner[0].sum() + inner[1, 12:].sum()) / (24 * 24 + 24 * 12), rel=1e-5)
  merged = evaluation.PooledScores().merge(pool.sums).merge(pool.sums)
  assert merged.result() == pytest.approx(pool.result())
  assert set(evaluation.per_example(scores)) == set(metrics.image_metrics(rgb, pred, nir))


def test_loop_cli_and_experiment_score_alike(tmp_path):
  """The same protocol on the same examples through the three callers: the training loop's
  sharded eval step, nirgan-evaluate's model pass and the experiment's per-image scoring."""
  builder, _ = build.build("nirgan_demo", tmp_path, config="small", extra={"num_examples": 12})
  spec = pipeline.SourceSpec(name=f"nirgan_demo/{builder.builder_config.name}",
                             data_dir=str(tmp_path),
                             split="train", native_gsd_m=0.0)
  dataset = pipeline.eval_dataset([spec], IMAGE)
  protocol = evaluation.protocol_named("whole_same5")

  config = tiny_config("none")
  nirgan = models.NIRGAN.from_config(config)
  mesh = mesh_lib.make_data_mesh(jax.devices())
  g_state, _ = train_state.create_train_states(nirgan, jax.random.key(0, impl=config.rng_impl),
                                               IMAGE, mesh)
  loop_means = train_evaluation.evaluate(gan_step.make_eval_step(nirgan, mesh, protocol),
                                         g_state.params, {}, dataset, mesh, 8)

  model = Model(model_config.model_sections(config),
                {"generator": jax.device_get(g_state.params)}, "tiny")
  cli_means, counts, _ = evaluate.evaluate_models({"tiny": model}, dataset, 8, protocol,
                                                  progress=False)
  assert counts[evaluate.OVERALL] == len(dataset)

  per_image = []
  for i in range(len(dataset)):
    ex = dataset[i]
    rgb, nir, valid = (ex[k][None] for k in ("rgb", "nir", contract.VALID))
    per_image.append(jax.device_get(protocol.scores(rgb, model(rgb), nir, valid)))
  for key in ("l1", "ssim", "ndvi_mae", "vegetation_iou"):
    weights = np.array([s[metrics.WEIGHT_PREFIX + key][0] for s in per_image])
    values = np.array([s[key][0] for s in per_image])
    experiment = float((values * weights).sum() / weights.sum())
    assert loop_means[f"val_{key}"] == pytest.approx(cli_means["tiny"][key], abs=1e-6), key
    assert experiment == pytest.approx(cli_means["tiny"][key], abs=1e-6), key
  assert real_places.PROTOCOL.name == "border8_same11"
  assert jnp.isfinite(loop_means["val_l1"])
