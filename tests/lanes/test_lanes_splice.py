"""Splice lane: hand-checked McNemar / Wilson / Cohen's h, and identity / zero / mean "SAEs" on a tiny model."""

import math

import numpy as np
import pytest
import torch

from husai.io import read_json, write_json
from husai.lanes.splice import aggregate_splice, cohens_h, paired_correctness, splice_metrics, wilson_interval
from husai.saes import SAEConfig, build_sae
from husai.saes.base import BatchedSAE
from husai.toymodel import ANSWER_POS, ToyModelConfig, all_pairs, build_model

HOOK = "blocks.0.hook_resid_post"
P, D = 11, 32


class IdentitySAE(BatchedSAE):
    """x_hat = x exactly: splicing it must leave the model untouched."""

    architecture = "identity-test"

    def forward(self, x_BD):
        return x_BD.unsqueeze(0), x_BD.unsqueeze(0), x_BD.unsqueeze(0)


@pytest.fixture(scope="module")
def tiny():
    """A tiny toy model trained briefly on all pairs, so accuracies are neither 0 nor 1 everywhere."""
    cfg = ToyModelConfig(p=P, d_model=D, n_heads=2, d_mlp=64, fourier_top_k=1, seed=0)
    model = build_model(cfg)
    tokens, answers = all_pairs(P)
    x, y = torch.from_numpy(tokens), torch.from_numpy(answers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x)[:, ANSWER_POS, :], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter=HOOK)
    mean_D = cache[HOOK][:, ANSWER_POS, :].mean(0)
    return model, tokens, answers, mean_D


def _correctness(table):
    """Per-example (clean, spliced) correctness realising a 2x2 table."""
    (both, clean_only), (spliced_only, neither) = table
    clean = [1] * both + [1] * clean_only + [0] * spliced_only + [0] * neither
    spliced = [1] * both + [0] * clean_only + [1] * spliced_only + [0] * neither
    return np.array(clean, bool), np.array(spliced, bool)


def test_mcnemar_matches_hand_binomial():
    res = paired_correctness(*_correctness([[50, 9], [2, 39]]))
    assert res["table"] == [[50, 9], [2, 39]]
    # Exact two-sided: 2 * P(X <= 2), X ~ Binomial(11, 1/2).
    hand = 2 * sum(math.comb(11, i) for i in range(3)) / 2 ** 11
    assert res["p_value"] == pytest.approx(hand, abs=1e-12)
    assert hand == pytest.approx(0.0654296875)
    assert res["n_discordant"] == 11 and res["ref_only_correct"] == 9 and res["new_only_correct"] == 2


def test_wilson_interval_known_value_and_formula():
    w = wilson_interval(8, 10)
    assert (w["low"], w["high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    z, n, ph = 1.959963984540054, 10, 0.8
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert (w["low"], w["high"]) == pytest.approx((centre - half, centre + half), abs=1e-10)


def test_cohens_h_is_signed_spliced_minus_clean():
    assert cohens_h(0.5, 0.8) == pytest.approx(2 * math.asin(math.sqrt(0.5)) - 2 * math.asin(math.sqrt(0.8)))
    assert cohens_h(0.5, 0.8) < 0 < cohens_h(0.8, 0.5)
    assert paired_correctness(*_correctness([[50, 9], [2, 39]]))["cohens_h"] < 0  # spliced worse


def test_identity_sae_recovers_all_loss(tiny, tmp_path):
    model, tokens, answers, mean_D = tiny
    sae = IdentitySAE(SAEConfig("topk", D, 4, k=1), [0])
    m = splice_metrics(model, sae, tokens, answers, HOOK, ANSWER_POS, mean_D)
    c = m["conditions"]
    assert 0 < c["clean"]["accuracy"] < 1  # the model learned something, not everything
    assert c["spliced"]["loss"] == c["clean"]["loss"]
    assert m["loss_recovered_vs_mean"] == pytest.approx(1.0) and m["loss_recovered_vs_zero"] == pytest.approx(1.0)
    assert m["mcnemar"]["p_value"] == 1.0 and m["mcnemar"]["n_discordant"] == 0 and m["cohens_h"] == 0.0
    assert m["accuracy_drop"] == 0.0
    assert c["clean"]["accuracy_interval"]["low"] < c["clean"]["accuracy"] < c["clean"]["accuracy_interval"]["high"]
    write_json(tmp_path / "splice.json", {"seed": m, "aggregate": aggregate_splice([m, m])})
    assert read_json(tmp_path / "splice.json")["seed"]["mcnemar"]["table"] == m["mcnemar"]["table"]


def _constant_sae(value_D):
    """A real ReLU SAE whose reconstruction is the constant b_dec (encoder and decoder zeroed)."""
    sae = build_sae(SAEConfig("relu", D, 8), [0])
    with torch.no_grad():
        for prm in (sae.W_enc_SDF, sae.b_enc_SF, sae.W_dec_SFD):
            prm.zero_()
        sae.b_dec_SD.copy_(torch.as_tensor(value_D).reshape(1, D))
    return sae


def test_zero_sae_equals_zero_ablation_and_mean_sae_equals_mean_ablation(tiny):
    model, tokens, answers, mean_D = tiny
    z = splice_metrics(model, _constant_sae(torch.zeros(D)), tokens, answers, HOOK, ANSWER_POS, mean_D)
    assert z["conditions"]["spliced"]["loss"] == pytest.approx(z["conditions"]["zero_ablation"]["loss"], abs=1e-9)
    assert z["conditions"]["spliced"]["accuracy"] == z["conditions"]["zero_ablation"]["accuracy"]
    assert z["loss_recovered_vs_zero"] == pytest.approx(0.0, abs=1e-9)
    mu = splice_metrics(model, _constant_sae(mean_D), tokens, answers, HOOK, ANSWER_POS, mean_D)
    assert mu["loss_recovered_vs_mean"] == pytest.approx(0.0, abs=1e-6)
    assert mu["conditions"]["mean_ablation"]["loss"] > mu["conditions"]["clean"]["loss"]


def test_aggregate_splice_bounds_and_bh():
    base = paired_correctness(*_correctness([[50, 9], [2, 39]]))
    per_seed = [{"loss_recovered_vs_mean": v, "loss_recovered_vs_zero": v, "accuracy_drop": 0.07,
                 "loss_increase": 0.1, "cohens_h": base["cohens_h"], "mcnemar": base} for v in (0.9, 0.95, 0.85)]
    agg = aggregate_splice(per_seed)
    lr = agg["loss_recovered_vs_mean"]
    assert lr["mean"] == pytest.approx(0.9) and lr["lcb"] < 0.9 < lr["ucb"] and lr["n"] == 3
    assert agg["accuracy_drop"]["ucb"] == pytest.approx(0.07)  # zero spread: the bound is the mean
    assert agg["mcnemar"]["p_adjusted"] == pytest.approx([base["p_value"]] * 3)
    assert agg["mcnemar"]["n_significant_degradation"] == 0  # p = 0.065 > 0.05
    assert aggregate_splice(per_seed, alpha=0.1)["mcnemar"]["n_significant_degradation"] == 3
