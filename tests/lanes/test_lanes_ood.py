"""OOD lane: the declared slice selects exactly its pairs; relative drops by hand; one end-to-end seed."""

import numpy as np
import pytest
import torch

from husai.io import read_json, write_json
from husai.lanes.ood import ood_metrics, ood_seed_metrics, ood_split
from husai.saes import SAEConfig
from husai.saes.base import BatchedSAE
from husai.toymodel import ANSWER_POS, ToyModelConfig, all_pairs, build_model

P = 59


def test_operand_range_selects_exactly_the_declared_pairs():
    tokens, _ = all_pairs(P)
    mask = ood_split(tokens, {"kind": "operand_range", "a_min": 50})
    assert mask.sum() == 9 * P
    assert (mask == (tokens[:, 0] >= 50)).all()
    both = ood_split(tokens, {"kind": "operand_range", "a_min": 10, "a_max": 12, "b_max": 4})
    want = {(a, b) for a in (10, 11, 12) for b in range(5)}
    assert {(int(a), int(b)) for a, b in tokens[both, :2]} == want and both.sum() == len(want)


def test_answer_range_and_explicit_pairs():
    tokens, answers = all_pairs(P)
    mask = ood_split(tokens, {"kind": "answer_range", "c_min": 57})
    assert (mask == (answers >= 57)).all() and mask.sum() == 2 * P
    pairs = [[0, 1], [58, 58], [3, 7]]
    m = ood_split(tokens, {"kind": "pairs", "pairs": pairs})
    assert sorted(map(tuple, tokens[m, :2].tolist())) == sorted(map(tuple, pairs))


@pytest.mark.parametrize("spec, match", [
    ({"kind": "nope"}, "unknown kind"),
    ({"kind": "operand_range", "c_min": 3}, "subset"),
    ({"kind": "operand_range"}, "subset"),
    ({"kind": "operand_range", "a_min": 100}, "selects 0"),
    ({"kind": "operand_range", "a_min": 0}, "selects 3481"),
])
def test_bad_specs_are_refused_naming_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        ood_split(all_pairs(P)[0], spec)


def test_relative_drops_by_hand_and_seed_bound():
    one = ood_metrics({"explained_variance": 0.9, "loss_recovered_vs_mean": 0.8, "average_precision": 0.5},
                      {"explained_variance": 0.72, "loss_recovered_vs_mean": 0.8, "average_precision": 0.55})
    m = one["metrics"]
    assert m["explained_variance"]["relative_drop"] == pytest.approx(0.2)
    assert m["loss_recovered_vs_mean"]["relative_drop"] == 0.0
    assert m["average_precision"]["relative_drop"] == pytest.approx(-0.1)  # OOD better: negative drop
    assert m["explained_variance"]["basis"] == "point"
    seeds = ood_metrics({"explained_variance": [0.9, 0.8, 1.0]}, {"explained_variance": [0.72, 0.72, 0.7]},
                        metrics=("explained_variance",))["metrics"]["explained_variance"]
    assert seeds["relative_drop_per_seed"] == pytest.approx([0.2, 0.1, 0.3])
    assert seeds["basis"] == "ucb" and seeds["relative_drop_bound"] > seeds["relative_drop"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="explained_variance"):
        ood_metrics({"explained_variance": [1, 2]}, {"explained_variance": [1]}, metrics=("explained_variance",))


class IdentitySAE(BatchedSAE):
    architecture = "identity-test"

    def forward(self, x_BD):
        return x_BD.unsqueeze(0), x_BD.unsqueeze(0), x_BD.unsqueeze(0)


def test_ood_seed_metrics_end_to_end_with_an_identity_sae(tmp_path):
    p, d = 11, 16
    torch.manual_seed(0)
    model = build_model(ToyModelConfig(p=p, d_model=d, n_heads=2, d_mlp=32, fourier_top_k=1))
    tokens, answers = all_pairs(p)
    hook = "blocks.0.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.from_numpy(tokens), names_filter=hook)
    acts = cache[hook][:, ANSWER_POS, :].numpy()
    ood = ood_split(tokens, {"kind": "operand_range", "a_min": 8})
    rng = np.random.default_rng(0)
    heldout = rng.random(len(tokens)) < 0.3
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = ood_seed_metrics(model, IdentitySAE(SAEConfig("topk", d, 4, k=1), [0]), tokens, answers, acts,
                               ood_mask=ood, in_eval_mask=heldout & ~ood, probe_train_mask=~heldout & ~ood,
                               hook=hook, position=ANSWER_POS, mean_activation_D=acts[~ood].mean(0),
                               probe_label="c_mod2", probe_k=4)
    finally:
        torch.set_num_threads(n)
    for side in ("in", "out"):
        assert res[side]["explained_variance"] == pytest.approx(1.0)
        assert res[side]["loss_recovered_vs_mean"] == pytest.approx(1.0)
        assert 0 <= res[side]["average_precision"] <= 1
    assert res["out"]["n_rows"] == 3 * p and len(res["selected_latents"]) == 4
    summary = ood_metrics({m: [res["in"][m]] for m in ("explained_variance", "loss_recovered_vs_mean",
                                                       "average_precision")},
                          {m: [res["out"][m]] for m in ("explained_variance", "loss_recovered_vs_mean",
                                                        "average_precision")})
    assert summary["metrics"]["explained_variance"]["relative_drop"] == pytest.approx(0.0, abs=1e-9)
    write_json(tmp_path / "ood.json", {"seed": res, "summary": summary})
    assert read_json(tmp_path / "ood.json")["seed"]["probe_k"] == 4
    with pytest.raises(ValueError, match="overlap"):
        ood_seed_metrics(model, None, tokens, answers, acts, ood_mask=ood, in_eval_mask=ood, probe_train_mask=~ood,
                         hook=hook, position=ANSWER_POS, mean_activation_D=acts.mean(0))
