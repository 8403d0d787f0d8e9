"""Lane gates on hand-built records: each passes and fails where the policy's numbers say, reads every threshold
from the policy entry, and the probe tripwire gate fires on records produced by broken probes."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from husai.config import load_yaml
from husai.gate import evaluate
from husai.gate_lanes import LANE_GATES
from husai.lanes.probes import evaluate_fold, make_folds, task_labels
from husai.pipeline_lanes import tripwire_values
from husai.toymodel import all_pairs

POLICY = load_yaml(Path(__file__).resolve().parents[2] / "config" / "policy.yaml")
T95_2 = 2.919985580  # one-sided 95% Student t quantile, 2 degrees of freedom


def gate(name, data, policy=POLICY):
    spec = policy["gates"][name]
    return LANE_GATES[name](spec, {"path": f"{name}.json", "data": data}, policy)


def lcb(values):
    v = np.asarray(values, float)
    return v.mean() - T95_2 * v.std(ddof=1) / math.sqrt(len(v))


def ucb(values):
    v = np.asarray(values, float)
    return v.mean() + T95_2 * v.std(ddof=1) / math.sqrt(len(v))


# --- splice ------------------------------------------------------------------------------------------------
def splice_record(lr=(0.95, 0.96, 0.97), drop=(0.0, 0.004, 0.002), h=(0.0, -0.02, -0.01), p_adj=(1.0, 1.0, 1.0),
                  worse=(False, False, False)):
    per_seed = [{"seed": i, "loss_recovered_vs_mean": a, "accuracy_drop": b, "cohens_h": c}
                for i, (a, b, c) in enumerate(zip(lr, drop, h, strict=True))]
    return {"lane": "splice", "key": "k", "per_seed": per_seed,
            "aggregate": {"mcnemar": {"p_adjusted": list(p_adj), "spliced_worse": list(worse)}}}


def test_splice_passes_with_hand_checked_bounds():
    g = gate("splice", splice_record())
    assert g["status"] == "pass" and g["reason"] is None and g["basis"] == "lcb"
    checks = {c["name"]: c for c in g["checks"]}
    assert g["value"] == pytest.approx(lcb([0.95, 0.96, 0.97]), abs=1e-9)  # 0.9431
    assert g["threshold"] == POLICY["gates"]["splice"]["min_loss_recovered"]
    assert checks["accuracy_drop"]["value"] == pytest.approx(ucb([0.0, 0.004, 0.002]), abs=1e-9)
    assert checks["accuracy_drop"]["basis"] == "ucb"
    assert checks["cohens_h_spliced_minus_clean"]["value"] == pytest.approx(lcb([0.0, -0.02, -0.01]), abs=1e-9)
    assert checks["significant_degradation_seeds"]["value"] == 0


@pytest.mark.parametrize("kwargs, failing", [
    ({"lr": (0.7, 0.8, 0.75)}, "loss_recovered_vs_mean"),
    ({"lr": (0.96, None, 0.965)}, None),  # a NaN seed is dropped; the 2 left still give a bound
    ({"drop": (0.03, 0.05, 0.04)}, "accuracy_drop"),
    ({"h": (-0.5, -0.4, -0.45)}, "cohens_h_spliced_minus_clean"),
    ({"p_adj": (0.01, 0.2, 1.0), "worse": (True, True, False)}, "significant_degradation_seeds"),
])
def test_splice_fails_on_each_check(kwargs, failing):
    g = gate("splice", splice_record(**kwargs))
    bad = [c["name"] for c in g["checks"] if not c["pass"]]
    if failing is None:
        assert g["status"] == "pass", g["reason"]
    else:
        assert g["status"] == "fail" and bad == [failing] and failing in g["reason"]


def test_splice_significant_but_improving_seed_does_not_count_and_alpha_comes_from_policy():
    assert gate("splice", splice_record(p_adj=(0.01, 1, 1), worse=(False, False, False)))["status"] == "pass"
    strict = copy.deepcopy(POLICY)
    strict["gates"]["splice"]["mcnemar_alpha"] = 0.001
    assert gate("splice", splice_record(p_adj=(0.01, 1, 1), worse=(True, False, False)), strict)["status"] == "pass"
    assert gate("splice", splice_record(p_adj=(0.01, 1, 1), worse=(True, False, False)))["status"] == "fail"


def test_thresholds_and_basis_come_from_the_policy():
    rec = splice_record(lr=(0.85, 0.95, 0.92))  # mean 0.907 passes a point basis, its LCB (~0.82) does not
    assert gate("splice", rec)["status"] == "fail"
    point = copy.deepcopy(POLICY)
    point["gates"]["splice"]["basis"] = "point"
    g = gate("splice", rec, point)
    assert g["status"] == "pass" and g["basis"] == "point" and g["value"] == pytest.approx(0.9066667)
    lax = copy.deepcopy(POLICY)
    lax["gates"]["splice"]["min_loss_recovered"] = 0.5
    assert gate("splice", rec, lax)["status"] == "pass"


# --- probe tripwires ---------------------------------------------------------------------------------------
def tripwire_record(shuffled=None, overfit=None):
    return {"lane": "probes", "key": "k", "tripwire_values": {
        "shuffled_excess_ap_vs_chance": shuffled or {"c": 0.01, "c_mod2": -0.02},
        "overfit_min_accuracy": overfit or {"c": 0.99, "c_mod2": 1.0}, "n_folds": 5}}


def test_tripwires_pass_and_fail_on_hand_built_values():
    g = gate("probe_tripwires", tripwire_record())
    assert g["status"] == "pass" and g["value"] == 0.02
    assert g["checks"][1]["value"] == 0.99  # only the policy's overfit label c counts
    g = gate("probe_tripwires", tripwire_record(shuffled={"c": 0.01, "c_mod2": -0.08}))
    assert g["status"] == "fail" and g["value"] == 0.08 and "shuffled" in g["reason"]
    g = gate("probe_tripwires", tripwire_record(overfit={"c": 0.6, "c_mod2": 1.0}))
    assert g["status"] == "fail" and g["checks"][1]["value"] == 0.6
    g = gate("probe_tripwires", tripwire_record(overfit={"c_mod2": 1.0}))  # the policy's label was never probed
    assert g["status"] == "fail" and "['c'] were not probed" in g["reason"]


@pytest.fixture(scope="module")
def probe_data():
    """p = 23 pairs whose activations carry c = (a + b) mod p linearly (one-hot of c plus noise). With fewer
    rows (p = 11: 55 per fold) an honest shuffled probe already strays ~0.1-0.3 AP from chance by luck."""
    tokens, ans = all_pairs(23)
    rng = np.random.default_rng(0)
    acts = np.eye(23)[ans] * 3 + 0.3 * rng.standard_normal((len(tokens), 23))
    labels = {k: v for k, v in task_labels(tokens, 23).items() if k in ("c", "c_mod2")}
    return acts, labels, make_folds(tokens, "a", 2, 0)


def _record_from(acts, labels, folds, **kw):
    raw = [evaluate_fold(acts, labels, f, raw_probes=True, **kw) for f in folds]
    return {"lane": "probes", "key": "k", "tripwire_values": tripwire_values(raw, labels)}


def test_honest_probes_pass_the_tripwires(probe_data):
    g = gate("probe_tripwires", _record_from(*probe_data))
    assert g["status"] == "pass", g["reason"]


def test_tripwire_fires_on_a_probe_that_leaks_the_labels(probe_data):
    """A 'shuffle' that keeps the labels makes the shuffled-label probe a real probe: far above chance."""
    g = gate("probe_tripwires", _record_from(*probe_data, shuffle_labels=lambda y, rng: y))
    assert g["status"] == "fail" and g["checks"][0]["pass"] is False and g["value"] > 0.3


def test_tripwire_fires_on_a_probe_without_capacity(probe_data):
    """A probe that ignores its features (constant scores) cannot memorise a fold."""

    class Constant:
        def __init__(self, X, y, C, l2, it):
            self.C = C

        def predict_proba(self, X):
            return np.full((len(X), self.C), 1.0 / self.C)

    g = gate("probe_tripwires", _record_from(*probe_data, fit_probe=Constant))
    assert g["status"] == "fail" and g["checks"][1]["pass"] is False and "overfit_min_accuracy" in g["reason"]


# --- OOD ---------------------------------------------------------------------------------------------------
def ood_record(drops=None):
    drops = drops or {"explained_variance": [0.05, 0.06, 0.04], "loss_recovered_vs_mean": [0.1, 0.12, 0.08],
                      "average_precision": [0.0, 0.02, 0.01]}
    return {"lane": "ood", "key": "k", "metrics": {m: {"relative_drop_per_seed": v} for m, v in drops.items()}}


def test_ood_passes_with_ucb_of_each_metric():
    g = gate("ood", ood_record())
    assert g["status"] == "pass" and g["basis"] == "ucb"
    assert [c["name"] for c in g["checks"]] == [f"{m}_relative_drop" for m in POLICY["gates"]["ood"]["metrics"]]
    assert g["value"] == pytest.approx(ucb([0.05, 0.06, 0.04]))
    assert all(c["threshold"] == POLICY["gates"]["ood"]["max_relative_drop"] for c in g["checks"])


def test_ood_fails_on_a_large_drop_or_a_missing_metric():
    rec = ood_record()
    rec["metrics"]["average_precision"]["relative_drop_per_seed"] = [0.3, 0.5, 0.4]
    g = gate("ood", rec)
    assert g["status"] == "fail" and "average_precision_relative_drop" in g["reason"]
    rec = ood_record()
    del rec["metrics"]["loss_recovered_vs_mean"]
    assert gate("ood", rec)["status"] == "fail"
    rec = ood_record()
    rec["metrics"]["explained_variance"]["relative_drop_per_seed"] = [None, None, None]  # all non-finite
    assert gate("ood", rec)["status"] == "fail"


# --- known circuit -----------------------------------------------------------------------------------------
def kc_record(trained=(0.5, 0.55, 0.6), random_init=(0.1, 0.12, 0.08), gaussian=0.02):
    per = lambda xs: [{"fraction_aligned": x} for x in xs]  # noqa: E731
    return {"lane": "known_circuit", "key": "k", "report": {
        "trained": {"per_seed": per(trained)}, "random_init_model": {"per_seed": per(random_init)},
        "delta_vs_random_init": {"paired_by_seed": True}, "chance_gaussian": {"mean": gaussian, "n": 50}}}


def test_known_circuit_passes_with_paired_lcb():
    g = gate("known_circuit", kc_record())
    assert g["status"] == "pass"
    assert g["value"] == pytest.approx(lcb([0.4, 0.43, 0.52]))
    assert g["checks"][1]["value"] == pytest.approx(lcb([0.48, 0.53, 0.58]))


def test_known_circuit_fails_against_random_init_or_gaussian():
    g = gate("known_circuit", kc_record(random_init=(0.5, 0.5, 0.55)))
    assert g["status"] == "fail" and [c["pass"] for c in g["checks"]] == [False, True]
    g = gate("known_circuit", kc_record(trained=(0.05, 0.06, 0.04), random_init=(0.0, 0.0, 0.0), gaussian=0.03))
    assert g["status"] == "fail" and not any(c["pass"] for c in g["checks"])
    rec = kc_record()
    rec["report"]["random_init_model"] = None
    g = gate("known_circuit", rec)
    assert g["status"] == "fail" and g["value"] is None


# --- through the evaluator ---------------------------------------------------------------------------------
def test_evaluate_reads_the_candidates_own_lane_records():
    """Lane gates see only the candidate's records; other conditions' records never stand in for it."""
    lanes = {"splice": {"cand": {"path": "s.json", "data": splice_record()},
                        "other": {"path": "o.json", "data": splice_record(lr=(0.1, 0.2, 0.1))}},
             "ood": {"other": {"path": "o.json", "data": ood_record()}}}
    policy = {**POLICY, "gates": {k: POLICY["gates"][k] for k in ("splice", "ood", "transcoder")}}
    res = evaluate(policy, {"lanes": lanes}, "cand", ["cand", "other"])
    by = {g["gate"]: g for g in res["gates"]}
    assert by["splice"]["status"] == "pass" and by["splice"]["evidence"] == ["s.json"]
    assert by["ood"]["status"] == "fail" and by["ood"]["reason"].startswith("missing evidence")
    assert by["transcoder"]["status"] == ("fail" if POLICY["gates"]["transcoder"]["required"] else "skipped")
    assert res["decision"] == "iterate"


def _tc_record(excess_lcb, delta_lcb):
    st = {"transcoder": {"excess_lcb": excess_lcb, "excess_over_chance": excess_lcb + 0.05},
          "sae": {"excess_lcb": 0.3, "excess_over_chance": 0.35},
          "delta": {"point": delta_lcb + 0.05, "lcb": delta_lcb, "ucb": delta_lcb + 0.1}}
    return {"path": "transcoder.json", "data": {"lane": "transcoder", "statistics": {"pwmcc": st}}}


def test_transcoder_gate_pass_fail_and_missing():
    from husai.gate_lanes import gate_transcoder

    spec = {"required": True, "statistic": "pwmcc", "min_transcoder_excess": 0.1, "min_delta": -0.1, "basis": "lcb"}
    assert gate_transcoder(spec, _tc_record(0.3, 0.0), {})["status"] == "pass"
    g = gate_transcoder(spec, _tc_record(0.3, -0.2), {})
    assert g["status"] == "fail" and "transcoder_minus_sae_excess" in g["reason"]
    assert gate_transcoder(spec, _tc_record(0.05, 0.0), {})["status"] == "fail"
    assert gate_transcoder(spec, None, {})["status"] == "fail"
    assert gate_transcoder({**spec, "required": False}, None, {})["status"] == "skipped"
