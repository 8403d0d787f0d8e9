"""Rule functions of the external benchmarks (rules/external.smk), in the husai.pipeline calling convention.

Network: only `download_cebench` and `fetch_baseline` (localrules, retried) may reach it; every eval job calls
husai.hf.offline() first and records that it ran with HF_HUB_OFFLINE=1.

Data ("the same data" for a condition's seeds and for the baselines it is compared with):
  - toy model: the held-out token triples [a, b, =] of the 'report' half (the rows every other reported number
    uses); reconstruction, sparsity and splicing are scored at the `=` position only (the SAE was trained there:
    the operand ids are SAEBench's ignore_tokens with exclude_special_tokens_from_reconstruction), and SAEBench's
    CE/KL pass is skipped with its reason (the toy's `=` is not an output class; husai.external.saebench);
  - pretrained model: token rows (text.context_size, BOS as configured) of the cached text's held-out documents,
    the documents prepare_model scores and SAE training never saw; BOS/EOS/PAD are neither scored nor spliced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from husai import hf
from husai.external import workflow as W
from husai.io import read_json, sha256_file, verify_sha256, write_json
from husai.provenance import provenance

__all__ = ["cebench", "download_cebench", "external_baseline", "fetch_baseline", "saebench_core",
           "saebench_sparse_probing"]


# --- downloads (localrules, the only ones with network) ------------------------------------------------------
def download_cebench(input, output, params, config, rule):
    from husai.external.cebench import download_rows

    c = W.settings(config)["cebench"]
    if c["revision"] == W.PLACEHOLDER_REVISION:
        raise SystemExit(f"external/cebench/revision is the placeholder {c['revision']}: replace it with a real "
                         f"commit of {c['dataset']} (the dataset's hub history) before running CE-Bench")
    hf.use_cache(config.get("cache_dir", "cache"))
    m = download_rows(c["dataset"], c["revision"], output.rows)
    write_json(output.manifest, {**m, "provenance": provenance(rule=rule, config=config)})
    print(f"cached {m['n_rows']} CE-Bench rows of {c['dataset']}@{c['revision']} ({m['sha256']})")


def fetch_baseline(input, output, params, config, rule):
    """The entry's checkpoint into the cache (sae-lens layout): downloaded with sae-lens for sae_lens:<release>/<id>,
    copied from a local directory otherwise; its hook, width and model are checked against the entry."""
    e = params.entry
    dst = Path(output.cfg).parent
    dst.mkdir(parents=True, exist_ok=True)
    if e["source"].startswith(W.SAE_LENS_PREFIX):
        from sae_lens import SAE

        release, sae_id = e["source"][len(W.SAE_LENS_PREFIX):].split("/", 1)
        hf.use_cache(config.get("cache_dir", "cache"))
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            SAE.from_pretrained(release, sae_id, device="cpu").save_model(tmp)
            _install(Path(tmp), dst)
    else:
        src = Path(e["source"])
        if not (src / "cfg.json").is_file() or not (src / "sae_weights.safetensors").is_file():
            raise SystemExit(f"external/baselines entry {e['id']!r}: source {src} is not a checkpoint directory "
                             "(cfg.json + sae_weights.safetensors, husai or sae-lens format); save the reference "
                             "SAE there (sae-lens: sae.save_model(dir)) or fix the entry's source")
        _install(src, dst)
    cfg = read_json(output.cfg)
    meta = cfg.setdefault("metadata", {})
    names = {config["model"]["name"], config["model"].get("hf_name")}
    if meta.get("model_name") and meta["model_name"] not in names:
        raise SystemExit(f"baseline {e['id']!r}: checkpoint is for model {meta['model_name']!r}, the study's is "
                         f"{config['model']['name']!r}")
    meta.setdefault("model_name", config["model"]["name"])
    meta.setdefault("hook_name", e["hook"])
    if meta["hook_name"] != e["hook"] or cfg.get("d_sae") != e["width"]:
        raise SystemExit(f"baseline {e['id']!r}: checkpoint has hook {meta['hook_name']!r}, width {cfg.get('d_sae')}; "
                         f"the entry declares hook {e['hook']!r}, width {e['width']}")
    write_json(output.cfg, cfg)
    write_json(output.manifest, {"id": e["id"], "source": e["source"], "entry": e,
                                 "files": {p: sha256_file(dst / p) for p in ("cfg.json", "sae_weights.safetensors")},
                                 "provenance": provenance(rule=rule, config=config)})
    print(f"baseline {e['id']}: {e['source']} -> {dst}")


def _install(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("sae_weights.safetensors", "cfg.json"):
        shutil.copyfile(src / name, dst / name)


# --- shared: model, data, checkpoints ------------------------------------------------------------------------
def _device(config) -> str:
    return W.settings(config).get("device", "cpu")


def _model(config, input):
    """The base model, offline: the toy's trained weights, or the cached pretrained snapshot."""
    hf.offline(config.get("cache_dir", "cache"))
    m = config["model"]
    if W.is_toy(config):
        from husai.pipeline import _toy_cfg
        from husai.toymodel import load_model

        return load_model(_toy_cfg(config), input.model).to(_device(config))
    return hf.load_pretrained(m["hf_name"], config["cache_dir"], m.get("dtype", "float32"), _device(config))


def core_data(config, input, model) -> tuple[np.ndarray, dict]:
    """(token rows [N, context], facts): the evaluation data of one hook and how SAEBench must read it."""
    if W.is_toy(config):
        from husai import activations as A
        from husai.pipeline_lanes import row_sets

        data = A.load_verified_dataset(input.manifest, input.qc)
        rows = row_sets(data, config["activations"]["split_seed"])["report"]
        p = config["model"]["p"]
        return np.asarray(data["tokens"])[rows], {
            "dataset_name": f"{config['model']['name']} held-out report rows", "context_size": 3,
            "prepend_bos": False, "ignore_tokens": list(range(p)), "scored_positions": "the `=` token (position 2)",
            "n_rows": int(len(rows))}
    from husai.pipeline_text import _rows, _texts

    t = config["text"]
    texts = _texts(_paths(input.text)[0])
    held = texts[-max(1, int(len(texts) * t["heldout_docs_fraction"])):]  # prepare_model's held-out documents
    rows = _rows(model, config, held)
    return rows, {"dataset_name": f"{t['dataset']}@{t['revision']} held-out docs", "context_size": t["context_size"],
                  "prepend_bos": t.get("prepend_bos", True), "ignore_tokens": None,
                  "scored_positions": "all but BOS/EOS/PAD", "n_rows": int(len(rows)), "n_docs": len(held)}


def _checkpoints(input) -> list[Path]:
    """Candidate seed directories, each verified against the sha256 its train.json recorded."""
    dirs = []
    for w, t in zip(input.weights, input.train, strict=True):
        verify_sha256(w, read_json(t)["weights_sha256"], what="SAE checkpoint")
        dirs.append(Path(w).parent)
    return dirs


def _paths(value) -> list[str]:
    """A Snakemake named input as a list of paths (a single file comes back as a plain string)."""
    return [] if value is None else [value] if isinstance(value, str) else [str(v) for v in value]


def _data_inputs(input) -> list[str]:
    return [p for k in ("model", "manifest", "text", "rows") for p in _paths(input.get(k))]


def _run_info(config, facts) -> dict:
    return {"offline": os.environ.get("HF_HUB_OFFLINE") == "1", "device": _device(config), "data": facts}


def _write(path, summary, config, rule, inputs, seed=None, **extra) -> None:
    write_json(path, {**summary, **extra, "provenance": provenance(rule=rule, config=config, inputs=inputs,
                                                                   seed=seed, device=_device(config))})


# --- the evals -----------------------------------------------------------------------------------------------
def _core(ckpt, model, rows, facts, config) -> dict:
    from husai.external.saebench import run_core_eval

    c = W.settings(config)["saebench_core"]
    return run_core_eval(
        ckpt, model, rows, dataset_name=facts["dataset_name"], context_size=facts["context_size"],
        prepend_bos=facts["prepend_bos"], batch_size_prompts=c.get("batch_size_prompts", 8),
        n_eval_reconstruction_batches=c.get("n_eval_reconstruction_batches", 4),
        n_eval_sparsity_variance_batches=c.get("n_eval_sparsity_variance_batches", 4),
        featurewise=c.get("featurewise", True), ignore_tokens=facts["ignore_tokens"],
        exclude_special_tokens_from_reconstruction=True, shuffle_seed=c.get("shuffle_seed", 42),
        device=_device(config))


def _sparse_probing(ckpts, model, config, workdir) -> list[dict]:
    from husai.external.saebench import run_sparse_probing

    c = W.settings(config)["saebench_sparse_probing"]
    out = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:  # sae-probes' caches; the model's activations are shared
        for i, ckpt in enumerate(ckpts):
            out.append(run_sparse_probing(
                ckpt, model=model, results_path=Path(tmp) / f"results{i}", output_path=Path(tmp) / f"out{i}",
                model_cache_path=Path(tmp) / "model_acts", dataset_names=c.get("dataset_names"),
                ks=c.get("ks", (1, 2, 5)), reg_type=c.get("reg_type", "l1"), random_seed=c.get("random_seed", 42),
                device=_device(config)))
    return out


def _cebench(ckpts, model, config, input) -> list[dict]:
    from husai.external.cebench import load_rows, run_cebench

    c = W.settings(config)["cebench"]
    rows = load_rows(input.rows, read_json(input.rows_manifest)["sha256"])
    if c.get("n_pairs"):
        rows = rows[: c["n_pairs"]]  # the dataset's first n pairs: the same pairs for every SAE and baseline
    out = run_cebench(model, ckpts, rows, dataset=c["dataset"], dataset_revision=c["revision"],
                      batch_size=c.get("batch_size", 16), max_tokens=c.get("max_tokens"))
    for s in out:
        s["dataset"]["local_sha256"] = read_json(input.rows_manifest)["sha256"]
    return out


def _evaluate(eval_name, ckpts, model, config, input, workdir) -> tuple[list[dict], dict]:
    """One eval of several checkpoints (a condition's seeds, or one baseline) on the same data: (summaries, facts)."""
    if eval_name == "saebench_core":
        rows, facts = core_data(config, input, model)
        return [_core(c, model, rows, facts, config) for c in ckpts], facts
    if eval_name == "saebench_sparse_probing":
        return _sparse_probing(ckpts, model, config, workdir), {"dataset_name": "sae-probes' datasets"}
    return _cebench(ckpts, model, config, input), {"dataset_name": W.settings(config)["cebench"]["dataset"]}


def _condition_eval(eval_name, input, output, params, config, rule) -> None:
    model = _model(config, input)
    ckpts = _checkpoints(input)
    summaries, facts = _evaluate(eval_name, ckpts, model, config, input, Path(output.summaries[0]).parent.parent)
    inputs = [*input.weights, *input.train, *_data_inputs(input)]
    for path, ckpt, s in zip(output.summaries, ckpts, summaries, strict=True):
        if s.get("condition") != params.condition or s.get("hook") != params.hook:
            raise ValueError(f"{ckpt}: summary is for {s.get('hook')}/{s.get('condition')}, the job's condition is "
                             f"{params.hook}/{params.condition}")
        _write(path, s, config, rule, inputs, seed=s.get("seed"), key=f"{params.hook}/{params.condition}",
               run=_run_info(config, facts))
    print(f"{eval_name} {params.hook}/{params.condition}: {len(summaries)} seeds")


def saebench_core(input, output, params, config, rule):
    _condition_eval("saebench_core", input, output, params, config, rule)


def saebench_sparse_probing(input, output, params, config, rule):
    _condition_eval("saebench_sparse_probing", input, output, params, config, rule)


def cebench(input, output, params, config, rule):
    _condition_eval("cebench", input, output, params, config, rule)


def external_baseline(input, output, params, config, rule):
    """One baseline entry scored by the same adapter on the same data as the candidates at its hook."""
    model = _model(config, input)
    ckpt = Path(input.cfg).parent
    manifest = read_json(input.baseline_manifest)
    for name, digest in manifest["files"].items():
        verify_sha256(ckpt / name, digest, what=f"baseline {params.baseline} {name}")
    (s,), facts = _evaluate(params.eval_name, [ckpt], model, config, input, Path(output.json).parent)
    inputs = [input.cfg, input.weights, input.baseline_manifest, *_data_inputs(input)]
    _write(output.json, s, config, rule, inputs, baseline_id=params.baseline, baseline_source=manifest["source"],
           run=_run_info(config, facts))
    print(f"baseline {params.baseline} {params.eval_name}: L0 {s.get('l0')}")
