"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024), TopK-based.

The latents are ordered, and every nested prefix of them (sizes `matryoshka_levels`, default F/8, F/4, F/2, F)
must reconstruct the input on its own: the loss is the sum over levels of the FVU of the reconstruction that
uses only the selected latents inside that prefix. Early latents are thereby pushed toward general features
and later ones toward refinements.

husai's matryoshka selects latents with per-row TopK (not sae-lens' BatchTopK variant): the inference forward
is then exactly a TopK SAE over all F latents, which sae-lens represents ("topk"), so the checkpoint is exact
and needs no post-hoc threshold. AuxK works as in TopK on the full reconstruction.
"""

from __future__ import annotations

from husai.saes.base import TrainOut
from husai.saes.registry import register
from husai.saes.topk import TopKSAE, fired_from_indices


def default_levels(d_sae: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, d_sae // 8), max(1, d_sae // 4), max(1, d_sae // 2), d_sae}))


@register("matryoshka")
class MatryoshkaSAE(TopKSAE):
    architecture = "matryoshka"
    sae_lens_architecture = "topk"

    def __init__(self, cfg, seeds, b_dec_init_D=None):
        levels = cfg.matryoshka_levels or default_levels(cfg.d_sae)
        if list(levels) != sorted(set(levels)) or levels[0] < 1 or levels[-1] != cfg.d_sae:
            raise ValueError(f"matryoshka_levels={list(levels)} must be strictly increasing, >= 1, and end at "
                             f"d_sae={cfg.d_sae}")
        super().__init__(cfg, seeds, b_dec_init_D)
        self.levels = tuple(levels)

    def training_losses(self, x_BD, y_BD, dead_SF, scale: float, any_dead: bool = True) -> TrainOut:
        pre, take = self.pre_for_training(x_BD)
        idx = self.select_indices(pre, x_BD)
        vals = take(idx).relu()
        y_hat = self.decode_sparse(vals, idx)
        fvu_S = self.fvu(y_hat, y_BD, scale)
        prefix_S = fvu_S.new_zeros(self.n_seeds)
        for m in self.levels[:-1]:
            prefix_S = prefix_S + self.fvu(self.decode_sparse(vals * (idx < m), idx), y_BD, scale)
        aux = self.aux_loss(y_BD, y_hat, pre, dead_SF, take) if any_dead else y_hat.new_zeros(self.n_seeds)
        return TrainOut(terms={"fvu": fvu_S, "prefix_fvu": prefix_S, "aux": aux},
                        fired_SF=fired_from_indices(vals, idx, self.cfg.d_sae),
                        l0_S=(vals > 0).sum(dim=2).float().mean(dim=1), y_hat_SBD=y_hat)

    def husai_metadata(self, s: int) -> dict:
        return {**super().husai_metadata(s), "matryoshka_levels": list(self.levels),
                "inference_form": "TopK over all latents (the prefix losses shape training only)"}
