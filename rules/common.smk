# Config validation (before any job), shared names and paths.
import re

from snakemake.utils import validate

from husai.config import check_config, condition_id, load_yaml


validate(config, "../config/schema/config.schema.yaml")
check_config(config, source="config", policy=load_yaml(config["policy"]))

MODEL = config["model"]["name"]
HOOK = config["activations"]["hook"]
SEEDS = list(config["sae"]["seeds"])
CONDITIONS = [condition_id(c) for c in config["sae"]["conditions"]]
N_SHARDS = config["activations"]["n_shards"]

MODEL_DIR = f"results/model/{MODEL}"
ACTS_DIR = f"results/activations/{MODEL}/{HOOK}"
SAE_DIR = f"results/saes/{MODEL}/{HOOK}"
CONS_DIR = f"results/consistency/{MODEL}/{HOOK}"
RELEASE_GATE_OK = "results/release/release_gate.ok"


wildcard_constraints:
    model=re.escape(MODEL),
    hook=re.escape(HOOK),
    condition="|".join(re.escape(c) for c in CONDITIONS),
    seed=r"\d+",
    shard=r"\d+",


def seed_files(name, condition="{{condition}}"):
    return expand(f"{SAE_DIR}/{condition}/seed{{seed}}/{name}", seed=SEEDS)
