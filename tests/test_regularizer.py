"""The assignment-consistency regulariser: lambda = 0 is exactly the plain trainer, lambda > 0 pulls the seeds'
decoders toward the reference, the assignment refreshes on schedule and survives a resume, and the judging
reports consistency against held-out unregularised seeds."""

import numpy as np
import pytest
import torch

from husai.consistency import matched_mcc
from husai.regularizer import AssignmentRegularizer, judge_regularised
from husai.saes import SAEConfig
from husai.training import TrainConfig, train_seed_batched

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _data(n=2000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(64, d, generator=g), dim=1)
    codes = (torch.rand(n, 64, generator=g) < 0.05).float() * (torch.rand(n, 64, generator=g) + 0.5)
    return codes @ atoms


CFG = SAEConfig("topk", 16, 48, k=3)
TC = TrainConfig(steps=200, batch_size=128, lr=3e-3)


def test_lambda_zero_is_exactly_the_unregularised_trainer():
    x = _data()
    ref = torch.randn(48, 16)
    plain, _ = train_seed_batched(CFG, TC, x, [1, 2])
    zero, log = train_seed_batched(CFG, TC, x, [1, 2], regularizer=AssignmentRegularizer(ref, lam=0.0))
    for name, p in plain.state_dict().items():
        assert torch.equal(p, zero.state_dict()[name]), name
    assert "reg" not in log


def test_regulariser_increases_consistency_with_the_reference():
    x = _data()
    ref_sae, _ = train_seed_batched(CFG, TC, x, [100])
    ref = ref_sae.W_dec_SFD[0]
    plain, _ = train_seed_batched(CFG, TC, x, [1, 2])
    reg = AssignmentRegularizer(ref, lam=[0.5, 0.5], update_interval=25)
    pulled, log = train_seed_batched(CFG, TC, x, [1, 2], regularizer=reg)
    for s in range(2):
        before, after = matched_mcc(plain.W_dec_SFD[s], ref), matched_mcc(pulled.W_dec_SFD[s], ref)
        assert after > before + 0.05, (before, after)
    assert log["reg"][-1][0] < log["reg"][0][0]
    assert reg.updated_at == 175  # last refresh on the 25-step schedule
    with pytest.raises(ValueError, match=">= 0"):
        AssignmentRegularizer(ref, lam=-1.0)


def test_resume_keeps_the_assignment_and_is_bit_identical(tmp_path):
    x = _data()
    ref = torch.randn(48, 16)
    tc = TrainConfig(steps=90, batch_size=64, checkpoint_every=20)
    full, _ = train_seed_batched(CFG, tc, x, [0, 1], regularizer=AssignmentRegularizer(ref, 0.3, update_interval=30))
    state = tmp_path / "state.safetensors"
    train_seed_batched(CFG, tc, x, [0, 1], state_path=state, stop_after=50,
                       regularizer=AssignmentRegularizer(ref, 0.3, update_interval=30))
    resumed, log = train_seed_batched(CFG, tc, x, [0, 1], state_path=state,
                                      regularizer=AssignmentRegularizer(ref, 0.3, update_interval=30))
    assert log["resumed_from_step"] == 40  # between refreshes at 30 and 60: the saved assignment is used
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name


def test_judging_uses_heldout_unregularised_seeds():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(20, 8, generator=g)
    regularised = [ref + 0.1 * torch.randn(20, 8, generator=g) for _ in range(3)]
    heldout = [torch.randn(20, 8, generator=g) for _ in range(3)]
    out = judge_regularised(regularised, heldout, tau=0.7, ev_regularised=[0.8, 0.82, 0.81],
                            ev_unregularised=[0.9, 0.91, 0.9], reference=ref)
    assert out["headline"] == "regularised_vs_heldout"
    assert len(out["regularised_vs_heldout"]["matched_mcc"]["per_seed"]) == 3
    # agreement produced by the pull toward one reference is reported, but it is not the headline
    assert out["regularised_vs_regularised"]["matched_mcc"]["mean"] > 0.9
    assert out["regularised_vs_heldout"]["matched_mcc"]["mean"] < 0.8
    assert out["explained_variance"]["drop"] == pytest.approx(np.mean([0.9, 0.91, 0.9]) - 0.81)
    with pytest.raises(ValueError, match="held-out"):
        judge_regularised(regularised, heldout[:1])


def test_judging_never_pairs_a_regularised_seed_with_its_own_unregularised_twin():
    """Same seed id = same init and data order: that pair's agreement comes from the shared start, so it is
    excluded; the other pairs give the same numbers as judging without the twin."""
    g = torch.Generator().manual_seed(1)
    heldout = [torch.randn(20, 8, generator=g) for _ in range(3)]
    twin = heldout[1] + 0.01 * torch.randn(20, 8, generator=g)  # seed 2's regularised run, started where seed 2 was
    other = torch.randn(20, 8, generator=g)
    out = judge_regularised([twin, other], heldout, regularised_seeds=[2, 7], heldout_seeds=[1, 2, 3])
    assert out["same_seed_pairs_excluded"] == [2]
    naive = judge_regularised([twin, other], heldout)
    assert naive["regularised_vs_heldout"]["pwmcc"]["per_seed"][0] > \
        out["regularised_vs_heldout"]["pwmcc"]["per_seed"][0] + 0.1
    without_twin = judge_regularised([twin], [heldout[0], heldout[2]])
    assert out["regularised_vs_heldout"]["pwmcc"]["per_seed"][0] == pytest.approx(
        without_twin["regularised_vs_heldout"]["pwmcc"]["per_seed"][0])
    assert out["regularised_vs_heldout"]["pwmcc"]["per_seed"][1] == pytest.approx(
        naive["regularised_vs_heldout"]["pwmcc"]["per_seed"][1])
    with pytest.raises(ValueError, match="one id per decoder"):
        judge_regularised([twin], heldout, regularised_seeds=[1, 2])
