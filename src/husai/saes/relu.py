"""ReLU SAE with an L1 penalty (the 'standard' sae-lens architecture).

The penalty is lambda * mean_b sum_f f_bf * ||W_dec_f|| / scale, where `scale` is the RMS distance of the
training data to its mean, so lambda is dimensionless and comparable across hooks and models. lambda is a
per-slice tensor (`coef_S`) so a calibration grid can ride on the seed axis."""

from __future__ import annotations

import torch

from husai.saes.base import BatchedSAE
from husai.saes.registry import register


@register("relu")
class ReLUSAE(BatchedSAE):
    architecture = "relu"
    sae_lens_architecture = "standard"
    sparsity_coefficient_field = "l1_coefficient"

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        return pre_SBF.relu()

    def sparsity_loss(self, f_SBF: torch.Tensor, pre_SBF: torch.Tensor, scale: float) -> torch.Tensor:
        norms_SF = self.W_dec_SFD.norm(dim=2)
        l1_S = torch.bmm(f_SBF.float(), norms_SF.unsqueeze(2)).squeeze(2).mean(dim=1)
        return self.coef_S * l1_S / scale
