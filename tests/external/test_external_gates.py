"""External gates: the same dict shape as husai.gate's gates; LCB of the per-seed improvement over the matched
baseline; skipped (optional) or failed (required) when the evidence or the baseline is missing."""

import json

import pytest
import yaml

from husai import gate
from husai.external import EVAL_OF_GATE, external_gate
from husai.io import write_json

HOOK = "blocks.1.hook_resid_pre"
SPEC = {"required": True, "basis": "lcb", "metrics": {"ce_loss_score": 0.0, "mse": {"min_delta": -0.01}}}


def summ(ce, mse=0.1, l0=32.0, seed=0, eval_name="saebench_core"):
    return {"eval": eval_name, "seed": seed, "hook": HOOK, "width": 4096, "l0": l0,
            "metrics": {"ce_loss_score": ce, "mse": mse}, "higher_is_better": {"ce_loss_score": True, "mse": False}}


def baselines(tmp_path, ce=0.80, mse=0.1, l0=32.0):
    path = tmp_path / "baseline_core.json"
    write_json(path, summ(ce, mse, l0))
    return {"l0_tolerance": 0.1, "entries": [{"id": "ref-k32", "hook": HOOK, "width": 4096, "l0": 32,
                                              "summaries": {"saebench_core": str(path)}}]}


def cand(values, l0=32.0):
    return [{"path": f"results/external/seed{s}/saebench_core.json", "data": summ(v, l0=l0, seed=s)}
            for s, v in enumerate(values)]


def test_same_shape_as_internal_gates(tmp_path):
    g = external_gate("external_saebench", cand([0.85, 0.86, 0.84, 0.85, 0.87]), baselines(tmp_path), SPEC)
    internal = gate._gate("x", {"required": True}, [gate.check("c", 1.0, 0.0, ">=", "point")], [])
    assert set(internal) <= set(g) and set(g) - set(internal) == {"external"}
    missing = external_gate("external_saebench", None, None, SPEC)
    assert set(gate._missing("x", {"required": True}, "why")) <= set(missing)


def test_pass_on_lcb_of_improvement_vs_named_baseline(tmp_path):
    g = external_gate("external_saebench", cand([0.85, 0.86, 0.84, 0.85, 0.87]), baselines(tmp_path), SPEC)
    assert g["status"] == "pass" and g["pass"] is True and g["basis"] == "lcb" and g["threshold"] == 0.0
    d = g["external"]["deltas"]["ce_loss_score"]
    assert g["value"] == pytest.approx(d["lcb"]) and 0 < d["lcb"] < d["mean"] == pytest.approx(0.054)
    assert d["n_seeds"] == 5 and "Student t" in d["method"] and g["checks"][0]["method"] == d["method"]
    assert g["checks"][0]["name"] == "ce_loss_score_improvement_vs_ref-k32"
    assert g["external"]["baseline"]["id"] == "ref-k32" and g["reason"] is None
    assert "results/external/seed0/saebench_core.json" in g["evidence"]
    assert str(tmp_path / "baseline_core.json") in g["evidence"]
    json.dumps(g, allow_nan=False)  # goes into release_policy.json as is


def test_fail_when_lcb_below_threshold(tmp_path):
    # mean improvement +0.01 but noisy: the LCB is below 0 -> fail, though the point estimate would pass
    values = [0.86, 0.76, 0.85, 0.78, 0.80]
    g = external_gate("external_saebench", cand(values), baselines(tmp_path), SPEC)
    assert g["status"] == "fail" and g["pass"] is False
    assert "ce_loss_score_improvement_vs_ref-k32" in g["reason"] and "fails >= 0.0 (lcb)" in g["reason"]
    point = external_gate("external_saebench", cand(values), baselines(tmp_path), {**SPEC, "basis": "point"})
    assert point["status"] == "pass" and point["value"] == pytest.approx(0.01)


def test_lower_is_better_metric_is_signed(tmp_path):
    spec = {"required": True, "metrics": {"mse": -0.01}}
    worse = [{"path": f"s{s}", "data": summ(0.9, mse=0.2, seed=s)} for s in range(3)]
    g = external_gate("external_saebench", worse, baselines(tmp_path, mse=0.1), spec)
    assert g["status"] == "fail" and g["external"]["deltas"]["mse"]["delta_per_seed"] == pytest.approx([-0.1] * 3)


@pytest.mark.parametrize("required, status", [(False, "skipped"), (True, "fail")])
def test_absent_evidence_skips_optional_and_fails_required(tmp_path, required, status):
    spec = {**SPEC, "required": required}
    for summaries in (None, []):
        g = external_gate("external_saebench", summaries, baselines(tmp_path), spec)
        assert g["status"] == status and g["value"] is None
        assert g["reason"].startswith("missing evidence: no saebench_core summaries")
    # no baseline matched (L0 45 vs 32): the delta is missing, not zero
    g = external_gate("external_saebench", cand([0.9, 0.9, 0.9], l0=45.0), baselines(tmp_path), spec)
    assert g["status"] == status and "tolerance" in g["reason"] and g["pass"] is (None if not required else False)
    assert g["external"]["deltas"]["ce_loss_score"]["delta_per_seed"] is None


def test_lcb_needs_two_seeds_and_metric_must_exist(tmp_path):
    g = external_gate("external_saebench", cand([0.9]), baselines(tmp_path), {**SPEC, "required": False})
    assert g["status"] == "skipped" and "needs >= 2 candidate seeds" in g["reason"]
    g = external_gate("external_saebench", cand([0.9]), baselines(tmp_path),
                      {"required": True, "basis": "point", "metrics": {"ce_loss_score": 0.0}})
    assert g["status"] == "pass"
    g = external_gate("external_saebench", cand([0.9, 0.9]), baselines(tmp_path),
                      {"required": True, "metrics": {"frac_alive": 0.0}})
    assert g["status"] == "fail" and "frac_alive" in g["reason"] and g["reason"].startswith("missing evidence")


def test_policy_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="gates.external_saebench.metrics"):
        external_gate("external_saebench", cand([0.9]), baselines(tmp_path), {"required": True})
    with pytest.raises(ValueError, match="basis must be lcb or point"):
        external_gate("external_saebench", cand([0.9]), baselines(tmp_path), {**SPEC, "basis": "mean"})
    with pytest.raises(ValueError, match="reads saebench_core summaries"):
        external_gate("external_saebench", [summ(0.9, eval_name="cebench")], baselines(tmp_path), SPEC)


def test_cebench_gate(tmp_path):
    def ce(v, seed):
        return {"eval": "cebench", "seed": seed, "hook": HOOK, "width": 4096, "l0": 31.0,
                "metrics": {"interpretability_score": v}, "higher_is_better": {"interpretability_score": True}}

    bl = {"entries": [{"id": "ref", "hook": HOOK, "width": 4096, "l0": 32, "summaries": {"cebench": [ce(2.0, 0)]}}]}
    spec = {"required": True, "metrics": {"interpretability_score": 0.0}}
    g = external_gate("external_cebench", [ce(v, s) for s, v in enumerate([2.2, 2.3, 2.25])], bl, spec)
    assert g["status"] == "pass" and g["external"]["eval"] == "cebench"


def test_embedded_default_policy_keeps_external_gates_optional(repo):
    """The embedded default runs no external benchmark: its external gates must be optional, hence skipped."""
    policy = yaml.safe_load((repo / "config" / "policy.yaml").read_text())
    for name in EVAL_OF_GATE:
        spec = policy["gates"].get(name, {"required": False, "metrics": {"placeholder": 0.0}})
        assert spec["required"] is False, f"config/policy.yaml: {name} must be optional in the embedded default"
        g = external_gate(name, None, None, spec)
        assert g["status"] == "skipped" and g["pass"] is None and "not run" in g["reason"]
