"""Known-circuit lane: key frequencies, a planted Fourier basis, and alignment against exact chance."""

import numpy as np
import pytest

from husai.io import read_json, write_json
from husai.lanes.known_circuit import (
    analytic_chance_fraction,
    circuit_alignment,
    circuit_basis,
    fourier_features,
    key_frequencies,
    known_circuit_report,
    random_decoder_chance,
)
from husai.toymodel import all_pairs

P, D = 13, 32
FREQS = (2, 5)


@pytest.fixture(scope="module")
def planted():
    """Activations = (Fourier features of a, b, c at FREQS) @ random directions + small noise."""
    tokens, _ = all_pairs(P)
    rng = np.random.default_rng(0)
    feats = np.concatenate([fourier_features(v, P, FREQS) for v in
                            (tokens[:, 0], tokens[:, 1], (tokens[:, 0] + tokens[:, 1]) % P)], axis=1)
    E = rng.standard_normal((feats.shape[1], D))
    acts = feats @ E + 0.01 * rng.standard_normal((len(tokens), D)) + 3.0
    return tokens, acts, E


def test_key_frequencies_found_from_a_planted_embedding():
    rng = np.random.default_rng(1)
    x = np.arange(P)
    W_E = (np.outer(np.cos(2 * np.pi * 3 * x / P), rng.standard_normal(D))
           + np.outer(np.sin(2 * np.pi * 4 * x / P), rng.standard_normal(D)) + 0.01 * rng.standard_normal((P, D)))
    kf = key_frequencies(W_E, 2)
    assert sorted(kf["frequencies"]) == [3, 4] and sum(kf["power_fraction"]) > 0.99


def test_basis_spans_the_planted_directions(planted):
    tokens, acts, E = planted
    cb = circuit_basis(acts, tokens, P, FREQS)
    B = cb["basis_KD"]
    assert cb["rank"] == 12 and B.shape == (12, D) and not cb["features_dropped"]
    np.testing.assert_allclose(B @ B.T, np.eye(12), atol=1e-10)  # orthonormal
    assert circuit_alignment(E, B, 0.999)["fraction_aligned"] == 1.0  # every planted direction lies in the span
    assert cb["regression_r2"] > 0.999
    only_c = circuit_basis(acts, tokens, P, FREQS, variables=("c",))
    assert only_c["rank"] == 4


def test_decoder_of_basis_rows_is_fully_aligned_and_random_is_at_exact_chance(planted):
    B = circuit_basis(planted[1], planted[0], P, FREQS)["basis_KD"]
    assert circuit_alignment(np.vstack([B, -2 * B]), B, 0.99)["fraction_aligned"] == 1.0
    thr = 0.6  # chance = P(Beta(6, 10) >= 0.36), about 0.45
    exact = analytic_chance_fraction(D, 12, thr)
    assert 0.3 < exact < 0.6
    ch = random_decoder_chance(256, B, thr, n_draws=40, seed=0)
    assert ch["analytic"] == exact
    assert abs(ch["mean"] - exact) < 4 * ch["halfwidth"] + 0.01
    assert analytic_chance_fraction(D, D, 0.99) == 1.0 and analytic_chance_fraction(D, 0, 0.1) == 0.0
    with pytest.raises(ValueError, match="d_in"):
        circuit_alignment(np.ones((4, D + 1)), B, 0.5)


def test_report_lcb_against_random_init_model(planted, tmp_path):
    B = circuit_basis(planted[1], planted[0], P, FREQS)["basis_KD"]
    rng = np.random.default_rng(3)

    def sae_like(aligned):  # d_sae 64: `aligned` rows inside the span, the rest random
        W = rng.standard_normal((64, D))
        W[:aligned] = rng.standard_normal((aligned, 12)) @ B
        return W

    trained = [sae_like(a) for a in (40, 44, 38)]
    rand_init = [sae_like(0) for _ in range(3)]
    rep = known_circuit_report(trained, B, 0.9, random_init_decoders=rand_init, n_random_draws=20)
    assert rep["value"] == pytest.approx(np.mean([40, 44, 38]) / 64, abs=0.02)
    assert rep["delta_vs_random_init"]["paired_by_seed"] and rep["delta_vs_random_init"]["lcb"] > 0.4
    assert rep["delta_vs_gaussian"]["lcb"] > 0.4
    assert rep["chance_gaussian"]["analytic"] < 1e-3
    write_json(tmp_path / "kc.json", rep)
    assert read_json(tmp_path / "kc.json")["value"] == rep["value"]
    assert known_circuit_report(trained, B, 0.9, n_random_draws=5)["delta_vs_random_init"] is None
