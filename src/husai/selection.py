"""Candidate selection without fooling ourselves.

* Groups are conditions (one hyperparameter setting each); groups are never merged.
* A group with fewer seeds than the policy's minimum, or whose measured L0 is not within the policy's tolerance
  of its target (architectures are compared at matched sparsity), is dropped and listed with the reason.
* Per group and metric: seed-level mean, sd and a one-sided bound (LCB for higher-is-better, UCB otherwise),
  method recorded. Selection reads the metrics measured on the *selection* half of the held-out rows; the gates
  report the other half, so the data used to choose is not the data used to report.
* A regularised group (lam > 0: every seed pulled toward one reference decoder) is dropped from ranking: its
  cross-seed consistency is inflated by construction and is not evidence. Its honest judgement (against held-out
  unregularised seeds, husai.pipeline_saes.judge_regularised) is attached when the caller passes it.
* Pareto front over the objectives' bounds; a deterministic ranking (objectives in policy order, then the
  condition id); the released checkpoint inside the chosen group follows a rule fixed in the policy
  ("medoid": the seed most consistent with its siblings), never the best test score.
"""

from __future__ import annotations

import numpy as np

from husai import stats


def _bound(values, higher_is_better: bool, confidence: float) -> dict:
    r = stats.lcb_mean(values, confidence)
    bound = r["lcb"] if higher_is_better else r.get("ucb", float("nan"))
    return {**r, "bound": bound, "bound_kind": "lcb" if higher_is_better else "ucb"}


def group_summary(cid: str, spec: dict, seed_metrics: list[dict], consistency: dict | None, sel: dict,
                  confidence: float) -> dict:
    n = len(seed_metrics)
    out = {"condition": cid, "n_seeds": n, "target_l0": spec.get("k"), "metrics": {}, "eligible": True, "reasons": []}
    if n == 0:
        out.update(eligible=False, reasons=["no seed metrics"])
        return out
    split = sel.get("split", "selection")
    rows = [m.get(split, m) for m in seed_metrics]
    for name, hib in (("explained_variance", True), ("dead_fraction", False), ("l0", False)):
        vals = [r[name] for r in rows if r.get(name) is not None]
        out["metrics"][name] = _bound(vals, hib, confidence) if vals else None
    if consistency:
        st = consistency["statistics"][sel["consistency_statistic"]]
        out["metrics"]["consistency_delta"] = {"mean": st["delta_vs_chance"]["point"],
                                               "bound": st["delta_vs_chance"]["lcb"], "bound_kind": "lcb",
                                               "method": st["delta_vs_chance"]["method"]}
        out["medoid_seed"] = medoid_seed(consistency, sel["consistency_statistic"])
    else:
        out["metrics"]["consistency_delta"] = None
        out["reasons"].append("no consistency evidence")
        out["eligible"] = False
    if n < sel["min_seeds"]:
        out["eligible"] = False
        out["reasons"].append(f"{n} seeds < min_seeds={sel['min_seeds']}")
    if float(spec.get("lam", 0) or 0) > 0:
        out["eligible"] = False
        out["within_condition_consistency"] = "inflated by construction (regularised toward a reference decoder)"
        out["reasons"].append(f"regularised (lam={spec['lam']}): its within-condition consistency is inflated by "
                              "construction and excluded from ranking; judged against held-out unregularised seeds")
    l0 = out["metrics"]["l0"]
    if spec.get("k") and l0 is not None:
        rel = abs(l0["mean"] - spec["k"]) / spec["k"]
        out["l0_relative_error"] = rel
        if rel > sel["l0_tolerance"]:
            out["eligible"] = False
            out["reasons"].append(f"measured L0 {l0['mean']:.2f} is not within ±{sel['l0_tolerance']:.0%} of the "
                                  f"target {spec['k']} (not at matched sparsity)")
    return out


def medoid_seed(consistency: dict, statistic: str) -> int:
    """The seed whose mean pairwise statistic to the other seeds is highest (lowest seed id on ties)."""
    M = np.array(consistency["statistics"][statistic]["trained"]["pairwise"], dtype=float)
    np.fill_diagonal(M, np.nan)
    means = np.nanmean(M, axis=1)
    seeds = consistency["seeds"]
    best = max(range(len(seeds)), key=lambda i: (round(float(means[i]), 12), -seeds[i]))
    return int(seeds[best])


def _objective_vector(g: dict, objectives: list[dict]) -> list[float]:
    vec = []
    for o in objectives:
        m = g["metrics"].get(o["metric"])
        b = m["bound"] if m else float("nan")
        vec.append(b if o["direction"] == "max" else -b)
    return vec


def pareto_front(groups: list[dict], objectives: list[dict]) -> list[str]:
    """Conditions not dominated by another on every objective bound (all oriented to 'larger is better')."""
    vecs = {g["condition"]: np.array(_objective_vector(g, objectives)) for g in groups}
    front = []
    for cid, v in vecs.items():
        if np.isnan(v).any():
            continue
        dominated = any(not np.isnan(w).any() and np.all(w >= v) and np.any(w > v)
                        for other, w in vecs.items() if other != cid)
        if not dominated:
            front.append(cid)
    return sorted(front)


def rank(groups: list[dict], objectives: list[dict]) -> list[str]:
    """Deterministic: objectives in policy order (NaN last), then the condition id."""
    def key(g):
        vec = _objective_vector(g, objectives)
        return tuple((1, 0.0) if np.isnan(x) else (0, -x) for x in vec) + (g["condition"],)

    return [g["condition"] for g in sorted(groups, key=key)]


def select(conditions: dict[str, dict], sel: dict, confidence: float) -> dict:
    """conditions: {cid: {'spec', 'seed_metrics': [dict], 'consistency': dict|None}}; sel: the policy's
    selection block (min_seeds, l0_tolerance, consistency_statistic, objectives, release_rule)."""
    summaries = [group_summary(cid, c["spec"], c["seed_metrics"], c.get("consistency"), sel, confidence)
                 for cid, c in sorted(conditions.items())]
    for g in summaries:
        if conditions[g["condition"]].get("regularised_judgement") is not None:
            g["regularised_judgement"] = conditions[g["condition"]]["regularised_judgement"]
    eligible = [g for g in summaries if g["eligible"]]
    dropped = [{"condition": g["condition"], "reasons": g["reasons"]} for g in summaries if not g["eligible"]]
    front = pareto_front(eligible, sel["objectives"])
    ranking = rank(eligible, sel["objectives"])
    on_front = [c for c in ranking if c in front]
    chosen = on_front[0] if on_front else None
    chosen_group = next((g for g in summaries if g["condition"] == chosen), None)
    return {
        "selected": chosen,
        "selected_seed": chosen_group.get("medoid_seed") if chosen_group else None,
        "release_rule": sel["release_rule"],
        "groups": summaries, "dropped": dropped, "pareto_front": front, "ranking": ranking,
        "objectives": sel["objectives"], "data_used": f"held-out '{sel.get('split', 'selection')}' half",
        "method": "seed-level mean with one-sided Student-t bounds; Pareto front on bounds; ranking by objectives",
    }
