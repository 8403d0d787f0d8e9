"""The hand-written TopK backward (husai.saes.topk_grad) computes the same losses and gradients as autograd
through `TopKSAE.training_losses`, and training with it ends where the autograd trainer ends."""

from dataclasses import replace

import pytest
import torch
from saes_helpers import cfg_for, data, targets_for

import husai.training
from husai.saes import SAEConfig, build_sae
from husai.saes.topk_select import network_applies
from husai.training import TrainConfig, train_seed_batched


def _sae(arch, seeds, **over):
    x = data()
    y = targets_for(arch, x)
    cfg = cfg_for(arch, **over)
    sae = build_sae(cfg, seeds, b_dec_init_D=(x if y is None else y).mean(0))
    with torch.no_grad():  # move off the tied init so that no gradient term is accidentally symmetric
        for p in sae.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return sae, x[:64], (x if y is None else y)[:64]


@pytest.mark.parametrize("arch", ["topk", "topk_transcoder"])
@pytest.mark.parametrize("n_dead", [0, 5, 40])
@pytest.mark.parametrize("d_sae", [32, 64])  # 64: pre-activations as [S, F, B] for the selection network
def test_explicit_grads_equal_autograd(arch, n_dead, d_sae):
    sae, x, y = _sae(arch, [2, 9], aux_k=6, d_sae=d_sae)
    S, F = sae.n_seeds, sae.cfg.d_sae
    assert network_applies(F, sae.cfg.k, x.device) == (d_sae == 64)
    dead = torch.zeros(S, F, dtype=torch.bool)
    dead[0, :n_dead] = True  # seed 0 has dead latents (maybe more than aux_k), seed 1 has none
    scale = 1.7
    out_ref = sae.training_losses(x, y, dead, scale, any_dead=n_dead > 0)
    sum(out_ref.terms.values()).sum().backward()
    ref = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    out = sae.training_step_grads(x, y, dead, scale, any_dead=n_dead > 0)
    for name in ("fvu", "aux"):
        torch.testing.assert_close(out.terms[name], out_ref.terms[name], rtol=1e-6, atol=1e-7, msg=name)
    if n_dead:
        assert float(out.terms["aux"][0]) > 0 and float(out.terms["aux"][1]) == 0
    for n, p in sae.named_parameters():
        assert p.grad is not None and p.grad.is_contiguous(), n
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-5, atol=1e-6, msg=n)
        assert float(ref[n].abs().max()) > 0, n  # every parameter really gets a gradient
    assert torch.equal(out.fired_SF, out_ref.fired_SF) and torch.equal(out.l0_S, out_ref.l0_S)
    torch.testing.assert_close(out.y_hat_SBD, out_ref.y_hat_SBD, rtol=1e-6, atol=1e-6)


def test_only_plain_topk_uses_explicit_grads():
    use = {a: build_sae(cfg_for(a), [0]).explicit_grads() if hasattr(build_sae(cfg_for(a), [0]), "explicit_grads")
           else False for a in ("topk", "topk_transcoder", "batchtopk", "matryoshka", "routed", "relu")}
    assert use == {"topk": True, "topk_transcoder": True, "batchtopk": False, "matryoshka": False,
                   "routed": False, "relu": False}


@pytest.mark.parametrize("arch", ["topk", "topk_transcoder"])
def test_training_with_explicit_grads_matches_autograd(monkeypatch, arch):
    """Whole runs (dead latents and AuxK included) agree to float rounding."""
    x = data()
    y = targets_for(arch, x)
    cfg = cfg_for(arch, d_sae=96, k=2, dead_after_steps=3)
    tc = TrainConfig(steps=60, batch_size=64, lr=3e-3, warmup_steps=5, log_every=1)
    monkeypatch.setattr(husai.training, "EXPLICIT_GRADS", True)
    fast, log = train_seed_batched(cfg, tc, x, [0, 1], targets_ND=y)
    monkeypatch.setattr(husai.training, "EXPLICIT_GRADS", False)
    slow, log_slow = train_seed_batched(cfg, tc, x, [0, 1], targets_ND=y)
    assert max(max(a) for a in log["dead_fraction"]) > 0  # AuxK was exercised
    for (name, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5, msg=name)
    torch.testing.assert_close(torch.tensor(log["fvu"]), torch.tensor(log_slow["fvu"]), rtol=1e-4, atol=1e-6)


def test_explicit_grads_is_the_cpu_fp32_default():
    sae = build_sae(SAEConfig("topk", 12, 32, k=4), [0])
    cpu = torch.device("cpu")
    assert husai.training._explicit_grads(sae, TrainConfig(steps=1, batch_size=1), cpu)
    assert not husai.training._explicit_grads(sae, TrainConfig(steps=1, batch_size=1, dtype="bfloat16"), cpu)
    assert not husai.training._explicit_grads(sae, replace(TrainConfig(steps=1, batch_size=1), compile=True), cpu)
    assert not husai.training._explicit_grads(sae, TrainConfig(steps=1, batch_size=1), torch.device("cuda"))


def test_regulariser_gradient_adds_onto_explicit_grads(monkeypatch):
    """With the assignment regulariser on, its autograd gradient accumulates onto the hand-written ones: the run
    matches the all-autograd trainer."""
    from husai.regularizer import AssignmentRegularizer

    x = data()
    cfg = SAEConfig("topk", 12, 32, k=4, dead_after_steps=5)
    tc = TrainConfig(steps=40, batch_size=64, lr=3e-3, warmup_steps=5)
    ref = torch.randn(32, 12, generator=torch.Generator().manual_seed(3))
    runs = {}
    for explicit in (True, False):
        monkeypatch.setattr(husai.training, "EXPLICIT_GRADS", explicit)
        runs[explicit], log = train_seed_batched(cfg, tc, x, [0, 1],
                                                 regularizer=AssignmentRegularizer(ref, 0.5, update_interval=10))
        assert "reg" in log
    monkeypatch.setattr(husai.training, "EXPLICIT_GRADS", True)
    plain, _ = train_seed_batched(cfg, tc, x, [0, 1])
    assert not torch.allclose(plain.W_dec_SFD, runs[True].W_dec_SFD, atol=1e-3)  # the regulariser did act
    for (name, a), (_, b) in zip(runs[True].state_dict().items(), runs[False].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5, msg=name)
