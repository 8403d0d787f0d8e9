"""What each architecture promises beyond 'it trains': JumpReLU's L0 follows its coefficient through the
straight-through estimator, BatchTopK records both forms, matryoshka prefixes reconstruct on their own, and
transcoders learn a map from one hook to another."""

import pytest
import torch
from saes_helpers import cfg_for, data, targets_for

from husai.saes import SAEConfig, build_sae
from husai.saes.jumprelu import JumpReLUFn, StepFn
from husai.training import TrainConfig, per_seed_log, train_seed_batched


def _planted(n=3000, d=16, n_atoms=48, p=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d, generator=g), dim=1)
    codes = (torch.rand(n, n_atoms, generator=g) < p).float() * (torch.rand(n, n_atoms, generator=g) + 0.5)
    return codes @ atoms + 0.02 * torch.randn(n, d, generator=g)


def test_jumprelu_ste_gives_threshold_a_gradient_from_l0():
    pre = torch.tensor([[[0.10, 0.52, 0.9]]], requires_grad=True)
    theta = torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True)
    StepFn.apply(pre, theta, 0.1).sum().backward()
    assert pre.grad is None or not pre.grad.any()  # the L0 estimator reaches the threshold only
    torch.testing.assert_close(theta.grad, torch.tensor([[0.0, -10.0, 0.0]]))  # only inside the kernel window
    theta.grad = None
    out = JumpReLUFn.apply(pre, theta, 0.1)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.52, 0.9]]]))
    out.sum().backward()
    torch.testing.assert_close(pre.grad, torch.tensor([[[0.0, 1.0, 1.0]]]))
    torch.testing.assert_close(theta.grad, torch.tensor([[0.0, -5.0, 0.0]]))  # -(theta / bw) in the window


def test_jumprelu_l0_follows_its_coefficient():
    """Two coefficients on the seed axis (same init): the larger one ends much sparser, thresholds >= 0."""
    x = _planted()
    sae, log = train_seed_batched(SAEConfig("jumprelu", 16, 64), TrainConfig(steps=300, batch_size=128, lr=3e-3),
                                  x, [0, 0], sparsity_coefficients=[1e-3, 5e-2])
    l0 = log["l0"][-1]
    assert l0[1] < 0.5 * l0[0], l0
    assert bool((sae.threshold_SF >= 0).all()) and sae.threshold_SF[1].mean() > sae.threshold_SF[0].mean()


def test_batchtopk_trains_at_k_per_row_and_estimates_an_inference_threshold():
    x = _planted()
    cfg = SAEConfig("batchtopk", 16, 64, k=4)
    sae, log = train_seed_batched(cfg, TrainConfig(steps=200, batch_size=128, lr=3e-3), x, [0, 1])
    assert log["l0"][-1] == pytest.approx([4.0, 4.0], abs=0.05)  # the batch form: k per row on average
    thr = log["final"]["batchtopk_threshold"]
    assert all(t > 0 for t in thr) and log["final"]["batchtopk_threshold_steps"] == [50.0, 50.0]
    assert per_seed_log(log, 1)["batchtopk_threshold"] == thr[1]
    f = sae.encode(x[:1000])  # the inference form (threshold), what sae-lens and the evaluators compute
    l0_inf = (f != 0).float().sum(-1).mean(-1)
    assert ((l0_inf > 2.5) & (l0_inf < 6)).all(), l0_inf
    torch.testing.assert_close(sae.seed_state(0)["threshold"], torch.full((64,), thr[0]))
    unfinished = build_sae(cfg, [0])
    with pytest.raises(ValueError, match="threshold has not been estimated"):
        unfinished.seed_state(0)
    meta = sae.husai_metadata(0)
    assert meta["sae_lens_exact"] is False and meta["inference_threshold"] == pytest.approx(thr[0])


def test_matryoshka_prefixes_reconstruct_better_than_plain_topk_prefixes():
    x = _planted(d=16, n_atoms=48)
    tc = TrainConfig(steps=300, batch_size=128, lr=3e-3)
    fvu_prefix = {}
    for arch in ("topk", "matryoshka"):
        sae, log = train_seed_batched(SAEConfig(arch, 16, 64, k=4), tc, x, [0])
        with torch.no_grad():
            pre = sae.pre_activation(x)
            vals, idx = sae.select(pre, x)
            y8 = sae.decode_sparse(vals * (idx < 8), idx)  # only the first F/8 latents
            fvu_prefix[arch] = float(sae.fvu(y8, x, float((x - x.mean(0)).pow(2).sum(1).mean().sqrt()))[0])
        if arch == "matryoshka":
            assert "prefix_fvu" in log and log["prefix_fvu"][-1][0] > 0
    assert fvu_prefix["matryoshka"] < 0.9 * fvu_prefix["topk"], fvu_prefix
    with pytest.raises(ValueError, match="matryoshka_levels"):
        build_sae(SAEConfig("matryoshka", 16, 64, k=4, matryoshka_levels=(8, 4, 64)), [0])


@pytest.mark.parametrize("arch", ["transcoder", "jumprelu_transcoder", "topk_transcoder"])
def test_transcoders_learn_the_map_between_hooks(arch):
    x = data(n=1500)
    y = targets_for(arch, x)
    sae, log = train_seed_batched(cfg_for(arch), TrainConfig(steps=200, batch_size=128, lr=3e-3), x, [0], targets_ND=y)
    assert sae.W_dec_SFD.shape == (1, 32, 10) and sae.W_enc_SDF.shape == (1, 12, 32)
    assert log["fvu"][-1][0] < 0.5 * log["fvu"][0][0]
    assert sae.sae_lens_cfg()["apply_b_dec_to_input"] is False and sae.sae_lens_cfg()["d_out"] == 10
