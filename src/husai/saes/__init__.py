"""SAE architectures, one file each, registered by name."""

from husai.saes import batchtopk, jumprelu, matryoshka, relu, routed, topk, transcoder  # noqa: F401  (registers)
from husai.saes.base import BatchedSAE, SAEConfig, TrainOut, init_decoder_rows
from husai.saes.registry import architectures, get_architecture

__all__ = ["BatchedSAE", "SAEConfig", "TrainOut", "architectures", "get_architecture", "init_decoder_rows",
           "build_sae", "TRANSCODERS"]

TRANSCODERS = ("transcoder", "jumprelu_transcoder", "topk_transcoder")


def build_sae(cfg: SAEConfig, seeds: list[int], b_dec_init_D=None) -> BatchedSAE:
    return get_architecture(cfg.architecture)(cfg, seeds, b_dec_init_D)
