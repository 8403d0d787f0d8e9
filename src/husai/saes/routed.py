"""Routed (expert-TopK) SAE, in the spirit of the Switch SAE (Mudide et al. 2024).

The F latents are split into `n_experts` contiguous slices of F/E. A linear router on x - b_dec picks one
slice per input (the argmax of its logits), and TopK runs inside that slice only: f is a plain TopK code whose
support lies in one expert's slice, decoded by the shared W_dec (rows stay feature directions).

How the router learns. A Switch-style gate (scaling the output by the router probability) gives the router
only a weak signal, and in tests it settled on routes unrelated to the data. Instead, each step also scores
every expert's own TopK reconstruction of the row and trains the router (cross-entropy) to pick the expert that
reconstructs it best; this oracle is training-only, inference routes by the router alone, so the trained and
exported forward is the router's. A Switch load-balancing loss, `router_balance_coefficient` * E *
sum_e usage_e * mean_prob_e (1 at an even split), keeps it from collapsing onto one expert; since the router
learns only from these two terms and Adam is scale-free, that coefficient is the balance-vs-fit ratio. Too
large a value forces an even but arbitrary split, too small lets experts starve: tests/saes/test_routed.py
checks both failure modes are avoided on data with planted clusters. Routing entropy, expert usage and router
confidence are logged per seed.

sae-lens has no routed SAE: cfg.json keeps architecture "routed" (which sae-lens refuses to load, so nothing
evaluates it as something else) and says `sae_lens_exact: false`; the router ships as extra tensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from husai.saes.base import TrainOut
from husai.saes.registry import register
from husai.saes.topk import TopKSAE, fired_from_indices


@register("routed")
class RoutedSAE(TopKSAE):
    architecture = "routed"
    sae_lens_architecture = None
    extra_exports = {"W_router": "W_router_SDE", "b_router": "b_router_SE"}

    def __init__(self, cfg, seeds, b_dec_init_D=None):
        E = cfg.n_experts
        if E < 2 or cfg.d_sae % E:
            raise ValueError(f"routed SAE needs n_experts >= 2 dividing d_sae={cfg.d_sae}, got n_experts={E}")
        if cfg.k is None or cfg.k > cfg.d_sae // E:
            raise ValueError(f"routed SAE: k={cfg.k} must be at most the expert size d_sae/n_experts={cfg.d_sae // E}")
        super().__init__(cfg, seeds, b_dec_init_D)
        # Drawn from each seed's generator after the shared init, so W_enc/W_dec start as in every architecture.
        W = [torch.randn(cfg.d_in, E, generator=g) / math.sqrt(cfg.d_in) for g in self._generators]
        self.W_router_SDE = nn.Parameter(torch.stack(W))
        self.b_router_SE = nn.Parameter(torch.zeros(len(seeds), E))

    @classmethod
    def state_shapes(cls, cfg) -> dict[str, tuple]:
        return {**super().state_shapes(cfg), "W_router": (cfg.d_in, cfg.n_experts), "b_router": (cfg.n_experts,)}

    def init_from_data_(self, scale_in: float) -> None:
        """Router logits start at O(1) whatever the scale of the data."""
        super().init_from_data_(scale_in)
        with torch.no_grad():
            self.W_router_SDE.div_(self.unit)

    def route(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen expert [S, B] and the router's logits [S, B, E]. b_dec enters detached: the router's losses
        must not move the decoder bias."""
        xc_SBD = x_BD.unsqueeze(0) - self.b_dec_SD.detach().unsqueeze(1)
        logits = torch.baddbmm(self.b_router_SE.unsqueeze(1), xc_SBD, self.W_router_SDE)
        return logits.argmax(dim=-1), logits

    def _expert_topk(self, pre_SBF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK inside every expert's slice, without a graph: values and global latent indices, [S, B, E, k]."""
        S, B, F = pre_SBF.shape
        E, size = self.cfg.n_experts, F // self.cfg.n_experts
        with torch.no_grad():
            vals, j = pre_SBF.view(S, B, E, size).topk(self.cfg.k, dim=-1, sorted=False)
        return vals.relu(), j + (torch.arange(E, device=j.device) * size).view(1, 1, E, 1)

    @staticmethod
    def _pick(t_SBEK: torch.Tensor, expert_SB: torch.Tensor) -> torch.Tensor:
        S, B, _, K = t_SBEK.shape
        return t_SBEK.gather(2, expert_SB.view(S, B, 1, 1).expand(S, B, 1, K)).squeeze(2)

    def select_indices(self, pre_SBF: torch.Tensor, x_BD: torch.Tensor) -> torch.Tensor:
        return self._pick(self._expert_topk(pre_SBF)[1], self.route(x_BD)[0])

    def encode_with_pre(self, x_BD: torch.Tensor):
        pre = self.pre_activation(x_BD)
        vals, idx = self.select(pre, x_BD)
        return torch.zeros_like(pre).scatter(-1, idx, vals), pre

    def routing_stats(self, expert_SB: torch.Tensor, probs_SBE: torch.Tensor) -> dict:
        """Expert usage [S, E], its entropy / log E [S] (1 = even), router confidence and per-token entropy."""
        E = self.cfg.n_experts
        usage = torch.nn.functional.one_hot(expert_SB, E).float().mean(dim=1)
        ent = -(usage * usage.clamp_min(1e-12).log()).sum(dim=1) / math.log(E)
        tok_ent = -(probs_SBE * probs_SBE.clamp_min(1e-12).log()).sum(dim=2).mean(dim=1) / math.log(E)
        return {"expert_usage": usage, "usage_entropy": ent, "router_confidence": probs_SBE.amax(dim=2).mean(dim=1),
                "token_routing_entropy": tok_ent}

    def training_losses(self, x_BD, y_BD, dead_SF, scale: float, any_dead: bool = True) -> TrainOut:
        S, B = self.n_seeds, x_BD.shape[0]
        E, k = self.cfg.n_experts, self.cfg.k
        pre, take = self.pre_for_training(x_BD)
        expert, logits = self.route(x_BD)
        vals_E, idx_E = self._expert_topk(pre)
        idx = self._pick(idx_E, expert)
        vals = take(idx).relu()
        y_hat = self.decode_sparse(vals, idx)
        with torch.no_grad():  # the oracle: which expert's own TopK code reconstructs each row best
            y_all = self.decode_sparse(vals_E.reshape(S, B * E, k), idx_E.reshape(S, B * E, k)).view(S, B, E, -1)
            best = ((y_all - y_BD.view(1, B, 1, -1)) ** 2).sum(dim=-1).argmin(dim=-1)
        probs = logits.softmax(dim=-1)
        router_ce = torch.nn.functional.cross_entropy(logits.reshape(S * B, E), best.reshape(-1),
                                                      reduction="none").view(S, B).mean(dim=1)
        stats = {k_: v.detach() for k_, v in self.routing_stats(expert, probs).items()}
        stats["oracle_agreement"] = (best == expert).float().mean(dim=1)
        balance = self.cfg.router_balance_coefficient * E * (stats["expert_usage"] * probs.mean(dim=1)).sum(dim=1)
        aux = self.aux_loss(y_BD, y_hat, pre, dead_SF, take) if any_dead else y_hat.new_zeros(S)
        return TrainOut(terms={"fvu": self.fvu(y_hat, y_BD, scale), "aux": aux, "router": router_ce,
                               "balance": balance},
                        fired_SF=fired_from_indices(vals, idx, self.cfg.d_sae),
                        l0_S=(vals > 0).sum(dim=2).float().mean(dim=1), metrics=stats, y_hat_SBD=y_hat)

    def sae_lens_cfg(self) -> dict:
        return {"k": int(self.cfg.k), "n_experts": int(self.cfg.n_experts)}

    def husai_metadata(self, s: int) -> dict:
        return {"sae_lens_exact": False, "sae_lens_architecture": None,
                "note": "sae-lens has no routed SAE; architecture 'routed' is not loadable there by design",
                "n_experts": int(self.cfg.n_experts), "router_tensors": ["W_router", "b_router"]}
