"""Workflow functions of the evidence stage (rules/evidence.smk), in the husai.pipeline calling convention:
f(input, output, params, config, rule). husai.pipeline re-exports them so `husai.smk.run` finds them by name."""

from __future__ import annotations

from pathlib import Path

from husai.io import read_json, sha256_file, write_json
from husai.provenance import provenance


def manifest_path(run_id_json: str, evidence_dir: str = "results/evidence") -> str:
    """The current run's bundle manifest, once the checkpoint `evidence_run_id` has written its JSON."""
    return f"{evidence_dir}/{read_json(run_id_json)['run_id']}/MANIFEST.json"


def evidence_run_id(input, output, params, config, rule):
    """Checkpoint: the run id lives in release_policy.json, so the bundle's folder name is known only after it."""
    release = read_json(input.json)
    write_json(output.json, {"run_id": release["run_id"], "release_policy": str(input.json),
                             "release_policy_sha256": sha256_file(input.json),
                             "provenance": provenance(rule=rule, config=config, inputs=[input.json])})
    print(f"run id: {release['run_id']}")


def evidence_bundle(input, output, params, config, rule):
    from husai.bundle import build_bundle

    out_dir = Path(output.manifest).parent
    run_id = read_json(input.run_id)["run_id"]
    if out_dir.name != run_id:
        raise ValueError(f"asked for the bundle of run {out_dir.name!r}, but {input.release} is run {run_id!r}; "
                         "ask for `snakemake evidence_bundle`, which follows the current run id")
    build_bundle(params.results_dir, config, input.policy, list(params.config_files), out_dir)
    print(f"evidence bundle: {out_dir}")


def platform_canary(input, output, params, config, rule):
    """Run the OpenCL canary on this node's platforms and decide with the platform policy (always exits 0: the
    decision is data, read by the platform_canary gate)."""
    from husai.config import load_yaml
    from husai.io import write_json
    from husai.opencl import decide, run_canary
    from husai.provenance import provenance

    policy, baseline = load_yaml(input.policy), load_yaml(input.baseline)
    metrics = run_canary(policy["sizes"], policy["snapshots"], policy["iterations"], platforms=policy.get("platforms"),
                         seed=policy.get("seed", 0))
    metrics["provenance"] = provenance(rule=rule, config=config, inputs=[input.policy, input.baseline])
    write_json(output.metrics, metrics)
    decision = decide(metrics, {k: v for k, v in policy.items()
                                if k not in ("sizes", "snapshots", "iterations", "seed", "platforms")}, baseline)
    decision["provenance"] = provenance(rule=rule, config=config, inputs=[input.policy, input.baseline,
                                                                           output.metrics])
    write_json(output.decision, decision)
    print(f"platform canary: {decision['decision']} ({decision['severity']}); "
          f"platforms: {list(metrics['per_platform'])}")
