"""Matched sparsity: the calibrated L1 (relu) / L0 (jumprelu) coefficient lands within +-10% of the target L0,
measured on held-out rows after full training."""

import json

import pytest
import torch

from husai.calibration import calibrate_sparsity, interpolate
from husai.saes import SAEConfig
from husai.training import TrainConfig


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, and immune to a crowded CPU
    yield
    torch.set_num_threads(before)


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
