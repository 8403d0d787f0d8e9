# OpenCL platform canary: an ABFT-guarded GEMM on every OpenCL platform of the node, judged by a policy file.
# The platform is chosen by environment before Python starts (profiles/rusticl sets RUSTICL_ENABLE) and by name.


rule platform_canary_metrics:
    input:
        policy="config/platform_policy.yaml",
        baseline="config/platform_baseline.yaml",
    output:
        metrics="results/platform/canary_metrics.json",
        decision="results/platform/platform_decision.json",
    log:
        "results/logs/platform_canary.log",
    benchmark:
        "results/benchmarks/platform_canary.tsv"
    conda:
        "../envs/opencl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow/scripts/platform_canary.py"
