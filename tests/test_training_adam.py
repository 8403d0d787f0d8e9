"""husai.training.adam_step (the fused Adam kernels called without Optimizer.step's bookkeeping) is bit-identical
to `opt.step()`, and falls back to it for set-ups it does not cover."""

import torch

from husai.saes import SAEConfig, build_sae
from husai.training import TrainConfig, adam_step, make_optimizer


def _pair():
    cfg = SAEConfig("topk", 12, 32, k=4)
    tc = TrainConfig(steps=1, batch_size=1, lr=3e-3)
    a, b = build_sae(cfg, [0, 1]), build_sae(cfg, [0, 1])
    return a, b, make_optimizer(a, tc), make_optimizer(b, tc)


def test_adam_step_is_bit_identical_to_opt_step():
    a, b, oa, ob = _pair()
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        for group in (*oa.param_groups, *ob.param_groups):
            group["lr"] = 1e-3 * (step + 1)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        oa.step()
        adam_step(ob)
        for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb), (step, n)
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(oa.state[pa][key], ob.state[pb][key]), (step, n, key)
    assert float(next(iter(ob.state.values()))["step"]) == 6
    assert not torch.equal(a.W_dec_SFD, build_sae(SAEConfig("topk", 12, 32, k=4), [0, 1]).W_dec_SFD)


def test_adam_step_falls_back_for_other_set_ups():
    a, b, _, _ = _pair()
    plain = torch.optim.Adam(a.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    ref = torch.optim.Adam(b.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    for _ in range(2):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            pa.grad, pb.grad = torch.ones_like(pa), torch.ones_like(pb)
        adam_step(plain)  # weight decay: not the fast path, must still be exactly Adam
        ref.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
