# External benchmarks (config `external:`; husai.external.workflow documents it): SAEBench core / sparse probing
# and CE-Bench on every <hook>/<condition> (all seeds in one job, one summary per seed), and the same evals of
# every baseline entry without precomputed summaries. Only the two localrules below reach the network (retried);
# every eval job runs with HF_HUB_OFFLINE=1. Nothing here exists when no external eval is enabled.
import os

from husai.external import workflow as external_wf


EXT = external_wf.settings(config)
EXT_EVALS = external_wf.enabled_evals(config)
EXT_GPUS = 1 if EXT.get("device", "cpu").startswith("cuda") else 0
EXT_ENTRIES = {e["id"]: e for e in (EXT.get("baselines") or {}).get("entries") or []}
EXT_FILES = external_wf.all_files(config) if EXT_EVALS else []
CEBENCH_ROWS = external_wf.cebench_rows_file(config) if "cebench" in EXT_EVALS else None


if EXT_EVALS:

    wildcard_constraints:
        baseline="|".join(re.escape(b) for b in EXT_ENTRIES) or "(?!)",
        eval_name="|".join(EXT_EVALS),

    localrules:
        fetch_baseline,

    # A baseline's checkpoint, fetched (sae_lens:<release>/<id>) or copied (a local directory) into the cache.
    rule fetch_baseline:
        input:
            lambda wc: [f"{EXT_ENTRIES[wc.baseline]['source']}/{n}" for n in ("cfg.json", "sae_weights.safetensors")
                        if os.path.isdir(EXT_ENTRIES[wc.baseline]["source"])],
        output:
            cfg=f"{CACHE}/baselines/{{baseline}}/cfg.json",
            weights=f"{CACHE}/baselines/{{baseline}}/sae_weights.safetensors",
            manifest=f"{CACHE}/baselines/{{baseline}}/manifest.json",
        params:
            entry=lambda wc: EXT_ENTRIES[wc.baseline],
        retries: 3
        log:
            "results/logs/external/baselines/{baseline}/fetch_baseline.log",
        benchmark:
            "results/benchmarks/external/baselines/{baseline}/fetch_baseline.tsv"
        conda:
            "../envs/saebench.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../workflow/scripts/fetch_baseline.py"

    rule external_baseline:
        input:
            unpack(lambda wc: external_wf.eval_inputs(config, wc.eval_name, MODEL_REF, TEXT_INPUT,
                                                      EXT_ENTRIES[wc.baseline]["hook"])),
            cfg=rules.fetch_baseline.output.cfg,
            weights=rules.fetch_baseline.output.weights,
            baseline_manifest=rules.fetch_baseline.output.manifest,
        output:
            json="results/external/baselines/{baseline}/{eval_name}.json",
        params:
            baseline="{baseline}",
            eval_name="{eval_name}",
            entry=lambda wc: EXT_ENTRIES[wc.baseline],
            settings=lambda wc: EXT.get(wc.eval_name),
        log:
            "results/logs/external/baselines/{baseline}/{eval_name}.log",
        benchmark:
            "results/benchmarks/external/baselines/{baseline}/{eval_name}.tsv"
        conda:
            "../envs/saebench.yaml"
        threads: 1 if IS_TOY else 4
        resources:
            mem_mb=4000 if IS_TOY else 32000,
            runtime=20 if IS_TOY else 240,
            gpu=EXT_GPUS,
        script:
            "../workflow/scripts/external_baseline.py"


if "saebench_core" in EXT_EVALS:

    rule saebench_core:
        input:
            **external_wf.eval_inputs(config, "saebench_core", MODEL_REF, TEXT_INPUT),
            weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
        output:
            summaries=external_wf.seed_summary_patterns(config, "saebench_core"),
        params:
            hook="{hook}",
            condition="{condition}",
            settings=EXT.get("saebench_core"),
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/saebench_core.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/saebench_core.tsv"
        conda:
            "../envs/saebench.yaml"
        threads: 1 if IS_TOY else 4
        resources:
            mem_mb=4000 if IS_TOY else 32000,
            runtime=20 if IS_TOY else 120,
            gpu=EXT_GPUS,
        script:
            "../workflow/scripts/saebench_core.py"


if "saebench_sparse_probing" in EXT_EVALS:

    rule saebench_sparse_probing:
        input:
            **external_wf.eval_inputs(config, "saebench_sparse_probing", MODEL_REF, TEXT_INPUT),
            weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
        output:
            summaries=external_wf.seed_summary_patterns(config, "saebench_sparse_probing"),
        params:
            hook="{hook}",
            condition="{condition}",
            settings=EXT.get("saebench_sparse_probing"),
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/saebench_sparse_probing.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/saebench_sparse_probing.tsv"
        conda:
            "../envs/saebench.yaml"
        threads: 1 if IS_TOY else 4
        resources:
            mem_mb=4000 if IS_TOY else 32000,
            runtime=20 if IS_TOY else 240,
            gpu=EXT_GPUS,
        script:
            "../workflow/scripts/saebench_sparse_probing.py"


if "cebench" in EXT_EVALS:

    rule cebench:
        input:
            **external_wf.eval_inputs(config, "cebench", MODEL_REF, TEXT_INPUT),
            weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
        output:
            summaries=external_wf.seed_summary_patterns(config, "cebench"),
        params:
            hook="{hook}",
            condition="{condition}",
            settings=EXT.get("cebench"),
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/cebench.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/cebench.tsv"
        conda:
            "../envs/saebench.yaml"
        threads: 1 if IS_TOY else 4
        resources:
            mem_mb=4000 if IS_TOY else 32000,
            runtime=20 if IS_TOY else 120,
            gpu=EXT_GPUS,
        script:
            "../workflow/scripts/cebench.py"


if CEBENCH_ROWS:

    localrules:
        download_cebench,

    rule download_cebench:
        output:
            rows=CEBENCH_ROWS,
            manifest=f"{CEBENCH_ROWS}.manifest.json",
        params:
            dataset=EXT["cebench"]["dataset"],
            revision=EXT["cebench"]["revision"],
        retries: 3
        log:
            f"results/logs/{MODEL}/download_cebench.log",
        benchmark:
            f"results/benchmarks/{MODEL}/download_cebench.tsv"
        conda:
            "../envs/saebench.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        script:
            "../workflow/scripts/download_cebench.py"
