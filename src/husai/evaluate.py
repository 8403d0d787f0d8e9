"""Per-checkpoint internal metrics on held-out rows, using the very forward pass that was trained."""

from __future__ import annotations

import numpy as np
import torch

from husai import metrics as M
from husai.saes import BatchedSAE


@torch.no_grad()
def reconstruct(sae: BatchedSAE, x_ND: np.ndarray, batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 0's reconstruction and latents for every row: ([N, D], [N, F])."""
    xs, fs = [], []
    for start in range(0, len(x_ND), batch):
        x = torch.as_tensor(np.asarray(x_ND[start:start + batch]), dtype=torch.float32)
        x_hat, f, _ = sae(x)
        xs.append(x_hat[0])
        fs.append(f[0])
    return torch.cat(xs), torch.cat(fs)


def internal_metrics(sae: BatchedSAE, heldout_ND: np.ndarray) -> dict:
    x = torch.as_tensor(np.asarray(heldout_ND), dtype=torch.float32)
    x_hat, f = reconstruct(sae, heldout_ND)
    return {
        "explained_variance": M.explained_variance(x, x_hat),
        "l0": M.l0(f),
        "dead_fraction": M.dead_fraction(f),
        "mse": M.mse(x, x_hat),
        "n_heldout_rows": int(x.shape[0]),
        "formula_versions": M.formula_versions("explained_variance", "l0", "dead_fraction", "mse"),
        "higher_is_better": {k: M.FORMULAS[k]["higher_is_better"]
                             for k in ("explained_variance", "l0", "dead_fraction", "mse")},
    }


def curve_summary(seed_log: dict) -> dict:
    fvu = seed_log["fvu"]
    return {
        "logged_steps": len(seed_log["steps"]),
        "first_step": seed_log["steps"][0] if seed_log["steps"] else None,
        "last_step": seed_log["steps"][-1] if seed_log["steps"] else None,
        "fvu_first": fvu[0] if fvu else None,
        "fvu_last": fvu[-1] if fvu else None,
        "fvu_min": min(fvu) if fvu else None,
        "l0_last": seed_log["l0"][-1] if seed_log["l0"] else None,
        "dead_fraction_last": seed_log["dead_fraction"][-1] if seed_log["dead_fraction"] else None,
    }
