"""Seed-batched SAE training on one shuffled activation stream.

All seeds of a condition train in one job: the data order depends only on `data_seed`, each SAE's init only
on its own seed, and the per-seed losses are summed, so the result for a seed does not depend on which other
seeds share the job. Periodic state (weights and buffers, Adam moments, dead-latent counters, regulariser
assignment, step) is written as safetensors, and a killed job resumes from it and ends bit-identical on CPU.

Speed: the step has no host synchronisation on CUDA (dead-latent counters, the NaN check and the AuxK
switch stay on the device; the host only reads them on logging/checkpoint steps), TopK-family decoders are
sparse gathers (see husai.saes.topk), and `TrainConfig.compile` wraps the forward+loss in torch.compile.
On CPU a per-step check costs nothing, so a NaN stops the run at once there. On CPU in fp32, architectures with a
hand-written backward (TopK: husai.saes.topk_grad, same math, sparse weight gradients and a sorting-network
selection) skip autograd (`EXPLICIT_GRADS`); see benchmarks/README_training.md for what that buys.

Precision (`TrainConfig.dtype`): "float32", or "bfloat16" = fp32 master parameters and Adam state, with the
encoder/decoder products run in bf16 (parameters cast per step, gradients flow back to the fp32 masters) and
the losses reduced in fp32. Like autocast, but explicit, so the sparse decode and thresholds are covered too.
The returned SAE computes in fp32 again (evaluation is fp32).
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
from husai.saes import BatchedSAE, SAEConfig, build_sae, get_architecture

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SYNC_FREE: bool | None = None  # None: sync-free step on CUDA only; True forces it (tests exercise it on CPU)
EXPLICIT_GRADS: bool | None = None  # None: hand-written gradients on CPU in fp32 where the architecture has them
BASE_LOG_KEYS = ("fvu", "sparsity", "aux", "dead_fraction", "l0")


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
    dtype: str = "float32"  # or "bfloat16" (fp32 master weights, bf16 products)
    compile: bool = False  # torch.compile the forward + loss

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps}, {self.batch_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


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


def _as_rows(a, what: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN/Inf rows; refusing to train (QC should have caught this)")
    return x


def make_optimizer(sae: BatchedSAE, tc: TrainConfig) -> torch.optim.Adam:
    """Fused Adam (one kernel over all parameters; 2.6x faster than the per-tensor loop on CPU here)."""
    return torch.optim.Adam(sae.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=True)


def _state_tensors(sae: BatchedSAE, opt, steps_since_fired, regularizer) -> dict:
    out = {f"param.{n}": t for n, t in sae.state_dict().items()}
    for n, p in sae.named_parameters():
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                out[f"adam.{n}.{key}"] = st[key].reshape(-1) if key == "step" else st[key]
    out["steps_since_fired"] = steps_since_fired
    if regularizer is not None:
        out.update({f"reg.{k}": v for k, v in regularizer.state_tensors().items()})
    return out


def _load_state(path: Path, sae: BatchedSAE, opt, fingerprint: str, regularizer) -> tuple[int, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("fingerprint") != fingerprint:
        raise RuntimeError(f"{path}: trainer state belongs to a different condition/config; delete it to restart")
    t = load_safetensors(path)
    dev = next(sae.parameters()).device
    fused = any(g.get("fused") for g in opt.param_groups)
    with torch.no_grad():
        sae.load_state_dict({n[len("param."):]: v for n, v in t.items() if n.startswith("param.")})
        for n, p in sae.named_parameters():
            if f"adam.{n}.step" in t:
                step = t[f"adam.{n}.step"].reshape(()).clone()
                opt.state[p] = {"step": step.to(dev) if fused else step,
                                "exp_avg": t[f"adam.{n}.exp_avg"].to(dev).clone(),
                                "exp_avg_sq": t[f"adam.{n}.exp_avg_sq"].to(dev).clone()}
    if regularizer is not None:
        regularizer.load_state_tensors({n[len("reg."):]: v for n, v in t.items() if n.startswith("reg.")})
    return int(meta["step"]), t["steps_since_fired"].clone().to(dev)


class _FiniteGuard:
    """Stops the run on a NaN/Inf loss, naming the step and seeds. On CPU it checks every step; on CUDA it
    records the first bad step on the device and the host reads it only at `check` (log/checkpoint/end)."""

    def __init__(self, dev: torch.device, seeds: list[int], eager: bool):
        self.eager = eager
        self.seeds = seeds
        self.bad_S = torch.zeros(len(seeds), dtype=torch.bool, device=dev)
        self.first = torch.full((), -1, dtype=torch.long, device=dev)

    def update(self, loss_S: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss_S.detach())
        if self.eager:
            if bool(bad.any()):
                self._raise(step, bad)
            return
        self.first = torch.where((self.first < 0) & bad.any(), torch.full_like(self.first, step), self.first)
        self.bad_S |= bad

    def check(self) -> None:
        if not self.eager and int(self.first) >= 0:
            self._raise(int(self.first), self.bad_S)

    def _raise(self, step: int, bad_S: torch.Tensor):
        bad = [self.seeds[i] for i in range(len(self.seeds)) if bool(bad_S[i])]
        raise NonFiniteLossError(f"non-finite loss at step {step} for seed(s) {bad}; training stopped")


def train_seed_batched(
    sae_cfg: SAEConfig,
    tc: TrainConfig,
    acts_ND: np.ndarray | torch.Tensor,
    seeds: list[int],
    state_path: str | Path | None = None,
    stop_after: int | None = None,
    *,
    targets_ND: np.ndarray | torch.Tensor | None = None,
    sparsity_coefficients: list[float] | None = None,
    regularizer=None,
) -> tuple[BatchedSAE, dict]:
    """Train len(seeds) SAEs together. Returns the batched SAE (on CPU, fp32) and a per-seed training log.

    targets_ND: for transcoders, the output-hook rows paired with acts_ND (default: reconstruct acts_ND).
    sparsity_coefficients: one L1/L0 coefficient per seed slice (calibration grids), overriding the config's.
    regularizer: e.g. husai.regularizer.AssignmentRegularizer; None or lambda = 0 is the plain trainer.
    stop_after: end the run early at that step (simulates a kill in tests)."""
    dev = torch.device(tc.device)
    x_all = _as_rows(acts_ND, "training data")
    y_all = x_all if targets_ND is None else _as_rows(targets_ND, "training targets")
    if y_all.shape[0] != x_all.shape[0]:
        raise ValueError(f"targets have {y_all.shape[0]} rows but the inputs have {x_all.shape[0]}")
    scale_in = data_scale(x_all)
    scale = scale_in if targets_ND is None else data_scale(y_all)
    d_out = get_architecture(sae_cfg.architecture).d_out_of(sae_cfg)
    if d_out != y_all.shape[1] or sae_cfg.d_in != x_all.shape[1]:
        raise ValueError(f"{sae_cfg.architecture}: d_in/decoder width {sae_cfg.d_in}/{d_out} do not fit inputs/"
                         f"targets of width {x_all.shape[1]}/{y_all.shape[1]} (transcoders: set d_out and pass "
                         "targets_ND)")
    sae = build_sae(sae_cfg, seeds, b_dec_init_D=y_all.mean(0))
    sae.init_from_data_(scale_in)
    if sparsity_coefficients is not None:
        sae.set_sparsity_coefficients_(sparsity_coefficients)
    sae.to(dev)
    opt = make_optimizer(sae, tc)
    S, F = len(seeds), sae_cfg.d_sae
    steps_since_fired = torch.zeros(S, F, dtype=torch.long, device=dev)
    reg_on = regularizer is not None and regularizer.active
    fingerprint = json.dumps({
        "sae": sae_cfg.to_dict(), "train": asdict(tc), "seeds": list(seeds), "n_rows": int(x_all.shape[0]),
        "targets": None if targets_ND is None else list(y_all.shape), "coef": sae.coef_S.tolist(),
        "regularizer": regularizer.fingerprint() if reg_on else None}, sort_keys=True)
    start = 0
    state_path = Path(state_path) if state_path else None
    if state_path and state_path.exists():
        start, steps_since_fired = _load_state(state_path, sae, opt, fingerprint, regularizer if reg_on else None)
    sae.compute_dtype = DTYPES[tc.dtype]
    losses_fn = torch.compile(sae.training_losses, dynamic=False) if tc.compile else sae.training_losses
    explicit = _explicit_grads(sae, tc, dev)
    sync_free = dev.type != "cpu" if SYNC_FREE is None else SYNC_FREE
    guard = _FiniteGuard(dev, list(seeds), eager=not sync_free)
    log: dict = {k: [] for k in ("steps", *BASE_LOG_KEYS)}
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    order = batch_order(x_all.shape[0], tc).to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    end = tc.steps if stop_after is None else min(tc.steps, max(stop_after, start))
    for step in range(start, end):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        rows = order[step]
        x = x_all.index_select(0, rows)
        y = x if targets_ND is None else y_all.index_select(0, rows)
        dead_SF = steps_since_fired >= sae_cfg.dead_after_steps
        # Before dead_after_steps no latent can be dead; after it, only CPU asks (a free sync there). Computing
        # AuxK with no dead latent adds exactly zero, so both ways give the same result.
        any_dead = step >= sae_cfg.dead_after_steps and (sync_free or bool(dead_SF.any()))
        if explicit:  # the loss terms, with their gradients already in .grad
            out = sae.training_step_grads(x, y, dead_SF, scale, any_dead)
        else:
            out = losses_fn(x, y, dead_SF, scale, any_dead)
            opt.zero_grad(set_to_none=True)
        terms = dict(out.terms)
        if reg_on:
            terms["reg"] = regularizer.loss_S(sae, step)
        loss_S = sum(terms.values())
        guard.update(loss_S, step)
        if explicit:
            if reg_on:
                terms["reg"].sum().backward()  # accumulates onto the explicit gradients
        else:
            loss_S.sum().backward()
        sae.remove_parallel_decoder_grad_()
        opt.step()
        sae.normalize_decoder_()
        sae.post_step_(step, tc.steps, out)
        with torch.no_grad():
            steps_since_fired = torch.where(out.fired_SF, torch.zeros_like(steps_since_fired), steps_since_fired + 1)
        if step % tc.log_every == 0 or step == tc.steps - 1:
            guard.check()
            _append_log(log, step, terms, out, dead_SF)
        done = step + 1
        if state_path and tc.checkpoint_every and done % tc.checkpoint_every == 0 and done < tc.steps:
            guard.check()
            save_safetensors(state_path, _state_tensors(sae, opt, steps_since_fired, regularizer if reg_on else None),
                             metadata={"step": str(done), "fingerprint": fingerprint})
    guard.check()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    log["seconds"] = time.perf_counter() - t0
    opt.zero_grad(set_to_none=True)
    vars(sae).pop("_step_buffers", None)  # the explicit step's reusable temporaries (husai.saes.topk_grad)
    if end == tc.steps:
        sae.finalize_(log)
    log["resumed_from_step"] = start
    log["data_scale"] = scale
    log["seed_tokens"] = (end - start) * tc.batch_size * S
    log["precision"] = {"dtype": tc.dtype, "compile": tc.compile, "device": str(dev)}
    sae.compute_dtype = torch.float32
    return sae.cpu(), log


def _explicit_grads(sae: BatchedSAE, tc: TrainConfig, dev: torch.device) -> bool:
    """Use the architecture's hand-written backward (e.g. husai.saes.topk_grad)? By default on CPU in fp32
    without compile, where the step is made of small ops and autograd's dense pre-activation gradient and
    weight-gradient GEMM dominate; CUDA, bf16 and compile keep the autograd step."""
    if not (hasattr(sae, "explicit_grads") and sae.explicit_grads()):
        return False
    if EXPLICIT_GRADS is not None:
        return EXPLICIT_GRADS
    return dev.type == "cpu" and tc.dtype == "float32" and not tc.compile


def _append_log(log: dict, step: int, terms: dict, out, dead_SF: torch.Tensor) -> None:
    log["steps"].append(step)
    for name in ("fvu", "sparsity", "aux", *[t for t in terms if t not in ("fvu", "sparsity", "aux")]):
        t = terms.get(name)
        log.setdefault(name, []).append(t.detach().float().cpu().tolist() if t is not None else
                                        [0.0] * dead_SF.shape[0])
    log["dead_fraction"].append(dead_SF.float().mean(dim=1).cpu().tolist())
    log["l0"].append(out.l0_S.detach().float().cpu().tolist())
    for name, v in out.metrics.items():
        log.setdefault(name, []).append(v.detach().float().cpu().tolist())


def per_seed_log(log: dict, s: int) -> dict:
    """The slice of a batched training log that belongs to seed index s."""
    out = {"steps": log["steps"]}
    n = len(log["steps"])
    for key, rows in log.items():
        if key != "steps" and isinstance(rows, list) and len(rows) == n and (not rows or isinstance(rows[0], list)):
            out[key] = [row[s] for row in rows]
    for key, values in log.get("final", {}).items():
        out[key] = values[s]
    return out
