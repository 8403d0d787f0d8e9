"""One function per workflow rule. Each takes the rule's input/output/params (Snakemake's named lists or any
object with the same attributes), the whole config, and the rule name; writes its outputs atomically with
a provenance block. workflow/scripts/*.py only hand Snakemake's objects to these (see husai.smk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from husai import activations as A
from husai.checkpoint import load_seed, save_seed
from husai.config import condition_keys, conditions_by_id, is_regularised, load_yaml, regularised_keys
from husai.io import read_json, save_safetensors, sha256_file, write_json, write_text
from husai.provenance import config_hash, git_sha, provenance


def _is_toy(config) -> bool:
    return config["model"]["kind"] == "toy_modular_addition"


def _toy_cfg(config):
    from husai.toymodel import ToyModelConfig

    fields = {k: v for k, v in config["model"].items() if k not in ("name", "kind")}
    return ToyModelConfig(**fields)


def train_model(input, output, params, config, rule):
    from husai.toymodel import train_toy_model

    cfg = _toy_cfg(config)
    model, metrics = train_toy_model(cfg)
    save_safetensors(output.weights, model.state_dict())
    write_json(output.model_config, {"name": config["model"]["name"], "kind": config["model"]["kind"],
                                     "toy": metrics["config"],
                                     "provenance": provenance(rule=rule, config=config, seed=cfg.seed)})
    metrics["weights_sha256"] = sha256_file(output.weights)
    metrics["provenance"] = provenance(rule=rule, config=config, seed=cfg.seed)
    write_json(output.metrics, metrics)
    print(f"held-out accuracy {metrics['heldout_accuracy']:.4f} in {metrics['train_seconds']:.1f}s")


def extract_shard(input, output, params, config, rule):
    if config["model"]["kind"] != "toy_modular_addition":
        from husai.pipeline_text import extract_text_shard

        return extract_text_shard(input, output, params, config, rule)
    from husai.toymodel import all_pairs, load_model

    cfg = _toy_cfg(config)
    act = config["activations"]
    shard, n_shards = int(params.shard), act["n_shards"]
    seed = act["base_seed"] + shard
    model = load_model(cfg, input.weights)
    tokens, _ = all_pairs(cfg.p)
    rows = A.shard_rows(len(tokens), n_shards, shard, seed)
    hooks = list(params.hooks)
    acts = A.extract_hooks(model, tokens[rows], hooks, act["position"])
    for i, hook in enumerate(hooks):
        A.write_shard(acts[hook], tokens[rows], output.acts[i], output.tokens[i], output.info[i], {
            "shard": shard, "n_shards": n_shards, "seed": seed, "hook": hook, "position": act["position"],
            "model_sha256": sha256_file(input.weights),
            "provenance": provenance(rule=rule, config=config, inputs=[input.weights], seed=seed),
        })


def merge_activations(input, output, params, config, rule):
    act = config["activations"]
    out = {"acts": output.acts, "tokens": output.tokens, "split": output.split, "manifest": output.manifest,
           "qc": output.qc, "ood": output.ood}
    ood = config.get("lanes", {}).get("ood")
    ood_spec = ood["spec"] if ood and ood.get("enabled", True) else None
    manifest = A.merge_shards(list(input.infos), list(input.acts), list(input.tokens), out,
                              heldout_fraction=act["heldout_fraction"], split_seed=act["split_seed"],
                              qc_thresholds=act["qc"], ood_spec=ood_spec, extra_manifest={
                                  "hook": params.hook, "position": act["position"], "model": config["model"]["name"],
                                  "model_sha256": sha256_file(input.weights),
                                  "provenance": provenance(rule=rule, config=config, inputs=[input.weights]),
                              })
    qc = read_json(output.qc)
    qc["provenance"] = provenance(rule=rule, config=config, inputs=list(input.acts))
    write_json(output.qc, qc)
    print(f"merged {manifest['shape']} rows; QC passed = {manifest['qc_passed']}")


SAE_CONFIG_KEYS = ("l1_coefficient", "aux_k_coefficient", "dead_after_steps", "aux_k", "l0_coefficient",
                   "jumprelu_bandwidth", "jumprelu_init_threshold", "batchtopk_threshold_window",
                   "matryoshka_levels", "n_experts", "router_balance_coefficient")


def sae_config_for(config, condition: str, d_in: int, calibration: dict | None = None, calibrating: bool = False):
    """The one place a condition's SAEConfig and TrainConfig are built (real and control SAEs alike).

    calibration: the condition's calibration record (calibration.json); its chosen coefficient replaces the
    configured one. Without a record, a `calibrate: true` condition keeps its configured coefficient (used by
    the random-init control of the known-circuit lane, whose rule passes none; recorded in its sae_config) and
    is refused when it has none (calibrating=True: the calibration grid sets it). A token budget (`tokens`) sets
    steps = tokens / batch_size."""
    from husai.saes import SAEConfig, get_architecture
    from husai.training import TrainConfig

    cond = conditions_by_id(config)[condition]
    extra = {k: cond[k] for k in SAE_CONFIG_KEYS if k in cond}
    field = get_architecture(cond["architecture"]).sparsity_coefficient_field
    if calibration is not None:
        extra[calibration["coefficient_name"]] = float(calibration["chosen_coefficient"])
    elif cond.get("calibrate") and field not in cond and not calibrating:
        raise ValueError(f"{condition}: calibrate: true and no calibration record was passed (nor a configured "
                         f"{field} to fall back on); pass the rule's calibration.json")
    sae_cfg = SAEConfig(architecture=cond["architecture"], d_in=d_in, d_sae=cond["width"], k=cond["k"], **extra)
    training = dict(config["sae"]["training"])
    if "tokens" in cond:
        training["steps"] = int(cond["tokens"]) // int(training["batch_size"])
    return sae_cfg, TrainConfig(**training)


def train_condition(input, output, params, config, rule):
    """Train every seed of one condition in one job and write each seed's checkpoint + train.json."""
    from husai.pipeline_saes import training_extras
    from husai.training import per_seed_log, train_seed_batched

    data = A.load_verified_dataset(input.manifest, input.qc)
    seeds = list(config["sae"]["seeds"])
    calibration, regularizer, extras = training_extras(input, config, params.condition, seeds)
    sae_cfg, tc = sae_config_for(config, params.condition, data["train"].shape[1], calibration)
    state = Path(params.state_dir) / "trainer_state.safetensors"
    sae, log = train_seed_batched(sae_cfg, tc, data["train"], seeds, state_path=state, regularizer=regularizer)
    meta = {"model_name": config["model"]["name"], "hook_name": params.hook,
            "hook_head_index": None,  # a row of the SAE data: the toy [a, b, =] or a text row (BOS as configured)
            "context_size": 3 if _is_toy(config) else config["text"]["context_size"],
            "prepend_bos": False if _is_toy(config) else bool(config["text"].get("prepend_bos", True)),
            "husai": {"condition": params.condition, "manifest_sha256": sha256_file(input.manifest), **extras}}
    for s, seed in enumerate(seeds):
        ckpt_dir = Path(output.weights[s]).parent
        info = save_seed(sae, s, ckpt_dir, meta)
        write_json(output.train[s], {
            "condition": params.condition, "hook": params.hook, "seed": seed, **info, "sae_config": sae_cfg.to_dict(),
            "train_config": {**config["sae"]["training"], "steps": tc.steps}, **extras, "log": per_seed_log(log, s),
            "job": {"seeds_in_job": seeds, "seconds": log["seconds"], "seed_tokens": log["seed_tokens"],
                    "resumed_from_step": log["resumed_from_step"], "data_scale": log["data_scale"]},
            "provenance": provenance(rule=rule, config=config, inputs=[input.manifest, input.qc], seed=seed,
                                     device=tc.device),
        })
    if state.exists():
        state.unlink()
    print(f"{params.condition}: {len(seeds)} seeds in {log['seconds']:.1f}s")


def seed_metrics(input, output, params, config, rule):
    from husai.evaluate import curve_summary, internal_metrics

    train = read_json(input.train)
    sae = load_seed(Path(input.weights).parent, expected_sha256=train["weights_sha256"])
    data = A.load_verified_dataset(input.manifest, input.qc)
    select_rows, report_rows = A.heldout_halves(data["heldout"], config["activations"]["split_seed"])
    # Selection reads the 'selection' half; everything reported (gates, tables) reads the other half.
    m = internal_metrics(sae, report_rows)
    m["selection"] = internal_metrics(sae, select_rows)
    m["rows"] = "top-level metrics: the 'report' half of the held-out rows; 'selection': the other half"
    m.update({"condition": train["condition"], "hook": train["hook"], "key": f"{train['hook']}/{train['condition']}",
              "seed": train["seed"], "training_curve": curve_summary(train["log"]),
              "provenance": provenance(rule=rule, config=config, seed=train["seed"],
                                       inputs=[input.weights, input.train, input.manifest],
                                       formulas=m["formula_versions"])})
    write_json(output.metrics, m)


def consistency(input, output, params, config, rule):
    from husai.consistency_report import condition_consistency, pairwise_figure

    policy = load_yaml(config["policy"])
    decoders, seeds = [], []
    for w, t in zip(input.weights, input.train, strict=True):
        train = read_json(t)
        sae = load_seed(Path(w).parent, expected_sha256=train["weights_sha256"])
        decoders.append(sae.W_dec_SFD[0].detach().double())
        seeds.append(train["seed"])
    cfg = {**config["consistency"], "lcb_confidence": policy["lcb_confidence"]}
    report = condition_consistency(decoders, seeds, cfg)
    report["condition"] = params.condition
    report["hook"] = params.hook
    report["key"] = f"{params.hook}/{params.condition}"
    # A lam > 0 condition's seeds were all pulled toward one reference decoder: their agreement with each other is
    # produced by the regulariser. Marked here so every table and figure that shows it says so; its honest number
    # is regularised.json (against held-out unregularised seeds).
    report["regularised"] = is_regularised(conditions_by_id(config)[params.condition])
    if report["regularised"]:
        report["inflated_by_construction"] = ("within-condition consistency of seeds trained toward one reference "
                                              "decoder; see regularised.json for the held-out judgement")
    report["provenance"] = provenance(rule=rule, config=config, seed=seeds, inputs=list(input.weights),
                                      formulas=report["formula_versions"])
    write_json(output.json, report)
    pairwise_figure(report, f"{params.condition}: pairwise consistency over {len(seeds)} seeds", output.figure)


def _condition_evidence(config, seed_metric_paths, consistency_paths) -> dict:
    """Evidence per '<hook>/<condition>' key: groups are never merged across hooks or hyperparameters."""
    specs = conditions_by_id(config)
    out = {f"{h}/{cid}": {"spec": spec, "seed_metrics": [], "consistency": None}
           for h in config["activations"]["hooks"] for cid, spec in specs.items()}
    for p in seed_metric_paths:
        m = read_json(p)
        out[m["key"]]["seed_metrics"].append(m)
    for p in consistency_paths:
        c = read_json(p)
        out[c["key"]]["consistency"] = c
    return out


def select_candidate(input, output, params, config, rule):
    from husai.selection import select

    policy = load_yaml(input.policy)
    result = select(_condition_evidence(config, input.seed_metrics, input.consistency),
                    {**policy["selection"], "min_seeds": policy["min_seeds"]},
                    policy["lcb_confidence"])
    pre = config["release"]["candidate"]
    result["preregistered_candidate"] = None if pre == "auto" else pre
    result["candidate"] = result["selected"] if pre == "auto" else pre
    result["provenance"] = provenance(rule=rule, config=config,
                                      inputs=[input.policy, *input.seed_metrics, *input.consistency])
    write_json(output.json, result)
    print(f"selected: {result['selected']}; dropped: {[d['condition'] for d in result['dropped']]}")


PLATFORM_DECISION = "results/platform/platform_decision.json"


def run_id(config) -> str:
    return f"{config['run_name']}-{config_hash(config)[:8]}-{git_sha()[:8]}"


def release_policy(input, output, params, config, rule):
    from husai.external.workflow import external_evidence
    from husai.gate import evaluate, render_markdown
    from husai.pipeline_saes import mark_regularised

    policy = load_yaml(input.policy)
    selection = read_json(input.selection)
    candidate = selection["candidate"]
    conditions = condition_keys(config)

    def load(path):
        return {"path": str(path), "data": read_json(path)} if path and Path(path).exists() else None

    consistency_by = {c["data"]["key"]: c for c in map(load, input.consistency) if c}
    seed_metrics_all = [load(p) for p in input.seed_metrics]
    cand_metrics = [m for m in seed_metrics_all if m and m["data"]["key"] == candidate]
    evidence = {"qc": [load(p) for p in input.qc], "model_metrics": load(input.model_metrics),
                "candidate_seed_metrics": cand_metrics or None,
                "candidate_consistency": consistency_by.get(candidate), "consistency": consistency_by,
                "selection": load(input.selection), "lanes": _lane_evidence(input.get("lanes", []), load),
                # The canary is its own target (`snakemake platform_canary`), run on the node it judges: read when
                # present, never required as an input here.
                "platform": load(PLATFORM_DECISION)}
    external = external_evidence(config, policy, candidate, input.get("external", []))  # husai.external.workflow
    evidence.update(external["evidence"])
    # Regularised conditions' within-condition consistency is inflated by construction: not in the BH family.
    result = evaluate(policy, evidence, candidate, [c for c in conditions if c not in regularised_keys(config)])
    all_inputs = [input.policy, *input.qc, input.model_metrics, *input.manifest, input.selection,
                  *input.seed_metrics, *input.consistency, *input.get("lanes", []), *input.get("regularised", []),
                  *input.get("external", []),
                  PLATFORM_DECISION]
    report = {
        "policy_id": policy["policy_id"], "policy_version": policy["version"], "run_id": run_id(config),
        "candidate": candidate, "released_seed": selection["selected_seed"] if candidate == selection["selected"]
        else None, "candidate_rule": "pre-registered in config" if selection["preregistered_candidate"]
        else f"policy selection ({selection['release_rule']} seed of the top-ranked Pareto-front group)",
        **{k: result[k] for k in ("decision", "pass_all", "severity", "failed_checks")},
        "gates": result["gates"], "multiple_testing": result["multiple_testing"],
        "inputs": {str(p): sha256_file(p) for p in all_inputs if Path(p).exists()},
        "provenance": provenance(rule=rule, config=config, inputs=all_inputs),
    }
    report["conditions"] = {c: _condition_summary(c, seed_metrics_all, consistency_by.get(c)) for c in conditions}
    report["external"] = external["report"]
    mark_regularised(report["conditions"],
                     _lane_evidence(input.get("regularised", []), load).get("regularised", {}))
    write_json(output.json, report)
    write_text(output.md, render_markdown(report))
    print(f"decision: {report['decision']} ({report['severity']}); failed: "
          f"{[f['gate'] for f in report['failed_checks']]}")


def _lane_evidence(paths, load) -> dict:
    """{lane: {'<hook>/<condition>' or '__study__': {'path', 'data'}}} from the lane JSONs (each names its lane)."""
    out: dict = {}
    for rec in filter(None, map(load, paths)):
        out.setdefault(rec["data"]["lane"], {})[rec["data"].get("key", "__study__")] = rec
    return out


def _condition_summary(cond: str, seed_metrics_all, cons) -> dict:
    ms = [m["data"] for m in seed_metrics_all if m and m["data"]["key"] == cond]
    out = {k: float(np.mean([m[k] for m in ms])) for k in ("explained_variance", "l0", "dead_fraction")} if ms else {}
    if cons:
        for name, st in cons["data"]["statistics"].items():
            out[name] = st["trained"]["mean"]
            out[f"{name}_chance"] = st[f"chance_{st['chance_reference']}"]["mean"]
            out[f"{name}_delta_lcb"] = st["delta_vs_chance"]["lcb"]
    return out


def release_gate(input, output, params, config, rule):
    report = read_json(input.json)
    if report["decision"] != "promote":
        lines = [f"  - {f['gate']}: {f['reason']}" for f in report["failed_checks"]]
        raise SystemExit(f"release gate: decision = {report['decision']} ({report['severity']}), see "
                         f"{input.json}\n" + "\n".join(lines))
    write_text(output.ok, f"promote {report['run_id']}\n")
    print(f"release gate: promote ({report['run_id']})")
