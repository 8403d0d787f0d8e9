rule consistency:
    input:
        weights=seed_files("sae_weights.safetensors"),
        train=seed_files("train.json"),
    output:
        json=f"{CONS_DIR}/{{condition}}/consistency.json",
        figure=report(
            f"{CONS_DIR}/{{condition}}/pairwise.png",
            caption="../workflow/report/pairwise.rst",
            category="Consistency",
            labels={"condition": "{condition}"},
        ),
    params:
        hook="{hook}",
        condition="{condition}",
        consistency=config["consistency"],
    log:
        f"results/logs/{MODEL}/{{hook}}/{{condition}}/consistency.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/consistency.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../workflow/scripts/consistency.py"
