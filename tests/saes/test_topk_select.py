"""The CPU selection network (husai.saes.topk_select) picks exactly the k largest entries of every row, as
torch.topk does (up to ties), with distinct latents, for any k and widths that need padding."""

import pytest
import torch

from husai.saes.topk_select import network_applies, top_keys, topk_indices_T

GENERATORS = {
    "gaussian": lambda g, *s: torch.randn(*s, generator=g),
    "ties": lambda g, *s: torch.randn(*s, generator=g).round(),
    "negative": lambda g, *s: -torch.rand(*s, generator=g) - 1,
    "all_equal": lambda g, *s: torch.zeros(*s),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("S,F,B,k", [(5, 256, 256, 8), (2, 96, 64, 2), (3, 1000, 37, 5), (2, 256, 3, 3),
                                     (1, 64, 100, 1), (2, 520, 11, 7)])
def test_selects_the_k_largest(kind, S, F, B, k):
    pre = GENERATORS[kind](torch.Generator().manual_seed(F + k), S, F, B)
    idx = topk_indices_T(pre, k)
    assert idx.shape == (S, k, B) and idx.dtype == torch.int64
    assert torch.equal(pre.gather(1, idx).sort(1).values, pre.topk(k, dim=1).values.sort(1).values)
    s = idx.sort(1).values
    assert bool((s[:, 1:] != s[:, :-1]).all()), "a latent was chosen twice"


def test_top_keys_handles_padding_and_reuses_its_buffers():
    g = torch.Generator().manual_seed(0)
    for n in (8, 9, 31, 64, 65):  # padded to 8, 16, 32, 64, 128
        v = torch.randn(2, n, 5, generator=g)
        for _ in range(2):  # the second call replays the cached network on new keys
            pos = top_keys(v, 4)
            assert torch.equal(v.gather(1, pos).sort(1).values, v.topk(4, dim=1).values.sort(1).values)
            v = -v


def test_network_applies_only_where_it_was_measured_faster():
    cpu = torch.device("cpu")
    assert network_applies(256, 8, cpu) and network_applies(1024, 4, cpu)
    assert not network_applies(256, 16, cpu)  # k > 8: the per-row sort is faster
    assert not network_applies(30, 8, cpu)  # too few groups to prune
    assert not network_applies(256, 8, torch.device("cuda"))
