import numpy as np
import pytest

from husai import stats


def _pairwise(values):
    S = len(values)
    M = np.eye(S)
    for i in range(S):
        for j in range(S):
            if i != j:
                M[i, j] = (values[i] + values[j]) / 2
    return M


def test_mean_offdiag_skips_self_pairs():
    M = _pairwise([0.1, 0.2, 0.3])
    assert stats.mean_offdiag(M) == pytest.approx(np.mean([0.15, 0.2, 0.25]))
    # A resample [0, 0, 1] holds only pairs (0,1) twice; (0,0) is not a replicate.
    assert stats.mean_offdiag(M, np.array([0, 0, 1])) == pytest.approx(0.15)
    assert np.isnan(stats.mean_offdiag(M, np.array([2, 2, 2])))


def test_bootstrap_interval_contains_point_and_is_deterministic():
    M = _pairwise([0.5, 0.55, 0.6, 0.52, 0.58])
    a = stats.seed_bootstrap(M, n_resamples=500, seed=1)
    b = stats.seed_bootstrap(M, n_resamples=500, seed=1)
    assert a == b
    assert a["low"] <= stats.mean_offdiag(M) <= a["high"]


def test_lcb_of_difference_detects_effect_and_its_absence():
    M = _pairwise([0.6, 0.62, 0.61, 0.63, 0.6])
    chance = np.random.default_rng(0).normal(0.3, 0.005, size=30)
    d = stats.lcb_difference_vs_chance(M, chance, n_resamples=1000, seed=0)
    assert 0.28 < d["lcb"] <= d["point"] < 0.33
    null = stats.lcb_difference_vs_chance(_pairwise([0.3, 0.31, 0.29, 0.3, 0.3]), chance, n_resamples=1000, seed=0)
    assert null["lcb"] < 0.01


def test_permutation_test_separates_groups_and_not_identical_ones():
    rng = np.random.default_rng(0)
    n_t, n_r = 5, 5
    vals = np.r_[np.full(n_t, 0.8), np.full(n_r, 0.3)] + rng.normal(0, 0.01, n_t + n_r)
    M = np.minimum.outer(vals, vals)
    res = stats.permutation_pvalue(M, n_t, n_resamples=1000, seed=0)
    assert res["p_value"] <= 1 / 252 + 1e-9  # exact: C(10,5) = 252 relabelings, the observed one is extreme
    same = np.full((10, 10), 0.5)
    assert stats.permutation_pvalue(same, n_t, n_resamples=1000, seed=0)["p_value"] == pytest.approx(1.0)


def test_lcb_mean_student_t():
    from scipy import stats as sps

    v = [0.9, 0.92, 0.91, 0.95]
    r = stats.lcb_mean(v)
    se = np.std(v, ddof=1) / 2
    assert r["lcb"] == pytest.approx(np.mean(v) - sps.t.ppf(0.95, 3) * se)
    assert np.isnan(stats.lcb_mean([0.5])["lcb"])


def test_benjamini_hochberg_matches_hand_computation():
    r = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    # sorted .01 .03 .04 .5 -> p*m/rank = .04 .06 .0533 .5 -> running min from the top = .04 .0533 .0533 .5
    assert r["p_adjusted"] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert r["reject"] == [True, False, False, False]
