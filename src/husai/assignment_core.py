"""Shared pieces of the scalable assignment code: the result type and the dual (LP) upper bound.

Why a dual bound: every approximate or sparsified solver here is judged by one honest number, the gap between
the assignment it returns and an upper bound on the optimum that holds for ANY prices (weak LP duality). That
number needs no exact solver to compute, so it can be reported at d_sae = 16384 where scipy is too slow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class AssignmentResult:
    """A one-to-one assignment (rows[k] <-> cols[k]) maximising the total similarity, with its guarantees.

    gap_bound: a guaranteed upper bound on (optimum - total): 0 for an exact solver; for the auction the
        smaller of its epsilon-complementary-slackness guarantee n*eps and the certified dual gap.
    upper_bound: an upper bound on the optimum from dual prices (weak duality); `certified_gap` =
        upper_bound - total is measured from the data, not promised by theory. Both are valid up to float
        rounding (about 1e-12 relative: everything is summed in float64 from the input values).
    eps_final: the auction's epsilon in its last completed phase (it may stop one phase early, at a larger
        epsilon, when the dual bound already certifies the target); None for the exact solvers.
    rounds: auction bidding rounds, or sparse column-generation iterations; 0 for scipy.
    converged: False when a round/iteration cap stopped the solver; the result is still a valid assignment.
    """

    rows: np.ndarray
    cols: np.ndarray
    matched: np.ndarray
    total: float
    method: str
    gap_bound: float
    upper_bound: float
    certified_gap: float
    eps_final: float | None
    rounds: int
    seconds: float
    converged: bool = True
    detail: dict = field(default_factory=dict, compare=False)  # solver-specific diagnostics (timings, sizes)

    @property
    def n(self) -> int:
        return int(len(self.rows))

    @property
    def mean(self) -> float:
        """Matched MCC: the mean similarity over the assigned pairs."""
        return self.total / max(self.n, 1)

    @property
    def mean_gap_bound(self) -> float:
        """Guaranteed bound on (exact matched MCC - this matched MCC)."""
        return self.gap_bound / max(self.n, 1)

    def summary(self) -> dict:
        """JSON-ready scalars (no per-feature arrays): what consistency.json should record per pair."""
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "cols", "matched")}
        out.update(n=self.n, mean=self.mean, mean_gap_bound=self.mean_gap_bound,
                   mean_certified_gap=self.certified_gap / max(self.n, 1))
        return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}


def as_sim_tensor(sim, device=None) -> torch.Tensor:
    """A 2-D float tensor on `device` (numpy accepted); float16/bfloat16 promoted to float32."""
    t = sim.detach() if isinstance(sim, torch.Tensor) else torch.as_tensor(np.asarray(sim))
    if t.ndim != 2:
        raise ValueError(f"similarity must be 2-D [F, G], got shape {tuple(t.shape)}")
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    if device is not None:
        t = t.to(device)
    if t.numel() == 0:
        raise ValueError(f"similarity is empty: shape {tuple(t.shape)}")
    if not np.isfinite(abs_max(t)):  # min/max propagate NaN: one reduction pass, no [F, G] temporary
        raise ValueError("similarity contains NaN or Inf")
    return t


def abs_max(t: torch.Tensor) -> float:
    """max |t| via aminmax (no temporary copy of t, unlike t.abs().max())."""
    lo, hi = torch.aminmax(t)
    return max(-float(lo), float(hi))


def row_max_minus(sim_FG: torch.Tensor, price_G: torch.Tensor, chunk_elems: int = 2**22) -> torch.Tensor:
    """max_j (sim[i, j] - price[j]) for every row, in float64, in row chunks through one reused buffer."""
    F, G = sim_FG.shape
    p64_G = price_G.to(sim_FG.device, torch.float64)
    out_F = torch.empty(F, dtype=torch.float64, device=sim_FG.device)
    chunk = max(1, min(F, chunk_elems // max(G, 1)))
    buf = torch.empty((chunk, G), dtype=torch.float64, device=sim_FG.device)
    for s in range(0, F, chunk):
        e = min(s + chunk, F)
        out_F[s:e] = torch.sub(sim_FG[s:e], p64_G, out=buf[:e - s]).max(dim=1).values
    return out_F


def dual_upper_bound(sim_FG: torch.Tensor, price_G: torch.Tensor) -> float:
    """Upper bound on max over one-to-one assignments of the total similarity, valid for any prices, F <= G.

    LP dual of the (rectangular) assignment: min sum(u) + sum(p) s.t. u_i + p_j >= sim_ij, p >= 0. Given any
    prices, p' = p - min(p) is feasible with u_i = max_j(sim_ij - p'_j), which gives
    sum_i max_j(sim_ij - p_j) + sum_j p_j - (G - F) * min_j p_j  (the last term vanishes when square).
    """
    F, G = sim_FG.shape
    if F > G:
        raise ValueError("dual_upper_bound expects F <= G (pass the transpose)")
    p64_G = price_G.to(torch.float64)
    bound = row_max_minus(sim_FG, price_G).sum() + p64_G.sum() - (G - F) * p64_G.min()
    return float(bound)


def gather_total(sim_FG: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, float]:
    """The matched values (float64 numpy) and their float64 sum."""
    dev = sim_FG.device
    vals = sim_FG[torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)]
    vals = vals.to(torch.float64).cpu().numpy()
    return vals, float(vals.sum())
