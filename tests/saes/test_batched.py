"""Seed-batched training equals training each seed alone (every architecture); resuming from periodic state,
also after a real SIGKILL, is bit-identical."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from saes_helpers import ARCH_KWARGS, cfg_for, data, targets_for

from husai.saes import SAEConfig, architectures
from husai.training import NonFiniteLossError, TrainConfig, per_seed_log, train_seed_batched

SRC = Path(__file__).resolve().parents[2] / "src"


def _assert_params(a, b, exact=False, atol=1e-6):
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        if exact:
            assert torch.equal(pa, pb), name
        else:
            torch.testing.assert_close(pa, pb, rtol=0, atol=atol, msg=name, equal_nan=True)


@pytest.mark.parametrize("arch", sorted(ARCH_KWARGS))
def test_seed_batched_equals_solo(arch):
    x = data()
    y = targets_for(arch, x)
    cfg = cfg_for(arch, dead_after_steps=5)
    tc = TrainConfig(steps=40, batch_size=64, lr=3e-3, warmup_steps=5)
    batched, _ = train_seed_batched(cfg, tc, x, [3, 7, 11], targets_ND=y)
    for s, seed in enumerate([3, 7, 11]):
        solo, _ = train_seed_batched(cfg, tc, x, [seed], targets_ND=y)
        for name, p in solo.state_dict().items():
            torch.testing.assert_close(p[0], batched.state_dict()[name][s], rtol=0, atol=1e-6, msg=name,
                                       equal_nan=True)


def test_seeds_differ_only_by_init_and_decoder_rows_stay_unit_norm():
    x = data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    sae, log = train_seed_batched(cfg, TrainConfig(steps=20, batch_size=64), x, [0, 1])
    assert not torch.allclose(sae.W_dec_SFD[0], sae.W_dec_SFD[1])
    torch.testing.assert_close(sae.W_dec_SFD.norm(dim=2), torch.ones(2, 32), rtol=0, atol=1e-5)
    seed_log = per_seed_log(log, 1)
    assert set(seed_log) >= {"steps", "fvu", "sparsity", "aux", "dead_fraction", "l0"}
    assert seed_log["l0"][-1] == pytest.approx(4, abs=0.5)


def test_same_init_across_architectures():
    """Every architecture starts from the same decoder for a seed, so architecture comparisons share inits."""
    inits = {a: train_seed_batched(cfg_for(a), TrainConfig(steps=1, batch_size=8, lr=1e-12), data(), [5],
                                   targets_ND=targets_for(a, data()))[0].W_dec_SFD[0] for a in ("topk", "routed")}
    torch.testing.assert_close(inits["topk"], inits["routed"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "routed"])
def test_resume_after_interruption_is_bit_identical(tmp_path, arch):
    x = data()
    cfg = cfg_for(arch, dead_after_steps=3)
    tc = TrainConfig(steps=90, batch_size=64, checkpoint_every=20)
    full, full_log = train_seed_batched(cfg, tc, x, [0, 1])
    state = tmp_path / "state.safetensors"
    train_seed_batched(cfg, tc, x, [0, 1], state_path=state, stop_after=50)  # "killed" at step 50
    assert state.exists()
    resumed, log = train_seed_batched(cfg, tc, x, [0, 1], state_path=state)
    assert log["resumed_from_step"] == 40
    _assert_params(full, resumed, exact=True)
    assert full_log.get("final") == log.get("final")


KILL_SCRIPT = """
import sys, time, numpy as np, torch
sys.path.insert(0, {src!r})
torch.set_num_threads({threads})
import husai.training as T
from husai.saes import SAEConfig
from husai.training import TrainConfig, train_seed_batched
lr_at = T.lr_at
T.lr_at = lambda step, tc: (time.sleep(0.004), lr_at(step, tc))[1]  # slower steps (same numbers): a wide kill window
x = np.load({data!r})
train_seed_batched(SAEConfig("topk", 12, 32, k=4, dead_after_steps=3), TrainConfig(**{tc!r}), x, [0, 1],
                   state_path={state!r})
"""


def test_sigkill_mid_training_then_resume_is_bit_identical(tmp_path):
    """A real kill: a subprocess trains with periodic state, is SIGKILLed once a state file exists, and the
    resumed run ends exactly where an uninterrupted one does."""
    x = data().numpy()
    np.save(tmp_path / "x.npy", x)
    tc = {"steps": 300, "batch_size": 64, "checkpoint_every": 40, "log_every": 10**6}
    state = tmp_path / "state.safetensors"
    script = KILL_SCRIPT.format(src=str(SRC), threads=torch.get_num_threads(), data=str(tmp_path / "x.npy"),
                                tc=tc, state=str(state))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert proc.poll() is None, f"trainer exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no trainer state appeared"
            time.sleep(0.01)
        time.sleep(0.1)  # land between two checkpoints, not on one
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    cfg = SAEConfig("topk", 12, 32, k=4, dead_after_steps=3)
    tconf = TrainConfig(**tc)
    resumed, log = train_seed_batched(cfg, tconf, x, [0, 1], state_path=state)
    assert 0 < log["resumed_from_step"] < tconf.steps, "the kill did not land mid-training"
    full, _ = train_seed_batched(cfg, tconf, x, [0, 1])
    _assert_params(full, resumed, exact=True)


def test_resume_refuses_state_of_another_config(tmp_path):
    x = data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    tc = TrainConfig(steps=30, batch_size=64, checkpoint_every=10)
    state = tmp_path / "state.safetensors"
    train_seed_batched(cfg, tc, x, [0], state_path=state, stop_after=15)
    with pytest.raises(RuntimeError, match="different condition"):
        train_seed_batched(replace(cfg, k=5), tc, x, [0], state_path=state)


def test_nan_data_and_nan_loss_are_refused():
    x = data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_seed_batched(cfg, TrainConfig(steps=5, batch_size=16), bad, [0])
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_seed_batched(cfg, TrainConfig(steps=5, batch_size=16, lr=1e-3), x * 1e30, [0])


def test_sync_free_step_equals_the_checked_one(monkeypatch):
    """The CUDA step never asks the host whether latents are dead or losses finite; forced on CPU it must give
    the same weights, and still stop on a NaN naming its first step."""
    import husai.training

    x = data()
    cfg = SAEConfig("topk", 12, 96, k=2, dead_after_steps=2)
    tc = TrainConfig(steps=40, batch_size=32, log_every=1)
    checked, _ = train_seed_batched(cfg, tc, x, [0, 1])
    monkeypatch.setattr(husai.training, "SYNC_FREE", True)
    free, log = train_seed_batched(cfg, tc, x, [0, 1])
    assert max(max(a) for a in log["dead_fraction"]) > 0  # AuxK really ran while latents were dead
    _assert_params(checked, free, exact=True)
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_seed_batched(cfg, TrainConfig(steps=5, batch_size=16, log_every=3), x * 1e30, [0])


def test_bfloat16_trains_close_to_float32():
    x = data()
    cfg = SAEConfig("topk", 12, 32, k=4)
    tc = TrainConfig(steps=60, batch_size=64, lr=3e-3)
    f32, log32 = train_seed_batched(cfg, tc, x, [0])
    b16, log16 = train_seed_batched(cfg, replace(tc, dtype="bfloat16"), x, [0])
    assert b16.W_dec_SFD.dtype == torch.float32 and log16["precision"]["dtype"] == "bfloat16"
    assert log16["fvu"][-1][0] == pytest.approx(log32["fvu"][-1][0], rel=0.15)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(steps=1, batch_size=1, dtype="float16")


def test_registry_and_config_errors():
    assert set(ARCH_KWARGS) <= set(architectures())
    with pytest.raises(ValueError, match="k=40"):
        SAEConfig("topk", 12, 32, k=40)
    from husai.saes import get_architecture

    with pytest.raises(KeyError, match="unknown SAE architecture 'gatedx'"):
        get_architecture("gatedx")
    with pytest.raises(ValueError, match="targets have 5 rows"):
        train_seed_batched(cfg_for("transcoder"), TrainConfig(steps=1, batch_size=4), data(), [0],
                           targets_ND=torch.zeros(5, 10))
    with pytest.raises(ValueError, match="do not fit"):
        train_seed_batched(cfg_for("transcoder"), TrainConfig(steps=1, batch_size=4), data(), [0])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HUSAI_TEST_COMPILE"), reason="compiling takes ~1 min on CPU; set "
                    "HUSAI_TEST_COMPILE=1")
def test_torch_compile_matches_eager():
    x = data()
    cfg = SAEConfig("topk", 12, 32, k=4, dead_after_steps=5)
    tc = TrainConfig(steps=30, batch_size=64)
    eager, _ = train_seed_batched(cfg, tc, x, [0, 1])
    compiled, log = train_seed_batched(cfg, replace(tc, compile=True), x, [0, 1])
    assert log["precision"]["compile"] is True
    _assert_params(eager, compiled, atol=1e-4)
