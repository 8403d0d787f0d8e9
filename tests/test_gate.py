"""The gate compares measured values with policy thresholds; missing evidence fails or is skipped, never passes."""

import copy

import numpy as np
import pytest

from husai.config import load_yaml
from husai.gate import evaluate, render_markdown

CORE = ("data_qc", "model_learned", "reconstruction", "trained_vs_random", "candidate_selection")


@pytest.fixture
def policy(repo):
    """The embedded policy's core gates (the lane gates have their own tests in tests/lanes)."""
    p = load_yaml(repo / "config" / "policy.yaml")
    p["gates"] = {k: v for k, v in p["gates"].items() if k in CORE}
    return p


def _consistency(delta_lcb, p=0.001, ratio=0.01):
    st = {"delta_vs_chance": {"point": delta_lcb + 0.05, "lcb": delta_lcb, "method": "m"},
          "permutation": {"p_value": p}, "chance_halfwidth_ratio": ratio}
    return {"path": "c.json", "data": {"statistics": {"pwmcc": st, "matched_mcc": st, "shared_fraction": st}}}


def _evidence(ev=0.95, dead=0.05, acc=1.0, delta=0.3, qc=True, n_seeds=5):
    rng = np.random.default_rng(0)
    seeds = [{"path": f"s{i}.json", "data": {"explained_variance": ev + rng.normal(0, 0.002),
                                            "dead_fraction": dead + rng.normal(0, 0.002)}} for i in range(n_seeds)]
    return {
        "qc": {"path": "qc.json", "data": {"thresholds_passed": qc, "failed_reasons": [] if qc else ["3 NaN"]}},
        "model_metrics": {"path": "m.json", "data": {"heldout_accuracy": acc, "fourier_concentration": 0.9,
                                                     "fourier_concentration_random_init": 0.2}},
        "candidate_seed_metrics": seeds,
        "candidate_consistency": _consistency(delta),
        "consistency": {"cand": _consistency(delta)},
        "selection": {"path": "sel.json", "data": {"selected": "cand", "pareto_front": ["cand"],
                                                   "groups": [{"condition": "cand"}], "dropped": []}},
    }


def test_all_good_promotes(policy):
    r = evaluate(policy, _evidence(), "cand", ["cand"])
    assert r["decision"] == "promote" and r["pass_all"] and r["severity"] == "SEV4"
    assert {g["gate"] for g in r["gates"]} == {"data_qc", "model_learned", "reconstruction", "trained_vs_random",
                                                "candidate_selection"}
    for g in r["gates"]:
        assert {"value", "threshold", "basis", "pass", "reason"} <= set(g)


@pytest.mark.parametrize("kw,gate,sev", [
    ({"qc": False}, "data_qc", "SEV1"),
    ({"acc": 0.9}, "model_learned", "SEV1"),
    ({"ev": 0.5}, "reconstruction", "SEV2"),
    ({"dead": 0.5}, "reconstruction", "SEV2"),
    ({"delta": 0.01}, "trained_vs_random", "SEV2"),
])
def test_each_failure_iterates_with_its_reason(policy, kw, gate, sev):
    r = evaluate(policy, _evidence(**kw), "cand", ["cand"])
    assert r["decision"] == "iterate" and not r["pass_all"] and r["severity"] == sev
    assert [f["gate"] for f in r["failed_checks"]] == [gate]
    assert r["failed_checks"][0]["reason"]


def test_lcb_basis_is_stricter_than_point(policy):
    # EV mean just above the floor but noisy across seeds: LCB fails, point passes.
    ev = _evidence(ev=0.81)
    for i, s in enumerate(ev["candidate_seed_metrics"]):
        s["data"]["explained_variance"] = 0.81 + (0.05 if i % 2 else -0.05)
    assert evaluate(policy, ev, "cand", ["cand"])["decision"] == "iterate"
    point = copy.deepcopy(policy)
    point["gates"]["reconstruction"]["basis"] = "point"
    assert evaluate(point, ev, "cand", ["cand"])["decision"] == "promote"


def test_missing_required_evidence_fails_and_optional_is_skipped(policy):
    ev = _evidence()
    ev["candidate_consistency"] = None
    r = evaluate(policy, ev, "cand", ["cand"])
    g = next(g for g in r["gates"] if g["gate"] == "trained_vs_random")
    assert g["status"] == "fail" and "missing evidence" in g["reason"] and r["decision"] == "iterate"
    opt = copy.deepcopy(policy)
    opt["gates"]["trained_vs_random"]["required"] = False
    r = evaluate(opt, ev, "cand", ["cand"])
    g = next(g for g in r["gates"] if g["gate"] == "trained_vs_random")
    assert g["status"] == "skipped" and g["pass"] is None
    assert r["decision"] == "promote" and not r["pass_all"]


def test_too_few_seeds_fails_reconstruction(policy):
    r = evaluate(policy, _evidence(n_seeds=2), "cand", ["cand"])
    g = next(g for g in r["gates"] if g["gate"] == "reconstruction")
    assert g["status"] == "fail" and "min_seeds=3" in g["reason"]


def test_bh_adjustment_across_conditions_can_fail_the_gate(policy):
    ev = _evidence()
    ev["candidate_consistency"] = _consistency(0.3, p=0.03)
    ev["consistency"] = {"cand": _consistency(0.3, p=0.03), "other": _consistency(0.3, p=0.9)}
    r = evaluate(policy, ev, "cand", ["cand", "other"])
    assert r["multiple_testing"]["p_adjusted"] == pytest.approx([0.06, 0.9])
    assert r["decision"] == "iterate"


def test_markdown_lists_failures(policy):
    r = evaluate(policy, _evidence(acc=0.5), "cand", ["cand"])
    r.update(policy_id="p", policy_version=1, run_id="r", candidate="cand")
    md = render_markdown(r)
    assert "ITERATE" in md and "model_learned" in md and "Failed checks" in md


def test_no_eligible_candidate_fails_selection_and_dependent_gates(policy):
    ev = _evidence()
    ev["selection"]["data"] = {"selected": None, "pareto_front": [], "groups": [{"condition": "cand"}],
                               "dropped": [{"condition": "cand", "reasons": ["L0 not matched"]}]}
    r = evaluate(policy, ev, None, ["cand"])
    failed = {f["gate"] for f in r["failed_checks"]}
    assert failed == {"candidate_selection", "reconstruction", "trained_vs_random"}
    g = next(g for g in r["gates"] if g["gate"] == "reconstruction")
    assert "no release candidate" in g["reason"]


def test_required_lane_gate_without_evidence_fails(repo):
    p = load_yaml(repo / "config" / "policy.yaml")
    r = evaluate(p, _evidence(), "cand", ["cand"])
    g = next(g for g in r["gates"] if g["gate"] == "splice")
    assert g["status"] == "fail" and "missing evidence" in g["reason"]
    ext = next(g for g in r["gates"] if g["gate"] == "external_saebench")
    assert ext["status"] == "skipped"  # optional in the embedded policy


def test_platform_canary_gate_reads_the_decision(repo):
    p = load_yaml(repo / "config" / "policy.yaml")
    p["gates"] = {"platform_canary": {"required": True}}
    ev = _evidence()
    r = evaluate(p, ev, "cand", ["cand"])
    assert r["gates"][0]["status"] == "fail" and "missing evidence" in r["gates"][0]["reason"]
    ev["platform"] = {"path": "d.json", "data": {"decision": "iterate", "severity": "SEV2",
                                                "failed_checks": [{"code": "platform_usable", "platform": "pocl",
                                                                   "reason": "cannot build"}]}}
    g = evaluate(p, ev, "cand", ["cand"])["gates"][0]
    assert g["status"] == "fail" and "platform_usable" in g["reason"]
    ev["platform"]["data"] = {"decision": "promote", "failed_checks": []}
    assert evaluate(p, ev, "cand", ["cand"])["gates"][0]["status"] == "pass"
