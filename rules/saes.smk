# All seeds of a condition train in one job (seed-batched); a seed's files are outputs of that job, so
# asking for one seed's checkpoint reruns its condition. Metrics are per checkpoint, so forcing one seed's
# metrics.json reruns only that evaluation and what reads it.


rule train_condition:
    input:
        manifest=rules.merge_activations.output.manifest,
        qc=rules.merge_activations.output.qc,
        acts=rules.merge_activations.output.acts,
    output:
        weights=seed_files("sae_weights.safetensors"),
        cfg=seed_files("cfg.json"),
        train=seed_files("train.json"),
    params:
        hook="{hook}",
        condition="{condition}",
        state_dir=f"{SAE_DIR}/{{condition}}",
        seeds=SEEDS,
        training=config["sae"]["training"],
        spec=lambda wc: [c for c in config["sae"]["conditions"] if condition_id(c) == wc.condition][0],
    log:
        f"results/logs/{MODEL}/{{hook}}/{{condition}}/train_condition.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/train_condition.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=TRAIN_GPUS,
    script:
        "../workflow/scripts/train_condition.py"


rule seed_metrics:
    input:
        weights=f"{SAE_DIR}/{{condition}}/seed{{seed}}/sae_weights.safetensors",
        train=f"{SAE_DIR}/{{condition}}/seed{{seed}}/train.json",
        manifest=rules.merge_activations.output.manifest,
        qc=rules.merge_activations.output.qc,
    output:
        metrics=f"{SAE_DIR}/{{condition}}/seed{{seed}}/metrics.json",
    log:
        f"results/logs/{MODEL}/{{hook}}/{{condition}}/seed{{seed}}/seed_metrics.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/seed{{seed}}/seed_metrics.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/seed_metrics.py"
