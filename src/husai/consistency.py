"""Cross-seed feature consistency: PWMCC, Hungarian matched MCC, shared fraction, and their chance levels.

Layout contract: a dictionary is a decoder `W_dec_FD` of shape [d_sae, d_in] whose ROWS are feature
directions (the sae-lens layout). Every function here takes that layout only; `check_decoder_rows` rejects
anything else with a message saying what it looks like, instead of silently transposing.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch


class DecoderLayoutError(ValueError):
    pass


def check_decoder_rows(W, d_in: int | None = None, name: str = "decoder") -> torch.Tensor:
    """Return W as a float tensor after checking it is [d_sae, d_in] with feature directions as rows."""
    W = torch.as_tensor(np.asarray(W)) if not isinstance(W, torch.Tensor) else W.detach()
    if W.ndim != 2:
        raise DecoderLayoutError(f"{name}: expected a 2-D decoder [d_sae, d_in], got shape {tuple(W.shape)}")
    if d_in is not None and W.shape[1] != d_in:
        hint = " (it looks transposed: husai wants rows = features, i.e. W_dec, not W_dec.T)" \
            if W.shape[0] == d_in else ""
        raise DecoderLayoutError(
            f"{name}: expected shape [d_sae, d_in={d_in}], got {tuple(W.shape)}{hint}"
        )
    if not torch.isfinite(W).all():
        raise DecoderLayoutError(f"{name}: contains NaN or Inf")
    return W


def abs_cosine(A_FD, B_GD, chunk: int = 4096, device: str | None = None) -> torch.Tensor:
    """|cos| between every row of A and every row of B: [F, G], computed in chunks of A's rows."""
    A = check_decoder_rows(A_FD, name="A")
    B = check_decoder_rows(B_GD, d_in=A.shape[1], name="B")
    dev = torch.device(device) if device else A.device
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    A_n = torch.nn.functional.normalize(A.to(dev, dtype), dim=1)
    B_n = torch.nn.functional.normalize(B.to(dev, dtype), dim=1)
    out = torch.empty((A.shape[0], B.shape[0]), dtype=dtype, device=dev)
    for start in range(0, A.shape[0], chunk):
        out[start:start + chunk] = (A_n[start:start + chunk] @ B_n.T).abs_()
    return out


def pwmcc_from_sim(sim_FG: torch.Tensor) -> float:
    return float(0.5 * (sim_FG.max(dim=1).values.mean() + sim_FG.max(dim=0).values.mean()))


def hungarian_from_sim(sim_FG) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one assignment maximising total |cos| (exact, scipy); returns rows, cols and the matched |cos|."""
    from husai.assignment import scipy_assignment  # husai.assignment imports this module

    res = scipy_assignment(sim_FG)
    return res.rows, res.cols, res.matched


def pair_statistics(A_FD, B_GD, tau: float, assignment: dict | None = None) -> dict[str, float]:
    """PWMCC, matched MCC and shared fraction of one pair. `assignment` ({method, exact_max_n}) picks the solver:
    scipy's exact Hungarian up to exact_max_n (the default everywhere in the embedded study), an auction or
    sparse-candidate solver above it, whose certified gap to the optimum is recorded (husai.assignment)."""
    from husai.assignment import matched_assignment  # husai.assignment imports this module

    sim = abs_cosine(A_FD, B_GD)
    a = assignment or {}
    res = matched_assignment(sim, method=a.get("method", "scipy"), exact_max_n=a.get("exact_max_n", 4096))
    matched, gap = np.asarray(res.matched), float(res.mean_gap_bound or 0.0)
    return {
        "pwmcc": pwmcc_from_sim(sim),
        "matched_mcc": float(matched.mean()),
        "shared_fraction": float((matched >= tau).mean()),
        "matched_mcc_gap_bound": gap,
    }


def pwmcc(A_FD, B_GD) -> float:
    return pwmcc_from_sim(abs_cosine(A_FD, B_GD))


def matched_mcc(A_FD, B_GD) -> float:
    return float(hungarian_from_sim(abs_cosine(A_FD, B_GD))[2].mean())


def shared_fraction(A_FD, B_GD, tau: float) -> float:
    return float((hungarian_from_sim(abs_cosine(A_FD, B_GD))[2] >= tau).mean())


STATISTICS = ("pwmcc", "matched_mcc", "shared_fraction")


def pairwise_matrices(decoders: list, tau: float, assignment: dict | None = None) -> dict[str, np.ndarray]:
    """For S decoders, an [S, S] matrix per statistic (diagonal = 1 by definition, never used as data), plus the
    matched-MCC gap bound of each pair's assignment (0 when exact)."""
    S = len(decoders)
    mats = {name: np.eye(S) for name in (*STATISTICS, "matched_mcc_gap_bound")}
    np.fill_diagonal(mats["matched_mcc_gap_bound"], 0.0)
    for i, j in itertools.combinations(range(S), 2):
        stats = pair_statistics(decoders[i], decoders[j], tau, assignment)
        for name, value in stats.items():
            mats[name][i, j] = mats[name][j, i] = value
    return mats


def random_gaussian_decoder(d_sae: int, d_in: int, generator: torch.Generator) -> torch.Tensor:
    """A random dictionary of the same shape and layout as a trained one: Gaussian rows (unit-normed later)."""
    return torch.randn((d_sae, d_in), generator=generator, dtype=torch.float64)


def chance_values(
    d_sae: int, d_in: int, n_pairs: int, tau: float, seed: int, make_decoder=None, assignment: dict | None = None,
) -> dict[str, np.ndarray]:
    """The statistics for n_pairs independent pairs of random dictionaries: i.i.d. draws of the chance level.

    `make_decoder(generator) -> [d_sae, d_in]` defaults to Gaussian rows; pass an SAE's own init to get the
    untrained-SAE control.
    """
    make = make_decoder or (lambda g: random_gaussian_decoder(d_sae, d_in, g))
    g = torch.Generator().manual_seed(seed)
    out = {name: np.empty(n_pairs) for name in STATISTICS}
    for p in range(n_pairs):
        stats = pair_statistics(make(g), make(g), tau, assignment)
        for name in STATISTICS:
            out[name][p] = stats[name]
    return out
