"""A husai checkpoint loads in sae_lens.SAE.load_from_disk unchanged and computes husai's own forward."""

import pytest
import torch

from husai.checkpoint import load_seed, save_seed
from husai.saes import SAEConfig
from husai.training import TrainConfig, train_seed_batched


@pytest.mark.parametrize("arch,extra", [("topk", {"k": 5}), ("relu", {"k": 5, "l1_coefficient": 0.05})])
def test_sae_lens_loads_and_matches(tmp_path, arch, extra):
    pytest.importorskip("sae_lens")
    from sae_lens import SAE

    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 16, generator=g) + 0.5
    sae, _ = train_seed_batched(SAEConfig(arch, 16, 48, **extra), TrainConfig(steps=40, batch_size=64), x, [4, 9])
    meta = {"model_name": "test", "hook_name": "blocks.0.hook_resid_post"}
    save_seed(sae, 1, tmp_path, meta)
    theirs = SAE.load_from_disk(tmp_path)
    ours = load_seed(tmp_path)
    x_hat, f, _ = ours(x)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), f[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs.decode(f[0]), x_hat[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs(x), x_hat[0], rtol=0, atol=1e-5)
    # the reloaded husai SAE is the seed that was saved
    torch.testing.assert_close(ours.W_dec_SFD[0], sae.W_dec_SFD[1], rtol=0, atol=0)
    import json

    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["metadata"]["husai"]["seed"] == 9 and cfg["metadata"]["husai"]["sae_lens_exact"]


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
