"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations, ReLU them; AuxK revives dead latents."""

from __future__ import annotations

import torch

from husai.saes.base import BatchedSAE
from husai.saes.registry import register


@register("topk")
class TopKSAE(BatchedSAE):
    architecture = "topk"
    sae_lens_architecture = "topk"

    def __init__(self, cfg, seeds, b_dec_init_D=None):
        if cfg.k is None:
            raise ValueError("topk SAE needs k")
        super().__init__(cfg, seeds, b_dec_init_D)

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        # Same order as sae-lens' TopK: select on the raw pre-activation, then ReLU the kept values.
        values, idx = pre_SBF.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre_SBF).scatter(-1, idx, values.relu())

    def aux_loss(self, x_BD, x_hat_SBD, pre_SBF, dead_SF) -> torch.Tensor:
        """AuxK: the top-k_aux dead latents reconstruct the residual the live ones left.

        The dead latents' pre-activations are used WITHOUT a ReLU: a dead latent's pre-activation is usually
        negative, and a ReLU would give it no gradient, so it could never revive. Each seed's loss is
        normalised by its residual's power and scaled down by min(n_dead / k_aux, 1) when few are dead."""
        if self.cfg.aux_k_coefficient == 0 or not bool(dead_SF.any()):
            return x_hat_SBD.new_zeros(self.n_seeds)
        k_aux = min(self.cfg.aux_k or max(1, self.cfg.d_in // 2), self.cfg.d_sae)
        n_dead_S = dead_SF.sum(dim=1)
        resid_SBD = (x_BD.unsqueeze(0) - x_hat_SBD).detach()
        masked = pre_SBF.masked_fill(~dead_SF.unsqueeze(1), float("-inf"))
        values, idx = masked.topk(k_aux, dim=-1, sorted=False)
        # Seeds with fewer than k_aux dead latents pick some live ones at -inf: they contribute nothing.
        values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
        f_aux = torch.zeros_like(pre_SBF).scatter(-1, idx, values)
        resid_hat = torch.bmm(f_aux, self.W_dec_SFD)
        num = ((resid_hat - resid_SBD) ** 2).sum(dim=(1, 2))
        den = (resid_SBD ** 2).sum(dim=(1, 2)).clamp_min(1e-12)
        scale_S = (n_dead_S.to(num.dtype) / k_aux).clamp(max=1.0)
        return self.cfg.aux_k_coefficient * scale_S * num / den

    def sae_lens_cfg(self) -> dict:
        return {"k": int(self.cfg.k), "rescale_acts_by_decoder_norm": False}
