"""A planted sparse dictionary: TopK must recover its atoms (ground-truth matched MCC >= 0.9)."""

import torch

from husai.consistency import abs_cosine, hungarian_from_sim
from husai.saes import SAEConfig
from husai.training import TrainConfig, train_seed_batched


def test_topk_recovers_planted_dictionary():
    g = torch.Generator().manual_seed(0)
    D, F, k, N = 32, 64, 3, 8000
    atoms = torch.nn.functional.normalize(torch.randn(F, D, generator=g), dim=1)
    idx = torch.stack([torch.randperm(F, generator=g)[:k] for _ in range(N)])
    coef = torch.rand(N, k, generator=g) + 0.5
    x = torch.zeros(N, F).scatter(1, idx, coef) @ atoms
    sae, _ = train_seed_batched(SAEConfig("topk", D, F, k=k), TrainConfig(steps=2500, batch_size=256, lr=3e-3),
                                x, [0, 1])
    for s in range(2):
        mcc = hungarian_from_sim(abs_cosine(atoms, sae.W_dec_SFD[s]))[2].mean()
        assert mcc >= 0.9, f"seed {s}: ground-truth MCC {mcc:.3f}"
