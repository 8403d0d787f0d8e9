"""The evidence bundle: results/evidence/<run_id>/ with figures, tables, copies of the verdict, config, policy and
every source JSON, the environment, and MANIFEST.json (sha256 of every file + the source of every table cell).

Building reads JSON that the workflow already wrote and draws it; it trains nothing and computes no statistic
(table cells are stored values, or a mean / sd over a condition's seeds that `husai verify-bundle` recomputes
from the same files). Evidence that does not exist yet (splice, probes, stress, external, canary) gets a note
in the manifest, never a placeholder figure. The bundle is assembled in a temporary folder beside its
destination and moved into place at the end, so a killed build leaves no half-bundle under the run id.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from husai import figures, tables
from husai.config import condition_id, load_yaml
from husai.io import read_json, sha256_file, write_json, write_text
from husai.provenance import config_hash, package_versions, provenance

SCHEMA = "husai-evidence-bundle/1"
MANIFEST = "MANIFEST.json"
# Where optional evidence would live (globs relative to the results directory). Found files are summarised in a
# sourced table; their absence is recorded. evidence/, logs/ and benchmarks/ are never searched.
OPTIONAL_EVIDENCE = {
    "splice": ("splice/**/*.json", "**/splice*.json"),
    "probes": ("probes/**/*.json", "**/probe*.json"),
    "stress": ("stress/**/*.json", "**/transcoder*.json", "**/ood*.json", "**/known_circuit*.json"),
    "external": ("external/**/*.json", "**/saebench*.json", "**/cebench*.json"),
    "canary": ("platform/**/*.json", "canary/**/*.json", "**/platform_decision.json", "**/canary*.json"),
}
SKIP_TOP = {"evidence", "logs", "benchmarks"}


class BundleError(RuntimeError):
    """The bundle cannot be built from these results (missing evidence, a config that did not produce them)."""


def hooks_of(config: dict) -> list[str]:
    act = config["activations"]
    return list(act["hooks"]) if "hooks" in act else [act["hook"]]


def study_paths(config: dict) -> dict[str, Any]:
    """Source paths relative to the results directory, as rules/common.smk lays them out. Conditions are keyed
    '<hook>/<condition id>' (conditions are crossed with hooks)."""
    model, seeds = config["model"]["name"], config["sae"]["seeds"]
    pairs = [(h, condition_id(c)) for h in hooks_of(config) for c in config["sae"]["conditions"]]
    return {
        "release": "release/release_policy.json", "release_md": "release/release_policy.md",
        "selection": "release/selected_candidate.json", "model_metrics": f"model/{model}/metrics.json",
        "qc": [f"activations/{model}/{h}/qc.json" for h in hooks_of(config)],
        "conditions": [f"{h}/{c}" for h, c in pairs],
        "consistency": {f"{h}/{c}": f"consistency/{model}/{h}/{c}/consistency.json" for h, c in pairs},
        "seed_metrics": {f"{h}/{c}": [f"saes/{model}/{h}/{c}/seed{s}/metrics.json" for s in seeds] for h, c in pairs},
    }


def is_candidate(key: str, candidate: str | None) -> bool:
    """The release names its candidate '<hook>/<condition>' (or, in single-hook runs before hooks, the id)."""
    return candidate is not None and candidate in (key, key.split("/", 1)[-1])


def figure_stem(key: str) -> str:
    return key.replace("/", "__")


def find_optional(results_dir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for kind, globs in OPTIONAL_EVIDENCE.items():
        hits = {p.relative_to(results_dir).as_posix() for g in globs for p in results_dir.glob(g) if p.is_file()}
        found[kind] = sorted(h for h in hits if h.split("/")[0] not in SKIP_TOP)
    return found


def environment(source_docs: dict[str, dict]) -> dict:
    """Where the bundle was built, and every distinct environment recorded in the sources' provenance."""
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        gpus = ["unknown (torch not installed)"]
    computed: dict[str, dict] = {}
    for rel, doc in sorted(source_docs.items()):
        prov = doc.get("provenance") if isinstance(doc, dict) else None
        if not isinstance(prov, dict):
            continue
        env = {k: prov.get(k) for k in ("git_sha", "config_hash", "device", "packages")}
        key = json.dumps(env, sort_keys=True)
        computed.setdefault(key, {**env, "files": []})["files"].append(rel)
    return {
        "bundle_built_with": {"packages": package_versions(), "platform": platform.platform(),
                              "machine": platform.machine(), "processor": platform.processor(),
                              "cpu_count": os.cpu_count(), "gpus": gpus},
        "results_computed_with": list(computed.values()),
    }


def _figures(tmp: Path, paths: dict, policy: dict, release: dict, load) -> list[dict]:
    from husai.consistency_report import pairwise_figure

    out = []
    cand = next((c for c in paths["conditions"] if is_candidate(c, release.get("candidate"))), None)
    cons = {c: load(paths["consistency"][c]) for c in paths["conditions"]}

    def add(name, caption, sources, made):
        out.append({"name": name, "files": [p.relative_to(tmp).as_posix() for p in made], "caption": caption,
                    "sources": sources})

    fig = tmp / "figures"
    for c in paths["conditions"]:
        stem = f"pairwise_{figure_stem(c)}"
        pairwise_figure(cons[c], f"{c}: pairwise consistency over {cons[c]['n_seeds']} seeds",
                        fig / f"{stem}.png", fig / f"{stem}.pdf")
        add(stem, "evidence_pairwise.rst", [paths["consistency"][c]], [fig / f"{stem}.png", fig / f"{stem}.pdf"])
    all_cons = list(paths["consistency"].values())
    add("trained_vs_chance", "trained_vs_chance.rst", all_cons,
        figures.trained_vs_chance(cons, fig / "trained_vs_chance.png", fig / "trained_vs_chance.pdf", cand))
    gate = policy.get("gates", {}).get("trained_vs_random", {})
    stat = gate.get("statistic", "pwmcc")
    rows = []
    for c in paths["conditions"]:
        ms = [load(p) for p in paths["seed_metrics"][c]]
        st = cons[c]["statistics"][stat]["trained"]
        rows.append({"condition": c, "l0": [m["l0"] for m in ms], "ev": [m["explained_variance"] for m in ms],
                     "cons": {"mean": st["mean"], "low": st["interval"]["low"], "high": st["interval"]["high"]},
                     "regularised": bool(cons[c].get("regularised"))})
    seed_files = [p for c in paths["conditions"] for p in paths["seed_metrics"][c]]
    add("frontier", "frontier.rst", seed_files + all_cons,
        figures.frontier(rows, fig / "frontier.png", fig / "frontier.pdf", stat))
    forest = [{"label": c, "point": cons[c]["statistics"][stat]["delta_vs_chance"]["point"],
               "lcb": cons[c]["statistics"][stat]["delta_vs_chance"]["lcb"], "highlight": c == cand}
              for c in paths["conditions"]]
    add("lcb_forest", "lcb_forest.rst", all_cons,
        figures.lcb_forest(forest, fig / "lcb_forest.png", fig / "lcb_forest.pdf", gate.get("min_delta"), stat))
    return out


def _canary_figures(tmp: Path, files: list[str], load) -> list[dict]:
    out = []
    for i, rel in enumerate(f for f in files if figures.has_throughput(load(f))):
        stem = "canary_throughput" + (f"_{i}" if i else "")
        made = figures.canary_throughput(load(rel), tmp / "figures" / f"{stem}.png", tmp / "figures" / f"{stem}.pdf")
        out.append({"name": stem, "files": [p.relative_to(tmp).as_posix() for p in made],
                    "caption": "canary_throughput.rst", "sources": [rel]})
    return out


def build_bundle(results_dir, config: dict, policy_path, config_path, out_dir=None) -> Path:
    """Write results/evidence/<run_id>/ (or `out_dir`, whose name must be the run id) and return its path.

    `config` is the config as the workflow used it (its hash must equal the one in release_policy.json);
    `config_path` is the file (or list of files) it came from, copied verbatim beside the resolved config."""
    results_dir = Path(results_dir)
    config_paths = [config_path] if isinstance(config_path, str | os.PathLike) else list(config_path)
    paths = study_paths(config)
    release_file = results_dir / paths["release"]
    if not release_file.is_file():
        raise BundleError(f"{release_file} does not exist; run `snakemake release_policy` first")
    release = read_json(release_file)
    run_id = release["run_id"]
    out_dir = Path(out_dir) if out_dir else results_dir / "evidence" / run_id
    if out_dir.name != run_id:
        raise BundleError(f"bundle folder {out_dir} must be named by the run id {run_id!r} of {release_file}")
    chash, rhash = config_hash(config), release.get("provenance", {}).get("config_hash")
    if chash != rhash:
        given = ", ".join(map(str, config_paths)) or "(given)"
        raise BundleError(f"config {given} hashes to {chash[:12]}…, but {release_file} was produced with config "
                          f"hash {str(rhash)[:12]}…; rerun the workflow with this config, or bundle with the config "
                          "that produced these results")
    required = [paths["release_md"], paths["model_metrics"], *paths["qc"], *paths["consistency"].values(),
                *(p for ps in paths["seed_metrics"].values() for p in ps)]
    missing = [p for p in required if not (results_dir / p).is_file()]
    if missing:
        raise BundleError(f"evidence missing under {results_dir}: {', '.join(missing)}")
    optional = find_optional(results_dir)
    changed = differs_from_release(release, results_dir, required + [f for fs in optional.values() for f in fs])
    if changed:
        raise BundleError(f"{release_file} is older than its evidence: " + "; ".join(changed) + "; rerun "
                          "`snakemake release_gate` so the verdict and the bundle describe the same files")
    policy = load_yaml(policy_path)
    load = tables.make_loader(results_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", suffix=".tmp", dir=out_dir.parent))
    try:
        specs = tables.headline_tables(paths, release, load)
        specs.update(tables.optional_evidence_tables(optional, load))
        for name, (spec, values) in specs.items():
            spec["files"] = {fmt: f"tables/{name}.{fmt}" for fmt in tables.FORMATS}
            for fmt, text in tables.write_formats(spec, values).items():
                write_text(tmp / spec["files"][fmt], text)
        figs = _figures(tmp, paths, policy, release, load) + _canary_figures(tmp, optional["canary"],
                                                                                        load)
        sources = sorted({c["source"]["file"] for spec, _ in specs.values() for row in spec["rows"] for c in row
                          if "source" in c and "file" in c["source"]}
                         | {i["file"] for spec, _ in specs.values() for row in spec["rows"] for c in row
                            if "source" in c for i in c["source"].get("items", [])}
                         | {s for f in figs for s in f["sources"]} | {paths["release"], paths["release_md"]})
        for rel in sources:
            (tmp / "sources" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results_dir / rel, tmp / "sources" / rel)
        shutil.copyfile(release_file, tmp / "release_policy.json")
        shutil.copyfile(results_dir / paths["release_md"], tmp / "release_policy.md")
        (tmp / "config").mkdir()
        for src_path in [*config_paths, policy_path]:
            dest = tmp / "config" / Path(src_path).name
            if dest.exists():
                raise BundleError(f"two config files are named {dest.name}: {config_paths}, {policy_path}")
            shutil.copyfile(src_path, dest)
        write_json(tmp / "config" / "config.resolved.json", config)
        docs = {rel: load(rel) for rel in sources if rel.endswith(".json")}
        write_json(tmp / "environment.json", environment(docs))
        absent = [{"kind": k, "looked_for": list(OPTIONAL_EVIDENCE[k]),
                   "note": f"no {k} evidence under {results_dir}; nothing drawn or tabulated for it"}
                  for k, files in optional.items() if not files]
        write_text(tmp / "README.md", _readme(run_id, release, specs, figs, absent))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json(tmp / MANIFEST, {
            "schema": SCHEMA, "run_id": run_id, "decision": release.get("decision"),
            "config_hash": chash, "built_from": str(results_dir), "files": files,
            "sources": {rel: sha256_file(results_dir / rel) for rel in sources},
            "tables": {name: spec for name, (spec, _) in specs.items()}, "figures": figs,
            "evidence": {"present": {k: v for k, v in optional.items() if v}, "absent": absent},
            "provenance": provenance(rule="evidence_bundle_build", config=config),
        })
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old:
        shutil.rmtree(old)


def _readme(run_id: str, release: dict, specs: dict, figs: list[dict], absent: list[dict]) -> str:
    lines = [f"# Evidence bundle `{run_id}`", "",
             f"Decision: **{release.get('decision')}** ({release.get('severity')}), candidate "
             f"`{release.get('candidate')}`. Verify with `husai verify-bundle <this folder> [--results DIR]`; "
             "`--results <this folder>/sources` checks against the copies of the source JSON kept here.", "",
             "## Tables (tables/*.csv, *.md, *.tex)", ""]
    lines += [f"- `{name}`: {spec['title']}" for name, (spec, _) in specs.items()]
    lines += ["", "## Figures (figures/*.png, *.pdf)", ""] + [f"- `{f['name']}`" for f in figs]
    if absent:
        lines += ["", "## Evidence not yet produced", ""] + [f"- {a['kind']}: {a['note']}" for a in absent]
    return "\n".join(lines) + "\n"


def differs_from_release(release: dict, results_dir: Path, rels) -> list[str]:
    """Files whose sha256 differs from the one release_policy.json recorded for them (its `inputs`, keyed by the
    workflow's 'results/...' paths): evidence that changed after the verdict was written."""
    recorded = {k.split("/", 1)[1]: v for k, v in (release.get("inputs") or {}).items() if k.startswith("results/")}
    out = []
    for rel in rels:
        p = Path(results_dir) / rel
        if rel in recorded and p.is_file() and sha256_file(p) != recorded[rel]:
            out.append(f"{rel} differs from the sha256 release_policy.json recorded for it")
    return out


def default_results_dir(bundle_dir: Path) -> Path:
    """A bundle inside <results>/evidence/<run_id>/ checks against that results folder; otherwise ./results."""
    bundle_dir = Path(bundle_dir).resolve()
    if bundle_dir.parent.name == "evidence":
        return bundle_dir.parent.parent
    return Path("results")


def verify_bundle(bundle_dir, results_dir=None) -> list[str]:
    """Every problem found (empty when the bundle checks out): files whose sha256 differs from the manifest,
    missing or unlisted files, sources that changed since the bundle was built or differ from the hashes that
    release_policy.json recorded, table cells that differ from their source JSON value, and a config copy that
    does not hash to the recorded config hash."""
    bundle_dir = Path(bundle_dir)
    results_dir = Path(results_dir) if results_dir else default_results_dir(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not mpath.is_file():
        return [f"{mpath}: no manifest (is {bundle_dir} an evidence bundle?)"]
    try:
        manifest = read_json(mpath)
    except ValueError as e:
        return [f"{mpath}: {e}"]
    problems = []
    if not results_dir.is_dir():
        problems.append(f"results directory {results_dir} does not exist; pass --results <the results folder the "
                        f"bundle was built from> (or {bundle_dir}/sources to use the copies inside the bundle)")
    listed = manifest.get("files", {})
    for rel, digest in sorted(listed.items()):
        p = bundle_dir / rel
        if not p.is_file():
            problems.append(f"missing file: {rel} (listed in {MANIFEST})")
        elif (found := sha256_file(p)) != digest:
            problems.append(f"sha256 mismatch: {rel} (manifest {digest[:16]}…, file {found[:16]}…)")
    for p in sorted(bundle_dir.rglob("*")):
        rel = p.relative_to(bundle_dir).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in listed:
            problems.append(f"unlisted file: {rel} (present in the bundle but not in {MANIFEST})")
    for rel, digest in sorted(manifest.get("sources", {}).items()):
        p = results_dir / rel
        if not p.is_file():
            if results_dir.is_dir():
                problems.append(f"source missing: {p} (the bundle was built from it)")
        elif (found := sha256_file(p)) != digest:
            problems.append(f"source changed since the bundle was built: {p} (manifest {digest[:16]}…, "
                            f"now {found[:16]}…)")
    release_file = results_dir / "release" / "release_policy.json"
    if release_file.is_file():
        try:
            problems += differs_from_release(read_json(release_file), results_dir, manifest.get("sources", {}))
        except ValueError as e:
            problems.append(str(e))
    load = tables.make_loader(results_dir)
    for name, spec in manifest.get("tables", {}).items():
        problems += tables.verify_table(name, spec, bundle_dir, load)
    resolved = bundle_dir / "config" / "config.resolved.json"
    if resolved.is_file():
        h = config_hash(json.loads(resolved.read_text()))
        if h != manifest.get("config_hash"):
            problems.append(f"config/config.resolved.json hashes to {h[:12]}…, manifest records "
                            f"{str(manifest.get('config_hash'))[:12]}…")
    return problems
