"""Transcoders (Dunefsky et al. 2024): encode the activation at an input hook (e.g. MLP in), decode the one at
an output hook (e.g. MLP out), trained on (x_in, y_out) pairs (`train_seed_batched(..., targets_ND=y)`).

    pre = x @ W_enc + b_enc;  f = act(pre);  y_hat = f @ W_dec + b_dec      (W_dec [d_sae, d_out])

There is no b_dec subtraction on the input (b_dec lives in the output space), which is sae-lens'
`apply_b_dec_to_input=False`, the only setting its transcoders accept. Three sparsity mechanisms:

- "transcoder": ReLU + L1 (calibrated to a target L0 like relu); sae-lens "transcoder", exact.
- "jumprelu_transcoder": JumpReLU + STE L0 penalty; sae-lens "jumprelu_transcoder", exact.
- "topk_transcoder": TopK + AuxK; sae-lens has no TopK transcoder, so cfg.json keeps "topk_transcoder"
  (not loadable there) and says `sae_lens_exact: false`.

sae-lens transcoders are inference-only; husai trains them with its own seed-batched engine.
"""

from __future__ import annotations

from husai.saes.jumprelu import JumpReLUSAE
from husai.saes.registry import register
from husai.saes.relu import ReLUSAE
from husai.saes.topk import TopKSAE


class _TranscoderMixin:
    apply_b_dec_to_input = False

    @staticmethod
    def d_out_of(cfg) -> int:
        return cfg.d_out or cfg.d_in

    def sae_lens_cfg(self) -> dict:
        return {**super().sae_lens_cfg(), "d_out": self.d_out_of(self.cfg), "apply_b_dec_to_input": False}

    def husai_metadata(self, s: int) -> dict:
        return {**super().husai_metadata(s), "transcoder": True, "d_out": self.d_out_of(self.cfg)}


@register("transcoder")
class ReLUTranscoder(_TranscoderMixin, ReLUSAE):
    architecture = "transcoder"
    sae_lens_architecture = "transcoder"


@register("jumprelu_transcoder")
class JumpReLUTranscoder(_TranscoderMixin, JumpReLUSAE):
    architecture = "jumprelu_transcoder"
    sae_lens_architecture = "jumprelu_transcoder"


@register("topk_transcoder")
class TopKTranscoder(_TranscoderMixin, TopKSAE):
    architecture = "topk_transcoder"
    sae_lens_architecture = None
