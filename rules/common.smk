# Config validation (before any job), shared names and paths.
import re

from snakemake.utils import validate

from husai.config import check_config, condition_id, expand_sweeps, is_regularised, load_yaml, sibling_id


validate(config, "../config/schema/config.schema.yaml")
check_config(config, source="config", policy=load_yaml(config["policy"]))
# Sweeps become ordinary conditions (in place, so every rule, script and the evidence bundle sees them).
expand_sweeps(config)

MODEL = config["model"]["name"]
HOOKS = list(config["activations"]["hooks"])
SEEDS = list(config["sae"]["seeds"])
CONDITIONS = [condition_id(c) for c in config["sae"]["conditions"]]
CONDITION_SPECS = {condition_id(c): c for c in config["sae"]["conditions"]}
REGULARISED = [c for c, spec in CONDITION_SPECS.items() if is_regularised(spec)]
N_SHARDS = config["activations"]["n_shards"]

MODEL_DIR = f"results/model/{MODEL}"
IS_TOY = config["model"]["kind"] == "toy_modular_addition"
CACHE = config.get("cache_dir", "cache")
# What the activation rules depend on: the toy's trained weights, or the pretrained snapshot's manifest.
MODEL_REF = f"{MODEL_DIR}/model.safetensors" if IS_TOY else f"{CACHE}/models/{MODEL}/manifest.json"
MODEL_METRICS = f"{MODEL_DIR}/metrics.json"
TEXT_JSONL = f"{CACHE}/text/{MODEL}.jsonl"
TEXT_INPUT = [] if IS_TOY else [TEXT_JSONL]
# GPUs are requested from config (the slurm plugin maps `gpu` to --gpus; never gres and gpu together).
TRAIN_GPUS = 1 if config["sae"]["training"].get("device", "cpu").startswith("cuda") else 0
MODEL_GPUS = 1 if config["model"].get("device", "cpu").startswith("cuda") else 0
ACTS_DIR = f"results/activations/{MODEL}/{{hook}}"
SAE_DIR = f"results/saes/{MODEL}/{{hook}}"
CONS_DIR = f"results/consistency/{MODEL}/{{hook}}"
RELEASE_GATE_OK = "results/release/release_gate.ok"


wildcard_constraints:
    hook="|".join(re.escape(h) for h in HOOKS),
    condition="|".join(re.escape(c) for c in CONDITIONS),
    seed=r"\d+",
    shard=r"\d+",


def seed_files(name, hook="{hook}", condition="{condition}"):
    """One file per seed of a condition; hook/condition stay wildcards unless given."""
    return [f"results/saes/{MODEL}/{hook}/{condition}/seed{s}/{name}" for s in SEEDS]


def all_seed_files(name):
    return [f for h in HOOKS for c in CONDITIONS for f in seed_files(name, h, c)]


def all_consistency():
    return [f"results/consistency/{MODEL}/{h}/{c}/consistency.json" for h in HOOKS for c in CONDITIONS]


def calibration_file(hook, condition):
    """A calibrated condition's record; a regularised one trains with its lam = 0 sibling's coefficient."""
    spec = CONDITION_SPECS[condition]
    source = sibling_id(spec) if is_regularised(spec) else condition
    return f"results/saes/{MODEL}/{hook}/{source}/calibration.json"


def train_condition_extras(wildcards):
    """Extra inputs of train_condition: the calibration record, and a regularised condition's reference seed."""
    spec, out = CONDITION_SPECS[wildcards.condition], {}
    if spec.get("calibrate"):
        out["calibration"] = calibration_file(wildcards.hook, wildcards.condition)
    if is_regularised(spec):
        ref_seed = config["sae"]["regularizer"]["reference_seed"]
        ref = f"results/saes/{MODEL}/{wildcards.hook}/{sibling_id(spec)}/seed{ref_seed}"
        out.update(reference_weights=f"{ref}/sae_weights.safetensors", reference_train=f"{ref}/train.json")
    return out


def sibling_seed_files(name, wildcards):
    return seed_files(name, wildcards.hook, sibling_id(CONDITION_SPECS[wildcards.condition]))


def all_regularised():
    """The honest judgement of every regularised condition (release_policy puts each in its condition's entry)."""
    return [f"results/consistency/{MODEL}/{h}/{c}/regularised.json" for h in HOOKS for c in REGULARISED]


# Evaluation lanes (toy model only): one JSON per lane and condition, read by the gate of the same name.
LANE_CFG = config.get("lanes", {}) if IS_TOY else {}
CONDITION_LANES = [l for l in ("splice", "probes", "ood", "known_circuit")
                   if l in LANE_CFG and LANE_CFG[l].get("enabled", True)]
TRANSCODER_LANE = IS_TOY and LANE_CFG.get("transcoder", {}).get("enabled", False)


def lane_file(lane, hook="{hook}", condition="{condition}"):
    return f"results/lanes/{MODEL}/{hook}/{condition}/{lane}.json"


def all_lane_files():
    """Lane JSONs (release_policy groups them by their "lane" field)."""
    files = [lane_file(l, h, c) for l in CONDITION_LANES for h in HOOKS for c in CONDITIONS]
    return files + ([f"results/lanes/{MODEL}/transcoder.json"] if TRANSCODER_LANE else [])
