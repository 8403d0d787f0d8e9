# Evaluation and stress lanes (toy model only): one JSON per (lane, hook, condition) at lane_file(), read by the
# gate of the same name in the release policy. Each lane job evaluates all seeds of its condition at once
# (loading the model and dataset costs more than one seed's evaluation). A lane's rules exist only when the
# lane is enabled in config (CONDITION_LANES); the transcoder lane lives with the transcoder architecture.
PROBES_DIR = f"results/probes/{MODEL}/{{hook}}"
CONTROL_DIR = f"results/controls/{MODEL}/random_init"
PROBE_FOLDS = list(range(LANE_CFG.get("probes", {}).get("n_folds", 0)))


wildcard_constraints:
    fold=r"\d+",


if IS_TOY and "splice" in CONDITION_LANES:

    rule splice:
        input:
            weights=MODEL_REF,
            manifest=rules.merge_activations.output.manifest,
            qc=rules.merge_activations.output.qc,
            sae_weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
        output:
            json=lane_file("splice"),
        params:
            hook="{hook}",
            condition="{condition}",
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/splice.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/splice.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow/scripts/splice.py"


if IS_TOY and "probes" in CONDITION_LANES:

    rule probe_folds:
        input:
            manifest=rules.merge_activations.output.manifest,
            qc=rules.merge_activations.output.qc,
        output:
            json=f"{PROBES_DIR}/folds.json",
        params:
            hook="{hook}",
        log:
            f"results/logs/{MODEL}/{{hook}}/probe_folds.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/probe_folds.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../workflow/scripts/probe_folds.py"

    rule probe_raw:
        input:
            manifest=rules.merge_activations.output.manifest,
            qc=rules.merge_activations.output.qc,
            folds=rules.probe_folds.output.json,
        output:
            json=f"{PROBES_DIR}/raw/fold{{fold}}/metrics.json",
        params:
            hook="{hook}",
            fold="{fold}",
        log:
            f"results/logs/{MODEL}/{{hook}}/probe_raw.fold{{fold}}.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/probe_raw.fold{{fold}}.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow/scripts/probe_raw.py"

    rule probes:
        input:
            manifest=rules.merge_activations.output.manifest,
            qc=rules.merge_activations.output.qc,
            folds=rules.probe_folds.output.json,
            raw=expand(f"{PROBES_DIR}/raw/fold{{fold}}/metrics.json", fold=PROBE_FOLDS, allow_missing=True),
            sae_weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
        output:
            json=lane_file("probes"),
            metrics=[f"{PROBES_DIR}/{{condition}}/fold{f}/seed{s}/metrics.json" for f in PROBE_FOLDS for s in SEEDS],
        params:
            hook="{hook}",
            condition="{condition}",
            fold_seed=[[f, s] for f in PROBE_FOLDS for s in SEEDS],
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/probes.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/probes.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=20,
        script:
            "../workflow/scripts/probes.py"


if IS_TOY and "ood" in CONDITION_LANES:

    rule ood:
        input:
            weights=MODEL_REF,
            manifest=rules.merge_activations.output.manifest,
            qc=rules.merge_activations.output.qc,
            sae_weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
        output:
            json=lane_file("ood"),
        params:
            hook="{hook}",
            condition="{condition}",
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/ood.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/ood.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow/scripts/ood.py"


if IS_TOY and "known_circuit" in CONDITION_LANES:

    # The random-init model of the same config: its activations in the trained dataset's row order, with the
    # trained dataset's split and OOD masks, so its SAEs see the same rows in the same roles.
    rule control_model:
        input:
            tokens=expand(f"{ACTS_DIR}/tokens.npy", hook=HOOKS),
            split=expand(f"{ACTS_DIR}/split.npy", hook=HOOKS),
            ood=expand(f"{ACTS_DIR}/ood.npy", hook=HOOKS),
        output:
            acts=expand(f"{CONTROL_DIR}/{{hook}}/acts.npy", hook=HOOKS),
            qc=expand(f"{CONTROL_DIR}/{{hook}}/qc.json", hook=HOOKS),
            manifest=expand(f"{CONTROL_DIR}/{{hook}}/manifest.json", hook=HOOKS),
        params:
            hooks=HOOKS,
        log:
            f"results/logs/{MODEL}/control_model.log",
        benchmark:
            f"results/benchmarks/{MODEL}/control_model.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow/scripts/control_model.py"

    # Same recipe as the real condition: a calibrated condition's control trains with its calibrated coefficient.
    rule train_control_condition:
        input:
            unpack(lambda wc: {"calibration": calibration_file(wc.hook, wc.condition)}
                   if CONDITION_SPECS[wc.condition].get("calibrate") else {}),
            manifest=f"{CONTROL_DIR}/{{hook}}/manifest.json",
            qc=f"{CONTROL_DIR}/{{hook}}/qc.json",
            acts=f"{CONTROL_DIR}/{{hook}}/acts.npy",
        output:
            decoders=f"{CONTROL_DIR}/{{hook}}/{{condition}}/decoders.safetensors",
            train=f"{CONTROL_DIR}/{{hook}}/{{condition}}/train.json",
        params:
            hook="{hook}",
            condition="{condition}",
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/train_control_condition.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/train_control_condition.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        script:
            "../workflow/scripts/train_control_condition.py"

    rule known_circuit:
        input:
            weights=MODEL_REF,
            manifest=rules.merge_activations.output.manifest,
            qc=rules.merge_activations.output.qc,
            sae_weights=seed_files("sae_weights.safetensors"),
            train=seed_files("train.json"),
            control_manifest=f"{CONTROL_DIR}/{{hook}}/manifest.json",
            control_qc=f"{CONTROL_DIR}/{{hook}}/qc.json",
            control_decoders=rules.train_control_condition.output.decoders,
            control_train=rules.train_control_condition.output.train,
        output:
            json=lane_file("known_circuit"),
        params:
            hook="{hook}",
            condition="{condition}",
        log:
            f"results/logs/{MODEL}/{{hook}}/{{condition}}/known_circuit.log",
        benchmark:
            f"results/benchmarks/{MODEL}/{{hook}}/{{condition}}/known_circuit.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow/scripts/known_circuit.py"


if TRANSCODER_LANE:

    # Transcoders (input hook -> output hook) and SAEs on the same input hook, same seeds and training config,
    # each against its own chance level; the configuration is fixed in config before the run.
    rule transcoder_lane:
        input:
            weights=MODEL_REF,
            manifest=f"results/activations/{MODEL}/{HOOKS[0]}/manifest.json",
            qc=f"results/activations/{MODEL}/{HOOKS[0]}/qc.json",
        output:
            json=f"results/lanes/{MODEL}/transcoder.json",
        params:
            transcoder=LANE_CFG.get("transcoder"),
            training=config["sae"]["training"],
        log:
            f"results/logs/{MODEL}/transcoder_lane.log",
        benchmark:
            f"results/benchmarks/{MODEL}/transcoder_lane.tsv"
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=TRAIN_GPUS,
        script:
            "../workflow/scripts/transcoder_lane.py"
