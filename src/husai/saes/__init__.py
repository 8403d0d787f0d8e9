"""SAE architectures, one file each, registered by name."""

from husai.saes import relu, topk  # noqa: F401  (importing registers them)
from husai.saes.base import BatchedSAE, SAEConfig, init_decoder_rows
from husai.saes.registry import architectures, get_architecture

__all__ = ["BatchedSAE", "SAEConfig", "architectures", "get_architecture", "init_decoder_rows", "build_sae"]


def build_sae(cfg: SAEConfig, seeds: list[int], b_dec_init_D=None) -> BatchedSAE:
    return get_architecture(cfg.architecture)(cfg, seeds, b_dec_init_D)
