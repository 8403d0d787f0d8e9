"""Per-seed checkpoints in the sae-lens on-disk format: `sae_weights.safetensors` + `cfg.json`.

`sae_lens.SAE.load_from_disk(dir)` loads them unchanged; husai-specific facts (its architecture name,
seed, condition, training config, whether sae-lens represents the forward exactly) live under
`cfg.json["metadata"]["husai"]`, which sae-lens carries along without interpreting.
"""

from __future__ import annotations

from pathlib import Path

import torch

from husai.io import load_safetensors, read_json, save_safetensors, sha256_file, write_json
from husai.saes import BatchedSAE, SAEConfig, get_architecture

WEIGHTS = "sae_weights.safetensors"
CFG = "cfg.json"


def sae_lens_cfg(sae: BatchedSAE, seed: int, metadata: dict, s: int | None = None) -> dict:
    c = sae.cfg
    s = sae.seeds.index(seed) if s is None else s
    return {
        "architecture": sae.sae_lens_architecture or c.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **sae.sae_lens_cfg(),
        "metadata": {
            **{k: v for k, v in metadata.items() if k != "husai"},
            "husai": {
                **metadata.get("husai", {}),
                "architecture": c.architecture,
                "sae_config": c.to_dict(),
                "seed": int(seed),
                **sae.husai_metadata(s),
                "layout": "W_dec [d_sae, d_in], rows are feature directions",
            },
        },
    }


def save_seed(sae: BatchedSAE, s: int, out_dir: str | Path, metadata: dict) -> dict:
    """Write seed index s of a batched SAE; returns {'weights_sha256': ...}."""
    out_dir = Path(out_dir)
    save_safetensors(out_dir / WEIGHTS, sae.seed_state(s))
    write_json(out_dir / CFG, sae_lens_cfg(sae, sae.seeds[s], metadata, s))
    return {"weights_sha256": sha256_file(out_dir / WEIGHTS)}


def load_seed(ckpt_dir: str | Path, expected_sha256: str | None = None) -> BatchedSAE:
    """Load one checkpoint as a one-seed husai SAE; refuses pickles, wrong shapes and checksum mismatches."""
    from husai.io import verify_sha256

    ckpt_dir = Path(ckpt_dir)
    cfg_json = read_json(ckpt_dir / CFG)
    info = cfg_json.get("metadata", {}).get("husai")
    if not info:
        raise ValueError(f"{ckpt_dir / CFG}: not a husai checkpoint (no metadata.husai)")
    cfg = SAEConfig(**info["sae_config"])
    if expected_sha256:
        verify_sha256(ckpt_dir / WEIGHTS, expected_sha256, what="SAE checkpoint")
    cls = get_architecture(cfg.architecture)
    state = load_safetensors(ckpt_dir / WEIGHTS, expected=cls.state_shapes(cfg))
    return cls.from_seed_states(cfg, [info["seed"]], [state])


@torch.no_grad()
def decoder_rows(ckpt_dir: str | Path) -> torch.Tensor:
    return load_seed(ckpt_dir).W_dec_SFD[0].clone()
