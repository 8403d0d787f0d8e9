rule extract_shard:
    input:
        weights=rules.train_model.output.weights,
    output:
        acts=f"{ACTS_DIR}/shards/shard{{shard}}.npy",
        tokens=f"{ACTS_DIR}/shards/shard{{shard}}.tokens.npy",
        info=f"{ACTS_DIR}/shards/shard{{shard}}.json",
    params:
        shard="{shard}",
        activations=config["activations"],
    log:
        f"results/logs/{MODEL}/{HOOK}/extract_shard{{shard}}.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{HOOK}/extract_shard{{shard}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/extract_shard.py"


rule merge_activations:
    input:
        weights=rules.train_model.output.weights,
        acts=expand(f"{ACTS_DIR}/shards/shard{{shard}}.npy", shard=range(N_SHARDS)),
        tokens=expand(f"{ACTS_DIR}/shards/shard{{shard}}.tokens.npy", shard=range(N_SHARDS)),
        infos=expand(f"{ACTS_DIR}/shards/shard{{shard}}.json", shard=range(N_SHARDS)),
    output:
        acts=f"{ACTS_DIR}/acts.npy",
        tokens=f"{ACTS_DIR}/tokens.npy",
        split=f"{ACTS_DIR}/split.npy",
        manifest=f"{ACTS_DIR}/manifest.json",
        qc=f"{ACTS_DIR}/qc.json",
    params:
        activations=config["activations"],
    log:
        f"results/logs/{MODEL}/{HOOK}/merge_activations.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{HOOK}/merge_activations.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/merge_activations.py"
