"""Routed (expert-TopK) SAE: the router neither collapses onto one expert nor settles on an even but arbitrary
split; it follows the data (planted clusters) and agrees with the best-reconstructing expert."""

import pytest
import torch

from husai.saes import SAEConfig, build_sae
from husai.training import TrainConfig, per_seed_log, train_seed_batched


def _clustered(n=4000, d=16, n_clusters=4, per=12, k=3, offset=1.5, seed=0):
    """Each row: a cluster-specific offset plus k atoms from that cluster's own set of atoms."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_clusters * per, d, generator=g), dim=1)
    cluster = torch.randint(0, n_clusters, (n,), generator=g)
    pick = torch.stack([torch.randperm(per, generator=g)[:k] for _ in range(n)]) + cluster[:, None] * per
    coef = torch.rand(n, k, generator=g) + 0.5
    means = torch.nn.functional.normalize(torch.randn(n_clusters, d, generator=g), dim=1) * offset
    return torch.zeros(n, n_clusters * per).scatter(1, pick, coef) @ atoms + means[cluster], cluster


def test_routing_is_balanced_and_follows_the_data():
    x, cluster = _clustered()
    cfg = SAEConfig("routed", 16, 64, k=3, n_experts=4)
    sae, log = train_seed_batched(cfg, TrainConfig(steps=1200, batch_size=128, lr=3e-3), x, [0, 1])
    expert, _ = sae.route(x)
    for s in range(2):
        seed_log = per_seed_log(log, s)
        usage = torch.bincount(expert[s], minlength=4).float() / len(x)
        assert usage.min() > 0.1, f"seed {s}: an expert starves (usage {usage.tolist()})"  # no collapse
        assert seed_log["usage_entropy"][-1] > 0.9
        confusion = torch.zeros(4, 4).index_put_((cluster, expert[s]), torch.ones(len(x)), accumulate=True)
        purity = (confusion.max(dim=1).values / confusion.sum(dim=1)).mean()
        assert purity > 0.6, f"seed {s}: routing ignores the clusters (purity {purity:.2f}; arbitrary ~0.3)"
        assert seed_log["oracle_agreement"][-1] > 0.8  # routes where the best-reconstructing expert is
        assert len(seed_log["expert_usage"][-1]) == 4 and 0 < seed_log["router_confidence"][-1] <= 1
    # the code lives in the routed expert's slice, k latents per row
    f = sae.encode(x[:200])
    slice_of = f[0].nonzero()[:, 1] // 16
    assert torch.equal(slice_of, expert[0, :200].repeat_interleave((f[0] != 0).sum(1)))


def test_routed_config_errors():
    with pytest.raises(ValueError, match="n_experts"):
        build_sae(SAEConfig("routed", 16, 64, k=3, n_experts=5), [0])
    with pytest.raises(ValueError, match="expert size"):
        build_sae(SAEConfig("routed", 16, 64, k=20, n_experts=4), [0])
