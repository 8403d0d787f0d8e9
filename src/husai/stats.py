"""Statistics across seeds. The unit is the seed: pairs from one seed set are dependent, so resampling and
permutation act on seeds (dictionaries), never on pairs. scipy and statsmodels do the work."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

LCB_CONFIDENCE = 0.95


def mean_offdiag(M_SS: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Mean of M[a, b] over pairs a < b of the (possibly resampled) seed indices, skipping pairs that are the
    same seed drawn twice (a seed is not a replicate of itself)."""
    idx = np.arange(M_SS.shape[0]) if idx is None else np.asarray(idx)
    a, b = np.triu_indices(len(idx), k=1)
    keep = idx[a] != idx[b]
    if not keep.any():
        return float("nan")
    return float(M_SS[idx[a][keep], idx[b][keep]].mean())


def _seed_resamples(S: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap resamples of seed indices, redrawing the rare ones with a single distinct seed: those hold no
    pair of different seeds, so the pairwise statistic is undefined on them. scipy.stats.bootstrap cannot
    condition on that, which is why this one loop is ours."""
    draws = rng.integers(0, S, size=(n_resamples, S))
    bad = np.array([len(np.unique(r)) < 2 for r in draws])
    while bad.any():
        draws[bad] = rng.integers(0, S, size=(int(bad.sum()), S))
        bad = np.array([len(np.unique(r)) < 2 for r in draws])
    return draws


def seed_bootstrap(M_SS: np.ndarray, *, n_resamples: int, seed: int, confidence: float = 0.95) -> dict:
    """Two-sided percentile bootstrap interval of the mean pairwise value, resampling seeds."""
    rng = np.random.default_rng(seed)
    boot = np.array([mean_offdiag(M_SS, r) for r in _seed_resamples(M_SS.shape[0], n_resamples, rng)])
    alpha = 1 - confidence
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"low": float(low), "high": float(high), "confidence": confidence,
            "method": f"seed-level percentile bootstrap, {n_resamples} resamples"}


def lcb_difference_vs_chance(M_SS: np.ndarray, chance: np.ndarray, *, n_resamples: int, seed: int,
                             confidence: float = LCB_CONFIDENCE) -> dict:
    """One-sided lower bound of (mean pairwise trained value - mean chance value).

    Two independent samples are resampled: the seeds of the trained set and the i.i.d. chance draws."""
    rng = np.random.default_rng(seed)
    chance = np.asarray(chance, dtype=float)
    seeds = _seed_resamples(M_SS.shape[0], n_resamples, rng)
    ch = rng.integers(0, len(chance), size=(n_resamples, len(chance)))
    boot = np.array([mean_offdiag(M_SS, r) for r in seeds]) - chance[ch].mean(axis=1)
    point = mean_offdiag(M_SS) - float(chance.mean())
    return {"point": point, "lcb": float(np.percentile(boot, 100 * (1 - confidence))), "confidence": confidence,
            "method": f"one-sided percentile bootstrap over seeds and chance draws, {n_resamples} resamples"}


def permutation_pvalue(M_pool: np.ndarray, n_trained: int, *, n_resamples: int, seed: int) -> dict:
    """Exact/Monte-Carlo permutation test that trained dictionaries agree more with each other than random ones do.

    M_pool is the pairwise matrix over trained dictionaries (first n_trained) followed by random ones; under H0
    all dictionaries are exchangeable, so labels are permuted over dictionaries."""
    n = M_pool.shape[0]

    def stat(x, y):
        return mean_offdiag(M_pool, x.astype(int)) - mean_offdiag(M_pool, y.astype(int))

    res = sps.permutation_test((np.arange(n_trained), np.arange(n_trained, n)), stat, vectorized=False,
                               permutation_type="independent", alternative="greater",
                               n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue),
            "method": "permutation test over dictionary labels (scipy, one-sided greater)"}


def lcb_mean(values, confidence: float = LCB_CONFIDENCE) -> dict:
    """One-sided Student-t lower bound of the mean across seeds."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return {"mean": float(v.mean()) if n else float("nan"), "lcb": float("nan"), "n": n,
                "method": "one-sided Student t (needs >= 2 seeds)"}
    m, se = float(v.mean()), float(v.std(ddof=1) / np.sqrt(n))
    lcb = m - float(sps.t.ppf(confidence, df=n - 1)) * se if se > 0 else m
    return {"mean": m, "sd": float(v.std(ddof=1)), "lcb": lcb, "ucb": 2 * m - lcb, "n": n,
            "confidence": confidence, "method": "one-sided Student t over seeds"}


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Two-sided t interval for i.i.d. draws (used for the chance level)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    m = float(v.mean())
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1) * v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": m, "low": m - half, "high": m + half, "halfwidth": half, "n": n, "confidence": confidence,
            "method": "Student t over independent random draws"}


def benjamini_hochberg(p_values, alpha: float = 0.05) -> dict:
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    if len(p) == 0:
        return {"reject": [], "p_adjusted": [], "method": "Benjamini-Hochberg (statsmodels fdr_bh)"}
    reject, p_adj, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    return {"reject": reject.tolist(), "p_adjusted": p_adj.tolist(), "alpha": alpha,
            "method": "Benjamini-Hochberg step-up (statsmodels fdr_bh)"}
