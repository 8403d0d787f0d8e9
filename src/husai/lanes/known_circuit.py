"""Known-circuit recovery: do the SAE's latents point along the toy model's Fourier circuit?

A modular-addition transformer computes (a + b) mod p with a few key frequencies f: it represents
cos/sin(2 pi f x / p) of the operands and of c = (a + b) mod p (Nanda et al. 2023). That is a ground truth an
SAE can be scored against. The key frequencies are read off the trained embedding W_E (largest Fourier power);
the circuit's directions in the SAE's input space are found by least squares: regress the hook activations
(rows = all (a, b) pairs) on the cos/sin features of c (and of a and b) at the key frequencies; each feature's
coefficient row is its direction; QR with column pivoting orthonormalises them into basis_KD.

A latent is aligned when its unit decoder row has projection norm >= threshold onto span(basis). The fraction of
aligned latents is compared with random decoders of the same shape (Gaussian rows: the squared projection of a
random unit vector onto a K-dim subspace of R^D is Beta(K/2, (D-K)/2), so chance is known exactly) and with SAEs
trained on a random-init model's activations (scored against that model's own basis, built the same way).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg as sla
from scipy import stats as sps

from husai import stats

FORMULA_VERSION = "known-circuit-v1"


def fourier_features(x_N, p: int, freqs) -> np.ndarray:
    """[N, 2 len(freqs)] columns cos(2 pi f x / p), sin(2 pi f x / p) for each f in freqs."""
    x = np.asarray(x_N, dtype=np.float64)[:, None]
    f = np.asarray(list(freqs), dtype=np.float64)[None, :]
    ang = 2 * np.pi * f * x / p
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1)


def key_frequencies(W_E_pD, n_top: int) -> dict:
    """The n_top frequencies (1..(p-1)/2) carrying most of the embedding's non-constant Fourier power."""
    W = torch.as_tensor(W_E_pD).detach().to(torch.float64).numpy()
    W = W - W.mean(0, keepdims=True)
    p = W.shape[0]
    freqs = np.arange(1, (p - 1) // 2 + 1)
    F = fourier_features(np.arange(p), p, freqs)
    F = F / np.linalg.norm(F, axis=0, keepdims=True)
    n = len(freqs)
    power = ((F.T @ W) ** 2).sum(axis=1)
    power = power[:n] + power[n:]
    order = np.argsort(-power, kind="stable")[:n_top]
    return {"frequencies": [int(freqs[i]) for i in order],
            "power_fraction": [float(power[i] / power.sum()) for i in order], "p": p}


def circuit_basis(acts_ND, tokens_NT, p: int, freqs, *, variables=("a", "b", "c"), rank_tol: float = 1e-6,
                  min_relative_norm: float = 0.05) -> dict:
    """Orthonormal basis_KD of the activation directions that carry the circuit's Fourier features.

    Least squares X - mean(X) ~ Feat @ B gives one direction (row of B) per feature; features whose direction
    is shorter than min_relative_norm of the longest are dropped (the model barely represents them, and after
    normalisation they would only add noise dimensions); QR with pivoting keeps the numerically independent
    rest. Use key frequencies, not all of them: with every frequency the span is the whole space."""
    X = np.asarray(acts_ND, dtype=np.float64)
    tok = np.asarray(tokens_NT)
    vals = {"a": tok[:, 0], "b": tok[:, 1], "c": (tok[:, 0] + tok[:, 1]) % p}
    names, cols = [], []
    for v in variables:
        cols.append(fourier_features(vals[v], p, freqs))
        names += [f"{fn}({v},f={f})" for fn in ("cos", "sin") for f in freqs]
    Feat = np.concatenate(cols, axis=1)
    B_MD, *_ = np.linalg.lstsq(Feat - Feat.mean(0), X - X.mean(0), rcond=None)
    norms = np.linalg.norm(B_MD, axis=1)
    keep = norms >= min_relative_norm * norms.max() if norms.max() > 0 else np.zeros(len(norms), dtype=bool)
    Q, R, piv = sla.qr(B_MD[keep].T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(R)) if R.size else np.array([])
    rank = int((diag > rank_tol * diag.max()).sum()) if diag.size else 0
    resid = (X - X.mean(0)) - (Feat - Feat.mean(0)) @ B_MD
    r2 = 1 - float((resid ** 2).sum() / ((X - X.mean(0)) ** 2).sum())
    return {"basis_KD": Q[:, :rank].T.copy(), "rank": rank, "d_in": X.shape[1], "frequencies": [int(f) for f in freqs],
            "variables": list(variables), "features_kept": [n for n, k in zip(names, keep, strict=True) if k],
            "features_dropped": [n for n, k in zip(names, keep, strict=True) if not k],
            "regression_r2": r2, "formula_version": FORMULA_VERSION}


def projection_norms(W_dec_FD, basis_KD) -> np.ndarray:
    """|P_span(basis) w| / |w| for each decoder row w (basis rows orthonormal)."""
    W = torch.as_tensor(W_dec_FD).detach().to(torch.float64).numpy() if not isinstance(W_dec_FD, np.ndarray) \
        else W_dec_FD.astype(np.float64)
    Bk = np.asarray(basis_KD, dtype=np.float64)
    if Bk.shape[1] != W.shape[1]:
        raise ValueError(f"decoder rows have d_in={W.shape[1]} but the basis lives in d={Bk.shape[1]} "
                         "(decoder must be W_dec [d_sae, d_in], rows = features)")
    W = W / np.clip(np.linalg.norm(W, axis=1, keepdims=True), 1e-12, None)
    return np.linalg.norm(W @ Bk.T, axis=1)


def circuit_alignment(W_dec_FD, basis_KD, threshold: float) -> dict:
    proj = projection_norms(W_dec_FD, basis_KD)
    return {"fraction_aligned": float((proj >= threshold).mean()), "mean_projection": float(proj.mean()),
            "threshold": threshold, "d_sae": int(proj.shape[0]), "k_basis": int(np.asarray(basis_KD).shape[0])}


def analytic_chance_fraction(d_in: int, k: int, threshold: float) -> float:
    """P(projection norm >= threshold) for a uniformly random unit vector in R^d_in and a k-dim subspace."""
    if k >= d_in:
        return 1.0
    return float(sps.beta.sf(threshold ** 2, k / 2, (d_in - k) / 2)) if k > 0 else 0.0


def random_decoder_chance(d_sae: int, basis_KD, threshold: float, *, n_draws: int = 50, seed: int = 0) -> dict:
    """The chance distribution over draws of Gaussian-row decoders of the trained shape, beside the exact
    Beta-distribution value."""
    B = np.asarray(basis_KD)
    rng = np.random.default_rng(seed)
    fr = [circuit_alignment(rng.standard_normal((d_sae, B.shape[1])), B, threshold)["fraction_aligned"]
          for _ in range(n_draws)]
    return {**stats.mean_ci(fr), "draws": fr,
            "analytic": analytic_chance_fraction(B.shape[1], B.shape[0], threshold)}


def known_circuit_report(trained_decoders, basis_KD, threshold: float, *, random_init_decoders=None,
                         random_init_basis_KD=None, n_random_draws: int = 50, seed: int = 0,
                         confidence: float = stats.LCB_CONFIDENCE) -> dict:
    """Per-seed aligned fractions of the trained SAEs against both baselines.

    random_init_decoders: SAEs trained on a random-init model's activations (same config and seeds), scored
    against random_init_basis_KD (that model's own basis from circuit_basis with the SAME frequencies; defaults
    to basis_KD). Differences are paired by seed index when the seed counts match, otherwise taken against the
    baseline's mean; the LCB is a one-sided t bound over seeds (the seed is the unit)."""
    trained = [circuit_alignment(W, basis_KD, threshold) for W in trained_decoders]
    t_frac = np.array([r["fraction_aligned"] for r in trained])
    d_sae = trained[0]["d_sae"]
    gauss = random_decoder_chance(d_sae, basis_KD, threshold, n_draws=n_random_draws, seed=seed)
    out = {"formula_version": FORMULA_VERSION, "threshold": threshold, "n_seeds": len(trained),
           "k_basis": int(np.asarray(basis_KD).shape[0]), "d_in": int(np.asarray(basis_KD).shape[1]),
           "trained": {"per_seed": trained, "fraction_aligned": stats.lcb_mean(t_frac, confidence)},
           "chance_gaussian": {k: v for k, v in gauss.items() if k != "draws"},
           "delta_vs_gaussian": stats.lcb_mean(t_frac - gauss["mean"], confidence)}
    if random_init_decoders:
        rb = basis_KD if random_init_basis_KD is None else random_init_basis_KD
        ri = [circuit_alignment(W, rb, threshold) for W in random_init_decoders]
        r_frac = np.array([r["fraction_aligned"] for r in ri])
        paired = len(r_frac) == len(t_frac)
        diffs = t_frac - (r_frac if paired else r_frac.mean())
        out["random_init_model"] = {"per_seed": ri, "fraction_aligned": stats.lcb_mean(r_frac, confidence),
                                    "k_basis": int(np.asarray(rb).shape[0]),
                                    "chance_analytic": analytic_chance_fraction(np.asarray(rb).shape[1],
                                                                                np.asarray(rb).shape[0], threshold)}
        out["delta_vs_random_init"] = {**stats.lcb_mean(diffs, confidence), "paired_by_seed": paired}
    else:
        out["random_init_model"] = None
        out["delta_vs_random_init"] = None
    out["value"] = float(t_frac.mean())
    return out
