# The gate rule always writes its decision and exits 0 (Snakemake deletes a failed job's outputs);
# check_release fails on "iterate" after listing the failed checks, so the evidence survives.


localrules:
    check_release,


rule select_candidate:
    input:
        policy=config["policy"],
        seed_metrics=all_seed_files("metrics.json"),
        consistency=all_consistency(),
    output:
        json="results/release/selected_candidate.json",
    params:
        candidate=config["release"]["candidate"],
    log:
        "results/logs/select_candidate.log",
    benchmark:
        "results/benchmarks/select_candidate.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow/scripts/select_candidate.py"


rule release_policy:
    input:
        policy=config["policy"],
        selection=rules.select_candidate.output.json,
        qc=expand(f"results/activations/{MODEL}/{{hook}}/qc.json", hook=HOOKS),
        manifest=expand(f"results/activations/{MODEL}/{{hook}}/manifest.json", hook=HOOKS),
        model_metrics=MODEL_METRICS,
        lanes=all_lane_files(),
        regularised=all_regularised(),
        external=EXT_FILES,  # rules/external.smk: per-seed summaries and computed baseline summaries (if enabled)
        seed_metrics=all_seed_files("metrics.json"),
        consistency=all_consistency(),
    output:
        json="results/release/release_policy.json",
        md="results/release/release_policy.md",
    params:
        candidate=config["release"]["candidate"],
    log:
        "results/logs/release_policy.log",
    benchmark:
        "results/benchmarks/release_policy.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow/scripts/release_policy.py"


rule check_release:
    input:
        json=rules.release_policy.output.json,
    output:
        ok=RELEASE_GATE_OK,
    log:
        "results/logs/release_gate.log",
    benchmark:
        "results/benchmarks/release_gate.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    script:
        "../workflow/scripts/release_gate.py"
