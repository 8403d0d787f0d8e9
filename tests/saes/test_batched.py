"""Seed-batched training equals training each seed alone; resuming from periodic state is bit-identical."""

from dataclasses import replace

import pytest
import torch

from husai.saes import SAEConfig, architectures
from husai.training import NonFiniteLossError, TrainConfig, train_seed_batched


def _data(n=600, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_seed_batched_equals_solo(arch):
    x = _data()
    cfg = SAEConfig(arch, 12, 32, k=4, l1_coefficient=0.05, dead_after_steps=5)
    tc = TrainConfig(steps=60, batch_size=64, lr=3e-3, warmup_steps=5)
    batched, _ = train_seed_batched(cfg, tc, x, [3, 7, 11])
    for s, seed in enumerate([3, 7, 11]):
        solo, _ = train_seed_batched(cfg, tc, x, [seed])
        for name in ("W_enc_SDF", "b_enc_SF", "W_dec_SFD", "b_dec_SD"):
            torch.testing.assert_close(getattr(solo, name)[0], getattr(batched, name)[s], rtol=0, atol=1e-6)


def test_seeds_differ_only_by_init_and_decoder_rows_stay_unit_norm():
    x = _data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    sae, _ = train_seed_batched(cfg, TrainConfig(steps=20, batch_size=64), x, [0, 1])
    assert not torch.allclose(sae.W_dec_SFD[0], sae.W_dec_SFD[1])
    torch.testing.assert_close(sae.W_dec_SFD.norm(dim=2), torch.ones(2, 32), rtol=0, atol=1e-5)


def test_resume_after_interruption_is_bit_identical(tmp_path):
    x = _data()
    cfg = SAEConfig("topk", 12, 32, k=4, dead_after_steps=3)
    tc = TrainConfig(steps=90, batch_size=64, checkpoint_every=20)
    full, _ = train_seed_batched(cfg, tc, x, [0, 1])
    state = tmp_path / "state.safetensors"
    train_seed_batched(cfg, tc, x, [0, 1], state_path=state, stop_after=50)  # "killed" at step 50
    assert state.exists()
    resumed, log = train_seed_batched(cfg, tc, x, [0, 1], state_path=state)
    assert log["resumed_from_step"] == 40
    for name in ("W_enc_SDF", "b_enc_SF", "W_dec_SFD", "b_dec_SD"):
        assert torch.equal(getattr(full, name), getattr(resumed, name)), name


def test_resume_refuses_state_of_another_config(tmp_path):
    x = _data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    tc = TrainConfig(steps=30, batch_size=64, checkpoint_every=10)
    state = tmp_path / "state.safetensors"
    train_seed_batched(cfg, tc, x, [0], state_path=state, stop_after=15)
    with pytest.raises(RuntimeError, match="different condition"):
        train_seed_batched(replace(cfg, k=5), tc, x, [0], state_path=state)


def test_nan_data_and_nan_loss_are_refused():
    x = _data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_seed_batched(cfg, TrainConfig(steps=5, batch_size=16), bad, [0])
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_seed_batched(cfg, TrainConfig(steps=5, batch_size=16, lr=1e-3), x * 1e30, [0])


def test_registry_and_config_errors():
    assert {"topk", "relu"} <= set(architectures())
    with pytest.raises(ValueError, match="k=40"):
        SAEConfig("topk", 12, 32, k=40)
    from husai.saes import get_architecture

    with pytest.raises(KeyError, match="unknown SAE architecture 'gatedx'"):
        get_architecture("gatedx")
