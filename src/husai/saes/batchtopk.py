"""BatchTopK SAE (Bussmann et al. 2024): during training keep the k*B largest ReLU'd pre-activations of the
whole batch (k per row on average), per seed.

That selection depends on the other rows of the batch, so it cannot be the inference forward. After training
husai estimates one threshold per seed, theta = the mean, over the last `batchtopk_threshold_window` of the
steps, of the smallest activation the batch selection kept, and the inference form is
f = pre * [pre > theta]: a JumpReLU with that threshold on every latent. That is how sae-lens saves its own
batchtopk SAEs (architecture "jumprelu", `threshold` tensor), so the exported checkpoint loads there and
computes exactly husai's inference forward, which is also the one husai evaluates. cfg.json still says
`sae_lens_exact: false` and names both forms, because the forward that was *trained* is the batch one.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F_

from husai.saes.base import TrainOut
from husai.saes.registry import register
from husai.saes.topk import TopKSAE

ESTIMATE = "mean over the last {n} training steps of the smallest activation kept by the batch selection"


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"
    sae_lens_architecture = "jumprelu"  # the inference form
    extra_exports = {"threshold": "threshold_SF"}

    def __init__(self, cfg, seeds, b_dec_init_D=None):
        super().__init__(cfg, seeds, b_dec_init_D)
        S = len(seeds)
        self.register_buffer("threshold_SF", torch.full((S, cfg.d_sae), float("nan")))
        self.register_buffer("thr_sum_S", torch.zeros(S, dtype=torch.float64))
        self.register_buffer("thr_count_S", torch.zeros(S, dtype=torch.float64))

    @classmethod
    def state_shapes(cls, cfg) -> dict[str, tuple]:
        return {**super().state_shapes(cfg), "threshold": (cfg.d_sae,)}

    @property
    def sae_lens_exact(self) -> bool:
        return False

    def finalized(self) -> bool:
        return bool(torch.isfinite(self.threshold_SF).all())

    def batch_select(self, pre_SBF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The k*B kept values per seed and their flat (row * F + latent) indices, sorted by index."""
        S, B, F = pre_SBF.shape
        vals, flat = pre_SBF.relu().reshape(S, B * F).topk(self.cfg.k * B, dim=1, sorted=False)
        flat, order = flat.sort(dim=1)
        return vals.gather(1, order), flat

    def decode_bags(self, vals_SN: torch.Tensor, flat_SN: torch.Tensor, B: int) -> torch.Tensor:
        """Sparse decode of a variable number of latents per row: one embedding_bag bag per (seed, row)."""
        S, N = flat_SN.shape
        F, O = self.cfg.d_sae, self.W_dec_SFD.shape[2]
        seed = torch.arange(S, device=flat_SN.device).view(S, 1)
        bag = (flat_SN // F + seed * B).reshape(-1)  # non-decreasing: seed-major, then row
        offsets = torch.searchsorted(bag, torch.arange(S * B, device=bag.device))
        cd = self.compute_dtype
        out = F_.embedding_bag((flat_SN % F + seed * F).reshape(-1), self.W_dec_SFD.to(cd).reshape(S * F, O),
                               offsets, mode="sum", per_sample_weights=vals_SN.to(cd).reshape(-1))
        return out.view(S, B, O).float() + self.b_dec_SD.unsqueeze(1)

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        if self.finalized():  # the inference form (what sae-lens computes from the checkpoint)
            return pre_SBF * (pre_SBF > self.threshold_SF.unsqueeze(1).to(pre_SBF.dtype)).to(pre_SBF.dtype)
        vals, flat = self.batch_select(pre_SBF)  # the training form, over whatever batch is given
        return torch.zeros_like(pre_SBF).reshape(pre_SBF.shape[0], -1).scatter(1, flat, vals).view_as(pre_SBF)

    def training_losses(self, x_BD, y_BD, dead_SF, scale: float, any_dead: bool = True) -> TrainOut:
        pre = self.pre_activation(x_BD)
        S, B, F = pre.shape
        vals, flat = self.batch_select(pre)
        y_hat = self.decode_bags(vals, flat, B)
        aux = self.aux_loss(y_BD, y_hat, pre, dead_SF) if any_dead else y_hat.new_zeros(S)
        fired = torch.zeros(S, F, device=pre.device).scatter_add_(1, flat % F, (vals > 0).float()) > 0
        min_kept_S = torch.where(vals > 0, vals, torch.full_like(vals, float("inf"))).amin(dim=1).float()
        return TrainOut(terms={"fvu": self.fvu(y_hat, y_BD, scale), "aux": aux}, fired_SF=fired,
                        l0_S=(vals > 0).sum(dim=1).float() / B, metrics={"min_kept": min_kept_S.detach()},
                        y_hat_SBD=y_hat)

    def window_steps(self, n_steps: int) -> int:
        return max(1, math.ceil(self.cfg.batchtopk_threshold_window * n_steps))

    @torch.no_grad()
    def post_step_(self, step, n_steps, out) -> None:
        if step >= n_steps - self.window_steps(n_steps):
            m = out.metrics["min_kept"].double()
            ok = torch.isfinite(m)
            self.thr_sum_S += torch.where(ok, m, torch.zeros_like(m))
            self.thr_count_S += ok.double()

    @torch.no_grad()
    def finalize_(self, log: dict) -> None:
        thr_S = (self.thr_sum_S / self.thr_count_S.clamp_min(1)).float()
        self.threshold_SF.copy_(thr_S.unsqueeze(1).expand_as(self.threshold_SF))
        log.setdefault("final", {})["batchtopk_threshold"] = thr_S.cpu().tolist()
        log["final"]["batchtopk_threshold_steps"] = self.thr_count_S.cpu().tolist()

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        if not bool(torch.isfinite(self.threshold_SF[s]).all()):
            raise ValueError("batchtopk: the inference threshold has not been estimated (training not finished)")
        return super().seed_state(s)

    def sae_lens_cfg(self) -> dict:
        return {}  # a sae-lens JumpReLU has no k

    def husai_metadata(self, s: int) -> dict:
        thr = self.threshold_SF[s, 0].item()
        return {"sae_lens_exact": False, "sae_lens_architecture": "jumprelu",
                "training_form": f"batchtopk: the k*B = {self.cfg.k}*B largest activations of each batch",
                "inference_form": "jumprelu with one threshold for every latent; sae-lens computes it exactly "
                                  "from this checkpoint and husai evaluates this form",
                "inference_threshold": thr,
                "threshold_estimate": ESTIMATE.format(n=int(self.thr_count_S[s].item()) or "?")}
