# All seeds of a condition train in one job (seed-batched); a seed's files are outputs of that job, so
# asking for one seed's checkpoint reruns its condition. Metrics are per checkpoint, so forcing one seed's
# metrics.json reruns only that evaluation and what reads it.


# Matched L0: a relu/jumprelu condition with `calibrate: true` first calibrates its sparsity coefficient to
# L0 = k (husai.pipeline_saes: fit on training rows, L0 on the held-out 'selection' half, never the 'report'
# half), with the condition's exact training config; train_condition then trains with that coefficient. A miss is
# recorded (status missed_tolerance) and the condition trains anyway; selection's matched-L0 rule judges it.
rule calibrate_condition:
    input:
        manifest=rules.merge_activations.output.manifest,
        qc=rules.merge_activations.output.qc,
        acts=rules.merge_activations.output.acts,
    output:
        json=f"{SAE_DIR}/{{condition}}/calibration.json",
    params:
        hook="{hook}",
        condition="{condition}",
        calibration=config["sae"].get("calibration"),
        training=config["sae"]["training"],
        spec=lambda wc: CONDITION_SPECS[wc.condition],
    log:
        f"results/logs/{MODEL}/{{hook}}/{{condition}}/calibrate_condition.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/calibrate_condition.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=TRAIN_GPUS,
    script:
        "../workflow/scripts/calibrate_condition.py"


# A regularised condition (lam > 0) also needs its sibling's reference seed (sae/regularizer/reference_seed).
rule train_condition:
    input:
        unpack(train_condition_extras),
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
        spec=lambda wc: CONDITION_SPECS[wc.condition],
        regularizer=lambda wc: config["sae"].get("regularizer") if wc.condition in REGULARISED else None,
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
