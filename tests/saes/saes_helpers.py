"""Small shared builders for the SAE tests (kept tiny so the whole folder runs in seconds)."""

import torch

from husai.saes import TRANSCODERS, SAEConfig

# One small config per architecture: (SAEConfig kwargs beyond d_in/d_sae).
ARCH_KWARGS = {
    "relu": {"l1_coefficient": 0.05},
    "topk": {"k": 4},
    "jumprelu": {"l0_coefficient": 0.01},
    "batchtopk": {"k": 4},
    "matryoshka": {"k": 4},  # default levels F/8, F/4, F/2, F
    "routed": {"k": 4, "n_experts": 4},
    "transcoder": {"l1_coefficient": 0.05, "d_out": 10},
    "jumprelu_transcoder": {"l0_coefficient": 0.01, "d_out": 10},
    "topk_transcoder": {"k": 4, "d_out": 10},
}


def data(n=600, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)


def targets_for(arch, x, d_out=10, seed=1):
    """A transcoder's output rows (a fixed nonlinear map of x), or None for an SAE."""
    if arch not in TRANSCODERS:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.relu(x @ torch.randn(x.shape[1], d_out, generator=g)) + 0.1


def cfg_for(arch, d_in=12, d_sae=32, **over):
    return SAEConfig(arch, d_in, d_sae, **{**ARCH_KWARGS[arch], **over})
