# The evidence bundle: results/evidence/<run_id>/ from files that already exist. It reads JSON and draws it;
# it trains nothing and computes no statistic. The run id is written into release_policy.json (config hash +
# git SHA at release time), so the checkpoint `evidence_run_id` copies it out, and the target rule
# `evidence_bundle` (Snakefile) asks for EVIDENCE_MANIFEST = results/evidence/<run_id>/MANIFEST.json.
# Every figure is also a report() item: `snakemake evidence_bundle --report report.html`.
import os

from husai.pipeline_evidence import manifest_path


EVIDENCE_DIR = "results/evidence"
EVIDENCE_FIGURES = f"{EVIDENCE_DIR}/{{run_id}}/figures"
EVIDENCE_MANIFEST = lambda wildcards: manifest_path(checkpoints.evidence_run_id.get().output.json, EVIDENCE_DIR)


localrules:
    evidence_run_id,


wildcard_constraints:
    run_id=r"[A-Za-z0-9_.-]+",


checkpoint evidence_run_id:
    input:
        json=rules.release_policy.output.json,
    output:
        json=f"{EVIDENCE_DIR}/run_id.json",
    log:
        "results/logs/evidence_run_id.log",
    benchmark:
        "results/benchmarks/evidence_run_id.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    script:
        "../workflow/scripts/evidence_run_id.py"


rule evidence_bundle_build:
    input:
        release=rules.release_policy.output.json,
        release_md=rules.release_policy.output.md,
        selection=rules.select_candidate.output.json,
        run_id=rules.evidence_run_id.output.json,
        policy=config["policy"],
        model_metrics=MODEL_METRICS,
        lanes=all_lane_files(),
        regularised=all_regularised(),
        qc=expand(f"results/activations/{MODEL}/{{hook}}/qc.json", hook=HOOKS),
        seed_metrics=all_seed_files("metrics.json"),
        consistency=all_consistency(),
    output:
        manifest=f"{EVIDENCE_DIR}/{{run_id}}/MANIFEST.json",
        pairwise=[
            report(
                f"{EVIDENCE_FIGURES}/pairwise_{h}__{c}.png",
                caption="../workflow/report/evidence_pairwise.rst",
                category="Evidence",
                subcategory="{run_id}",
                labels={"figure": "pairwise", "hook": h, "condition": c},
            )
            for h in HOOKS
            for c in CONDITIONS
        ],
        trained_vs_chance=report(
            f"{EVIDENCE_FIGURES}/trained_vs_chance.png",
            caption="../workflow/report/trained_vs_chance.rst",
            category="Evidence",
            subcategory="{run_id}",
            labels={"figure": "trained vs chance", "hook": "all", "condition": "all"},
        ),
        frontier=report(
            f"{EVIDENCE_FIGURES}/frontier.png",
            caption="../workflow/report/frontier.rst",
            category="Evidence",
            subcategory="{run_id}",
            labels={"figure": "L0-EV-consistency frontier", "hook": "all", "condition": "all"},
        ),
        lcb_forest=report(
            f"{EVIDENCE_FIGURES}/lcb_forest.png",
            caption="../workflow/report/lcb_forest.rst",
            category="Evidence",
            subcategory="{run_id}",
            labels={"figure": "LCB forest", "hook": "all", "condition": "all"},
        ),
    params:
        results_dir=lambda wildcards, input: os.path.dirname(os.path.dirname(input.release)),
        config_files=list(workflow.configfiles),
    log:
        f"results/logs/evidence_bundle_build.{{run_id}}.log",
    benchmark:
        f"results/benchmarks/evidence_bundle_build.{{run_id}}.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/evidence_bundle.py"
