import numpy as np
import pytest

from nirgan_jax.train.schedules import Plateau

torch = pytest.importorskip("torch")


def test_plateau_matches_torch_reduce_lr_on_plateau():
  rng = np.random.default_rng(0)
  # Falling, then noisy plateaus: several reductions happen.
  values = np.concatenate([np.linspace(1.0, 0.5, 10), 0.5 + 0.01 * rng.random(40),
                           np.linspace(0.5, 0.3, 5), 0.3 + 0.01 * rng.random(30)])
  parameter = torch.nn.Parameter(torch.zeros(1))
  optimizer = torch.optim.SGD([parameter], lr=2e-4)
  reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=5, factor=0.1)
  ours = Plateau(lr=2e-4, patience=5, factor=0.1)
  for value in values:
    reference.step(float(value))
    assert ours.update(float(value)) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
  assert ours.lr < 2e-6  # it did reduce, more than once


def test_plateau_state_round_trips_through_json():
  import json

  plateau = Plateau(lr=1e-3, patience=2)
  for value in (1.0, 1.0, 1.0, 1.0):
    plateau.update(value)
  restored = Plateau.from_state_dict(json.loads(json.dumps(plateau.state_dict())))
  assert restored == plateau
  assert Plateau.from_state_dict(Plateau(lr=1.0).state_dict()) == Plateau(lr=1.0)
