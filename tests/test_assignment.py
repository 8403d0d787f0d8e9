"""The scalable assignment solvers against scipy's exact Hungarian and brute force, on sizes those can do."""

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from husai import assignment as A
from husai.consistency import abs_cosine, pairwise_matrices


def exact_total(sim) -> float:
    s = np.asarray(sim, dtype=np.float64)
    r, c = linear_sum_assignment(s, maximize=True)
    return float(s[r, c].sum())


def brute_total(sim) -> float:
    s = np.asarray(sim, dtype=np.float64)
    F, G = s.shape
    if F <= G:
        return max(s[np.arange(F), list(p)].sum() for p in itertools.permutations(range(G), F))
    return brute_total(s.T)


def cos_matrix(n: int, d_in: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return abs_cosine(torch.randn(n, d_in, generator=g, dtype=torch.float64),
                      torch.randn(n, d_in, generator=g, dtype=torch.float64))


def uniform_matrix(F: int, G: int, seed: int) -> torch.Tensor:
    return torch.rand((F, G), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_valid(res: A.AssignmentResult, F: int, G: int, sim=None) -> None:
    k = min(F, G)
    assert res.rows.dtype == np.int64 and res.cols.dtype == np.int64
    assert len(res.rows) == len(res.cols) == len(res.matched) == k
    assert len(set(res.rows.tolist())) == k and len(set(res.cols.tolist())) == k
    assert res.rows.min() >= 0 and res.rows.max() < F and res.cols.min() >= 0 and res.cols.max() < G
    if sim is not None:
        s = np.asarray(sim, dtype=np.float64)
        np.testing.assert_allclose(res.matched, s[res.rows, res.cols], rtol=0, atol=1e-6)
        assert res.total == pytest.approx(res.matched.sum(), abs=1e-6)


def check_against_exact(res: A.AssignmentResult, sim, opt: float) -> None:
    n = len(res.rows)
    tol = 1e-9 * n  # float rounding of the sums
    assert res.total <= opt + tol
    assert opt - res.total <= res.gap_bound + tol, "total outside the reported gap bound"
    assert res.upper_bound >= opt - tol, "the dual bound must bound the optimum"
    assert res.certified_gap == pytest.approx(res.upper_bound - res.total)
    assert res.gap_bound <= res.certified_gap + tol or res.method != "auction" or not res.converged


@pytest.mark.parametrize("n", [5, 17, 64, 256, 512])
@pytest.mark.parametrize("kind", ["uniform", "cos32", "cos128"])
def test_auction_within_bound_of_scipy(n, kind):
    sim = {"uniform": lambda: uniform_matrix(n, n, n), "cos32": lambda: cos_matrix(n, 32, n),
           "cos128": lambda: cos_matrix(n, 128, n)}[kind]()
    opt = exact_total(sim)
    res = A.auction_assignment(sim)
    assert_valid(res, n, n, sim)
    check_against_exact(res, sim, opt)
    assert res.method == "auction" and res.converged
    assert res.mean_gap_bound <= 1e-4 * float(sim.max()) + 1e-12  # default eps: matched mean within 1e-4
    assert opt / n - res.mean <= 1e-3


@pytest.mark.parametrize("n", [5, 17, 64, 256, 512])
def test_sparse_candidates_exact_and_certified(n):
    sim = cos_matrix(n, 32, 100 + n)
    opt = exact_total(sim)
    res = A.sparse_candidate_assignment(sim, top_m=4)  # few candidates: forces column generation
    assert_valid(res, n, n, sim)
    check_against_exact(res, sim, opt)
    assert res.converged and res.total == pytest.approx(opt, abs=1e-9 * n)
    assert res.certified_gap <= 1e-9 * n


@pytest.mark.parametrize("F,G", [(1, 1), (2, 2), (3, 3), (4, 4), (6, 6), (7, 7), (3, 7), (7, 3), (5, 6)])
def test_brute_force_small(F, G):
    sim = uniform_matrix(F, G, 10 * F + G)
    best = brute_total(sim)
    assert exact_total(sim) == pytest.approx(best)
    for res in (A.auction_assignment(sim), A.auction_assignment(sim.float()), A.scipy_assignment(sim)):
        assert_valid(res, F, G)
        assert res.total >= best - res.gap_bound - 1e-6
        assert res.upper_bound >= best - 1e-6
    if F == G:
        res = A.sparse_candidate_assignment(sim, top_m=1)
        assert res.total == pytest.approx(best)
        assert res.upper_bound >= best - 1e-9


@pytest.mark.parametrize("n", [1, 2, 64, 300])
def test_all_equal_values_terminate_with_a_permutation(n):
    sim = torch.full((n, n), 0.5, dtype=torch.float64)
    for res in (A.auction_assignment(sim), A.sparse_candidate_assignment(sim)):
        assert_valid(res, n, n, sim)
        assert res.total == pytest.approx(0.5 * n)
        assert res.certified_gap == pytest.approx(0.0, abs=1e-9 * n + res.gap_bound)


def test_sparse_falls_back_to_auction_without_a_perfect_candidate_matching():
    sim = torch.full((40, 40), 0.5, dtype=torch.float64)  # every row's top-1 is column 0: no perfect matching
    res = A.sparse_candidate_assignment(sim, top_m=1)
    assert res.method == "auction" and res.detail["fallback_from"] == "sparse"
    assert_valid(res, 40, 40, sim)
    assert res.total == pytest.approx(20.0)


def test_identity_plus_noise_recovers_identity_permutation():
    n = 200
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(n, generator=g)
    noise = 0.01 * torch.rand((n, n), generator=g, dtype=torch.float64)
    sim = (torch.eye(n, dtype=torch.float64) + noise)[:, perm]
    solvers = (A.auction_assignment, A.sparse_candidate_assignment, lambda s: A.auction_assignment(s.float()))
    for res in (solve(sim) for solve in solvers):
        assert_valid(res, n, n)
        np.testing.assert_array_equal(perm.numpy()[res.cols], res.rows)


@pytest.mark.parametrize("F,G", [(40, 70), (70, 40), (1, 9), (128, 200)])
def test_rectangular(F, G):
    sim = uniform_matrix(F, G, F * G)
    opt = exact_total(sim)
    res = A.auction_assignment(sim)
    assert_valid(res, F, G, sim)
    check_against_exact(res, sim, opt)
    assert np.all(np.diff(res.rows) > 0)  # rows sorted, like scipy
    # the dispatcher keeps rectangular problems off the (square-only) sparse path
    assert A.matched_assignment(sim, exact_max_n=8, large_method="sparse").method == "auction"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    sim = cos_matrix(300, 64, 7).to(dtype)
    opt = exact_total(sim.double())
    for res in (A.auction_assignment(sim), A.sparse_candidate_assignment(sim)):
        assert_valid(res, 300, 300)
        check_against_exact(res, sim.double(), opt)
        assert res.matched.dtype == np.float64


def test_eps_final_controls_the_guarantee():
    sim = cos_matrix(256, 32, 3)
    opt = exact_total(sim)
    coarse, fine = A.auction_assignment(sim, eps_final=1e-2), A.auction_assignment(sim, eps_final=1e-6)
    assert coarse.gap_bound <= 256 * 1e-2 + 1e-9 and fine.gap_bound <= 256 * 1e-6 + 1e-9
    assert opt - fine.total <= 256 * 1e-6 + 1e-9


def test_round_cap_still_returns_a_permutation_with_honest_bound():
    sim = uniform_matrix(128, 128, 5)
    opt = exact_total(sim)
    res = A.auction_assignment(sim, max_rounds=3)
    assert not res.converged
    assert_valid(res, 128, 128, sim)
    assert res.upper_bound >= opt - 1e-9 and opt - res.total <= res.gap_bound + 1e-9


def test_batched_auction_matches_single_problems():
    sims = [cos_matrix(150, 32, s) for s in range(3)]
    batched = A.auction_assignment_batched(sims)
    stacked = A.auction_assignment_batched(torch.stack(sims))  # the in-place [P, n, n] path
    for sim, res, res3 in zip(sims, batched, stacked, strict=True):
        assert_valid(res, 150, 150, sim)
        check_against_exact(res, sim, exact_total(sim))
        np.testing.assert_array_equal(res.cols, res3.cols)


def test_dispatcher_threshold():
    sim = cos_matrix(64, 32, 9)
    assert A.matched_assignment(sim, exact_max_n=64).method == "scipy"
    assert A.matched_assignment(sim, exact_max_n=63).method == "auction"
    assert A.matched_assignment(sim, exact_max_n=63, large_method="sparse").method == "sparse"
    assert A.matched_assignment(sim, method="auction", exact_max_n=10**6).method == "auction"
    exact = A.matched_assignment(sim, method="scipy")
    assert exact.gap_bound == 0.0 and exact.certified_gap == 0.0
    assert exact.total == pytest.approx(exact_total(sim))
    with pytest.raises(ValueError, match="method"):
        A.matched_assignment(sim, method="greedy")


def test_consistency_pairs_at_scale_matches_reference():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(96, 24, generator=g, dtype=torch.float64)
    noisy = [base + 0.5 * torch.randn(96, 24, generator=g, dtype=torch.float64) for _ in range(3)]
    decoders = [W[torch.randperm(96, generator=g)] for W in noisy]
    ref = pairwise_matrices(decoders, tau=0.7)
    for kw in ({}, {"exact_max_n": 10}, {"exact_max_n": 10, "batch_pairs": 2},
               {"exact_max_n": 10, "large_method": "sparse"}):
        out = A.consistency_pairs_at_scale(decoders, tau=0.7, chunk=32, **kw)
        assert len(out["pairs"]) == 3 and out["summary"]["n_pairs"] == 3
        np.testing.assert_allclose(out["matrices"]["pwmcc"], ref["pwmcc"], atol=1e-12)
        gap = out["summary"]["max_mean_gap_bound"]
        np.testing.assert_allclose(out["matrices"]["matched_mcc"], ref["matched_mcc"], atol=gap + 1e-9)
        for rec in out["pairs"]:
            keys = {"method", "gap_bound", "certified_gap", "upper_bound", "seconds"}
            assert keys <= set(rec["assignment"])
    assert out["summary"]["methods"] == ["sparse"]


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="2-D"):
        A.auction_assignment(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        A.auction_assignment(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="square"):
        A.sparse_candidate_assignment(torch.zeros(3, 4))


def test_sparse_terminates_where_float_weights_made_scipy_lapjvsp_cycle(repo):
    """Regression: with float weights scipy's LAPJVsp looped forever on this pair's 3rd candidate graph; the
    solver now hands it integer weights. Run in a subprocess so a regression fails instead of hanging."""
    code = ("import sys; sys.path[:0] = ['src', 'benchmarks']\n"
            "from consistency_scale import make_decoders\n"
            "from husai.consistency import abs_cosine\n"
            "from husai.assignment import sparse_candidate_assignment\n"
            "W = make_decoders(512, 512, 5)\n"
            "res = sparse_candidate_assignment(abs_cosine(W[2], W[4]))\n"
            "assert res.method == 'sparse' and res.converged, res\n")
    subprocess.run([sys.executable, "-c", code], cwd=repo, timeout=120, check=True)


def test_integer_weights_are_exact_and_order_preserving():
    from husai.assignment_sparse import _integer_weights

    vals = np.array([0.25, 0.1, 0.9, 0.9 + 1e-9, 0.1])
    w, q = _integer_weights(vals, n=16384)
    assert np.all(w >= 1) and np.all(w == np.round(w)) and w.max() * 16384 < 2.0**53
    assert np.all(np.diff(w[np.argsort(vals, kind="stable")]) >= 0)
    np.testing.assert_allclose((w - 1) / q + vals.min(), vals, atol=2 / q)
