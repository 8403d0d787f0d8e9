"""Forward auction (Bertsekas) with epsilon-scaling, vectorised in torch, for the matched-MCC assignment.

Why an auction: it is made of row-wise top-2, scatter-max and gathers, which run on a GPU without a Python
loop over features, and it carries its own accuracy guarantee: when every person (row) is assigned under
eps-complementary slackness, total >= optimum - n * eps. We also return the dual upper bound from the final
prices, so the gap actually achieved is certified from the data, and we stop as soon as it is small enough.

Jacobi ("bulk") bidding: all unassigned rows bid in the same round; each object (column) goes to its highest
bidder via scatter_reduce(amax). Several independent problems of the same size are solved together as one
block-diagonal problem (`auction_assignment_batched`), so the per-round launch overhead is shared: on a GPU
the rounds, not the flops, dominate.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from husai.assignment_core import (
    AssignmentResult,
    abs_max,
    as_sim_tensor,
    dual_upper_bound,
    gather_total,
    row_max_minus,
)

DEFAULT_MEAN_GAP = 1e-4  # default eps_final relative to max|sim|: matched-MCC error <= 1e-4 for |cos| data
DEFAULT_THETA = 7.0  # epsilon divisor between phases
DEFAULT_EPS0_DIV = 50.0  # first-phase eps = scale / DEFAULT_EPS0_DIV


def _eps_floor(a: torch.Tensor, scale: float) -> float:
    """Smallest eps at which a price step is still visible in a's dtype (prices stay within a few x scale)."""
    return 64.0 * float(torch.finfo(a.dtype).eps) * max(scale, 1e-30)


def _bid_top2(a_PNN: torch.Tensor, price_PN: torch.Tensor, U: torch.Tensor, buf: torch.Tensor):
    """Best and second-best value sim[i, j] - price[j] (and the best j) for the bidding rows U.

    A full round (every row bids) reads row blocks in place into the reused buffer `buf` [chunk_rows, n]
    (a fresh large temporary per round costs more in page faults than the arithmetic); otherwise the
    bidders' rows are gathered.
    """
    chunk_rows = buf.shape[0]
    P, n, _ = a_PNN.shape
    k = U.numel()
    if k <= chunk_rows and k < P * n:  # the common case (all but the first round of a phase)
        v = a_PNN.view(P * n, n).index_select(0, U)
        return v.sub_(price_PN[0] if P == 1 else price_PN.index_select(0, U // n)).topk(2, dim=1)
    top_v = torch.empty((k, 2), dtype=a_PNN.dtype, device=a_PNN.device)
    top_i = torch.empty((k, 2), dtype=torch.long, device=a_PNN.device)
    if k == P * n:
        for p in range(P):
            for s in range(0, n, chunk_rows):
                e = min(s + chunk_rows, n)
                v = torch.sub(a_PNN[p, s:e], price_PN[p], out=buf[:e - s])
                torch.topk(v, 2, dim=1, out=(top_v[p * n + s:p * n + e], top_i[p * n + s:p * n + e]))
        return top_v, top_i
    for s in range(0, k, chunk_rows):
        Uc = U[s:s + chunk_rows]
        v = a_PNN.view(P * n, n).index_select(0, Uc)
        v.sub_(price_PN[0] if P == 1 else price_PN.index_select(0, Uc // n))
        torch.topk(v, 2, dim=1, out=(top_v[s:s + chunk_rows], top_i[s:s + chunk_rows]))
    return top_v, top_i


def _auction_core(a_PNN: torch.Tensor, eps_final: float, eps0: float, theta: float, max_rounds: int,
                  pad_slack: float, chunk_elems: int = 2**23):
    """Square problems a[p] (persons = rows, objects = columns); returns col_PN, price_PN, rounds, eps, ok.

    Persons and objects are numbered globally (p * n + i) so one scatter resolves all problems at once.
    """
    P, n, _ = a_PNN.shape
    N, dev, dt = P * n, a_PNN.device, a_PNN.dtype
    buf = torch.empty((min(n, max(1, chunk_elems // n)), n), dtype=dt, device=dev)
    # Object-indexed state has one extra slot, N: a write sink, so updates need no boolean masks (no syncs)
    # and touch only the bidders' entries (k-sized), never all N objects.
    price_ext = torch.zeros(N + 1, dtype=dt, device=dev)
    price_N = price_ext[:N]
    owner_ext = torch.full((N + 1,), N, dtype=torch.long, device=dev)  # N = no owner
    obj_of = torch.full((N + 1,), -1, dtype=torch.long, device=dev)  # person -> object, -1 = unassigned
    best_N = torch.full((N,), float("-inf"), dtype=dt, device=dev)  # kept at -inf between rounds
    winner_N = torch.full((N,), -1, dtype=torch.long, device=dev)  # kept at -1 between rounds
    ar_N = torch.arange(N, device=dev)
    eps, rounds = max(eps0, eps_final), 0
    while True:
        owner_ext.fill_(N)
        obj_of.fill_(-1)
        U = ar_N
        while U.numel() and rounds < max_rounds:
            rounds += 1
            top_v, top_i = _bid_top2(a_PNN, price_N.view(P, n), U, buf)
            J = top_i[:, 0] if P == 1 else top_i[:, 0] + (U // n) * n
            bid = top_v[:, 0].sub_(top_v[:, 1]).add_(price_N[J]).add_(eps)  # price + (best - second) + eps
            best_N.scatter_reduce_(0, J, bid, "amax")
            # Among bidders at the winning price, the highest person index wins (deterministic tie-break).
            winner_N.scatter_reduce_(0, J, torch.where(bid >= best_N[J], U, -1), "amax")
            won = winner_N[J] == U
            obj_won = torch.where(won, J, N)
            prev = owner_ext[obj_won]  # outbid owners (N where none)
            obj_of[prev] = -1
            obj_of[torch.where(won, U, N)] = J
            owner_ext[obj_won] = torch.where(won, U, N)
            price_ext[obj_won] = bid
            best_N[J] = float("-inf")
            winner_N[J] = -1
            nxt = torch.cat([torch.where(won, N, U), prev])  # losers and outbid owners bid next
            U = nxt[nxt < N]
        if U.numel() or eps <= eps_final or rounds >= max_rounds:
            break
        if eps <= theta * eps_final * (1 + 1e-9):
            # Early exit: the dual bound from the current prices may already certify the target accuracy
            # (checked one phase before the last only: earlier it practically never does, and costs a pass).
            col_PN = obj_of[:N].view(P, n) - (ar_N.view(P, n) // n) * n
            total_P = a_PNN.gather(2, col_PN.unsqueeze(2)).squeeze(2).to(torch.float64).sum(1)
            ub_P = torch.stack([row_max_minus(a_PNN[p], price_N.view(P, n)[p]).sum()
                                + price_N.view(P, n)[p].to(torch.float64).sum() for p in range(P)])
            if bool(((ub_P - total_P) + pad_slack <= n * eps_final).all()):
                break
        eps = max(eps / theta, eps_final)
    complete = U.numel() == 0
    if not complete:  # round cap hit: give the leftover rows any free columns, so the result is a permutation
        for p in range(P):
            lo = p * n
            free_rows = (obj_of[lo:lo + n] < 0).nonzero().squeeze(1) + lo
            free_cols = (owner_ext[lo:lo + n] == N).nonzero().squeeze(1) + lo
            obj_of[free_rows] = free_cols
    col_PN = obj_of[:N].view(P, n) - (ar_N.view(P, n) // n) * n
    return col_PN, price_N.view(P, n), rounds, eps, complete


def _duplicate_rows(a_FG: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Indices of rows that equal another row (found through a random projection, then sorting)."""
    # In a's own dtype (no converted copy): identical rows still project identically; a rare collision of
    # distinct rows only costs them a harmless jitter.
    r_G = torch.rand(a_FG.shape[1], generator=gen, dtype=torch.float64).to(a_FG.device, a_FG.dtype)
    proj = a_FG @ r_G
    val, order = proj.sort()
    same = val[1:] == val[:-1]
    dup = torch.zeros_like(proj, dtype=torch.bool)
    dup[order[1:][same]] = True
    dup[order[:-1][same]] = True
    return dup.nonzero().squeeze(1)


def _orient(a_FG: torch.Tensor, tie_jitter: float, gen: torch.Generator):
    """Rows = the smaller side; square by padding with dummy rows; identical rows made slightly different.

    Why the jitter: identical rows all bid for the same column in a Jacobi round and only one can win, so k
    identical rows (ties, all-zero rows of dead features, dummy rows) cost k rounds per phase. Adding at most
    tie_jitter to their values breaks that; the shortfall this can cause is returned as `slack`.
    Returns (a_FG oriented, square matrix to solve, transposed?, slack).
    """
    transposed = a_FG.shape[0] > a_FG.shape[1]
    if transposed:
        a_FG = a_FG.T
    F, G = a_FG.shape
    dup = _duplicate_rows(a_FG, gen) if F > 1 else torch.empty(0, dtype=torch.long)
    if F == G and dup.numel() == 0:
        return a_FG, a_FG, transposed, 0.0
    a_GG = torch.empty((G, G), dtype=a_FG.dtype, device=a_FG.device)
    a_GG[:F] = a_FG
    a_GG[F:] = a_FG.min()
    jitter_rows = torch.cat([dup.to(a_FG.device), torch.arange(F, G, device=a_FG.device)])
    noise = torch.rand((jitter_rows.numel(), G), generator=gen, dtype=torch.float64)
    a_GG[jitter_rows] += (tie_jitter * noise).to(a_FG.device, a_FG.dtype)
    return a_FG, a_GG, transposed, tie_jitter * jitter_rows.numel()


def auction_assignment_batched(sims, eps_final: float | None = None, max_rounds: int = 200_000,
                               device=None, theta: float = DEFAULT_THETA,
                               eps0_div: float = DEFAULT_EPS0_DIV) -> list[AssignmentResult]:
    """Auction for several same-shape problems at once (one block-diagonal auction; shares per-round cost).

    sims: a list of [F, G] matrices, or one [P, F, G] tensor (used in place when square and tie-free, so a
    caller can fill one preallocated buffer and avoid a second copy). eps_final: the target accuracy; by
    default 1e-4 * max|sim|, so each matched mean is within 1e-4 of the optimum. `seconds` of each result is
    the batch time divided by the number of problems; `rounds` is the batch's.
    """
    t0 = time.perf_counter()
    if isinstance(sims, torch.Tensor) and sims.ndim == 3:
        stacked = sims.to(device) if device is not None else sims
        mats = [as_sim_tensor(stacked[p]) for p in range(stacked.shape[0])]
    else:
        stacked, mats = None, [as_sim_tensor(s, device) for s in sims]
    if not mats:
        return []
    if len({tuple(m.shape) for m in mats}) != 1:
        raise ValueError(f"batched auction needs one shape, got {sorted({tuple(m.shape) for m in mats})}")
    gen = torch.Generator().manual_seed(0)
    scale = max(abs_max(m) for m in mats) or 1.0
    target = DEFAULT_MEAN_GAP * scale if eps_final is None else float(eps_final)
    prepared = [_orient(m, target / 4.0, gen) for m in mats]
    a0 = prepared[0][1]
    eps_fin = max(target, _eps_floor(a0, scale))
    if a0.shape[0] == 1:  # a single column: nothing to choose
        col_PN = torch.zeros((len(mats), 1), dtype=torch.long)
        price_PN, rounds, eps, complete = torch.zeros((len(mats), 1), dtype=a0.dtype), 0, eps_fin, True
    else:
        in_place = stacked is not None and all(sq is fg and not tr for fg, sq, tr, _ in prepared)
        a_PNN = stacked if in_place else (a0.unsqueeze(0) if len(prepared) == 1
                                          else torch.stack([p[1] for p in prepared]))
        col_PN, price_PN, rounds, eps, complete = _auction_core(
            a_PNN, eps_fin, scale / eps0_div, theta, max_rounds, pad_slack=max(p[3] for p in prepared))
    seconds = (time.perf_counter() - t0) / len(mats)
    results = []
    for p, (a_FG, _, transposed, slack) in enumerate(prepared):
        F, G = a_FG.shape
        cols = col_PN[p, :F].cpu().numpy().astype(np.int64)
        rows = np.arange(F, dtype=np.int64)
        ub = dual_upper_bound(a_FG, price_PN[p].to(a_FG.device))
        if transposed:
            order = np.argsort(cols)
            rows, cols = cols[order], rows[order]
        matched, total = gather_total(a_FG.T if transposed else a_FG, rows, cols)
        certified = ub - total
        guarantee = G * eps + slack if complete else float("inf")
        results.append(AssignmentResult(
            rows=rows, cols=cols, matched=matched, total=total, method="auction",
            gap_bound=min(guarantee, max(certified, 0.0)), upper_bound=ub, certified_gap=certified,
            eps_final=eps, rounds=rounds, seconds=seconds, converged=complete,
            detail={"batch": len(mats), "tie_jitter_slack": slack}))
    return results


def auction_assignment(sim_FG, eps_final: float | None = None, max_rounds: int = 200_000, device=None,
                       theta: float = DEFAULT_THETA, eps0_div: float = DEFAULT_EPS0_DIV) -> AssignmentResult:
    """One-to-one assignment maximising total similarity by a forward auction with epsilon-scaling.

    Works for [F, G] with either side larger (the smaller side bids), float32/float64, CPU or CUDA (`device`
    moves the matrix). Returns total >= optimum - gap_bound, with gap_bound <= n * eps_final when converged.
    """
    return auction_assignment_batched([sim_FG], eps_final, max_rounds, device, theta, eps0_div)[0]
