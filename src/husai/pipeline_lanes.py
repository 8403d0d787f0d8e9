"""Rule functions of the evaluation lanes (splice, probes, OOD, known circuit) for the toy model.

Each lane writes one JSON per (hook, condition) that names its lane and its '<hook>/<condition>' key, so the
release gate reads the candidate's OWN evidence (husai.gate_lanes holds the thresholds' comparisons; nothing
here decides a gate). A lane job evaluates every seed of its condition at once: loading the model and the
dataset dominates a job's cost, so one job per seed would mostly pay start-up.

Row sets, chosen so that no lane scores an SAE on rows it was trained on unless that is the point:
  - splice and OOD "in": the 'report' half of the in-distribution held-out rows (the half selection never
    sees, the same rows seed_metrics reports on); OOD "out": the declared OOD slice (never trained on);
  - probes: every in-distribution row, with leave-one-group-out folds (the probe, not the SAE, is what is
    held out); OOD probes train on the SAE's training rows;
  - known circuit: every row (the circuit basis is a property of the model, fitted over the full (a, b) grid,
    where Fourier features are orthogonal).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from husai import activations as A
from husai import stats
from husai.checkpoint import load_seed
from husai.config import load_yaml
from husai.io import load_safetensors, read_json, read_npy, save_safetensors, sha256_file, write_json, write_npy
from husai.provenance import provenance


# --- shared helpers ----------------------------------------------------------------------------------------
def _policy(config) -> dict:
    return load_yaml(config["policy"])


def _confidence(policy) -> float:
    return policy.get("lcb_confidence", stats.LCB_CONFIDENCE)


def _lane_cfg(config, lane: str) -> dict:
    return config.get("lanes", {}).get(lane, {})


def _toy_model(config, weights):
    from husai.pipeline import _toy_cfg
    from husai.toymodel import load_model

    return load_model(_toy_cfg(config), weights)


def full_acts(data: dict) -> np.ndarray:
    """All rows of the merged dataset in tokens.npy order, rebuilt from the verified train/held-out/OOD parts."""
    held, ood = data["heldout_mask"], data["ood_mask"]
    out = np.empty((len(held), data["train"].shape[1]), dtype=np.float32)
    out[~held & ~ood], out[held & ~ood], out[ood] = data["train"], data["heldout"], data["ood"]
    return out


def row_sets(data: dict, split_seed: int) -> dict[str, np.ndarray]:
    """Row indices into tokens.npy: 'report' (in-distribution held-out, the half selection never reads; same
    rows and order as seed_metrics' report half), 'train' (SAE training rows), 'ood', 'in_dist'."""
    held, ood = data["heldout_mask"], data["ood_mask"]
    _, report = A.heldout_halves(np.flatnonzero(held & ~ood), split_seed)
    return {"report": np.asarray(report), "train": np.flatnonzero(~held & ~ood), "ood": np.flatnonzero(ood),
            "in_dist": np.flatnonzero(~ood)}


def answers(tokens_NT, p: int) -> np.ndarray:
    tok = np.asarray(tokens_NT)
    return ((tok[:, 0] + tok[:, 1]) % p).astype(np.int64)


def load_condition_seeds(weight_paths, train_paths) -> list[tuple[int, object]]:
    """(seed, one-seed SAE) per checkpoint, each verified against the sha256 its train.json recorded."""
    out = []
    for w, t in zip(weight_paths, train_paths, strict=True):
        train = read_json(t)
        out.append((int(train["seed"]), load_seed(Path(w).parent, expected_sha256=train["weights_sha256"])))
    return out


@torch.no_grad()
def latents(sae, x_ND, batch: int = 8192) -> np.ndarray:
    x = torch.as_tensor(np.asarray(x_ND), dtype=torch.float32)
    return np.concatenate([sae(x[i:i + batch])[1][0].numpy() for i in range(0, len(x), batch)])


def _lane_record(lane, params, config, rule, inputs, seeds, formulas, **body) -> dict:
    return {"lane": lane, "key": f"{params.hook}/{params.condition}", "hook": params.hook,
            "condition": params.condition, "seeds": seeds, **body,
            "provenance": provenance(rule=rule, config=config, inputs=inputs, seed=seeds, formulas=formulas)}


# --- splice ------------------------------------------------------------------------------------------------
def splice(input, output, params, config, rule):
    """Clean vs spliced vs ablated loss/accuracy of the base model, per seed, and the seed-level summary."""
    from husai.lanes.splice import FORMULA_VERSION, aggregate_splice, splice_metrics

    policy = _policy(config)
    data = A.load_verified_dataset(input.manifest, input.qc)
    rows = row_sets(data, config["activations"]["split_seed"])["report"]
    tok = np.asarray(data["tokens"])[rows]
    model = _toy_model(config, input.weights)
    mean_D = data["train"].mean(0)  # the SAE's training rows: mean-ablation "knows nothing about this input"
    per_seed, seeds = [], []
    for seed, sae in load_condition_seeds(input.sae_weights, input.train):
        m = splice_metrics(model, sae, tok, answers(tok, config["model"]["p"]), params.hook,
                           config["activations"]["position"], mean_D, confidence=_confidence(policy))
        per_seed.append({"seed": seed, **m})
        seeds.append(seed)
    agg = aggregate_splice(per_seed, confidence=_confidence(policy),
                           alpha=policy.get("gates", {}).get("splice", {}).get("mcnemar_alpha", 0.05))
    write_json(output.json, _lane_record(
        "splice", params, config, rule, [input.weights, *input.sae_weights, input.manifest], seeds,
        {"splice": FORMULA_VERSION}, rows={"n": len(rows), "definition": "in-distribution held-out rows, report "
                                            "half (never used for selection)"},
        per_seed=per_seed, aggregate=agg))
    print(f"splice {params.condition}: loss recovered {agg['loss_recovered_vs_mean']}")


# --- probes ------------------------------------------------------------------------------------------------
def _probe_inputs(config, manifest, qc):
    """In-distribution acts, the chosen task labels, and the row indices (into tokens.npy) they come from."""
    from husai.lanes.probes import task_labels

    cfg = _lane_cfg(config, "probes")
    data = A.load_verified_dataset(manifest, qc)
    rows = row_sets(data, config["activations"]["split_seed"])["in_dist"]
    tok = np.asarray(data["tokens"])[rows]
    labels = {k: v for k, v in task_labels(tok, config["model"]["p"]).items() if k in cfg["labels"]}
    return full_acts(data)[rows], labels, rows, tok


def probe_folds(input, output, params, config, rule):
    """The fold list as a file: every probe job of the hook (raw and per condition) reads the same folds."""
    from husai.lanes.probes import FORMULA_VERSION, make_folds

    cfg = _lane_cfg(config, "probes")
    _, _, rows, tok = _probe_inputs(config, input.manifest, input.qc)
    folds = make_folds(tok, cfg["group_key"], cfg["n_folds"], cfg["fold_seed"])
    write_json(output.json, {
        "hook": params.hook, "group_key": cfg["group_key"], "n_folds": cfg["n_folds"], "seed": cfg["fold_seed"],
        "dataset_rows": rows.tolist(), "manifest_sha256": sha256_file(input.manifest),
        "row_definition": "train_rows/test_rows index dataset_rows (the in-distribution rows of tokens.npy)",
        "folds": folds,
        "provenance": provenance(rule=rule, config=config, inputs=[input.manifest], seed=cfg["fold_seed"],
                                 formulas={"probes": FORMULA_VERSION})})


def _folds(path, manifest) -> list[dict]:
    f = read_json(path)
    if f["manifest_sha256"] != sha256_file(manifest):
        raise ValueError(f"{path}: folds were made for another dataset (manifest sha256 differs from {manifest})")
    return f["folds"]


def probe_raw(input, output, params, config, rule):
    """Raw-activation probes of one fold (logistic, shuffled-label and overfit tripwires, prior baseline):
    they do not depend on any SAE, so they run once per fold and hook, not per condition and seed."""
    from husai.lanes.probes import FORMULA_VERSION, evaluate_fold

    cfg = _lane_cfg(config, "probes")
    acts, labels, _, _ = _probe_inputs(config, input.manifest, input.qc)
    fold = _folds(input.folds, input.manifest)[int(params.fold)]
    res = evaluate_fold(acts, labels, fold, l2=cfg.get("l2", 1e-2), overfit_l2=cfg.get("overfit_l2", 1e-4),
                        seed=cfg["fold_seed"], raw_probes=True)
    res.update(hook=params.hook, features="raw activations",
               provenance=provenance(rule=rule, config=config, inputs=[input.manifest, input.folds],
                                     seed=cfg["fold_seed"], formulas={"probes": FORMULA_VERSION}))
    write_json(output.json, res)


def tripwire_values(raw_per_fold: list[dict], labels) -> dict:
    """Per-label tripwire measurements for every probed label (the gate picks labels and thresholds from the
    policy): mean over folds of shuffled AP - random-ranking AP, and the overfit probe's min accuracy."""
    from husai.lanes.probes import probe_tripwires

    tw = probe_tripwires(raw_per_fold, shuffled_max_abs_excess_ap=0.0, overfit_min_accuracy=0.0,
                         overfit_labels=tuple(labels))
    return {"shuffled_excess_ap_vs_chance": {lab: v["excess_ap_vs_chance"]
                                             for lab, v in tw["shuffled_label"]["per_label"].items()},
            "overfit_min_accuracy": {lab: float(min(v)) for lab, v in tw["overfit"]["per_label"].items()},
            "n_folds": len(raw_per_fold),
            "definition": "shuffled: mean over folds of (AP of a probe fit on train-fold labels shuffled - AP of "
                          "a random ranking); overfit: min over folds of the accuracy of a probe fit and scored "
                          "on the same fold"}


def probe_summary(raw_per_fold: list[dict], sae_per_fold: list[dict], labels, policy: dict, cfg: dict) -> dict:
    """Aggregate (fold is the unit) and tripwires of one condition's probes."""
    from husai.lanes.probes import aggregate_probes, probe_tripwires

    agg = aggregate_probes(raw_per_fold + sae_per_fold, confidence=_confidence(policy),
                           n_resamples=cfg.get("bootstrap_resamples", 2000), seed=cfg.get("fold_seed", 0))
    out = {"aggregate": agg, "tripwire_values": tripwire_values(raw_per_fold, labels)}
    spec = policy.get("gates", {}).get("probe_tripwires")
    if spec:  # the verdict at the policy's thresholds, for readers; the gate recomputes it from the values
        out["tripwires"] = probe_tripwires(raw_per_fold, shuffled_max_abs_excess_ap=spec["shuffled_max_abs_excess_ap"],
                                           overfit_min_accuracy=spec["overfit_min_accuracy"],
                                           overfit_labels=tuple(spec["overfit_labels"]))
    return out


def probes(input, output, params, config, rule):
    """k-sparse probes on SAE latents for every (fold, seed) of one condition, one metrics.json each, then the
    condition's aggregate (with the hook's raw probes beside them) and the tripwires."""
    from husai.lanes.probes import FORMULA_VERSION, evaluate_fold

    cfg = _lane_cfg(config, "probes")
    policy = _policy(config)
    acts, labels, _, _ = _probe_inputs(config, input.manifest, input.qc)
    folds = _folds(input.folds, input.manifest)
    raw = [read_json(p) for p in input.raw]
    out_paths = {(int(f), int(s)): path for (f, s), path in zip(params.fold_seed, output.metrics, strict=True)}
    sae_results, seeds = [], []
    for (seed, sae), w in zip(load_condition_seeds(input.sae_weights, input.train), input.sae_weights, strict=True):
        Z = latents(sae, acts)
        seeds.append(seed)
        for fold in folds:
            res = evaluate_fold(acts, labels, fold, latents_NF=Z, k_values=cfg["k_values"], l2=cfg.get("l2", 1e-2),
                                seed=cfg["fold_seed"], raw_probes=False)
            res.update(hook=params.hook, condition=params.condition, key=f"{params.hook}/{params.condition}",
                       sae_seed=seed, features="SAE latents",
                       provenance=provenance(rule=rule, config=config, inputs=[w, input.manifest, input.folds],
                                             seed=seed, formulas={"probes": FORMULA_VERSION}))
            write_json(out_paths[(fold["fold"], seed)], res)
            sae_results.append(res)
    summary = probe_summary(raw, sae_results, labels, policy, cfg)
    write_json(output.json, _lane_record(
        "probes", params, config, rule, [*input.sae_weights, input.manifest, input.folds, *input.raw], seeds,
        {"probes": FORMULA_VERSION}, labels=list(labels), k_values=list(cfg["k_values"]),
        metrics_files=[str(p) for p in output.metrics], raw_files=[str(p) for p in input.raw],
        pr_auc="average precision (step-wise); no trapezoid variant is computed", **summary))


# --- OOD ---------------------------------------------------------------------------------------------------
def ood(input, output, params, config, rule):
    """EV, splice loss recovered and a k-sparse probe's AP in- vs out-of-distribution, per seed; relative drops."""
    from husai.lanes.ood import FORMULA_VERSION, METRICS, ood_metrics, ood_seed_metrics

    cfg = _lane_cfg(config, "ood")
    policy = _policy(config)
    data = A.load_verified_dataset(input.manifest, input.qc)
    rows = row_sets(data, config["activations"]["split_seed"])
    n = len(data["heldout_mask"])
    masks = {k: np.isin(np.arange(n), rows[k]) for k in ("report", "train", "ood")}
    tok = np.asarray(data["tokens"])
    model = _toy_model(config, input.weights)
    acts = full_acts(data)
    per_seed, seeds = [], []
    for seed, sae in load_condition_seeds(input.sae_weights, input.train):
        m = ood_seed_metrics(model, sae, tok, answers(tok, config["model"]["p"]), acts, ood_mask=masks["ood"],
                             in_eval_mask=masks["report"], probe_train_mask=masks["train"], hook=params.hook,
                             position=config["activations"]["position"], mean_activation_D=data["train"].mean(0),
                             probe_label=cfg.get("probe_label", "c"), probe_k=cfg.get("probe_k", 8))
        per_seed.append({"seed": seed, **m})
        seeds.append(seed)
    summary = ood_metrics({k: [r["in"][k] for r in per_seed] for k in METRICS},
                          {k: [r["out"][k] for r in per_seed] for k in METRICS}, confidence=_confidence(policy))
    write_json(output.json, _lane_record(
        "ood", params, config, rule, [input.weights, *input.sae_weights, input.manifest], seeds,
        {"ood": FORMULA_VERSION}, spec=data["manifest"].get("ood_spec"),
        rows={"in": "in-distribution held-out rows, report half", "out": "the declared OOD slice",
              "probe_train": "SAE training rows"}, per_seed=per_seed, **summary))


# --- known circuit: the random-init control model, its SAEs, and the report --------------------------------
def control_model(input, output, params, config, rule):
    """Activations of the RANDOM-INIT toy model (same config and seed, no training) at every hook, in the
    trained dataset's row order, with its split and OOD masks reused, so SAEs trained on them see the same
    rows in the same roles as the real ones."""
    from husai.pipeline import _toy_cfg
    from husai.toymodel import build_model

    cfg = _toy_cfg(config)
    model = build_model(cfg).eval()
    position = config["activations"]["position"]
    cache: dict[str, dict] = {}
    for i, hook in enumerate(params.hooks):
        tok_sha = sha256_file(input.tokens[i])
        if tok_sha not in cache:  # every hook's tokens.npy is normally the same file content: one pass
            cache[tok_sha] = A.extract_hooks(model, read_npy(input.tokens[i]), list(params.hooks), position)
        acts = cache[tok_sha][hook]
        write_npy(output.acts[i], acts)
        qc = A.quality_control(acts, config["activations"]["qc"])
        qc["provenance"] = provenance(rule=rule, config=config, inputs=[input.tokens[i]], seed=cfg.seed)
        write_json(output.qc[i], qc)
        files = {"acts": output.acts[i], "tokens": input.tokens[i], "split": input.split[i], "ood": input.ood[i]}
        write_json(output.manifest[i], {
            "hook": hook, "position": position, "model": f"{config['model']['name']} (random init, seed {cfg.seed})",
            "shape": list(acts.shape), "dtype": "float32", "qc_passed": qc["thresholds_passed"],
            "files": {k: {"path": str(v), "sha256": sha256_file(v)} for k, v in files.items()},
            "provenance": provenance(rule=rule, config=config, inputs=list(files.values()), seed=cfg.seed)})


def train_control_condition(input, output, params, config, rule):
    """The condition's SAEs (same seeds, same training config) trained on the random-init model's activations;
    only the decoders are kept (the known-circuit report reads nothing else)."""
    from husai.pipeline import sae_config_for
    from husai.training import train_seed_batched

    data = A.load_verified_dataset(input.manifest, input.qc)
    calibration = read_json(input.calibration) if getattr(input, "calibration", None) else None
    sae_cfg, tc = sae_config_for(config, params.condition, data["train"].shape[1], calibration)
    seeds = [int(s) for s in config["sae"]["seeds"]]
    state = Path(output.decoders).parent / "trainer_state.safetensors"
    sae, log = train_seed_batched(sae_cfg, tc, data["train"], seeds, state_path=state)
    save_safetensors(output.decoders, {"W_dec_SFD": sae.W_dec_SFD.detach()},
                     metadata={"seeds": json.dumps(seeds), "layout": "W_dec [seed, d_sae, d_in], rows = features"})
    write_json(output.train, {
        "condition": params.condition, "hook": params.hook, "seeds": seeds, "control": "random-init model",
        "decoders_sha256": sha256_file(output.decoders), "sae_config": sae_cfg.to_dict(),
        "calibration": {"path": str(input.calibration), "sha256": sha256_file(input.calibration),
                        "coefficient": calibration["chosen_coefficient"]} if calibration else None,
        "train_config": config["sae"]["training"], "seconds": log["seconds"],
        "final": {k: log[k][-1] for k in ("fvu", "l0", "dead_fraction") if log.get(k)},
        "provenance": provenance(rule=rule, config=config, inputs=[input.manifest, input.qc], seed=seeds,
                                 device=tc.device)})
    if state.exists():
        state.unlink()
    print(f"control {params.condition}: {len(seeds)} seeds in {log['seconds']:.1f}s")


def load_control_decoders(decoders_path, train_path) -> tuple[list[int], list[np.ndarray]]:
    from husai.io import verify_sha256

    info = read_json(train_path)
    verify_sha256(decoders_path, info["decoders_sha256"], what="control decoders")
    W = load_safetensors(decoders_path)["W_dec_SFD"].to(torch.float64).numpy()
    return list(info["seeds"]), [W[s] for s in range(W.shape[0])]


def known_circuit(input, output, params, config, rule):
    """Fraction of decoder rows aligned with the trained model's Fourier circuit, against Gaussian decoders and
    against the same condition's SAEs on the random-init model (scored on that model's own basis, built with the
    trained model's key frequencies)."""
    from husai.lanes.known_circuit import FORMULA_VERSION, circuit_basis, key_frequencies, known_circuit_report

    cfg = _lane_cfg(config, "known_circuit")
    policy = _policy(config)
    p = config["model"]["p"]
    model = _toy_model(config, input.weights)
    freqs = key_frequencies(model.W_E[:p], cfg.get("n_key_frequencies", 5))
    basis_kw = {"variables": tuple(cfg.get("variables", ("a", "b", "c"))),
                "min_relative_norm": cfg.get("min_relative_norm", 0.05)}
    data = A.load_verified_dataset(input.manifest, input.qc)
    control = A.load_verified_dataset(input.control_manifest, input.control_qc)
    tok = np.asarray(data["tokens"])
    if not np.array_equal(tok, np.asarray(control["tokens"])):
        raise ValueError(f"{input.control_manifest}: control rows are not in the trained dataset's order")
    basis = circuit_basis(full_acts(data), tok, p, freqs["frequencies"], **basis_kw)
    rbasis = circuit_basis(full_acts(control), tok, p, freqs["frequencies"], **basis_kw)
    seeds, trained = [], []
    for seed, sae in load_condition_seeds(input.sae_weights, input.train):
        seeds.append(seed)
        trained.append(sae.W_dec_SFD[0].detach().double().numpy())
    c_seeds, c_dec = load_control_decoders(input.control_decoders, input.control_train)
    if c_seeds != seeds:
        raise ValueError(f"{input.control_train}: control seeds {c_seeds} != trained seeds {seeds}")
    report = known_circuit_report(trained, basis["basis_KD"], cfg["threshold"], random_init_decoders=c_dec,
                                  random_init_basis_KD=rbasis["basis_KD"], n_random_draws=cfg.get("n_random_draws", 50),
                                  seed=config["consistency"].get("control_seed", 0), confidence=_confidence(policy))
    strip = lambda b: {k: v for k, v in b.items() if k != "basis_KD"}  # noqa: E731
    write_json(output.json, _lane_record(
        "known_circuit", params, config, rule,
        [input.weights, *input.sae_weights, input.manifest, input.control_manifest, input.control_decoders], seeds,
        {"known_circuit": FORMULA_VERSION}, key_frequencies=freqs, basis=strip(basis),
        random_init_basis=strip(rbasis), report=report))
    print(f"known circuit {params.condition}: aligned {report['value']:.3f}, "
          f"delta vs random init {report['delta_vs_random_init']}")


def transcoder_lane(input, output, params, config, rule):
    """TopK transcoders (input hook -> output hook) and TopK SAEs on the input hook, the same seeds, width, k and
    training config, on the SAE training rows (held-out and OOD rows excluded, as for every SAE); each family's
    consistency against its own chance level, and the stress delta with a seed-level bound."""
    from husai.consistency_report import condition_consistency
    from husai.lanes.transcoder_stress import transcoder_stress
    from husai.saes import SAEConfig
    from husai.toymodel import ToyModelConfig, load_model
    from husai.training import TrainConfig, train_seed_batched

    cfg_t = config["lanes"]["transcoder"]
    data = A.load_verified_dataset(input.manifest, input.qc)
    toy = ToyModelConfig(**{k: v for k, v in config["model"].items() if k not in ("name", "kind")})
    model = load_model(toy, input.weights)
    hooks = [cfg_t["input_hook"], cfg_t["output_hook"]]
    acts = A.extract_hooks(model, np.asarray(data["tokens"]), hooks, config["activations"]["position"])
    train = ~data["heldout_mask"] & ~data["ood_mask"]
    x_in, y_out = acts[hooks[0]][train], acts[hooks[1]][train]
    seeds = [int(s) for s in config["sae"]["seeds"]]
    tc = TrainConfig(**config["sae"]["training"])
    width, k = int(cfg_t["width"]), int(cfg_t["k"])
    tcd, _ = train_seed_batched(SAEConfig("topk_transcoder", x_in.shape[1], width, k=k, d_out=y_out.shape[1]), tc,
                                x_in, seeds, targets_ND=y_out)
    sae, _ = train_seed_batched(SAEConfig("topk", x_in.shape[1], width, k=k), tc, x_in, seeds)
    ccfg = {**config["consistency"], "lcb_confidence": load_yaml(config["policy"])["lcb_confidence"]}
    reports = {name: condition_consistency([m.W_dec_SFD[s].detach().to(torch.float64) for s in range(len(seeds))],
                                           seeds, ccfg) for name, m in (("transcoder", tcd), ("sae", sae))}
    tc_id, sae_id = (f"topk_transcoder-w{width}-k{k}:{hooks[0]}->{hooks[1]}", f"topk-w{width}-k{k}:{hooks[0]}")
    stress = transcoder_stress(reports["transcoder"], reports["sae"],
                               n_resamples=int(cfg_t.get("bootstrap_resamples", 2000)),
                               transcoder_condition=tc_id, sae_condition=sae_id)
    write_json(output.json, {
        "lane": "transcoder", **stress, "input_hook": hooks[0], "output_hook": hooks[1], "seeds": seeds,
        "consistency": {name: {s: r["statistics"][s]["trained"]["mean"] for s in r["statistics"]}
                        for name, r in reports.items()},
        "provenance": provenance(rule=rule, config=config, inputs=[input.weights, input.manifest], seed=seeds),
    })
