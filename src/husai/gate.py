"""The release gate: policy as data. Thresholds and which gates are required come from the policy file;
this module only compares measured values with them and records why each gate passed, failed or was skipped.

A required gate whose evidence is missing FAILS with that reason; an optional one is `skipped`, never passed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from husai import stats

SEV_ORDER = ["SEV1", "SEV2", "SEV3", "SEV4"]


def check(name: str, value, threshold, comparison: str, basis: str, method: str | None = None) -> dict:
    ok = value is not None and not (isinstance(value, float) and math.isnan(value))
    if ok:
        ok = bool(value >= threshold) if comparison == ">=" else bool(value <= threshold) \
            if comparison == "<=" else bool(value == threshold)
    out = {"name": name, "value": value, "threshold": threshold, "comparison": comparison, "basis": basis,
           "pass": ok}
    if method:
        out["method"] = method
    return out


def _gate(name: str, spec: dict, checks: list[dict], evidence: list[str]) -> dict:
    primary = checks[0]
    failing = [c for c in checks if not c["pass"]]
    return {
        "gate": name, "required": spec["required"], "status": "pass" if not failing else "fail",
        "pass": not failing, "value": primary["value"], "threshold": primary["threshold"],
        "basis": primary["basis"], "checks": checks, "evidence": evidence,
        "reason": None if not failing else "; ".join(
            f"{c['name']} = {c['value']} fails {c['comparison']} {c['threshold']} ({c['basis']})" for c in failing),
    }


def _missing(name: str, spec: dict, why: str) -> dict:
    status = "fail" if spec["required"] else "skipped"
    return {"gate": name, "required": spec["required"], "status": status, "pass": False if spec["required"] else None,
            "value": None, "threshold": None, "basis": None, "checks": [], "evidence": [],
            "reason": f"missing evidence: {why}"}


def gate_data_qc(spec, ev):
    """Every hook's activation QC must pass (evidence: one qc.json per hook)."""
    qcs = ev["qc"] if isinstance(ev["qc"], list) else [ev["qc"]]
    missing = [q for q in qcs if not q]
    if missing:
        return _missing("data_qc", spec, f"{len(missing)} qc.json file(s)")
    ok = all(q["data"]["thresholds_passed"] for q in qcs)
    g = _gate("data_qc", spec, [check("thresholds_passed", ok, True, "==", "point")], [q["path"] for q in qcs])
    reasons = [f"{q['path']}: {r}" for q in qcs for r in q["data"]["failed_reasons"]]
    if reasons:
        g["reason"] = "; ".join(reasons)
    return g


def gate_model_learned(spec, ev):
    m = ev["model_metrics"]["data"]
    if "heldout_accuracy" not in m:  # a pretrained model: its held-out next-token loss
        if "max_heldout_loss" not in spec:
            return _missing("model_learned", spec, "policy has no max_heldout_loss for a pretrained model")
        return _gate("model_learned", spec, [check("heldout_loss", m["heldout_loss"], spec["max_heldout_loss"], "<=",
                                                   "point")], [ev["model_metrics"]["path"]])
    gain = m["fourier_concentration"] - m["fourier_concentration_random_init"]
    return _gate("model_learned", spec, [
        check("heldout_accuracy", m["heldout_accuracy"], spec["min_heldout_accuracy"], ">=", "point"),
        check("fourier_gain_vs_random_init", gain, spec["min_fourier_gain"], ">=", "point"),
    ], [ev["model_metrics"]["path"]])


def gate_reconstruction(spec, ev, confidence):
    seeds = ev["candidate_seed_metrics"]
    ev_vals = [s["data"]["explained_variance"] for s in seeds]
    dead_vals = [s["data"]["dead_fraction"] for s in seeds]
    ev_b, dead_b = stats.lcb_mean(ev_vals, confidence), stats.lcb_mean(dead_vals, confidence)
    lcb = spec["basis"] == "lcb"
    return _gate("reconstruction", spec, [
        check("explained_variance", ev_b["lcb"] if lcb else ev_b["mean"], spec["ev_floor"], ">=", spec["basis"],
              ev_b["method"] if lcb else "mean over seeds"),
        # For a ceiling the conservative bound is the upper one.
        check("dead_fraction", dead_b.get("ucb", dead_b["mean"]) if lcb else dead_b["mean"],
              spec["dead_fraction_ceiling"], "<=", "ucb" if lcb else "point",
              dead_b["method"] if lcb else "mean over seeds"),
    ], [s["path"] for s in seeds])


def gate_trained_vs_random(spec, ev, bh):
    cons = ev["candidate_consistency"]
    st = cons["data"]["statistics"][spec["statistic"]]
    delta = st["delta_vs_chance"]
    value = delta["lcb"] if spec["basis"] == "lcb" else delta["point"]
    return _gate("trained_vs_random", spec, [
        check(f"{spec['statistic']}_minus_chance", value, spec["min_delta"], ">=", spec["basis"], delta["method"]),
        check("permutation_p_bh_adjusted", bh, spec["alpha"], "<=", "point",
              "permutation test over dictionaries, Benjamini-Hochberg across conditions"),
        check("chance_halfwidth_ratio", st["chance_halfwidth_ratio"], spec["max_chance_halfwidth_ratio"], "<=",
              "point", "chance-level CI half-width / |trained - chance|"),
    ], [cons["path"]])


def gate_candidate_selection(spec, ev):
    sel = ev["selection"]["data"]
    n_eligible = len(sel["groups"]) - len(sel["dropped"])
    g = _gate("candidate_selection", spec, [
        check("eligible_groups", n_eligible, 1, ">=", "point"),
        check("selected_on_pareto_front", sel["selected"] in sel["pareto_front"], True, "==", "point"),
    ], [ev["selection"]["path"]])
    if sel["dropped"]:
        g["dropped"] = sel["dropped"]
    return g


def gate_platform_canary(spec, ev):
    d = ev["platform"]["data"]
    g = _gate("platform_canary", spec, [check("platform_decision", d["decision"], "promote", "==", "point")],
              [ev["platform"]["path"]])
    if d.get("failed_checks"):
        g["reason"] = f"{d.get('severity')}: " + "; ".join(
            f"{c.get('code')} {c.get('platform') or ''} {c.get('size') or ''}: {c.get('reason')}".strip()
            for c in d["failed_checks"][:10])
    return g


def evaluate(policy: dict, evidence: dict, candidate: str | None, conditions: list[str]) -> dict:
    """evidence: {'qc', 'model_metrics', 'candidate_consistency': {'path','data'} or None,
    'candidate_seed_metrics': list, 'consistency': {condition: {'path','data'}}}."""
    evidence = dict(evidence)  # lane records are added below; the caller's dict stays as it was
    gates_spec = policy["gates"]
    conf = policy["lcb_confidence"]
    stat = gates_spec.get("trained_vs_random", {}).get("statistic", "pwmcc")
    cons = evidence.get("consistency", {})
    tested = [c for c in conditions if cons.get(c)]
    pvals = [cons[c]["data"]["statistics"][stat]["permutation"]["p_value"] for c in tested]
    bh = stats.benjamini_hochberg(pvals, alpha=gates_spec.get("trained_vs_random", {}).get("alpha", 0.05))
    bh_by_cond = dict(zip(tested, bh["p_adjusted"], strict=True))
    builders: dict[str, tuple[Callable, list[str]]] = {
        "data_qc": (lambda s: gate_data_qc(s, evidence), ["qc"]),
        "model_learned": (lambda s: gate_model_learned(s, evidence), ["model_metrics"]),
        "reconstruction": (lambda s: gate_reconstruction(s, evidence, conf), ["candidate_seed_metrics"]),
        "trained_vs_random": (lambda s: gate_trained_vs_random(s, evidence, bh_by_cond.get(candidate)),
                              ["candidate_consistency"]),
        "candidate_selection": (lambda s: gate_candidate_selection(s, evidence), ["selection"]),
        "platform_canary": (lambda s: gate_platform_canary(s, evidence), ["platform"]),
    }
    # External benchmarks: the candidate's per-seed summaries against a matched baseline (skipped when absent).
    from husai.external import external_gate

    for name in ("external_saebench", "external_cebench"):
        builders[name] = (lambda s, n=name: external_gate(n, evidence.get(n), evidence.get("external_baselines"), s,
                                                          confidence=conf), [])
    # Lane gates read the candidate's own lane evidence: evidence["lanes"][lane][candidate] (transcoder: per study).
    from husai.gate_lanes import LANE_EVIDENCE, LANE_GATES

    lanes = evidence.get("lanes") or {}
    for name, lane in LANE_EVIDENCE.items():
        rec = lanes.get(lane, {}).get("__study__" if name == "transcoder" else candidate)
        evidence[f"lane:{name}"] = rec
        builders[name] = (lambda s, n=name, r=rec: LANE_GATES[n](s, r, policy), [f"lane:{name}"])
    gates = []
    for name, spec in gates_spec.items():
        build, needs = builders[name]
        missing = [k for k in needs if not evidence.get(k)]
        if candidate is None and name in ("reconstruction", "trained_vs_random", *LANE_EVIDENCE):
            missing = ["no release candidate (selection found no eligible condition)"]
        if name == "reconstruction" and evidence.get("candidate_seed_metrics") is not None:
            n = len(evidence["candidate_seed_metrics"])
            if n < policy["min_seeds"]:
                missing.append(f"only {n} seed metrics for {candidate}, policy min_seeds={policy['min_seeds']}")
        gates.append(_missing(name, spec, ", ".join(missing)) if missing else build(spec))
    failed = [g["gate"] for g in gates if g["status"] == "fail"]
    failed_required = [g["gate"] for g in gates if g["status"] == "fail" and g["required"]]
    sev = sorted((policy["severity"].get(g, "SEV1") for g in failed), key=SEV_ORDER.index)
    return {
        "gates": gates,
        "failed_checks": [{"gate": g["gate"], "required": g["required"], "reason": g["reason"]}
                          for g in gates if g["status"] == "fail"],
        "severity": sev[0] if sev else policy["default_severity"],
        "decision": "iterate" if failed_required else "promote",
        "pass_all": not failed and all(g["status"] == "pass" for g in gates),
        "multiple_testing": {"conditions": tested, "statistic": stat, "p_values": pvals, **bh},
    }


def render_markdown(report: dict) -> str:
    lines = [f"# Release policy: {report['decision'].upper()}", "",
             f"- policy: `{report['policy_id']}` v{report['policy_version']}", f"- run: `{report['run_id']}`",
             f"- candidate: `{report['candidate']}`", f"- severity: {report['severity']}",
             f"- pass_all: {report['pass_all']}", "",
             "| gate | required | status | value | threshold | basis | reason |",
             "|---|---|---|---|---|---|---|"]
    for g in report["gates"]:
        v = g["value"]
        v = f"{v:.4g}" if isinstance(v, float) else v
        lines.append(f"| {g['gate']} | {g['required']} | {g['status']} | {v} | {g['threshold']} | {g['basis']} | "
                     f"{g['reason'] or ''} |")
    if report["failed_checks"]:
        lines += ["", "## Failed checks", ""] + [f"- **{f['gate']}**: {f['reason']}" for f in report["failed_checks"]]
    return "\n".join(lines) + "\n"
