"""JumpReLU SAE (Rajamanoharan et al. 2024): f = pre * [pre > theta], a learned threshold per latent.

The step function has zero gradient almost everywhere, so both the activation and the L0 penalty use a
straight-through estimator: in the backward pass the step's derivative with respect to theta is replaced by a
rectangle kernel of width `bandwidth` around the threshold. That gives the L0 term a real gradient, so its
coefficient (`l0_coefficient`, per slice in `coef_S`) controls L0 (husai.calibration tunes it to a target).
As in DeepMind's recipe (and sae-lens' default `jumprelu_ste_to_input=False`) the L0 estimator reaches only
the threshold; the encoder learns from reconstruction.

Bandwidth and initial threshold are given in units of the training data's per-direction RMS
(scale / sqrt(d_in)), i.e. the units sae-lens' defaults assume for normalised activations. theta is kept
>= 0 after every step, which makes pre * [pre > theta] identical to sae-lens' relu(pre) * [pre > theta];
the checkpoint stores it as sae-lens' `threshold`.
"""

from __future__ import annotations

import torch
from torch import nn

from husai.saes.base import BatchedSAE
from husai.saes.registry import register


def _rectangle(z: torch.Tensor) -> torch.Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class JumpReLUFn(torch.autograd.Function):
    """pre * [pre > theta]; d/dpre = [pre > theta]; d/dtheta = -(theta / bw) * rect((pre - theta) / bw)."""

    @staticmethod
    def forward(ctx, pre_SBF, theta_SF, bandwidth: float):
        ctx.save_for_backward(pre_SBF, theta_SF)
        ctx.bandwidth = bandwidth
        return pre_SBF * (pre_SBF > theta_SF.unsqueeze(1)).to(pre_SBF.dtype)

    @staticmethod
    def backward(ctx, g_SBF):
        pre, theta = ctx.saved_tensors
        th = theta.unsqueeze(1).to(pre.dtype)
        g_pre = g_SBF * (pre > th).to(g_SBF.dtype)
        ste = (th / ctx.bandwidth) * _rectangle((pre - th) / ctx.bandwidth) * g_SBF
        return g_pre, -ste.sum(dim=1).to(theta.dtype), None


class StepFn(torch.autograd.Function):
    """[pre > theta]; gradient only to theta: -(1 / bw) * rect((pre - theta) / bw)."""

    @staticmethod
    def forward(ctx, pre_SBF, theta_SF, bandwidth: float):
        ctx.save_for_backward(pre_SBF, theta_SF)
        ctx.bandwidth = bandwidth
        return (pre_SBF > theta_SF.unsqueeze(1)).to(pre_SBF.dtype)

    @staticmethod
    def backward(ctx, g_SBF):
        pre, theta = ctx.saved_tensors
        th = theta.unsqueeze(1).to(pre.dtype)
        ste = _rectangle((pre - th) / ctx.bandwidth) * g_SBF / ctx.bandwidth
        return None, -ste.sum(dim=1).to(theta.dtype), None


@register("jumprelu")
class JumpReLUSAE(BatchedSAE):
    architecture = "jumprelu"
    sae_lens_architecture = "jumprelu"
    sparsity_coefficient_field = "l0_coefficient"
    extra_exports = {"threshold": "threshold_SF"}

    def __init__(self, cfg, seeds, b_dec_init_D=None):
        super().__init__(cfg, seeds, b_dec_init_D)
        self.threshold_SF = nn.Parameter(torch.full((len(seeds), cfg.d_sae), cfg.jumprelu_init_threshold))

    @classmethod
    def state_shapes(cls, cfg) -> dict[str, tuple]:
        return {**super().state_shapes(cfg), "threshold": (cfg.d_sae,)}

    def init_from_data_(self, scale_in: float) -> None:
        super().init_from_data_(scale_in)
        with torch.no_grad():
            self.threshold_SF.fill_(self.cfg.jumprelu_init_threshold * self.unit)

    @property
    def bandwidth(self) -> float:
        return self.cfg.jumprelu_bandwidth * self.unit

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        return JumpReLUFn.apply(pre_SBF, self.threshold_SF, self.bandwidth)

    def sparsity_loss(self, f_SBF: torch.Tensor, pre_SBF: torch.Tensor, scale: float) -> torch.Tensor:
        l0_SB = StepFn.apply(pre_SBF, self.threshold_SF, self.bandwidth).float().sum(dim=2)
        return self.coef_S * l0_SB.mean(dim=1)

    @torch.no_grad()
    def post_step_(self, step, n_steps, out) -> None:
        # Projected on the data, not clamped in the graph, so a latent whose threshold touches 0 keeps a gradient.
        self.threshold_SF.clamp_(min=0.0)
