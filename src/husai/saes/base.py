"""The seed-batched SAE: S independent SAEs as one module with a leading seed dimension.

Every parameter carries the seed axis first (`W_enc_SDF`, `W_dec_SFD`, ...). All seeds see the same input
batch, but nothing couples them: losses are per seed ([S]) and summed, so each seed's gradient is exactly what
it would be alone, and Adam is elementwise. Training S seeds together therefore equals training each alone
(tests/saes/test_batched.py checks it). The seed axis can also carry one seed's init under a grid of sparsity
coefficients (`coef_S`), which is how husai.calibration searches for a matched L0 in one batched run.

The forward pass is the sae-lens one (`apply_b_dec_to_input=True`, no activation normalisation):
    pre = (x - b_dec) @ W_enc + b_enc;  f = act(pre);  x_hat = f @ W_dec + b_dec
so a per-seed slice exported with `seed_state` loads in `sae_lens.SAE.load_from_disk` and computes the same
function. Transcoders (`apply_b_dec_to_input = False`) map x to a target y of width d_out instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F_


@dataclass(frozen=True)
class SAEConfig:
    architecture: str
    d_in: int
    d_sae: int
    k: int | None = None  # TopK/BatchTopK/matryoshka/routed: active latents; ReLU/JumpReLU: the target L0
    l1_coefficient: float = 0.0  # ReLU (and ReLU transcoder): L1 weight
    aux_k_coefficient: float = 1.0 / 32  # TopK family: weight of the AuxK dead-latent loss
    aux_k: int | None = None  # TopK family: latents used by AuxK (default d_in // 2)
    dead_after_steps: int = 100  # a latent that has not fired for this many steps counts as dead
    l0_coefficient: float = 0.0  # JumpReLU: weight of the (straight-through) L0 penalty
    jumprelu_bandwidth: float = 0.05  # JumpReLU STE kernel width, in units of the data's per-direction RMS
    jumprelu_init_threshold: float = 0.01  # JumpReLU initial threshold, same units
    batchtopk_threshold_window: float = 0.25  # BatchTopK: final fraction of steps the inference threshold averages
    matryoshka_levels: tuple = ()  # matryoshka: nested prefix sizes, last = d_sae (default F/8, F/4, F/2, F)
    n_experts: int = 0  # routed: number of contiguous latent slices a router chooses between
    router_balance_coefficient: float = 1.0  # routed: Switch load-balancing weight, relative to the router CE
    d_out: int | None = None  # transcoders: width of the output hook (default d_in)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.k is not None and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be between 1 and d_sae={self.d_sae}")
        for name in ("l1_coefficient", "l0_coefficient", "aux_k_coefficient", "router_balance_coefficient"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.jumprelu_bandwidth <= 0 or self.jumprelu_init_threshold < 0:
            raise ValueError("jumprelu_bandwidth must be > 0 and jumprelu_init_threshold >= 0")
        if not 0 < self.batchtopk_threshold_window <= 1:
            raise ValueError(f"batchtopk_threshold_window must be in (0, 1], got {self.batchtopk_threshold_window}")
        if self.d_out is not None and self.d_out < 1:
            raise ValueError(f"d_out must be positive, got {self.d_out}")
        object.__setattr__(self, "matryoshka_levels", tuple(int(m) for m in self.matryoshka_levels))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["matryoshka_levels"] = list(self.matryoshka_levels)
        return d


def init_decoder_rows(d_sae: int, d_in: int, generator: torch.Generator) -> torch.Tensor:
    """The init scheme shared by every architecture: Gaussian rows scaled to unit norm."""
    W = torch.randn((d_sae, d_in), generator=generator, dtype=torch.float32)
    return W / W.norm(dim=1, keepdim=True)


@dataclass
class TrainOut:
    """What one training forward returns: per-seed loss terms (summed into the loss), the latents that fired
    ([S, F] bool), the per-seed L0 and logged-only metrics (each [S] or [S, ...])."""

    terms: dict
    fired_SF: torch.Tensor
    l0_S: torch.Tensor
    metrics: dict = field(default_factory=dict)
    y_hat_SBD: torch.Tensor | None = None


class BatchedSAE(nn.Module):
    """Base class. Subclasses define `activation` and, where they need one, `sparsity_loss`/`aux_loss`, or a
    whole sparse `training_losses`."""

    architecture: str = ""
    sae_lens_architecture: str | None = None  # None: sae-lens cannot represent it exactly
    apply_b_dec_to_input: bool = True  # False for transcoders (sae-lens requires it there)
    sparsity_coefficient_field: str | None = None  # the SAEConfig field that husai.calibration tunes
    extra_exports: dict[str, str] = {}  # sae-lens tensor name -> attribute with a leading seed axis
    EXPORTS = {"W_enc": "W_enc_SDF", "b_enc": "b_enc_SF", "W_dec": "W_dec_SFD", "b_dec": "b_dec_SD"}

    def __init__(self, cfg: SAEConfig, seeds: list[int], b_dec_init_D: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.seeds = list(seeds)
        S, D, F, O = len(seeds), cfg.d_in, cfg.d_sae, self.d_out_of(cfg)
        W_dec, W_enc, self._generators = [], [], []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            self._generators.append(g)  # subclasses draw their extra parameters from here, after the shared init
            W_dec.append(init_decoder_rows(F, O, g))
            # Tied init (W_enc = W_dec^T) wherever the shapes allow it; a transcoder into a different width
            # draws its encoder from the same seed's generator.
            W_enc.append(W_dec[-1].T.clone() if O == D else init_decoder_rows(F, D, g).T.contiguous())
        self.W_dec_SFD = nn.Parameter(torch.stack(W_dec))
        self.W_enc_SDF = nn.Parameter(torch.stack(W_enc))
        self.b_enc_SF = nn.Parameter(torch.zeros(S, F))
        b_dec = torch.zeros(O) if b_dec_init_D is None else torch.as_tensor(b_dec_init_D, dtype=torch.float32)
        self.b_dec_SD = nn.Parameter(b_dec.expand(S, O).clone())
        coef = float(getattr(cfg, self.sparsity_coefficient_field)) if self.sparsity_coefficient_field else 0.0
        self.register_buffer("coef_S", torch.full((S,), coef), persistent=False)
        self.compute_dtype = torch.float32
        self.unit = 1.0  # per-direction RMS of the training input; set by init_from_data_

    @staticmethod
    def d_out_of(cfg: SAEConfig) -> int:
        return cfg.d_in

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def sae_lens_exact(self) -> bool:
        """Whether sae-lens computes exactly the forward pass husai trained and evaluates."""
        return self.sae_lens_architecture is not None

    @classmethod
    def state_shapes(cls, cfg: SAEConfig) -> dict[str, tuple]:
        """The tensors (and shapes) of one exported seed, for validating a checkpoint before loading it."""
        D, F, O = cfg.d_in, cfg.d_sae, cls.d_out_of(cfg)
        return {"W_enc": (D, F), "b_enc": (F,), "W_dec": (F, O), "b_dec": (O,)}

    # --- set-up ------------------------------------------------------------------------------------------
    def set_sparsity_coefficients_(self, coef_S) -> None:
        """One sparsity coefficient per slice of the seed axis (calibration grids ride on it)."""
        if self.sparsity_coefficient_field is None:
            raise ValueError(f"{self.architecture}: has no sparsity coefficient to set")
        coef_S = torch.as_tensor(coef_S, dtype=torch.float32).reshape(-1)
        if coef_S.shape[0] != self.n_seeds or bool((coef_S < 0).any()):
            raise ValueError(f"need {self.n_seeds} non-negative coefficients, got {coef_S.tolist()}")
        self.coef_S = coef_S.to(self.coef_S.device)

    def init_from_data_(self, scale_in: float) -> None:
        """Called once by the trainer with the RMS distance of the inputs to their mean (before any resume)."""
        self.unit = float(scale_in) / math.sqrt(self.cfg.d_in)

    # --- the forward pass ----------------------------------------------------------------------------------
    def encoder_bias(self) -> torch.Tensor:
        """c = b_enc - b_dec @ W_enc (b_enc alone for transcoders), so that pre = x @ W_enc + c."""
        if not self.apply_b_dec_to_input:
            return self.b_enc_SF
        return self.b_enc_SF - torch.bmm(self.b_dec_SD.unsqueeze(1), self.W_enc_SDF).squeeze(1)

    def pre_activation(self, x_BD: torch.Tensor, c_SF: torch.Tensor | None = None) -> torch.Tensor:
        """(x - b_dec) @ W_enc + b_enc, computed as x @ W_enc + (b_enc - b_dec @ W_enc): x is shared by every
        seed, and b_dec's gradient through the encoder then costs an [S,F]x[S,F,D] product instead of a dense
        [S,B,F]x[S,F,D] one."""
        cd = self.compute_dtype
        c_SF = self.encoder_bias() if c_SF is None else c_SF
        x_SBD = x_BD.to(cd).unsqueeze(0).expand(self.n_seeds, -1, -1)
        return torch.baddbmm(c_SF.unsqueeze(1).to(cd), x_SBD, self.W_enc_SDF.to(cd))

    def pre_for_training(self, x_BD: torch.Tensor):
        """Dense pre-activations for choosing latents, and `take(idx_SBK)`: the chosen ones, with a gradient.

        The one seam for a sparse encoder gradient (only the k chosen columns per row receive g * x). On CPU
        that (an index_add) measured 7% slower than the dense x^T @ grad_pre GEMM at the embedded sizes, so
        the dense product keeps its graph everywhere; see benchmarks/README_training.md."""
        pre = self.pre_activation(x_BD)
        return pre, lambda idx: pre.gather(-1, idx)

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_with_pre(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_activation(x_BD)
        return self.activation(pre), pre

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.encode_with_pre(x_BD)[0]

    def decode(self, f_SBF: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        return torch.baddbmm(self.b_dec_SD.unsqueeze(1).to(cd), f_SBF.to(cd), self.W_dec_SFD.to(cd)).float()

    def decode_sparse(self, vals_SBK: torch.Tensor, idx_SBK: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Decode K (value, latent) pairs per row as a weighted sum of gathered decoder rows (embedding_bag):
        S*B*K*D work instead of a dense S*B*F*D product over mostly zeros, and a backward that only touches
        the selected rows."""
        S, B, K = idx_SBK.shape
        F, O = self.cfg.d_sae, self.W_dec_SFD.shape[2]
        cd = self.compute_dtype
        flat = (idx_SBK + torch.arange(S, device=idx_SBK.device).view(S, 1, 1) * F).reshape(S * B, K)
        out = F_.embedding_bag(flat, self.W_dec_SFD.to(cd).reshape(S * F, O), mode="sum",
                               per_sample_weights=vals_SBK.to(cd).reshape(S * B, K)).view(S, B, O).float()
        return out + self.b_dec_SD.unsqueeze(1) if bias else out

    def forward(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f, pre = self.encode_with_pre(x_BD)
        return self.decode(f), f, pre

    # --- losses (per seed, shape [S]) ------------------------------------------------------------------------
    @staticmethod
    def fvu(y_hat_SBD: torch.Tensor, y_BD: torch.Tensor, scale: float) -> torch.Tensor:
        return ((y_hat_SBD - y_BD.unsqueeze(0)) ** 2).sum(dim=2).mean(dim=1) / scale**2

    def sparsity_loss(self, f_SBF: torch.Tensor, pre_SBF: torch.Tensor, scale: float) -> torch.Tensor:
        return f_SBF.new_zeros(self.n_seeds)

    def aux_loss(self, x_BD, x_hat_SBD, pre_SBF, dead_SF) -> torch.Tensor:
        return x_hat_SBD.new_zeros(self.n_seeds)

    def training_losses(self, x_BD, y_BD, dead_SF, scale: float, any_dead: bool = True) -> TrainOut:
        """Dense path: every architecture whose latents are not a fixed-size sparse selection."""
        f, pre = self.encode_with_pre(x_BD)
        y_hat = self.decode(f)
        aux = self.aux_loss(y_BD, y_hat, pre, dead_SF) if any_dead else y_hat.new_zeros(self.n_seeds)
        active = f != 0
        return TrainOut(terms={"fvu": self.fvu(y_hat, y_BD, scale), "sparsity": self.sparsity_loss(f, pre, scale),
                               "aux": aux},
                        fired_SF=active.any(dim=1), l0_S=active.sum(dim=2).float().mean(dim=1), y_hat_SBD=y_hat)

    # --- hooks the trainer calls -----------------------------------------------------------------------------
    @torch.no_grad()
    def post_step_(self, step: int, n_steps: int, out: TrainOut) -> None:
        """After each optimiser step (e.g. clamp a threshold, accumulate a statistic)."""

    @torch.no_grad()
    def finalize_(self, log: dict) -> None:
        """After the last training step (e.g. estimate an inference threshold); may add entries to `log`."""

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

    # --- export -----------------------------------------------------------------------------------------------
    def _exports(self) -> dict[str, str]:
        return {**self.EXPORTS, **self.extra_exports}

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """One seed's weights under sae-lens names and layout (plus e.g. `threshold`)."""
        return {name: getattr(self, attr)[s].detach().float().cpu().clone() for name, attr in self._exports().items()}

    def sae_lens_cfg(self) -> dict:
        """Architecture-specific part of a sae-lens cfg.json (subclasses add e.g. k)."""
        return {}

    def husai_metadata(self, s: int) -> dict:
        """What cfg.json's metadata.husai should say about this architecture's forward pass."""
        return {"sae_lens_exact": self.sae_lens_exact,
                "sae_lens_architecture": self.sae_lens_architecture}

    @classmethod
    def from_seed_states(cls, cfg: SAEConfig, seeds: list[int], states: list[dict]) -> BatchedSAE:
        sae = cls(cfg, seeds)
        with torch.no_grad():
            for name, attr in sae._exports().items():
                if name not in states[0]:
                    raise KeyError(f"{cfg.architecture} checkpoint lacks tensor {name!r} (has {sorted(states[0])})")
                getattr(sae, attr).copy_(torch.stack([st[name] for st in states]))
        return sae
