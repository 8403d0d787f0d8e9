# One job per shard extracts every configured hook in one forward pass; one merge per hook.


rule extract_shard:
    input:
        weights=MODEL_REF,
        jsonl=TEXT_INPUT,
    output:
        acts=expand(f"results/activations/{MODEL}/{{hook}}/shards/shard{{{{shard}}}}.npy", hook=HOOKS),
        tokens=expand(f"results/activations/{MODEL}/{{hook}}/shards/shard{{{{shard}}}}.tokens.npy", hook=HOOKS),
        info=expand(f"results/activations/{MODEL}/{{hook}}/shards/shard{{{{shard}}}}.json", hook=HOOKS),
    params:
        shard="{shard}",
        hooks=HOOKS,
        activations=config["activations"],
    log:
        f"results/logs/{MODEL}/extract_shard{{shard}}.log",
    benchmark:
        f"results/benchmarks/{MODEL}/extract_shard{{shard}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
        gpu=MODEL_GPUS,
    script:
        "../workflow/scripts/extract_shard.py"


rule merge_activations:
    input:
        weights=MODEL_REF,
        acts=expand(f"{ACTS_DIR}/shards/shard{{shard}}.npy", shard=range(N_SHARDS), allow_missing=True),
        tokens=expand(f"{ACTS_DIR}/shards/shard{{shard}}.tokens.npy", shard=range(N_SHARDS), allow_missing=True),
        infos=expand(f"{ACTS_DIR}/shards/shard{{shard}}.json", shard=range(N_SHARDS), allow_missing=True),
    output:
        acts=f"{ACTS_DIR}/acts.npy",
        tokens=f"{ACTS_DIR}/tokens.npy",
        split=f"{ACTS_DIR}/split.npy",
        ood=f"{ACTS_DIR}/ood.npy",
        manifest=f"{ACTS_DIR}/manifest.json",
        qc=f"{ACTS_DIR}/qc.json",
    params:
        hook="{hook}",
        activations=config["activations"],
        ood=config.get("lanes", {}).get("ood"),
    log:
        f"results/logs/{MODEL}/{{hook}}/merge_activations.log",
    benchmark:
        f"results/benchmarks/{MODEL}/{{hook}}/merge_activations.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/merge_activations.py"
