rule train_model:
    output:
        weights=f"{MODEL_DIR}/model.safetensors",
        model_config=f"{MODEL_DIR}/model_config.json",
        metrics=f"{MODEL_DIR}/metrics.json",
    params:
        model=config["model"],
    log:
        f"results/logs/{MODEL}/train_model.log",
    benchmark:
        f"results/benchmarks/{MODEL}/train_model.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../workflow/scripts/train_model.py"
