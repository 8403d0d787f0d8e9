# The base model: trained here (toy) or downloaded once into the cache (pretrained; see download rules).

if IS_TOY:

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

else:

    # Compute nodes are often offline: downloads run on the submitting host.
    localrules:
        download_model,
        download_text,

    rule download_model:
        output:
            manifest=MODEL_REF,
        params:
            model=config["model"],
        retries: 3
        log:
            f"results/logs/{MODEL}/download_model.log",
        benchmark:
            f"results/benchmarks/{MODEL}/download_model.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=60,
        script:
            "../workflow/scripts/download_model.py"

    rule download_text:
        output:
            jsonl=TEXT_JSONL,
        params:
            text=config["text"],
        retries: 3
        log:
            f"results/logs/{MODEL}/download_text.log",
        benchmark:
            f"results/benchmarks/{MODEL}/download_text.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=120,
        script:
            "../workflow/scripts/download_text.py"

    rule prepare_model:
        input:
            manifest=MODEL_REF,
            jsonl=TEXT_JSONL,
        output:
            model_config=f"{MODEL_DIR}/model_config.json",
            metrics=f"{MODEL_DIR}/metrics.json",
        params:
            model=config["model"],
        log:
            f"results/logs/{MODEL}/prepare_model.log",
        benchmark:
            f"results/benchmarks/{MODEL}/prepare_model.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 4
        resources:
            mem_mb=16000,
            runtime=60,
            gpu=MODEL_GPUS,
        script:
            "../workflow/scripts/prepare_model.py"
