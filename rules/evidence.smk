# The evidence bundle: results/evidence/<run_id>/ from files that already exist. It reads JSON and draws it;
# it trains nothing and computes no statistic. The run id is written into release_policy.json (config hash +
# git SHA at release time), so a tiny checkpoint reads it and the target rule `evidence_bundle` (Snakefile)
# asks for results/evidence/<run_id>/MANIFEST.json through `evidence_manifest` below.

EVIDENCE_DIR = "results/evidence"
EVIDENCE_FIGURES = f"{EVIDENCE_DIR}/{{run_id}}/figures"


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


def evidence_manifest(wildcards):
    """The current run's bundle manifest; known once the checkpoint has read release_policy.json."""
    import json

    with open(checkpoints.evidence_run_id.get().output.json) as f:
        return f"{EVIDENCE_DIR}/{json.load(f)['run_id']}/MANIFEST.json"


def _evidence_figure(name, caption, figure=None, hook="all", condition="all"):
    return report(f"{EVIDENCE_FIGURES}/{name}.png", caption=f"../workflow/report/{caption}", category="Evidence",
                  subcategory="{run_id}", labels={"figure": figure or name, "hook": hook, "condition": condition})


rule evidence_bundle_build:
    input:
        release=rules.release_policy.output.json,
        release_md=rules.release_policy.output.md,
        selection=rules.select_candidate.output.json,
        run_id=f"{EVIDENCE_DIR}/run_id.json",
        policy=config["policy"],
        model_metrics=rules.train_model.output.metrics,
        qc=expand(f"results/activations/{MODEL}/{{hook}}/qc.json", hook=HOOKS),
        seed_metrics=all_seed_files("metrics.json"),
        consistency=all_consistency(),
    output:
        manifest=f"{EVIDENCE_DIR}/{{run_id}}/MANIFEST.json",
        pairwise=[
            _evidence_figure(f"pairwise_{h}__{c}", "evidence_pairwise.rst", "pairwise", h, c)
            for h in HOOKS
            for c in CONDITIONS
        ],
        trained_vs_chance=_evidence_figure("trained_vs_chance", "trained_vs_chance.rst"),
        frontier=_evidence_figure("frontier", "frontier.rst"),
        lcb_forest=_evidence_figure("lcb_forest", "lcb_forest.rst"),
    params:
        results_dir="results",
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
