"""Matched-MCC assignment at scale: one entry point that picks an exact or a certified-approximate solver.

Why: scipy's dense Hungarian (linear_sum_assignment) is exact but O(n^3) on one CPU core (16384^2: ~36 s per
seed pair), while the similarity itself takes 0.2 s on a GPU. Above `exact_max_n` we switch to a solver that
scales and that reports how far from the optimum it can be:

- "auction": forward auction with epsilon-scaling (husai.assignment_auction): total >= optimum - n*eps, plus
  a dual upper bound measured from its prices (`certified_gap`);
- "sparse": exact on top-m candidate edges, certified against the dense matrix by dual feasibility, with
  column generation until the certified gap is ~0 (husai.assignment_sparse).

Every result is an AssignmentResult carrying method, gap_bound, upper_bound and certified_gap, so reports can
say exactly how the matched MCC was obtained. The science contract is unchanged: matched MCC = mean |cos| over
a one-to-one assignment maximising total |cos|; a non-exact method reports its bound on the shortfall.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from husai.assignment_auction import auction_assignment, auction_assignment_batched
from husai.assignment_core import AssignmentResult, as_sim_tensor, dual_upper_bound
from husai.assignment_sparse import sparse_candidate_assignment
from husai.consistency import STATISTICS, abs_cosine, pwmcc_from_sim

__all__ = [
    "AssignmentResult", "auction_assignment", "auction_assignment_batched", "sparse_candidate_assignment",
    "scipy_assignment", "matched_assignment", "resolve_method", "consistency_pairs_at_scale",
    "auto_batch_pairs", "dual_upper_bound",
    "METHODS", "DEFAULT_LARGE_METHOD",
]

METHODS = ("auto", "scipy", "auction", "sparse")
DEFAULT_LARGE_METHOD = "auction"


def scipy_assignment(sim_FG) -> AssignmentResult:
    """The exact dense solver (scipy.optimize.linear_sum_assignment), wrapped in the common result type."""
    t0 = time.perf_counter()
    a = as_sim_tensor(sim_FG).cpu().to(torch.float64).numpy()
    rows, cols = linear_sum_assignment(a, maximize=True)
    matched = a[rows, cols]
    total = float(matched.sum())
    return AssignmentResult(
        rows=rows.astype(np.int64), cols=cols.astype(np.int64), matched=matched, total=total, method="scipy",
        gap_bound=0.0, upper_bound=total, certified_gap=0.0, eps_final=None, rounds=0,
        seconds=time.perf_counter() - t0)


def resolve_method(shape: tuple[int, int], method: str = "auto", exact_max_n: int = 4096,
                   large_method: str = DEFAULT_LARGE_METHOD) -> str:
    """Which solver `matched_assignment` will use for a matrix of this shape."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    if max(shape) <= exact_max_n:
        return "scipy"
    if large_method == "sparse" and shape[0] != shape[1]:
        return "auction"  # the sparse certificate is implemented for square problems only
    return large_method


def matched_assignment(sim_FG, method: str = "auto", exact_max_n: int = 4096, device=None,
                       large_method: str = DEFAULT_LARGE_METHOD, **solver_kwargs) -> AssignmentResult:
    """Assignment maximising total similarity: scipy (exact) up to exact_max_n, `large_method` above.

    solver_kwargs go to the chosen solver (e.g. eps_final for the auction, top_m for sparse).
    """
    chosen = resolve_method(tuple(sim_FG.shape), method, exact_max_n, large_method)
    if chosen == "scipy":
        return scipy_assignment(sim_FG)
    if chosen == "auction":
        return auction_assignment(sim_FG, device=device, **solver_kwargs)
    return sparse_candidate_assignment(sim_FG, device=device, **solver_kwargs)


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def auto_batch_pairs(n_pairs: int, shape: tuple[int, int], device, itemsize: int = 4,
                     memory_fraction: float = 0.3) -> int:
    """How many pairs one batched auction should take: all that fit in `memory_fraction` of free GPU memory
    (the auction also needs ~1 chunk of temporaries), 1 on CPU (there the work, not the launches, dominates).
    """
    if device is None or torch.device(device).type != "cuda" or n_pairs == 0:
        return 1
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(max(1, min(n_pairs, memory_fraction * free // (shape[0] * shape[1] * itemsize))))


def consistency_pairs_at_scale(decoders: list, tau: float, device=None, chunk: int = 4096,
                               method: str = "auto", exact_max_n: int = 4096,
                               large_method: str = DEFAULT_LARGE_METHOD, batch_pairs: int | None = None,
                               **solver_kwargs) -> dict:
    """PWMCC, matched MCC and shared fraction for every seed pair, similarities in chunks on `device`.

    Returns {"matrices": {stat: [S, S] ndarray, diagonal 1}, "pairs": [per-pair record], "summary": {...}}.
    Each pair record names the assignment method and its guarantees (AssignmentResult.summary()) and the time
    spent. batch_pairs: how many pairs one batched auction solves together (only when the method resolves to
    "auction"; that many similarity matrices are held at once); None = `auto_batch_pairs` (all that fit in
    30% of free GPU memory on CUDA, 1 on CPU).
    The shared fraction is computed on the returned assignment; a non-exact method bounds the matched-MCC
    shortfall (mean_gap_bound) but not individual matched values near tau.
    """
    S = len(decoders)
    pairs = list(itertools.combinations(range(S), 2))
    mats = {name: np.eye(S) for name in STATISTICS}
    records: list[dict] = []
    t_start = time.perf_counter()

    def similarity(i: int, j: int):
        t0 = time.perf_counter()
        sim = abs_cosine(decoders[i], decoders[j], chunk=chunk, device=device)
        _sync(sim.device)
        return sim, time.perf_counter() - t0

    def record(i: int, j: int, sim, res: AssignmentResult, t_sim: float) -> None:
        stats = {"pwmcc": pwmcc_from_sim(sim), "matched_mcc": res.mean,
                 "shared_fraction": float((res.matched >= tau).mean())}
        for name, value in stats.items():
            mats[name][i, j] = mats[name][j, i] = value
        records.append({"seeds": [i, j], **stats, "assignment": res.summary(),
                        "seconds_similarity": t_sim, "seconds_assignment": res.seconds})

    shape = (int(decoders[0].shape[0]), int(decoders[1].shape[0])) if pairs else (0, 0)
    chosen = resolve_method(shape, method, exact_max_n, large_method)
    if batch_pairs is None:
        batch_pairs = auto_batch_pairs(len(pairs), shape, device) if chosen == "auction" else 1
    if batch_pairs > 1 and chosen == "auction":
        for g in range(0, len(pairs), batch_pairs):
            group = pairs[g:g + batch_pairs]
            # One [group, n, n] buffer filled pair by pair: the batched auction then works on it in place.
            buffer, times = None, []
            for k, (i, j) in enumerate(group):
                sim, t_sim = similarity(i, j)
                if buffer is None:
                    buffer = torch.empty((len(group), *sim.shape), dtype=sim.dtype, device=sim.device)
                buffer[k] = sim
                times.append(t_sim)
                del sim
            results = auction_assignment_batched(buffer, device=device, **solver_kwargs)
            for k, ((i, j), res) in enumerate(zip(group, results, strict=True)):
                record(i, j, buffer[k], res, times[k])
            del buffer
    else:
        for i, j in pairs:
            sim, t_sim = similarity(i, j)
            res = matched_assignment(sim, method, exact_max_n, device, large_method, **solver_kwargs)
            record(i, j, sim, res, t_sim)
            del sim
    methods = sorted({r["assignment"]["method"] for r in records})
    summary = {
        "n_seeds": S, "n_pairs": len(pairs), "methods": methods, "exact_max_n": exact_max_n,
        "batch_pairs": batch_pairs,
        "max_mean_gap_bound": max((r["assignment"]["mean_gap_bound"] for r in records), default=0.0),
        "max_mean_certified_gap": max((r["assignment"]["mean_certified_gap"] for r in records), default=0.0),
        "seconds_similarity": sum(r["seconds_similarity"] for r in records),
        "seconds_assignment": sum(r["seconds_assignment"] for r in records),
        "seconds_total": time.perf_counter() - t_start,
    }
    return {"matrices": mats, "pairs": records, "summary": summary}
