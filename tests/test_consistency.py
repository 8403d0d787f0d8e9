import itertools

import numpy as np
import pytest
import torch

from husai import consistency as C


def test_pwmcc_hand_case():
    A = np.array([[1.0, 0.0], [0.0, 1.0]])
    B = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, -2.0]])
    # |cos| A x B: [[0.7071, 1, 0], [0.7071, 0, 1]]
    # rows of A: max = 1, 1 -> 1 ; columns (B rows): 0.7071, 1, 1 -> 0.9024
    assert C.pwmcc(A, B) == pytest.approx(0.5 * (1.0 + (2**-0.5 + 2) / 3))
    assert C.matched_mcc(A, B) == pytest.approx(1.0)  # A0-B1, A1-B2
    assert C.shared_fraction(A, B, tau=0.99) == pytest.approx(1.0)


def test_pwmcc_invariant_to_row_order_sign_and_scale():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(40, 16, generator=g), torch.randn(50, 16, generator=g)
    perm_a, perm_b = torch.randperm(40, generator=g), torch.randperm(50, generator=g)
    signs = torch.where(torch.rand(50, 1, generator=g) > 0.5, -1.0, 1.0)
    scale = torch.rand(40, 1, generator=g) + 0.1
    ref = C.pair_statistics(A, B, tau=0.3)
    other = C.pair_statistics(A[perm_a] * scale[perm_a], B[perm_b] * signs, tau=0.3)
    for k in ref:
        assert other[k] == pytest.approx(ref[k], abs=1e-6)


def test_one_layout_enforced_and_transposed_decoder_rejected():
    W = torch.randn(64, 16)
    with pytest.raises(C.DecoderLayoutError, match="looks transposed"):
        C.check_decoder_rows(W.T, d_in=16, name="W_dec")
    with pytest.raises(C.DecoderLayoutError, match="d_in=16"):
        C.pwmcc(W, torch.randn(64, 12))
    with pytest.raises(C.DecoderLayoutError, match="2-D"):
        C.pwmcc(torch.randn(2, 3, 4), W)
    with pytest.raises(C.DecoderLayoutError, match="NaN"):
        C.pwmcc(torch.full((3, 16), float("nan")), W)


def test_hungarian_matches_brute_force():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 6):
        sim = rng.random((n, n))
        best = max(sum(sim[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
        _, _, matched = C.hungarian_from_sim(sim)
        assert matched.sum() == pytest.approx(best)


def test_chance_level_d128_w1024_is_about_0_30():
    vals = C.chance_values(d_sae=1024, d_in=128, n_pairs=3, tau=0.7, seed=0)
    assert np.mean(vals["pwmcc"]) == pytest.approx(0.30, abs=0.02)
    assert np.std(vals["pwmcc"]) < 0.01
    assert np.all(vals["shared_fraction"] == 0)


def test_identical_dictionaries_are_fully_consistent():
    W = torch.randn(32, 8)
    stats = C.pair_statistics(W, W[torch.randperm(32)], tau=0.7)
    expected = {"pwmcc": 1.0, "matched_mcc": 1.0, "shared_fraction": 1.0, "matched_mcc_gap_bound": 0}
    assert stats == pytest.approx(expected)


@pytest.mark.parametrize("method", ["auction", "sparse"])
def test_scalable_solvers_agree_with_scipy_within_their_certified_gap(method):
    g = torch.Generator().manual_seed(5)
    A = torch.randn(200, 24, generator=g)
    B = A[torch.randperm(200, generator=g)] + 0.5 * torch.randn(200, 24, generator=g)
    exact = C.pair_statistics(A, B, tau=0.7)
    fast = C.pair_statistics(A, B, tau=0.7, assignment={"method": method, "exact_max_n": 10})
    assert fast["pwmcc"] == exact["pwmcc"]
    assert abs(fast["matched_mcc"] - exact["matched_mcc"]) <= fast["matched_mcc_gap_bound"] + 1e-9
