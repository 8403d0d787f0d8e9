"""Matched sparsity: find the L1 (relu, transcoder) or L0 (jumprelu, jumprelu_transcoder) coefficient whose fully
trained SAE reaches a target L0 on held-out rows, within a relative tolerance (default +-10%).

Method. The seed axis of the batched trainer carries a grid of coefficients instead of seeds: one seed's init
is trained at every grid value in a single run (`sparsity_coefficients=`), with the condition's own training
config, and each slice's L0 is measured on held-out rows. L0 falls with the coefficient roughly as a power law,
so the target is interpolated linearly in (log coefficient, log L0) between the two grid points that bracket
it. The grid is widened when the target lies outside it, then a second, finer grid inside the bracket refines
the estimate, and a final run at the chosen coefficient verifies it; when the verified L0 misses the
tolerance, that point joins the data and the interpolation is repeated (up to `max_rounds` verifications, and
only while it proposes a coefficient not yet verified). When a widening run leaves L0 where it was (`saturated`)
the target cannot be bracketed: the record keeps the nearest point and says it missed.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch

from husai.saes import SAEConfig, get_architecture
from husai.training import TrainConfig, train_seed_batched

DEFAULT_GRIDS = {"l1_coefficient": (1e-3, 1.0), "l0_coefficient": (1e-5, 1e-1)}
# A widening run whose L0s all stay within this relative distance of the previous edge point's L0 means L0 no
# longer responds to the coefficient (e.g. a threshold that Adam moves by at most lr per step): stop widening.
SATURATION = 0.02
METHOD = ("grid of coefficients on the seed axis (one init), held-out L0 after full training, log-log "
          "interpolation between the bracketing grid points, refined grid inside the bracket, verification run")


@torch.no_grad()
def heldout_l0(sae, heldout_ND, batch: int = 2048) -> list[float]:
    """Mean number of non-zero latents per held-out row, for every slice of the seed axis."""
    x = torch.as_tensor(np.asarray(heldout_ND), dtype=torch.float32)
    total = torch.zeros(sae.n_seeds, dtype=torch.float64)
    for start in range(0, x.shape[0], batch):
        f = sae.encode(x[start:start + batch])
        total += (f != 0).sum(dim=(1, 2)).double()
    return (total / x.shape[0]).tolist()


def interpolate(points: list[tuple[float, float]], target: float) -> tuple[float, tuple[int, int] | None]:
    """Coefficient for `target` L0 by log-log interpolation between the adjacent (in coefficient) points that
    bracket it, choosing the bracket nearest the point closest to the target; None when nothing brackets it."""
    pts = sorted(points)
    logs = [(math.log(c), math.log(max(l0, 1e-3))) for c, l0 in pts]
    lt = math.log(target)
    best = min(range(len(pts)), key=lambda i: abs(logs[i][1] - lt))
    brackets = [i for i in range(len(pts) - 1) if (logs[i][1] - lt) * (logs[i + 1][1] - lt) <= 0]
    if not brackets:
        return pts[best][0], None
    i = min(brackets, key=lambda j: min(abs(j - best), abs(j + 1 - best)))
    (c0, l0), (c1, l1) = logs[i], logs[i + 1]
    t = 0.5 if l1 == l0 else (lt - l0) / (l1 - l0)
    return math.exp(c0 + t * (c1 - c0)), (i, i + 1)


def calibrate_sparsity(sae_cfg: SAEConfig, tc: TrainConfig, train_ND, heldout_ND, target_l0: float, *,
                       seed: int = 0, grid: list[float] | None = None, n_grid: int = 6, tolerance: float = 0.1,
                       max_rounds: int = 3, max_widen: int = 3, targets_ND=None) -> dict:
    """Returns a JSON-able record: every grid with its held-out L0s, the chosen coefficient, the verified L0,
    its relative error and whether it is within tolerance. Train the condition with
    `replace(sae_cfg, **{record['coefficient_name']: record['chosen_coefficient']})`."""
    field = get_architecture(sae_cfg.architecture).sparsity_coefficient_field
    if field is None:
        raise ValueError(f"{sae_cfg.architecture}: its L0 is fixed by k; only L1/L0-penalised architectures "
                         "need calibration")
    if not 0 < target_l0 <= sae_cfg.d_sae:
        raise ValueError(f"target_l0={target_l0} must be in (0, d_sae={sae_cfg.d_sae}]")
    points: list[tuple[float, float]] = []
    rounds: list[dict] = []

    def run(coefs, kind: str) -> list[float]:
        coefs = [float(c) for c in coefs]
        sae, _ = train_seed_batched(sae_cfg, tc, train_ND, [seed] * len(coefs), sparsity_coefficients=coefs,
                                    targets_ND=targets_ND)
        l0s = heldout_l0(sae, heldout_ND)
        rounds.append({"kind": kind, "coefficients": coefs, "heldout_l0": l0s})
        points.extend(zip(coefs, l0s, strict=True))
        return l0s

    lo, hi = (min(grid), max(grid)) if grid else DEFAULT_GRIDS[field]
    run(grid or np.geomspace(lo, hi, n_grid), "grid")
    span = math.log(hi / lo)
    saturated = False
    for _ in range(max_widen):  # widen the grid outward until the target is bracketed
        if interpolate(points, target_l0)[1] is not None:
            break
        too_dense = min(l0 for _, l0 in points) > target_l0  # every point has more latents than wanted
        cs = [c for c, _ in sorted(points)]
        edge_l0 = dict(points)[max(cs) if too_dense else min(cs)]
        new = np.geomspace(max(cs), max(cs) * math.exp(span), n_grid + 1)[1:] if too_dense else \
            np.geomspace(min(cs) * math.exp(-span), min(cs), n_grid + 1)[:-1]
        l0s = run(new, "widen")
        if max(abs(l0 - edge_l0) for l0 in l0s) <= SATURATION * max(edge_l0, 1e-9):
            saturated = True  # L0 no longer responds to the coefficient: widening further cannot bracket it
            break
    chosen, bracket = interpolate(points, target_l0)
    bracketed = bracket is not None
    if bracketed:
        pts = sorted(points)
        run(np.geomspace(pts[bracket[0]][0], pts[bracket[1]][0], n_grid + 2)[1:-1], "refine")
        chosen, bracket = interpolate(points, target_l0)
    achieved = math.nan
    for _ in range(max_rounds):
        achieved = run([chosen], "verify")[0]
        if abs(achieved - target_l0) <= tolerance * target_l0:
            break
        nxt, _ = interpolate(points, target_l0)
        if nxt == chosen:  # nothing new to try: the same coefficient trains to the same L0 (one init, one order)
            break
        chosen = nxt
    rel = (achieved - target_l0) / target_l0
    return {
        "architecture": sae_cfg.architecture, "coefficient_name": field, "target_l0": float(target_l0),
        "tolerance": tolerance, "seed": seed, "rounds": rounds, "chosen_coefficient": rounds[-1]["coefficients"][0],
        "achieved_l0": float(achieved), "relative_error": float(rel), "within_tolerance": bool(abs(rel) <= tolerance),
        "n_heldout_rows": int(np.asarray(heldout_ND).shape[0]), "train_config": asdict(tc), "method": METHOD,
        "bracketed": bracketed, "saturated": saturated,
    }
