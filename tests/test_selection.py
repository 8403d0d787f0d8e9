"""Selection: grouping by condition, dropped groups with reasons, matched L0, ties, missing values, medoid seed."""

import numpy as np
import pytest

from husai.selection import medoid_seed, pareto_front, rank, select

SEL = {"split": "selection", "min_seeds": 3, "l0_tolerance": 0.1, "consistency_statistic": "pwmcc",
       "release_rule": "medoid",
       "objectives": [{"metric": "consistency_delta", "direction": "max"},
                      {"metric": "explained_variance", "direction": "max"},
                      {"metric": "dead_fraction", "direction": "min"}]}


def _cons(delta, seeds=(0, 1, 2), pairwise=None):
    S = len(seeds)
    M = np.full((S, S), 0.5) if pairwise is None else np.asarray(pairwise)
    np.fill_diagonal(M, 1.0)
    st = {"delta_vs_chance": {"point": delta + 0.02, "lcb": delta, "method": "m"}, "trained": {"pairwise": M.tolist()}}
    return {"seeds": list(seeds), "statistics": {"pwmcc": st}}


def _metrics(ev, dead, l0, n=3, report_ev=None):
    rows = []
    for i in range(n):
        sel = {"explained_variance": ev + 0.001 * i, "dead_fraction": dead, "l0": l0}
        rows.append({"explained_variance": report_ev if report_ev is not None else ev, "dead_fraction": dead,
                     "l0": l0, "selection": sel})
    return rows


def _cond(k, delta, ev=0.9, dead=0.1, l0=None, n=3):
    return {"spec": {"k": k}, "seed_metrics": _metrics(ev, dead, l0 if l0 is not None else k, n),
            "consistency": _cons(delta, seeds=tuple(range(n)))}


def test_selects_best_bound_and_records_everything():
    r = select({"a": _cond(8, 0.2), "b": _cond(8, 0.3)}, SEL, 0.95)
    assert r["selected"] == "b" and r["ranking"] == ["b", "a"] and r["dropped"] == []
    g = next(g for g in r["groups"] if g["condition"] == "b")
    assert g["metrics"]["explained_variance"]["bound_kind"] == "lcb"
    assert g["metrics"]["dead_fraction"]["bound_kind"] == "ucb"
    assert "Student" in g["metrics"]["explained_variance"]["method"]


def test_selection_reads_the_selection_half_not_the_report_half():
    c = _cond(8, 0.2)
    c["seed_metrics"] = _metrics(0.5, 0.1, 8, report_ev=0.99)
    r = select({"a": c}, SEL, 0.95)
    assert r["groups"][0]["metrics"]["explained_variance"]["mean"] == pytest.approx(0.501)


def test_too_few_seeds_and_unmatched_l0_are_dropped_with_reasons():
    r = select({"few": _cond(8, 0.5, n=2), "l0off": _cond(8, 0.6, l0=36), "ok": _cond(8, 0.1)}, SEL, 0.95)
    assert r["selected"] == "ok"
    reasons = {d["condition"]: " ".join(d["reasons"]) for d in r["dropped"]}
    assert "min_seeds=3" in reasons["few"] and "36.00" in reasons["l0off"] and "matched sparsity" in reasons["l0off"]


def test_missing_consistency_drops_and_nothing_eligible_selects_none():
    c = _cond(8, 0.3)
    c["consistency"] = None
    r = select({"a": c}, SEL, 0.95)
    assert r["selected"] is None and r["selected_seed"] is None
    assert "no consistency evidence" in r["dropped"][0]["reasons"]


def test_ties_break_deterministically_by_condition_id():
    r = select({"zeta": _cond(8, 0.3), "alpha": _cond(8, 0.3)}, SEL, 0.95)
    assert r["ranking"] == ["alpha", "zeta"] and r["selected"] == "alpha"
    assert select({"alpha": _cond(8, 0.3), "zeta": _cond(8, 0.3)}, SEL, 0.95) == r


def test_pareto_front_and_rank_with_nan():
    groups = [{"condition": "a", "metrics": {"x": {"bound": 1.0}, "y": {"bound": 0.0}}},
              {"condition": "b", "metrics": {"x": {"bound": 0.0}, "y": {"bound": 1.0}}},
              {"condition": "c", "metrics": {"x": {"bound": 0.0}, "y": {"bound": 0.0}}},
              {"condition": "d", "metrics": {"x": {"bound": float("nan")}, "y": {"bound": 2.0}}}]
    obj = [{"metric": "x", "direction": "max"}, {"metric": "y", "direction": "max"}]
    assert pareto_front(groups, obj) == ["a", "b"]
    assert rank(groups, obj) == ["a", "b", "c", "d"]


def test_medoid_seed_is_most_consistent_and_ties_go_to_lowest_seed():
    M = [[1, 0.9, 0.2], [0.9, 1, 0.8], [0.2, 0.8, 1]]
    assert medoid_seed(_cons(0.1, seeds=(5, 6, 7), pairwise=M), "pwmcc") == 6
    assert medoid_seed(_cons(0.1, seeds=(9, 3, 4)), "pwmcc") == 3


def test_a_regularised_group_is_never_ranked_on_its_inflated_consistency():
    """Its within-condition consistency is the highest (every seed pulled toward one reference), yet it is dropped
    with the reason, and the honest judgement passed by the caller rides along."""
    reg = {**_cond(8, 0.9), "regularised_judgement": {"pwmcc_regularised_vs_heldout": 0.31}}
    reg["spec"] = {"k": 8, "lam": 0.5}
    r = select({"plain": _cond(8, 0.2), "reg": reg}, SEL, 0.95)
    assert r["selected"] == "plain" and r["ranking"] == ["plain"]
    dropped = {d["condition"]: d["reasons"] for d in r["dropped"]}
    assert "inflated by construction" in dropped["reg"][0]
    g = next(g for g in r["groups"] if g["condition"] == "reg")
    assert g["within_condition_consistency"].startswith("inflated")
    assert g["regularised_judgement"]["pwmcc_regularised_vs_heldout"] == 0.31
