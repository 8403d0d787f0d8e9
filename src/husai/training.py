"""Seed-batched SAE training on one shuffled activation stream.

All seeds of a condition train in one job: the data order depends only on `data_seed`, each SAE's init only
on its own seed, and the per-seed losses are summed, so the result for a seed does not depend on which other
seeds share the job. Periodic state (weights, Adam moments, dead-latent counters, step) is written as
safetensors, and a killed job resumes from it and ends bit-identical on CPU.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from husai.io import load_safetensors, save_safetensors
from husai.saes import BatchedSAE, SAEConfig, build_sae


class NonFiniteLossError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 50
    decay_fraction: float = 0.2  # linear decay to zero over the last fraction of steps
    data_seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0  # 0: no periodic state
    device: str = "cpu"

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps}, {self.batch_size}")


def lr_at(step: int, tc: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, tc.warmup_steps))
    decay_start = int(tc.steps * (1 - tc.decay_fraction))
    decay = 1.0 if step < decay_start else max(0.0, (tc.steps - step) / max(1, tc.steps - decay_start))
    return tc.lr * warm * decay


def batch_order(n_rows: int, tc: TrainConfig) -> torch.Tensor:
    """Row indices for every step: epochs of fresh permutations from `data_seed` (shared by all seeds)."""
    need = tc.steps * tc.batch_size
    g = torch.Generator().manual_seed(tc.data_seed)
    perms = [torch.randperm(n_rows, generator=g) for _ in range(math.ceil(need / n_rows))]
    return torch.cat(perms)[:need].view(tc.steps, tc.batch_size)


def data_scale(acts_ND: torch.Tensor) -> float:
    """RMS distance of rows to the mean: the unit in which losses are expressed (dimensionless losses)."""
    x = acts_ND.to(torch.float64)
    return float(((x - x.mean(0)) ** 2).sum(1).mean().sqrt())


def _state_tensors(sae: BatchedSAE, opt: torch.optim.Adam, steps_since_fired: torch.Tensor) -> dict:
    out = {f"param.{n}": p for n, p in sae.named_parameters()}
    for n, p in sae.named_parameters():
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                out[f"adam.{n}.{key}"] = st[key].reshape(-1) if key == "step" else st[key]
    out["steps_since_fired"] = steps_since_fired
    return out


def _load_state(path: Path, sae: BatchedSAE, opt: torch.optim.Adam, fingerprint: str) -> tuple[int, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("fingerprint") != fingerprint:
        raise RuntimeError(f"{path}: trainer state belongs to a different condition/config; delete it to restart")
    t = load_safetensors(path)
    with torch.no_grad():
        for n, p in sae.named_parameters():
            p.copy_(t[f"param.{n}"])
            if f"adam.{n}.step" in t:
                opt.state[p] = {"step": t[f"adam.{n}.step"].reshape(()).clone(),
                                "exp_avg": t[f"adam.{n}.exp_avg"].clone(),
                                "exp_avg_sq": t[f"adam.{n}.exp_avg_sq"].clone()}
    return int(meta["step"]), t["steps_since_fired"].clone()


def train_seed_batched(
    sae_cfg: SAEConfig,
    tc: TrainConfig,
    acts_ND: np.ndarray | torch.Tensor,
    seeds: list[int],
    state_path: str | Path | None = None,
    stop_after: int | None = None,
) -> tuple[BatchedSAE, dict]:
    """Train len(seeds) SAEs together. Returns the batched SAE and a per-seed training log.

    `stop_after` ends the run early at that step (used to simulate a kill in tests)."""
    dev = torch.device(tc.device)
    x_all = torch.as_tensor(np.asarray(acts_ND), dtype=torch.float32)
    if not torch.isfinite(x_all).all():
        raise ValueError("training data contains NaN/Inf rows; refusing to train (QC should have caught this)")
    scale = data_scale(x_all)
    sae = build_sae(sae_cfg, seeds, b_dec_init_D=x_all.mean(0)).to(dev)
    opt = torch.optim.Adam(sae.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), foreach=False)
    order = batch_order(x_all.shape[0], tc)
    S, F = len(seeds), sae_cfg.d_sae
    steps_since_fired = torch.zeros(S, F, dtype=torch.long)
    fingerprint = json.dumps({"sae": sae_cfg.to_dict(), "train": asdict(tc), "seeds": list(seeds),
                              "n_rows": int(x_all.shape[0])}, sort_keys=True)
    start = 0
    state_path = Path(state_path) if state_path else None
    if state_path and state_path.exists():
        start, steps_since_fired = _load_state(state_path, sae, opt, fingerprint)
    log = {"steps": [], "fvu": [], "sparsity": [], "aux": [], "dead_fraction": [], "l0": []}
    t0 = time.perf_counter()
    x_all = x_all.to(dev)
    for step in range(start, tc.steps):
        if stop_after is not None and step >= stop_after:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        x = x_all[order[step].to(dev)]
        x_hat, f, pre = sae(x)
        fvu_S = ((x_hat - x.unsqueeze(0)) ** 2).sum(dim=2).mean(dim=1) / scale**2
        dead_SF = (steps_since_fired >= sae_cfg.dead_after_steps).to(dev)
        sparsity_S = sae.sparsity_loss(f, scale)
        aux_S = sae.aux_loss(x, x_hat, pre, dead_SF) if sae_cfg.aux_k_coefficient else fvu_S * 0
        loss_S = fvu_S + sparsity_S + aux_S
        if not torch.isfinite(loss_S).all():
            bad = [seeds[i] for i in range(S) if not torch.isfinite(loss_S[i])]
            raise NonFiniteLossError(f"non-finite loss at step {step} for seed(s) {bad}; training stopped")
        opt.zero_grad(set_to_none=True)
        loss_S.sum().backward()
        sae.remove_parallel_decoder_grad_()
        opt.step()
        sae.normalize_decoder_()
        with torch.no_grad():
            fired_SF = (f != 0).any(dim=1).cpu()
            steps_since_fired = torch.where(fired_SF, torch.zeros_like(steps_since_fired), steps_since_fired + 1)
        if step % tc.log_every == 0 or step == tc.steps - 1:
            log["steps"].append(step)
            log["fvu"].append(fvu_S.detach().cpu().tolist())
            log["sparsity"].append(sparsity_S.detach().cpu().tolist())
            log["aux"].append(aux_S.detach().cpu().tolist())
            log["dead_fraction"].append(dead_SF.float().mean(dim=1).cpu().tolist())
            log["l0"].append((f != 0).sum(dim=2).float().mean(dim=1).detach().cpu().tolist())
        done = step + 1
        if state_path and tc.checkpoint_every and done % tc.checkpoint_every == 0 and done < tc.steps:
            save_safetensors(state_path, _state_tensors(sae, opt, steps_since_fired),
                             metadata={"step": str(done), "fingerprint": fingerprint})
    log["seconds"] = time.perf_counter() - t0
    log["resumed_from_step"] = start
    log["data_scale"] = scale
    log["seed_tokens"] = (tc.steps - start) * tc.batch_size * S
    return sae.cpu(), log


def per_seed_log(log: dict, s: int) -> dict:
    """The slice of a batched training log that belongs to seed index s."""
    out = {"steps": log["steps"]}
    for key in ("fvu", "sparsity", "aux", "dead_fraction", "l0"):
        out[key] = [row[s] for row in log[key]]
    return out
