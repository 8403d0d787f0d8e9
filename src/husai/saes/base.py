"""The seed-batched SAE: S independent SAEs as one module with a leading seed dimension.

Every parameter carries the seed axis first (`W_enc_SDF`, `W_dec_SFD`, ...). All seeds see the same input
batch, but nothing couples them: losses are summed over seeds, so each seed's gradient is exactly what it
would be alone, and Adam is elementwise. Training S seeds together therefore equals training each alone
(tests/saes/test_batched.py checks it).

The forward pass is the sae-lens one (`apply_b_dec_to_input=True`, no activation normalisation):
    pre = (x - b_dec) @ W_enc + b_enc;  f = act(pre);  x_hat = f @ W_dec + b_dec
so a per-seed slice exported with `to_sae_lens` loads in `sae_lens.SAE.load_from_disk` and computes the
same function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class SAEConfig:
    architecture: str
    d_in: int
    d_sae: int
    k: int | None = None  # TopK: active latents; ReLU: the target L0 (for matched-sparsity comparisons)
    l1_coefficient: float = 0.0  # ReLU only
    aux_k_coefficient: float = 1.0 / 32  # TopK only: weight of the AuxK dead-latent loss
    aux_k: int | None = None  # TopK only: latents used by AuxK (default d_in // 2)
    dead_after_steps: int = 100  # a latent that has not fired for this many steps counts as dead
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.k is not None and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be between 1 and d_sae={self.d_sae}")
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")

    def to_dict(self) -> dict:
        return asdict(self)


def init_decoder_rows(d_sae: int, d_in: int, generator: torch.Generator) -> torch.Tensor:
    """The init scheme shared by every architecture: Gaussian rows scaled to unit norm."""
    W = torch.randn((d_sae, d_in), generator=generator, dtype=torch.float32)
    return W / W.norm(dim=1, keepdim=True)


class BatchedSAE(nn.Module):
    """Base class. Subclasses define `activation` and, where they need one, `sparsity_loss`/`aux_loss`."""

    architecture: str = ""
    sae_lens_architecture: str | None = None  # None: sae-lens cannot represent it exactly

    def __init__(self, cfg: SAEConfig, seeds: list[int], b_dec_init_D: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.seeds = list(seeds)
        S, D, F = len(seeds), cfg.d_in, cfg.d_sae
        W_dec = torch.stack([init_decoder_rows(F, D, torch.Generator().manual_seed(int(s))) for s in seeds])
        self.W_dec_SFD = nn.Parameter(W_dec)
        self.W_enc_SDF = nn.Parameter(W_dec.transpose(1, 2).clone())
        self.b_enc_SF = nn.Parameter(torch.zeros(S, F))
        b_dec = torch.zeros(D) if b_dec_init_D is None else torch.as_tensor(b_dec_init_D, dtype=torch.float32)
        self.b_dec_SD = nn.Parameter(b_dec.expand(S, D).clone())

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    # --- the forward pass -------------------------------------------------------------------------------
    def pre_activation(self, x_BD: torch.Tensor) -> torch.Tensor:
        x_SBD = x_BD.unsqueeze(0) - self.b_dec_SD.unsqueeze(1)
        return torch.baddbmm(self.b_enc_SF.unsqueeze(1), x_SBD, self.W_enc_SDF)

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activation(x_BD))

    def decode(self, f_SBF: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.b_dec_SD.unsqueeze(1), f_SBF, self.W_dec_SFD)

    def forward(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pre = self.pre_activation(x_BD)
        f = self.activation(pre)
        return self.decode(f), f, pre

    # --- losses (per seed, shape [S]) --------------------------------------------------------------------
    def sparsity_loss(self, f_SBF: torch.Tensor, scale: float) -> torch.Tensor:
        return f_SBF.new_zeros(self.n_seeds)

    def aux_loss(self, x_BD, x_hat_SBD, pre_SBF, dead_SF) -> torch.Tensor:
        return x_hat_SBD.new_zeros(self.n_seeds)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec_SFD.div_(self.W_dec_SFD.norm(dim=2, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Project out the gradient component along each (unit) decoder row: the step then moves the direction,
        not the norm that renormalisation would undo."""
        g = self.W_dec_SFD.grad
        if g is None:
            return
        W = self.W_dec_SFD
        g.sub_((g * W).sum(dim=2, keepdim=True) * W)

    # --- export -----------------------------------------------------------------------------------------
    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """One seed's weights under sae-lens names and layout."""
        return {
            "W_enc": self.W_enc_SDF[s].detach().clone(),
            "b_enc": self.b_enc_SF[s].detach().clone(),
            "W_dec": self.W_dec_SFD[s].detach().clone(),
            "b_dec": self.b_dec_SD[s].detach().clone(),
        }

    def sae_lens_cfg(self) -> dict:
        """Architecture-specific part of a sae-lens cfg.json (subclasses add e.g. k)."""
        return {}

    @classmethod
    def from_seed_states(cls, cfg: SAEConfig, seeds: list[int], states: list[dict]) -> BatchedSAE:
        sae = cls(cfg, seeds)
        with torch.no_grad():
            sae.W_enc_SDF.copy_(torch.stack([s["W_enc"] for s in states]))
            sae.b_enc_SF.copy_(torch.stack([s["b_enc"] for s in states]))
            sae.W_dec_SFD.copy_(torch.stack([s["W_dec"] for s in states]))
            sae.b_dec_SD.copy_(torch.stack([s["b_dec"] for s in states]))
        return sae
