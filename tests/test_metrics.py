import numpy as np
import pytest
import torch

from husai import metrics as M


def test_explained_variance_hand_case():
    x = np.array([[1.0, 0.0], [3.0, 2.0]])  # mean (2, 1); total SS = 1+1+1+1 = 4
    x_hat = np.array([[1.0, 1.0], [3.0, 2.0]])  # residual SS = 1
    assert M.explained_variance(x, x_hat) == pytest.approx(1 - 1 / 4)


def test_explained_variance_matches_torch_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 7, generator=g) * torch.arange(1, 8) + 3
    x_hat = x + 0.3 * torch.randn(500, 7, generator=g)
    expected = 1 - ((x - x_hat) ** 2).sum() / (x.var(dim=0, unbiased=False).sum() * x.shape[0])
    assert M.explained_variance(x, x_hat) == pytest.approx(float(expected), rel=1e-6)


def test_explained_variance_perfect_and_mean_predictor():
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert M.explained_variance(x, x) == pytest.approx(1.0)
    assert M.explained_variance(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(0.0, abs=1e-12)


def test_explained_variance_rejects_bad_shapes_and_constant_data():
    with pytest.raises(ValueError, match="one shape"):
        M.explained_variance(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="zero variance"):
        M.explained_variance(np.ones((3, 2)), np.ones((3, 2)))


def test_l0_dead_mse_hand_case():
    acts = np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0]])
    assert M.l0(acts) == pytest.approx((2 + 1 + 1) / 3)
    assert M.dead_fraction(acts) == pytest.approx(0.5)  # latents 0 and 2 never fire
    assert M.mse(np.zeros((2, 2)), np.array([[1.0, 1.0], [1.0, 3.0]])) == pytest.approx((1 + 1 + 1 + 9) / 4)


def test_every_formula_has_direction_and_version():
    for name, f in M.FORMULAS.items():
        assert isinstance(f["higher_is_better"], bool), name
        assert f["version"], name
