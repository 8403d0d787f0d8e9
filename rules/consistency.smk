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


# The honest judgement of a regularised condition (lam > 0): its seeds against the unregularised sibling's seeds
# other than the reference seed, with the explained-variance drop (husai.pipeline_saes.judge_regularised).
rule judge_regularised:
    input:
        weights=seed_files("sae_weights.safetensors"),
        train=seed_files("train.json"),
        metrics=seed_files("metrics.json"),
        sibling_weights=lambda wc: sibling_seed_files("sae_weights.safetensors", wc),
        sibling_train=lambda wc: sibling_seed_files("train.json", wc),
        sibling_metrics=lambda wc: sibling_seed_files("metrics.json", wc),
    output:
        json=f"{CONS_DIR}/{{condition}}/regularised.json",
    params:
        hook="{hook}",
        condition="{condition}",
        sibling=lambda wc: sibling_id(CONDITION_SPECS[wc.condition]),
        regularizer=config["sae"].get("regularizer"),
    log:
        f"results/logs/{MODEL}/{{hook}}/{{condition}}/judge_regularised.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/judge_regularised.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../workflow/scripts/judge_regularised.py"
