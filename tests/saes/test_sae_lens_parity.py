"""Every checkpoint sae-lens can represent loads in sae_lens.SAE.load_from_disk unchanged and computes husai's
own forward within 1e-5; the ones it cannot represent say so in cfg.json and are refused by sae-lens (so
nothing evaluates them as a different architecture)."""

import inspect
import json

import pytest
import torch
from saes_helpers import cfg_for, targets_for

import husai.checkpoint
from husai.checkpoint import load_seed, save_seed
from husai.saes import SAEConfig
from husai.training import TrainConfig, train_seed_batched

META = {"model_name": "test", "hook_name": "blocks.0.hook_resid_post"}
EXACT = {"relu": "StandardSAE", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE", "batchtopk": "JumpReLUSAE",
         "matryoshka": "TopKSAE", "transcoder": "Transcoder", "jumprelu_transcoder": "JumpReLUTranscoder"}
NOT_REPRESENTABLE = ["routed", "topk_transcoder"]
# checkpoint.py forwards the architecture's own metadata (sae.husai_metadata) once the lead wires it in.
WIRED = "husai_metadata" in inspect.getsource(husai.checkpoint)
# ... and validates shapes with the architecture's own state_shapes (transcoders with d_out != d_in).
WIRED_SHAPES = "state_shapes" in inspect.getsource(husai.checkpoint)


def _train(arch, d_out=None):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 16, generator=g) + 0.5
    over = {"d_out": d_out} if d_out else {}
    cfg = cfg_for(arch, d_in=16, d_sae=48, **over)
    y = targets_for(arch, x, d_out=cfg.d_out or 16)
    sae, _ = train_seed_batched(cfg, TrainConfig(steps=40, batch_size=64), x, [4, 9], targets_ND=y)
    return sae, x


@pytest.mark.parametrize("arch", sorted(EXACT))
def test_sae_lens_loads_and_matches(tmp_path, arch):
    pytest.importorskip("sae_lens")
    from sae_lens import SAE

    sae, x = _train(arch, d_out=11 if "transcoder" in arch else None)
    save_seed(sae, 1, tmp_path, META)
    theirs = SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == EXACT[arch]
    x_hat, f, _ = sae(x)  # husai's forward, seed index 1
    assert 0 < (f[1] != 0).float().sum(1).mean() < 48  # a sparse code, not a trivial one
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), f[1], rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs.decode(f[1]), x_hat[1], rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs(x), x_hat[1], rtol=0, atol=1e-5)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["metadata"]["husai"]["seed"] == 9
    assert cfg["metadata"]["husai"]["sae_lens_exact"] == (arch != "batchtopk") or not WIRED


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "batchtopk", "matryoshka", "routed", "transcoder"])
def test_husai_reload_is_the_saved_seed(tmp_path, arch):
    """load_seed (what every evaluator uses) rebuilds the very function that was trained and exported."""
    sae, x = _train(arch, d_out=16 if arch == "transcoder" else None)
    save_seed(sae, 1, tmp_path, META)
    ours = load_seed(tmp_path)
    theirs = sae.seed_state(1)
    assert set(ours.seed_state(0)) == set(theirs)
    for name, p in ours.seed_state(0).items():
        torch.testing.assert_close(p, theirs[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(ours(x)[0][0], sae(x)[0][1], rtol=0, atol=1e-6)



def test_husai_reloads_transcoder_into_another_width(tmp_path):
    sae, x = _train("topk_transcoder", d_out=11)
    save_seed(sae, 0, tmp_path, META)
    torch.testing.assert_close(load_seed(tmp_path)(x)[0][0], sae(x)[0][0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", NOT_REPRESENTABLE)
def test_unrepresentable_says_so_and_sae_lens_refuses(tmp_path, arch):
    pytest.importorskip("sae_lens")
    from sae_lens import SAE

    sae, _ = _train(arch)
    save_seed(sae, 0, tmp_path, META)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["metadata"]["husai"]["sae_lens_exact"] is False
    with pytest.raises(KeyError, match=arch):
        SAE.load_from_disk(tmp_path)



def test_batchtopk_cfg_names_both_forms(tmp_path):
    sae, _ = _train("batchtopk")
    save_seed(sae, 0, tmp_path, META)
    husai_meta = json.loads((tmp_path / "cfg.json").read_text())["metadata"]["husai"]
    assert husai_meta["sae_lens_exact"] is False
    assert husai_meta["training_form"].startswith("batchtopk") and husai_meta["inference_form"].startswith("jumprelu")
    assert husai_meta["inference_threshold"] > 0


def test_checkpoint_refuses_pickle_truncation_and_wrong_shape(tmp_path):
    from husai.io import SafetensorsFormatError, save_safetensors

    sae, _ = train_seed_batched(SAEConfig("topk", 8, 16, k=2), TrainConfig(steps=2, batch_size=8),
                                torch.randn(32, 8), [0])
    save_seed(sae, 0, tmp_path, {"model_name": "t", "hook_name": "h"})
    w = tmp_path / "sae_weights.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])
    with pytest.raises(SafetensorsFormatError, match="sae_weights.safetensors"):
        load_seed(tmp_path)
    torch.save({"W_enc": torch.zeros(8, 16)}, w)  # a pickle where safetensors belongs
    with pytest.raises(SafetensorsFormatError, match="pickle"):
        load_seed(tmp_path)
    state = sae.seed_state(0)
    state["W_dec"] = torch.zeros(16, 9)
    save_safetensors(w, state)
    with pytest.raises(SafetensorsFormatError, match="'W_dec' has shape"):
        load_seed(tmp_path)
