"""Transcoder stress: excess over each family's own chance, the delta by hand, joint seed resampling."""

import numpy as np
import pytest
import torch

from husai.consistency_report import condition_consistency
from husai.io import read_json, write_json
from husai.lanes.transcoder_stress import transcoder_stress


def _report(pairwise_SS, chance: float, seeds, chance_untrained: float = 0.0):
    """A minimal consistency report in condition_consistency's layout, for every statistic."""
    st = {"trained": {"pairwise": np.asarray(pairwise_SS).tolist()},
          "chance_gaussian": {"mean": chance, "halfwidth": 0.001},
          "chance_untrained_init": {"mean": chance_untrained, "halfwidth": 0.001},
          "chance_reference": "gaussian" if chance >= chance_untrained else "untrained_init"}
    return {"seeds": list(seeds), "statistics": {n: st for n in ("pwmcc", "matched_mcc", "shared_fraction")}}


def _const(S, v):
    M = np.full((S, S), v)
    np.fill_diagonal(M, 1.0)
    return M


def test_delta_by_hand_each_against_its_own_chance():
    out = transcoder_stress(_report(_const(4, 0.8), 0.3, range(4)), _report(_const(4, 0.6), 0.2, range(4)),
                            n_resamples=200)
    s = out["statistics"]["pwmcc"]
    assert s["transcoder"]["excess_over_chance"] == pytest.approx(0.5)
    assert s["sae"]["excess_over_chance"] == pytest.approx(0.4)
    assert s["delta"]["point"] == pytest.approx(0.1) and s["delta"]["lcb"] == pytest.approx(0.1)
    assert out["seeds_resampled_jointly"] and "no best-of-N" in out["selection"]
    # The higher chance level is each family's reference.
    tc = _report(_const(4, 0.8), 0.3, range(4), chance_untrained=0.35)
    assert transcoder_stress(tc, _report(_const(4, 0.6), 0.2, range(4)), n_resamples=50)[
        "statistics"]["pwmcc"]["transcoder"]["chance_mean"] == 0.35


def test_shared_seeds_are_resampled_jointly():
    rng = np.random.default_rng(0)
    A = rng.uniform(0.3, 0.9, (5, 5))
    A = (A + A.T) / 2
    same = transcoder_stress(_report(A, 0.2, range(5)), _report(A, 0.2, range(5)), n_resamples=300)
    d = same["statistics"]["pwmcc"]["delta"]
    assert d["point"] == 0 and d["lcb"] == pytest.approx(0) and d["ucb"] == pytest.approx(0)  # paired: no spread
    apart = transcoder_stress(_report(A, 0.2, range(5)), _report(A, 0.2, range(10, 15)), n_resamples=300)
    assert not apart["seeds_resampled_jointly"] and apart["statistics"]["pwmcc"]["delta"]["lcb"] < -0.01


def test_refuses_best_of_n_and_too_few_seeds():
    r = _report(_const(3, 0.5), 0.1, range(3))
    with pytest.raises(TypeError, match="best"):
        transcoder_stress([r, r], r)
    with pytest.raises(ValueError, match="2 seeds"):
        transcoder_stress(_report(_const(1, 0.5), 0.1, [0]), r)


def test_accepts_real_consistency_reports(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 8, generator=g, dtype=torch.float64)
    decs = [base + 0.05 * torch.randn(16, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    cfg = {"tau": 0.7, "chance_pairs": 4, "bootstrap_resamples": 50, "permutation_resamples": 50,
           "n_random_for_permutation": 2, "control_seed": 1}
    rep = condition_consistency(decs, [0, 1, 2], cfg)
    out = transcoder_stress(rep, rep, n_resamples=100)
    for name in ("pwmcc", "matched_mcc", "shared_fraction"):
        assert out["statistics"][name]["delta"]["point"] == 0
        assert out["statistics"][name]["transcoder"]["excess_over_chance"] > 0
    write_json(tmp_path / "tc.json", out)
    assert read_json(tmp_path / "tc.json")["seeds_resampled_jointly"] is True
