"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations, ReLU them; AuxK revives dead latents.

Training never materialises the dense latent tensor: the k (value, index) pairs per row are decoded by
gathering decoder rows (`decode_sparse`), so the decoder costs S*B*k*D instead of S*B*F*D forward and backward.
The dense `forward` (used by evaluation) computes the same function."""

from __future__ import annotations

import torch

from husai.saes.base import BatchedSAE, TrainOut
from husai.saes.registry import register
from husai.saes.topk_grad import topk_step_grads


def topk_indices(pre_SBF: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of each row (unsorted), the same set torch.topk returns up to ties.

    On CPU, torch.topk pays a per-row partial sort over all F entries. The k largest entries always lie in the
    k groups (of g latents) with the largest maxima: each of those maxima is an entry at least as
    large as the k-th largest group maximum, so an entry of any other group has k larger ones. A vectorised
    group-max pass therefore shrinks the partial sorts to F/g + k*g entries per row (35% less time for
    the embedded sizes: F 256, k 8). Elsewhere (CUDA: radix select) torch.topk is used as is."""
    *lead, F = pre_SBF.shape
    g = next((g for g in (4, 8, 16) if F % g == 0 and F // g >= 4 * k), None)
    with torch.no_grad():
        if pre_SBF.device.type != "cpu" or g is None:
            return pre_SBF.topk(k, dim=-1, sorted=False).indices
        G = F // g  # group j = latents {j, j + G, j + 2G, ...}: its max is a contiguous, vectorised reduction
        chunks = pre_SBF.view(*lead, g, G)
        top = chunks.amax(dim=-2).topk(k, dim=-1, sorted=False).indices  # [..., k] group ids
        cand = chunks.gather(-1, top.unsqueeze(-2).expand(*lead, g, k)).reshape(*lead, g * k)
        j = cand.topk(k, dim=-1, sorted=False).indices  # position i * k + m: latent i * G + top[m]
        return (j // k) * G + top.gather(-1, j % k)


def fired_from_indices(vals_SBK: torch.Tensor, idx_SBK: torch.Tensor, d_sae: int) -> torch.Tensor:
    """[S, F] bool: which latents had a non-zero value in the batch (a count, so duplicates cannot race)."""
    S = idx_SBK.shape[0]
    counts = torch.zeros(S, d_sae, device=idx_SBK.device)
    counts.scatter_add_(1, idx_SBK.reshape(S, -1), (vals_SBK.reshape(S, -1) > 0).float())
    return counts > 0


@register("topk")
class TopKSAE(BatchedSAE):
    architecture = "topk"
    sae_lens_architecture = "topk"

    def __init__(self, cfg, seeds, b_dec_init_D=None):
        if cfg.k is None:
            raise ValueError(f"{self.architecture} SAE needs k")
        super().__init__(cfg, seeds, b_dec_init_D)

    def select_indices(self, pre_SBF: torch.Tensor, x_BD: torch.Tensor) -> torch.Tensor:
        """Which k latents each row keeps: the k largest raw pre-activations (sae-lens' TopK order: select,
        then ReLU the kept values)."""
        return topk_indices(pre_SBF, self.cfg.k)

    def select(self, pre_SBF: torch.Tensor, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.select_indices(pre_SBF, x_BD)
        return pre_SBF.gather(-1, idx).relu(), idx

    def activation(self, pre_SBF: torch.Tensor) -> torch.Tensor:
        values, idx = self.select(pre_SBF, None)
        return torch.zeros_like(pre_SBF).scatter(-1, idx, values)

    def training_losses(self, x_BD, y_BD, dead_SF, scale: float, any_dead: bool = True) -> TrainOut:
        pre, take = self.pre_for_training(x_BD)
        idx = self.select_indices(pre, x_BD)
        vals = take(idx).relu()
        y_hat = self.decode_sparse(vals, idx)
        aux = self.aux_loss(y_BD, y_hat, pre, dead_SF, take) if any_dead else y_hat.new_zeros(self.n_seeds)
        return TrainOut(terms={"fvu": self.fvu(y_hat, y_BD, scale), "aux": aux},
                        fired_SF=fired_from_indices(vals, idx, self.cfg.d_sae),
                        l0_S=(vals > 0).sum(dim=2).float().mean(dim=1), y_hat_SBD=y_hat)

    def explicit_grads(self) -> bool:
        """Whether `training_step_grads` computes this class's loss: plain TopK (and the TopK transcoder), not
        subclasses that change the selection, the losses, or the decode."""
        cls = type(self)
        return all(getattr(cls, name) is getattr(TopKSAE, name) for name in
                   ("training_losses", "select_indices", "aux_loss", "decode_sparse", "pre_activation",
                    "pre_for_training", "fvu"))

    def training_step_grads(self, x_BD, y_BD, dead_SF, scale: float, any_dead: bool = True) -> TrainOut:
        """`training_losses` plus its backward, with the gradients written by hand (husai.saes.topk_grad)."""
        return topk_step_grads(self, x_BD, y_BD, dead_SF, scale, any_dead)

    def aux_loss(self, x_BD, x_hat_SBD, pre_SBF, dead_SF, take=None) -> torch.Tensor:
        """AuxK: the top-k_aux dead latents reconstruct the residual the live ones left.

        The dead latents' pre-activations are used WITHOUT a ReLU: a dead latent's pre-activation is usually
        negative, and a ReLU would give it no gradient, so it could never revive. Each seed's loss is
        normalised by its residual's power and scaled down by min(n_dead / k_aux, 1) when few are dead.
        With no dead latent at all it is exactly zero (the trainer skips it then on CPU, where knowing
        that costs no device sync). `take(idx)` returns chosen pre-activations with a gradient (see
        BatchedSAE.pre_for_training); by default they are gathered from pre_SBF."""
        if self.cfg.aux_k_coefficient == 0:
            return x_hat_SBD.new_zeros(self.n_seeds)
        k_aux = min(self.cfg.aux_k or max(1, self.cfg.d_in // 2), self.cfg.d_sae)
        n_dead_S = dead_SF.sum(dim=1)
        resid_SBD = (x_BD.unsqueeze(0) - x_hat_SBD).detach()
        with torch.no_grad():
            masked = pre_SBF.masked_fill(~dead_SF.unsqueeze(1), float("-inf"))
            top, idx = masked.topk(k_aux, dim=-1, sorted=False)
        # Seeds with fewer than k_aux dead latents pick some live ones at -inf: they contribute nothing.
        values = (take or (lambda i: pre_SBF.gather(-1, i)))(idx) * torch.isfinite(top).to(pre_SBF.dtype)
        resid_hat = self.decode_sparse(values, idx, bias=False)
        num = ((resid_hat - resid_SBD) ** 2).sum(dim=(1, 2))
        den = (resid_SBD ** 2).sum(dim=(1, 2)).clamp_min(1e-12)
        scale_S = (n_dead_S.to(num.dtype) / k_aux).clamp(max=1.0)
        return self.cfg.aux_k_coefficient * scale_S * num / den

    def sae_lens_cfg(self) -> dict:
        return {"k": int(self.cfg.k), "rescale_acts_by_decoder_norm": False}
