"""The lane rule functions on a tiny study built in tmp_path from the library (model, merged dataset with an OOD
slice, seed-batched SAE checkpoints): every lane JSON names its lane and key, carries provenance, holds the
numbers its gate reads, and those numbers gate without error."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from husai import activations as A
from husai.checkpoint import save_seed
from husai.config import condition_id
from husai.gate_lanes import LANE_GATES
from husai.io import read_json, save_safetensors, write_json
from husai.pipeline_lanes import (
    control_model,
    full_acts,
    known_circuit,
    ood,
    probe_folds,
    probe_raw,
    probes,
    row_sets,
    splice,
    train_control_condition,
)
from husai.saes import SAEConfig
from husai.toymodel import ANSWER_POS, ToyModelConfig, all_pairs, build_model
from husai.training import TrainConfig, train_seed_batched

REPO = Path(__file__).resolve().parents[2]
HOOK = "blocks.0.hook_resid_post"
P, SEEDS = 13, [0, 1, 2]
MODEL_CFG = {"p": P, "train_fraction": 0.7, "d_model": 16, "n_heads": 2, "d_mlp": 32, "n_layers": 1, "steps": 60,
             "lr": 0.01, "weight_decay": 1.0, "seed": 0, "fourier_top_k": 2}
COND = {"architecture": "topk", "width": 24, "k": 3, "lam": 0}
CID = condition_id(COND)
TRAINING = {"steps": 40, "batch_size": 32, "lr": 0.003, "warmup_steps": 5, "log_every": 20, "checkpoint_every": 0}


def ns(**kw):
    return SimpleNamespace(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("lanes")
    config = {
        "policy": str(REPO / "config" / "policy.yaml"),
        "model": {"name": "modadd-p13", "kind": "toy_modular_addition", **MODEL_CFG},
        "activations": {"hooks": [HOOK], "position": ANSWER_POS, "n_shards": 1, "base_seed": 1000,
                        "heldout_fraction": 0.3, "split_seed": 7,
                        "qc": {"max_nan": 0, "max_inf": 0, "max_duplicate_fraction": 0.05,
                               "min_dim_variance": 1e-10, "max_low_variance_dim_fraction": 0.5}},
        "sae": {"seeds": SEEDS, "training": TRAINING, "conditions": [COND]},
        "consistency": {"control_seed": 12345},
        "lanes": {"splice": {}, "ood": {"spec": {"kind": "operand_range", "a_min": 10}, "probe_label": "c",
                                        "probe_k": 3},
                  "probes": {"group_key": "a", "n_folds": 2, "fold_seed": 0, "labels": ["c", "c_mod2"],
                             "k_values": [2], "bootstrap_resamples": 100},
                  "known_circuit": {"n_key_frequencies": 2, "threshold": 0.7, "n_random_draws": 5}},
    }
    # A briefly trained toy model (accuracy strictly between 0 and 1 is not needed, only a working forward).
    cfg = ToyModelConfig(**MODEL_CFG)
    model = build_model(cfg)
    tokens, ans = all_pairs(P)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(tokens))[:, ANSWER_POS], torch.from_numpy(ans))
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = root / "model.safetensors"
    save_safetensors(weights, model.state_dict())
    # The merged dataset (one shard, rows permuted as the workflow does) with its OOD slice.
    rows = A.shard_rows(len(tokens), 1, 0, 1000)
    acts = A.extract_hooks(model.eval(), tokens[rows], [HOOK], ANSWER_POS)[HOOK]
    d = root / "acts"
    A.write_shard(acts, tokens[rows], d / "s.npy", d / "s.tokens.npy", d / "s.json", {"seed": 1000})
    out = {k: d / f"{k}.npy" for k in ("acts", "tokens", "split", "ood")} | {"manifest": d / "manifest.json",
                                                                            "qc": d / "qc.json"}
    A.merge_shards([d / "s.json"], [d / "s.npy"], [d / "s.tokens.npy"], out, heldout_fraction=0.3, split_seed=7,
                   qc_thresholds=config["activations"]["qc"], extra_manifest={"hook": HOOK},
                   ood_spec=config["lanes"]["ood"]["spec"])
    write_json(out["qc"], {**read_json(out["qc"]), "provenance": {}})
    data = A.load_verified_dataset(out["manifest"], out["qc"])
    sae_cfg = SAEConfig(architecture="topk", d_in=16, d_sae=24, k=3)
    sae, _ = train_seed_batched(sae_cfg, TrainConfig(**TRAINING), data["train"], SEEDS)
    sae_w, train_j = [], []
    for s, seed in enumerate(SEEDS):
        ck = root / "saes" / f"seed{seed}"
        info = save_seed(sae, s, ck, {"husai": {"condition": CID}})
        write_json(ck / "train.json", {"seed": seed, **info})
        sae_w.append(str(ck / "sae_weights.safetensors"))
        train_j.append(str(ck / "train.json"))
    base = dict(weights=str(weights), manifest=str(out["manifest"]), qc=str(out["qc"]), sae_weights=sae_w,
                train=train_j)
    return SimpleNamespace(root=root, config=config, out=out, base=base, data=data,
                           params=ns(hook=HOOK, condition=CID))


def _lane_ok(path, lane, gate, study):
    data = read_json(path)
    assert data["lane"] == lane and data["key"] == f"{HOOK}/{CID}" and data["seeds"] == SEEDS
    prov = data["provenance"]
    assert {"git_sha", "config_hash", "rule", "inputs", "formula_versions"} <= set(prov)
    assert prov["rule"] == lane and prov["inputs"]
    from husai.config import load_yaml

    policy = load_yaml(study.config["policy"])
    g = LANE_GATES[gate](policy["gates"][gate], {"path": str(path), "data": data}, policy)
    assert g["gate"] == gate and g["status"] in ("pass", "fail") and g["checks"]
    assert {"value", "threshold", "basis", "pass", "reason"} <= set(g)
    return data


def test_row_sets_partition_the_dataset(study):
    rows = row_sets(study.data, 7)
    n = len(study.data["heldout_mask"])
    assert not set(rows["report"]) & set(rows["train"]) and not set(rows["ood"]) & set(rows["in_dist"])
    assert len(rows["ood"]) + len(rows["in_dist"]) == n
    assert (study.data["tokens"][rows["ood"], 0] >= 10).all()
    acts = full_acts(study.data)
    np.testing.assert_array_equal(acts[~study.data["heldout_mask"] & ~study.data["ood_mask"]], study.data["train"])


def test_splice_lane(study):
    path = study.root / "lanes" / "splice.json"
    splice(ns(**study.base), ns(json=path), study.params, study.config, "splice")
    data = _lane_ok(path, "splice", "splice", study)
    assert len(data["per_seed"]) == 3 and data["rows"]["n"] > 0
    for s in data["per_seed"]:
        assert {"loss_recovered_vs_mean", "accuracy_drop", "cohens_h", "mcnemar"} <= set(s)
    assert len(data["aggregate"]["mcnemar"]["p_adjusted"]) == 3


def test_probe_lane_writes_a_metrics_file_per_fold_and_seed(study):
    cfg = study.config
    folds = study.root / "probes" / "folds.json"
    probe_folds(ns(manifest=study.base["manifest"], qc=study.base["qc"]), ns(json=folds), ns(hook=HOOK), cfg,
                "probe_folds")
    f = read_json(folds)
    assert len(f["folds"]) == 2 and "provenance" in f
    raw = [study.root / "probes" / "raw" / f"fold{i}.json" for i in range(2)]
    for i, path in enumerate(raw):
        probe_raw(ns(manifest=study.base["manifest"], qc=study.base["qc"], folds=folds), ns(json=path),
                  ns(hook=HOOK, fold=str(i)), cfg, "probe_raw")
        assert {r["probe"] for r in read_json(path)["records"]} >= {"logistic_raw", "shuffled_label_raw",
                                                                   "overfit_raw", "baseline_prior"}
    pairs = [[fo, s] for fo in range(2) for s in SEEDS]
    metrics = [study.root / "probes" / CID / f"fold{fo}" / f"seed{s}" / "metrics.json" for fo, s in pairs]
    path = study.root / "lanes" / "probes.json"
    probes(ns(**study.base, folds=folds, raw=[str(p) for p in raw]), ns(json=path, metrics=[str(m) for m in metrics]),
           ns(hook=HOOK, condition=CID, fold_seed=pairs), cfg, "probes")
    for (fo, s), m in zip(pairs, metrics, strict=True):
        rec = read_json(m)
        assert rec["fold"] == fo and rec["sae_seed"] == s and "provenance" in rec
        assert {r["probe"] for r in rec["records"]} == {"baseline_prior", "sparse_k2"}
    data = _lane_ok(path, "probes", "probe_tripwires", study)
    tv = data["tripwire_values"]
    assert set(tv["shuffled_excess_ap_vs_chance"]) == {"c", "c_mod2"} and set(tv["overfit_min_accuracy"]) == {"c",
                                                                                                          "c_mod2"}
    assert "delta_vs_baseline" in data["aggregate"]["probes"]["sparse_k2/c"]["average_precision"]
    assert data["tripwires"]["overfit"]["labels"] == ["c"]  # the policy's overfit labels


def test_ood_lane(study):
    path = study.root / "lanes" / "ood.json"
    ood(ns(**study.base), ns(json=path), study.params, study.config, "ood")
    data = _lane_ok(path, "ood", "ood", study)
    for m in ("explained_variance", "loss_recovered_vs_mean", "average_precision"):
        assert len(data["metrics"][m]["relative_drop_per_seed"]) == 3
    assert data["spec"] == {"kind": "operand_range", "a_min": 10}
    assert all(s["out"]["n_rows"] == 3 * P for s in data["per_seed"])  # a in {10, 11, 12}


def test_known_circuit_lane_with_random_init_control(study):
    cfg, d = study.config, study.out
    ctrl = study.root / "control"
    c_out = ns(acts=[str(ctrl / "acts.npy")], qc=[str(ctrl / "qc.json")], manifest=[str(ctrl / "manifest.json")])
    control_model(ns(tokens=[str(d["tokens"])], split=[str(d["split"])], ood=[str(d["ood"])]), c_out,
                  ns(hooks=[HOOK]), cfg, "control_model")
    control = A.load_verified_dataset(c_out.manifest[0], c_out.qc[0])
    np.testing.assert_array_equal(control["heldout_mask"], study.data["heldout_mask"])
    assert not np.allclose(control["train"], study.data["train"])  # a different (untrained) model
    dec = ns(decoders=str(ctrl / CID / "decoders.safetensors"), train=str(ctrl / CID / "train.json"))
    train_control_condition(ns(manifest=c_out.manifest[0], qc=c_out.qc[0], acts=c_out.acts[0]), dec, study.params,
                            cfg, "train_control_condition")
    assert read_json(dec.train)["seeds"] == SEEDS and not (ctrl / CID / "trainer_state.safetensors").exists()
    path = study.root / "lanes" / "known_circuit.json"
    known_circuit(ns(**study.base, control_manifest=c_out.manifest[0], control_qc=c_out.qc[0],
                     control_decoders=dec.decoders, control_train=dec.train), ns(json=path), study.params, cfg,
                  "known_circuit")
    data = _lane_ok(path, "known_circuit", "known_circuit", study)
    rep = data["report"]
    assert len(rep["trained"]["per_seed"]) == 3 and len(rep["random_init_model"]["per_seed"]) == 3
    assert rep["delta_vs_random_init"]["paired_by_seed"] and len(data["key_frequencies"]["frequencies"]) == 2
    assert "basis_KD" not in data["basis"]


def test_control_of_a_calibrated_condition_trains_with_the_calibrated_coefficient(study):
    """The random-init control follows the real condition's recipe: the calibrated L1, not the configured one."""
    ctrl = study.root / "control"
    if not (ctrl / "manifest.json").exists():
        pytest.skip("needs the control activations of test_known_circuit_lane_with_random_init_control")
    relu = {"architecture": "relu", "width": 24, "k": 3, "lam": 0, "calibrate": True, "l1_coefficient": 0.02}
    cfg = {**study.config, "sae": {**study.config["sae"], "conditions": [COND, relu]}}
    cid = condition_id(relu)
    cal = study.root / "calibration.json"
    write_json(cal, {"condition": cid, "coefficient_name": "l1_coefficient", "chosen_coefficient": 0.123,
                     "target_l0": 3, "achieved_l0": 3.1, "status": "within_tolerance"})
    out = ns(decoders=str(ctrl / cid / "decoders.safetensors"), train=str(ctrl / cid / "train.json"))
    inputs = ns(manifest=str(ctrl / "manifest.json"), qc=str(ctrl / "qc.json"), acts=str(ctrl / "acts.npy"))
    train_control_condition(ns(**vars(inputs), calibration=str(cal)), out, ns(hook=HOOK, condition=cid), cfg,
                            "train_control_condition")
    rec = read_json(out.train)
    assert rec["sae_config"]["l1_coefficient"] == 0.123 and rec["calibration"]["coefficient"] == 0.123
    train_control_condition(inputs, out, ns(hook=HOOK, condition=cid), cfg, "train_control_condition")
    assert read_json(out.train)["sae_config"]["l1_coefficient"] == 0.02 and read_json(out.train)["calibration"] is None
