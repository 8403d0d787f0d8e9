"""Workflow functions of matched-L0 calibration and the assignment-consistency regulariser (rules/saes.smk,
rules/consistency.smk), in the husai.pipeline calling convention f(input, output, params, config, rule), plus
the helpers husai.pipeline.train_condition uses to train a calibrated or regularised condition.

Rows. Calibration fits every grid SAE on the *training* rows of the condition's hook and measures its L0 on the
'selection' half of the held-out rows (husai.activations.heldout_halves) - the half candidate selection reads
(its matched-L0 rule included), never the 'report' half that the gates and tables read. Seed metrics, and so
every reported L0/EV, stay on the report half.

Regularised conditions (lam > 0). Every seed trains with husai.regularizer.AssignmentRegularizer toward one
reference decoder: seed `sae/regularizer/reference_seed` of the condition's unregularised sibling (same keys,
lam = 0). The judgement (`judge_regularised`) compares the regularised seeds with the sibling's other seeds -
the reference seed is held out, and a regularised seed is never paired with the unregularised seed of the same
id (same init and data order) - with the explained-variance cost beside it. A regularised condition's own
cross-seed consistency is inflated by construction: selection excludes it from ranking and the release report
marks it (see `mark_regularised`).
"""

from __future__ import annotations

from pathlib import Path

from husai import activations as A
from husai.config import conditions_by_id, is_regularised, sibling_id
from husai.io import read_json, sha256_file, write_json
from husai.provenance import provenance

ROWS_NOTE = ("fit: the hook's training rows; L0 measured: the 'selection' half of the held-out rows "
             "(husai.activations.heldout_halves), never the 'report' half the gates read")


def calibrate_condition(input, output, params, config, rule):
    """Calibrate one relu/jumprelu condition's sparsity coefficient to L0 = k and write the full record. A miss
    after max_rounds is written as such (status 'missed_tolerance'); the condition still trains with the best
    coefficient found, and selection's matched-L0 rule then drops it if its seeds miss too."""
    from husai.calibration import calibrate_sparsity
    from husai.pipeline import sae_config_for

    spec = conditions_by_id(config)[params.condition]
    if not spec.get("calibrate") or is_regularised(spec):
        raise ValueError(f"{params.condition}: only lam = 0 conditions with calibrate: true are calibrated "
                         "(a regularised condition uses its sibling's calibration)")
    cal = config["sae"]["calibration"]
    data = A.load_verified_dataset(input.manifest, input.qc)
    select_rows, _ = A.heldout_halves(data["heldout"], config["activations"]["split_seed"])
    sae_cfg, tc = sae_config_for(config, params.condition, data["train"].shape[1], calibrating=True)
    rec = calibrate_sparsity(sae_cfg, tc, data["train"], select_rows, float(spec["k"]), seed=cal["seed"],
                             grid=cal.get("grid"), n_grid=cal["n_grid"], tolerance=cal["tolerance"],
                             max_rounds=cal["max_rounds"], max_widen=cal.get("max_widen", 3))
    rec.update({
        "condition": params.condition, "hook": params.hook, "key": f"{params.hook}/{params.condition}",
        "status": "within_tolerance" if rec["within_tolerance"] else "missed_tolerance",
        "rows": ROWS_NOTE, "n_train_rows": int(data["train"].shape[0]),
        "provenance": provenance(rule=rule, config=config, inputs=[input.manifest, input.qc], seed=cal["seed"],
                                 device=tc.device),
    })
    if not rec["within_tolerance"]:
        rec["failure"] = (f"verified held-out L0 {rec['achieved_l0']:.3g} misses the target {rec['target_l0']:g} "
                          f"by {rec['relative_error']:+.1%} (tolerance ±{rec['tolerance']:.0%}) after "
                          f"{cal['max_rounds']} verification round(s); trained anyway with this coefficient, and "
                          "selection drops the condition if its seeds are not at matched L0")
    write_json(output.json, rec)
    print(f"{params.condition}: {rec['coefficient_name']} = {rec['chosen_coefficient']:.4g}, held-out L0 "
          f"{rec['achieved_l0']:.2f} vs target {rec['target_l0']:g} ({rec['status']})")


def training_extras(input, config, condition: str, seeds: list[int]):
    """What a calibrated or regularised condition adds to plain training: (calibration record or None,
    regularizer or None, a JSON record for train.json and the checkpoints' metadata)."""
    spec = conditions_by_id(config)[condition]
    cal_path = input.get("calibration")
    calibration = read_json(cal_path) if cal_path else None
    if spec.get("calibrate") and calibration is None:
        raise ValueError(f"{condition}: calibrate: true but the rule passed no calibration record")
    record: dict = {}
    if calibration is not None:
        record["calibration"] = {
            "path": str(cal_path), "sha256": sha256_file(cal_path),
            "of_condition": calibration["condition"], "coefficient_name": calibration["coefficient_name"],
            "coefficient": calibration["chosen_coefficient"], "target_l0": calibration["target_l0"],
            "calibrated_l0": calibration["achieved_l0"], "status": calibration["status"]}
    regularizer = None
    if is_regularised(spec):
        from husai.checkpoint import load_seed
        from husai.regularizer import AssignmentRegularizer

        reg = config["sae"]["regularizer"]
        ref_train = read_json(input.reference_train)
        ref = load_seed(Path(input.reference_weights).parent, expected_sha256=ref_train["weights_sha256"])
        regularizer = AssignmentRegularizer(ref.W_dec_SFD[0].detach(), lam=float(spec["lam"]),
                                            update_interval=reg["assignment_update_interval"],
                                            method=reg.get("method", "scipy"))
        record["regularizer"] = {
            "lam": float(spec["lam"]), "assignment_update_interval": reg["assignment_update_interval"],
            "method": regularizer.method, "reference": {
                "condition": sibling_id(spec), "seed": ref_train["seed"], "path": str(input.reference_weights),
                "sha256": ref_train["weights_sha256"]},
            "reference_decoder_sha256": regularizer.fingerprint()["reference_sha256"], "seeds": list(seeds)}
    return calibration, regularizer, record


def _decoders(weights, trains) -> tuple[list[int], list, list[dict]]:
    from husai.checkpoint import load_seed

    seeds, decs, infos = [], [], []
    for w, t in zip(weights, trains, strict=True):
        info = read_json(t)
        sae = load_seed(Path(w).parent, expected_sha256=info["weights_sha256"])
        seeds.append(int(info["seed"]))
        decs.append(sae.W_dec_SFD[0].detach().double())
        infos.append(info)
    return seeds, decs, infos


def judge_regularised(input, output, params, config, rule):
    """The honest judgement of one regularised condition (husai.regularizer.judge_regularised)."""
    from husai.regularizer import judge_regularised as judge

    ref_seed = int(config["sae"]["regularizer"]["reference_seed"])
    r_seeds, r_decs, r_infos = _decoders(input.weights, input.train)
    u_seeds, u_decs, _ = _decoders(input.sibling_weights, input.sibling_train)
    ev_r = {int(m["seed"]): m["explained_variance"] for m in map(read_json, input.metrics)}
    ev_u = {int(m["seed"]): m["explained_variance"] for m in map(read_json, input.sibling_metrics)}
    held = [i for i, s in enumerate(u_seeds) if s != ref_seed]
    ref = u_decs[u_seeds.index(ref_seed)]
    expected = read_json(input.sibling_train[u_seeds.index(ref_seed)])["weights_sha256"]
    for info in r_infos:
        used = info.get("regularizer", {}).get("reference", {}).get("sha256")
        if used != expected:
            raise ValueError(f"seed {info['seed']} of {params.condition} was not trained toward {params.sibling} "
                             f"seed {ref_seed} (reference sha256 {used} != {expected}); retrain it")
    out = judge(r_decs, [u_decs[i] for i in held], tau=config["consistency"]["tau"],
                ev_regularised=[ev_r[s] for s in r_seeds], ev_unregularised=[ev_u[s] for s in u_seeds],
                reference=ref, regularised_seeds=r_seeds, heldout_seeds=[u_seeds[i] for i in held])
    paired = [ev_u[s] - ev_r[s] for s in r_seeds if s in ev_u]
    out["explained_variance"].update({
        "rows": "the 'report' half of the held-out rows (seed metrics.json)",
        "paired_drop_per_seed": paired, "paired_seeds": [s for s in r_seeds if s in ev_u],
        "unregularised_seeds": u_seeds, "note": "paired: the same seed (init, data order) with and without lam"})
    out.update({
        "lane": "regularised", "condition": params.condition, "hook": params.hook,
        "key": f"{params.hook}/{params.condition}", "sibling": params.sibling, "reference_seed": ref_seed,
        "lam": float(conditions_by_id(config)[params.condition]["lam"]),
        "reference": "seed reference_seed of the sibling (lam = 0); held out of regularised_vs_heldout",
        "provenance": provenance(rule=rule, config=config, seed=r_seeds, inputs=[
            *input.weights, *input.metrics, *input.sibling_weights, *input.sibling_metrics]),
    })
    write_json(output.json, out)
    h = out["regularised_vs_heldout"]["pwmcc"]["mean"]
    b = out["heldout_vs_heldout"]["pwmcc"]["mean"]
    print(f"{params.condition}: PWMCC regularised vs held-out {h:.3f} (held-out baseline {b:.3f}); EV drop "
          f"{out['explained_variance']['drop']:.4f}")


def mark_regularised(conditions: dict, records: dict) -> dict:
    """Release-report condition entries: a regularised condition's within-condition consistency is marked
    inflated and its honest judgement (regularised.json) sits beside it. records: {key: {'path', 'data'}}."""
    for key, rec in records.items():
        if key not in conditions:
            continue
        d = rec["data"]
        conditions[key]["within_condition_consistency"] = (
            "inflated by construction (every seed pulled toward one reference decoder); not evidence, excluded "
            "from selection's ranking and from the gate's multiple-testing family")
        conditions[key]["regularised_judgement"] = {
            "path": rec["path"], "sibling": d["sibling"], "reference_seed": d["reference_seed"],
            **{f"{name}_regularised_vs_heldout": d["regularised_vs_heldout"][name]["mean"]
               for name in d["regularised_vs_heldout"]},
            **{f"{name}_heldout_vs_heldout": d["heldout_vs_heldout"][name]["mean"]
               for name in d["heldout_vs_heldout"]},
            "explained_variance_drop": d.get("explained_variance", {}).get("drop", float("nan"))}
    return conditions
