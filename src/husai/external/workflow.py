"""The external benchmarks in the workflow (rules/external.smk): config checks, file names, and the evidence the
release gate reads. The rule functions themselves are in husai.pipeline_external.

Config (`external:` in the study config; absent = no external benchmark, the gates stay `skipped`):

    external:
      device: cpu | cuda                      # where the base model and the SAEs run for these evals
      saebench_core: {enabled, batch_size_prompts, n_eval_reconstruction_batches,
                      n_eval_sparsity_variance_batches, featurewise, shuffle_seed}
      saebench_sparse_probing: {enabled, dataset_names (default: all of sae-probes'), ks, reg_type, random_seed}
      cebench: {enabled, dataset, revision (pinned: hub commit or sha256:<hex> of a local file), n_pairs,
                batch_size, max_tokens}
      baselines: {l0_tolerance, entries: [{id, hook, width, l0, source, summaries}]}   # husai.external.baselines

One job per <hook>/<condition> and enabled eval scores all seeds of the condition and writes one summary per seed
(`summary_file`); one job per baseline entry and eval without precomputed `summaries` scores the entry's `source`
with the same adapter on the same data (`baseline_file`). `external_evidence` turns those files into the gate's
evidence: each external gate reads the candidate's per-seed summaries of the eval its policy block names.
"""

from __future__ import annotations

import re
from pathlib import Path

from husai.config import ConfigError, condition_keys
from husai.external import EVAL_OF_GATE
from husai.external.baselines import parse_baseline_map
from husai.io import read_json

EVALS = ("saebench_core", "saebench_sparse_probing", "cebench")
NEEDS_TOKENIZER = ("saebench_sparse_probing", "cebench")  # they tokenize text (probing datasets, stories)
SAE_LENS_PREFIX = "sae_lens:"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
FILE_PIN = re.compile(r"^sha256:[0-9a-f]{64}$")
# A revision that is clearly not a real commit: refused by the download rule (never silently fetched as "latest").
PLACEHOLDER_REVISION = "0" * 40


def settings(config: dict) -> dict:
    return config.get("external") or {}


def enabled_evals(config: dict) -> list[str]:
    ext = settings(config)
    return [e for e in EVALS if (ext.get(e) or {}).get("enabled", False)]


def is_toy(config: dict) -> bool:
    return config["model"]["kind"] == "toy_modular_addition"


def summary_file(model: str, hook: str, condition: str, seed, eval_name: str) -> str:
    return f"results/external/{model}/{hook}/{condition}/seed{seed}/{eval_name}.json"


def baseline_file(baseline_id: str, eval_name: str) -> str:
    return f"results/external/baselines/{baseline_id}/{eval_name}.json"


def baseline_dir(config: dict, baseline_id: str) -> str:
    """Where fetch_baseline puts the entry's checkpoint (sae-lens layout) for the eval jobs to read."""
    return f"{config.get('cache_dir', 'cache')}/baselines/{baseline_id}"


def cebench_rows_file(config: dict) -> str:
    c = settings(config)["cebench"]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", c["dataset"])
    return f"{config.get('cache_dir', 'cache')}/cebench/{name}@{c['revision'].replace(':', '_')}.jsonl"


def eval_inputs(config: dict, eval_name: str, model_ref: str, text_input: list[str], hook: str = "{hook}") -> dict:
    """What an eval job reads besides the checkpoints: the model, the hook's verified dataset (the toy's held-out
    rows), the cached text (pretrained models), and CE-Bench's rows. `hook` may stay a wildcard."""
    model = config["model"]["name"]
    out = {"model": model_ref, "manifest": f"results/activations/{model}/{hook}/manifest.json",
           "qc": f"results/activations/{model}/{hook}/qc.json", "text": list(text_input)}
    if eval_name == "cebench":
        rows = cebench_rows_file(config)
        out.update(rows=rows, rows_manifest=f"{rows}.manifest.json")
    return out


def seed_summary_patterns(config: dict, eval_name: str) -> list[str]:
    """One summary per seed of a condition; {hook} and {condition} stay wildcards."""
    return [summary_file(config["model"]["name"], "{hook}", "{condition}", s, eval_name)
            for s in config["sae"]["seeds"]]


def baselines_to_evaluate(config: dict) -> list[tuple[str, str]]:
    """(baseline id, eval) pairs the workflow must score: enabled evals the entry has no precomputed summary for."""
    bmap = parse_baseline_map(settings(config).get("baselines"))
    return [(b.id, e) for b in bmap.entries for e in enabled_evals(config) if not b.summaries.get(e)]


def candidate_files(config: dict) -> list[str]:
    """Every condition's per-seed summary files of every enabled eval."""
    seeds = config["sae"]["seeds"]
    return [summary_file(config["model"]["name"], *key.split("/", 1), s, e)
            for e in enabled_evals(config) for key in condition_keys(config) for s in seeds]


def all_files(config: dict) -> list[str]:
    """What release_policy reads: candidate summaries and the baseline summaries the workflow computes."""
    return candidate_files(config) + [baseline_file(b, e) for b, e in baselines_to_evaluate(config)]


def check_external_config(config: dict, source: str = "config") -> None:
    """Semantic checks of `external:` (the JSON schema checks its shape); errors name the key and the value."""
    ext = settings(config)
    if not ext:
        return
    where = f"{source}: external"
    for e in enabled_evals(config):
        if e in NEEDS_TOKENIZER and is_toy(config):
            raise ConfigError(f"{where}/{e}/enabled: true, but the toy model ({config['model']['name']}, kind "
                              f"toy_modular_addition) has no tokenizer and {e} tokenizes text; disable it")
    if "saebench_core" in enabled_evals(config) and is_toy(config) and config["activations"]["position"] != 2:
        raise ConfigError(f"{where}/saebench_core: the toy's SAEs are trained at activations/position="
                          f"{config['activations']['position']}, but SAEBench can only be told which positions to "
                          "score by token id, which singles out the `=` token (position 2) alone; use position 2")
    ce = ext.get("cebench") or {}
    if ce.get("enabled"):
        for key in ("dataset", "revision"):
            if not ce.get(key):
                raise ConfigError(f"{where}/cebench/{key} is required when CE-Bench is enabled")
        rev, local = ce["revision"], Path(ce["dataset"]).suffix in (".json", ".jsonl")
        if rev in ("main", "master") or not (FILE_PIN.match(rev) if local else COMMIT.match(rev)):
            want = "sha256:<64 hex> of the file" if local else "a 40-hex commit id of the dataset repository"
            raise ConfigError(f"{where}/cebench/revision: {rev!r} does not pin {ce['dataset']}; give {want}")
        if ce.get("n_pairs") is not None and ce["n_pairs"] < 2:
            raise ConfigError(f"{where}/cebench/n_pairs: {ce['n_pairs']} < 2")
    try:
        bmap = parse_baseline_map(ext.get("baselines"), where=f"{where}/baselines")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    hooks = list(config["activations"]["hooks"])
    for i, b in enumerate(bmap.entries):
        here = f"{where}/baselines/entries/{i}"
        if not re.match(r"^[A-Za-z0-9_.-]+$", b.id):
            raise ConfigError(f"{here}/id: {b.id!r} must be a file-name-safe id ([A-Za-z0-9_.-])")
        if b.hook not in hooks:
            raise ConfigError(f"{here}/hook: {b.hook!r} is not a configured hook (activations/hooks: {hooks}); a "
                              "baseline is compared with candidates at its own hook")
        unknown = sorted(set(b.summaries) - set(EVALS))
        if unknown:
            raise ConfigError(f"{here}/summaries: unknown eval(s) {unknown}; known {list(EVALS)}")
        todo = [e for e in enabled_evals(config) if not b.summaries.get(e)]
        if todo and not b.source:
            raise ConfigError(f"{here}/source is required: no precomputed summaries for {todo}, so the workflow "
                              "evaluates the baseline's checkpoint")
        if b.source.startswith(SAE_LENS_PREFIX) and "/" not in b.source[len(SAE_LENS_PREFIX):]:
            raise ConfigError(f"{here}/source: {b.source!r} must read sae_lens:<release>/<sae_id>")


# --- the gate's evidence -------------------------------------------------------------------------------------
def _load(path) -> dict | None:
    return {"path": str(path), "data": read_json(path)} if Path(path).exists() else None


def external_evidence(config: dict, policy: dict, candidate: str | None, paths) -> dict:
    """{'evidence': keys for husai.gate.evaluate, 'report': the external block of release_policy.json}.

    evidence[<gate>] = the candidate's per-seed summaries ({'path', 'data'}) of the eval the gate's policy block
    names (`eval:`, default saebench_core / cebench), so a policy may point a gate at saebench_sparse_probing;
    evidence['external_baselines'] = the config's baseline map with every summary the workflow computed filled in
    (a summary that was never written stays a missing path: the gate reports it, never a zero delta)."""
    records = [r for r in map(_load, paths) if r]
    cand = [r for r in records if "baseline_id" not in r["data"]]
    by_key: dict[str, dict[str, list]] = {}
    for r in sorted(cand, key=lambda r: (r["data"]["seed"] if isinstance(r["data"].get("seed"), int) else -1,
                                         r["path"])):
        d = r["data"]
        by_key.setdefault(f"{d['hook']}/{d['condition']}", {}).setdefault(d["eval"], []).append(r)
    evidence = {}
    for gate, default_eval in EVAL_OF_GATE.items():
        spec = (policy.get("gates") or {}).get(gate)
        if spec is not None:
            evidence[gate] = by_key.get(candidate, {}).get(spec.get("eval") or default_eval) or None
    raw = settings(config).get("baselines") or {}
    entries = []
    for e in raw.get("entries") or []:
        summaries = dict(e.get("summaries") or {})
        for ev in enabled_evals(config):
            summaries.setdefault(ev, baseline_file(e["id"], ev))
        entries.append({**e, "summaries": summaries})
    evidence["external_baselines"] = {**raw, "entries": entries}
    return {"evidence": evidence, "report": external_report(config, by_key, entries)}


def _mean(vals):
    vals = [v for v in vals if isinstance(v, int | float)]
    return sum(vals) / len(vals) if vals else None


def external_report(config: dict, by_key: dict, baseline_entries: list[dict]) -> dict:
    """Mean over seeds of every scalar metric of every eval and condition (sparse probing included, which no gate
    reads by default), and each baseline's values: recorded beside the gates, never a verdict."""
    conds = {}
    for key, evals in sorted(by_key.items()):
        conds[key] = {}
        for ev, recs in sorted(evals.items()):
            names = sorted({m for r in recs for m, v in r["data"].get("metrics", {}).items()
                            if isinstance(v, int | float)})
            conds[key][ev] = {"n_seeds": len(recs), "l0": _mean([r["data"].get("l0") for r in recs]),
                              "metrics_mean": {m: _mean([r["data"]["metrics"].get(m) for r in recs])
                                               for m in names},
                              "files": [r["path"] for r in recs]}
    bases = {}
    for e in baseline_entries:
        bases[e["id"]] = {}
        for ev, src in e["summaries"].items():
            files = src if isinstance(src, list) else [src]
            loaded = [r for r in map(_load, files) if r]
            bases[e["id"]][ev] = {"files": files, "present": len(loaded) == len(files),
                                  "l0": _mean([r["data"].get("l0") for r in loaded]),
                                  "metrics_mean": {m: _mean([r["data"]["metrics"].get(m) for r in loaded])
                                                   for m in sorted({m for r in loaded
                                                                    for m in r["data"].get("metrics", {})})}}
    return {"evals": enabled_evals(config), "conditions": conds, "baselines": bases}
