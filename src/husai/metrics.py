"""Internal SAE metrics: one definition each, with a direction and a formula version.

Every output that uses a metric writes `FORMULAS[name]["version"]` beside the value, so a change of
definition is visible in the files instead of silently mixing numbers.
"""

from __future__ import annotations

import numpy as np
import torch

FORMULAS: dict[str, dict] = {
    "explained_variance": {
        "version": "ev-v1",
        "higher_is_better": True,
        "definition": "1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 over held-out rows (per-dimension mean)",
    },
    "l0": {"version": "l0-v1", "higher_is_better": False, "definition": "mean number of non-zero latents per row"},
    "dead_fraction": {
        "version": "dead-v1",
        "higher_is_better": False,
        "definition": "fraction of latents that are zero on every held-out row",
    },
    "mse": {"version": "mse-v1", "higher_is_better": False, "definition": "mean over rows and dims of (x - x_hat)^2"},
    "pwmcc": {
        "version": "pwmcc-v1",
        "higher_is_better": True,
        "definition": "0.5*(mean_i max_j |cos(a_i,b_j)| + mean_j max_i |cos(a_i,b_j)|), decoder rows",
    },
    "matched_mcc": {
        "version": "mmcc-v1",
        "higher_is_better": True,
        "definition": "mean |cos| over a one-to-one Hungarian assignment maximising total |cos|",
    },
    "shared_fraction": {
        "version": "shared-v1",
        "higher_is_better": True,
        "definition": "fraction of Hungarian-matched pairs with |cos| >= tau",
    },
}


def formula_versions(*names: str) -> dict[str, str]:
    return {n: FORMULAS[n]["version"] for n in names}


def _as_f64(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x, dtype=np.float64))
    return x.detach().to(torch.float64)


def explained_variance(x_ND, x_hat_ND) -> float:
    x, x_hat = _as_f64(x_ND), _as_f64(x_hat_ND)
    if x.shape != x_hat.shape or x.ndim != 2:
        raise ValueError(f"explained_variance needs two [N, D] arrays of one shape, got {tuple(x.shape)} "
                         f"and {tuple(x_hat.shape)}")
    resid = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(dim=0, keepdim=True)) ** 2).sum()
    if total <= 0:
        raise ValueError("explained_variance is undefined: the held-out rows have zero variance")
    return float(1.0 - resid / total)


def mse(x_ND, x_hat_ND) -> float:
    return float(((_as_f64(x_ND) - _as_f64(x_hat_ND)) ** 2).mean())


def l0(acts_NF) -> float:
    return float((_as_f64(acts_NF) != 0).sum(dim=1).to(torch.float64).mean())


def dead_fraction(acts_NF) -> float:
    fired = (_as_f64(acts_NF) != 0).any(dim=0)
    return float(1.0 - fired.to(torch.float64).mean())
