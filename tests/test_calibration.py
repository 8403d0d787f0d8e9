"""Matched sparsity: the calibrated L1 (relu) / L0 (jumprelu) coefficient lands within +-10% of the target L0,
measured on held-out rows after full training."""

import json

import pytest
import torch

from husai.calibration import calibrate_sparsity, interpolate
from husai.saes import SAEConfig
from husai.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _planted(n=3000, d=16, n_atoms=96, p=0.06, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d, generator=g), dim=1)
    codes = (torch.rand(n, n_atoms, generator=g) < p).float() * (torch.rand(n, n_atoms, generator=g) + 0.5)
    return codes @ atoms + 0.05 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("arch,target", [("relu", 8.0), ("jumprelu", 8.0)])
def test_calibration_hits_target_l0_within_ten_percent(arch, target):
    x = _planted()
    tc = TrainConfig(steps=250, batch_size=128, lr=3e-3, warmup_steps=20)
    rec = calibrate_sparsity(SAEConfig(arch, 16, 64), tc, x[:2400], x[2400:], target_l0=target, n_grid=4)
    assert rec["within_tolerance"], rec
    assert abs(rec["achieved_l0"] - target) <= 0.1 * target
    assert rec["coefficient_name"] == {"relu": "l1_coefficient", "jumprelu": "l0_coefficient"}[arch]
    assert [r["kind"] for r in rec["rounds"]][0] == "grid" and rec["rounds"][-1]["kind"] == "verify"
    assert rec["chosen_coefficient"] == rec["rounds"][-1]["coefficients"][0]
    json.dumps(rec)  # JSON-able as is


def test_interpolation_is_log_log_between_bracketing_points():
    c, bracket = interpolate([(0.01, 40.0), (0.1, 10.0), (1.0, 2.0)], 20.0)
    assert bracket == (0, 1) and c == pytest.approx(0.01 * 10 ** 0.5)
    assert interpolate([(0.01, 40.0), (0.1, 30.0)], 5.0)[1] is None


def test_calibration_refuses_k_architectures_and_bad_targets():
    x = _planted(n=200)
    tc = TrainConfig(steps=2, batch_size=16)
    with pytest.raises(ValueError, match="fixed by k"):
        calibrate_sparsity(SAEConfig("topk", 16, 64, k=4), tc, x, x, target_l0=4)
    with pytest.raises(ValueError, match="target_l0"):
        calibrate_sparsity(SAEConfig("relu", 16, 64), tc, x, x, target_l0=100)


def test_a_coefficient_that_no_longer_moves_l0_is_reported_as_a_miss_not_passed():
    """Two steps of training cannot move L0 whatever the coefficient: widening stops once L0 stops responding,
    the verification is not repeated at the same coefficient, and the record says it missed."""
    x = _planted(n=600)
    tc = TrainConfig(steps=2, batch_size=64, lr=1e-4, warmup_steps=1)
    rec = calibrate_sparsity(SAEConfig("jumprelu", 16, 64), tc, x[:500], x[500:], target_l0=2.0, n_grid=3,
                             max_widen=5, max_rounds=3)
    kinds = [r["kind"] for r in rec["rounds"]]
    assert rec["saturated"] and not rec["bracketed"] and not rec["within_tolerance"]
    assert kinds.count("widen") < 5 and kinds.count("verify") == 1, kinds
    assert abs(rec["relative_error"]) > rec["tolerance"]
