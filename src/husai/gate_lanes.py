"""Gates of the evaluation and stress lanes: the candidate's own lane JSON against the policy's thresholds.

Every threshold, basis and label list comes from the gate's policy entry (`spec`) and the bound's confidence
from the policy's `lcb_confidence`; bounds are recomputed here from the per-seed values the lane recorded, so
a policy change re-gates old evidence without recomputing it, and the lane file can never smuggle in a verdict.
Lower-is-better quantities (accuracy drop, relative OOD drop) are bounded from above (UCB), the conservative
side for a ceiling. A record that lacks a value fails its check (value None), never passes.
"""

from __future__ import annotations

import numpy as np

from husai import stats
from husai.gate import _gate, _missing, check

# gate name -> lane evidence name (results/lanes/<model>/<hook>/<condition>/<lane>.json; transcoder per study)
LANE_EVIDENCE = {"splice": "splice", "probe_tripwires": "probes", "ood": "ood", "known_circuit": "known_circuit",
                 "transcoder": "transcoder"}


def _values(xs) -> np.ndarray:
    """Per-seed values as floats (JSON null, i.e. a non-finite value, becomes NaN and is dropped by the bound)."""
    return np.asarray([np.nan if x is None else x for x in xs], dtype=float)


def _bound(values, basis: str, side: str, confidence: float) -> tuple[float | None, str, str]:
    """(value, basis label, method): the one-sided bound on `side` ('lcb'/'ucb') when basis says so, else the mean."""
    b = stats.lcb_mean(_values(values), confidence)
    if basis == "point":
        return (b["mean"] if np.isfinite(b["mean"]) else None), "point", "mean over seeds"
    v = b.get(side, float("nan"))
    return (float(v) if np.isfinite(v) else None), side, b["method"]


def gate_splice(spec, record, policy):
    """Faithfulness of the spliced reconstruction: loss recovered (vs mean ablation), accuracy drop, Cohen's h,
    and the number of seeds whose exact McNemar test (BH across seeds) shows a significant degradation."""
    data, conf, basis = record["data"], policy["lcb_confidence"], spec["basis"]
    seeds = data["per_seed"]
    lr_v, lr_b, lr_m = _bound([s["loss_recovered_vs_mean"] for s in seeds], basis, "lcb", conf)
    ad_v, ad_b, ad_m = _bound([s["accuracy_drop"] for s in seeds], basis, "ucb", conf)
    h_v, h_b, h_m = _bound([s["cohens_h"] for s in seeds], basis, "lcb", conf)
    mc = data["aggregate"]["mcnemar"]
    # BH-adjusted p-values do not depend on alpha, so the policy's alpha applies to the recorded ones.
    n_sig = int(sum(1 for p, worse in zip(mc["p_adjusted"], mc["spliced_worse"], strict=True)
                    if p is not None and p <= spec["mcnemar_alpha"] and worse))
    return _gate("splice", spec, [
        check("loss_recovered_vs_mean", lr_v, spec["min_loss_recovered"], ">=", lr_b, lr_m),
        check("accuracy_drop", ad_v, spec["max_accuracy_drop"], "<=", ad_b, ad_m),
        check("cohens_h_spliced_minus_clean", h_v, spec["min_cohens_h"], ">=", h_b, h_m),
        check("significant_degradation_seeds", n_sig, spec["max_significant_degradation_seeds"], "<=", "point",
              f"exact McNemar per seed, Benjamini-Hochberg across {len(seeds)} seeds at alpha "
              f"{spec['mcnemar_alpha']}, counted when clean-only-correct > spliced-only-correct"),
    ], [record["path"]])


def gate_probe_tripwires(spec, record, policy):
    """The probing is honest: a shuffled-label probe stays near chance on every label, and a probe fit on one
    fold memorises it for each of the policy's overfit labels (a label never probed fails, as missing)."""
    tv = record["data"]["tripwire_values"]
    excess = [abs(v) for v in tv["shuffled_excess_ap_vs_chance"].values() if v is not None]
    worst = max(excess) if excess else None
    over = tv["overfit_min_accuracy"]
    missing = [lab for lab in spec["overfit_labels"] if over.get(lab) is None]
    low = None if missing else min(over[lab] for lab in spec["overfit_labels"])
    g = _gate("probe_tripwires", spec, [
        check("shuffled_label_max_abs_excess_ap", worst, spec["shuffled_max_abs_excess_ap"], "<=", "point",
              f"max over labels of |mean over {tv['n_folds']} folds (AP_shuffled - AP_random_ranking)|"),
        check("overfit_min_accuracy", low, spec["overfit_min_accuracy"], ">=", "point",
              f"min over folds and labels {list(spec['overfit_labels'])} of a same-fold probe's accuracy"),
    ], [record["path"]])
    if missing:
        g["reason"] = f"{g['reason']}; overfit label(s) {missing} were not probed"
    return g


def gate_ood(spec, record, policy):
    """Robustness: for each policy metric, the relative drop (in - out) / |in| bounded from above over seeds."""
    metrics, conf = record["data"]["metrics"], policy["lcb_confidence"]
    checks = []
    for m in spec["metrics"]:
        if m not in metrics:
            checks.append(check(f"{m}_relative_drop", None, spec["max_relative_drop"], "<=", spec["basis"],
                                "metric not in the lane record"))
            continue
        basis = "ucb" if spec["basis"] == "ucb" else "point"
        v, b, method = _bound(metrics[m]["relative_drop_per_seed"], basis, "ucb", conf)
        checks.append(check(f"{m}_relative_drop", v, spec["max_relative_drop"], "<=", b, method))
    return _gate("ood", spec, checks, [record["path"]])


def gate_known_circuit(spec, record, policy):
    """Recovery of the toy's Fourier circuit: the fraction of aligned decoder rows beats SAEs trained on a
    random-init model (paired by seed when the seed lists match) and Gaussian random decoders."""
    rep, conf, basis = record["data"]["report"], policy["lcb_confidence"], spec["basis"]
    trained = _values([s["fraction_aligned"] for s in rep["trained"]["per_seed"]])
    ri = rep.get("random_init_model")
    if ri:
        r = _values([s["fraction_aligned"] for s in ri["per_seed"]])
        paired = rep["delta_vs_random_init"].get("paired_by_seed", len(r) == len(trained))
        ri_v, ri_b, ri_m = _bound(trained - (r if paired else np.nanmean(r)), basis, "lcb", conf)
        ri_m += ", paired by seed" if paired else ", against the random-init mean"
    else:
        ri_v, ri_b, ri_m = None, basis, "no SAEs on a random-init model in the lane record"
    g_v, g_b, g_m = _bound(trained - rep["chance_gaussian"]["mean"], basis, "lcb", conf)
    return _gate("known_circuit", spec, [
        check("aligned_fraction_minus_random_init", ri_v, spec["min_delta_vs_random_init"], ">=", ri_b, ri_m),
        check("aligned_fraction_minus_gaussian", g_v, spec["min_delta_vs_gaussian"], ">=", g_b,
              f"{g_m}; Gaussian chance = mean of {rep['chance_gaussian'].get('n', '?')} random decoders"),
    ], [record["path"]])


def gate_transcoder(spec, record, policy):
    """Transcoders must beat their own chance level, and must not be worse than SAEs on the same hook by more than
    the policy's non-inferiority margin (both on the seed-level bound named by `basis`)."""
    if record is None:
        return _missing("transcoder", spec, "transcoder lane evidence not produced")
    st = record["data"]["statistics"][spec["statistic"]]
    lcb = spec["basis"] == "lcb"
    excess = st["transcoder"]["excess_lcb"] if lcb else st["transcoder"]["excess_over_chance"]
    delta = st["delta"]["lcb"] if lcb else st["delta"]["point"]
    return _gate("transcoder", spec, [
        check("transcoder_excess_over_chance", excess, spec["min_transcoder_excess"], ">=", spec["basis"],
              "one-sided seed-level bootstrap of (transcoder - its chance)"),
        check("transcoder_minus_sae_excess", delta, spec["min_delta"], ">=", spec["basis"],
              "seeds resampled jointly when shared; non-inferiority margin"),
    ], [record["path"]])


LANE_GATES = {"splice": gate_splice, "probe_tripwires": gate_probe_tripwires, "ood": gate_ood,
              "known_circuit": gate_known_circuit, "transcoder": gate_transcoder}
