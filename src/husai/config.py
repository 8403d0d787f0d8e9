"""Study configuration: JSON-Schema validation plus the semantic checks a schema cannot express.

Both run before any job (rules/common.smk calls `check_config`), and every error names the key and value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema" / "config.schema.yaml"
POLICY_SCHEMA_PATH = REPO_ROOT / "config" / "schema" / "policy.schema.yaml"


class ConfigError(ValueError):
    pass


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def _validate(data: dict, schema_path: Path, what: str) -> None:
    import jsonschema

    schema = load_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
            lines.append(f"  {where}: {e.message}")
        raise ConfigError(f"{what} does not match {schema_path.name}:\n" + "\n".join(lines))


def format_lam(lam: float) -> str:
    return f"{float(lam):g}"


def condition_id(cond: dict) -> str:
    """<arch>-w<width>-k<k>-lam<λ>, plus the axes a sweep can vary for some architectures (experts, levels)."""
    cid = f"{cond['architecture']}-w{cond['width']}-k{cond['k']}-lam{format_lam(cond.get('lam', 0.0))}"
    if "n_experts" in cond:
        cid += f"-e{cond['n_experts']}"
    if "matryoshka_levels" in cond:
        cid += "-m" + "_".join(str(x) for x in cond["matryoshka_levels"])
    return cid


def conditions_by_id(config: dict) -> dict[str, dict]:
    return {condition_id(c): c for c in config["sae"]["conditions"]}


def condition_keys(config: dict) -> list[str]:
    """Every trained condition as '<hook>/<condition id>': conditions are crossed with hooks."""
    return [f"{h}/{condition_id(c)}" for h in config["activations"]["hooks"] for c in config["sae"]["conditions"]]


def check_config(config: dict[str, Any], source: str = "config", policy: dict | None = None) -> None:
    """Schema + semantic checks. Raises ConfigError naming the offending key and value."""
    _validate(config, SCHEMA_PATH, source)
    from husai.saes import architectures

    known = architectures()
    seen = set()
    for i, cond in enumerate(config["sae"]["conditions"]):
        where = f"{source}: sae/conditions/{i}"
        if cond["architecture"] not in known:
            raise ConfigError(f"{where}/architecture: unknown architecture {cond['architecture']!r}; known {known}")
        if cond["architecture"].endswith("transcoder"):
            raise ConfigError(f"{where}/architecture: {cond['architecture']!r} maps one hook to another; transcoders "
                              "are trained by the transcoder lane (lanes/transcoder), not as an SAE condition")
        if cond["k"] > cond["width"]:
            raise ConfigError(f"{where}/k: k={cond['k']} exceeds the SAE width d_sae={cond['width']}")
        if cond.get("lam", 0) > 0:
            raise ConfigError(f"{where}/lam: lam={cond['lam']} asks for the assignment-consistency regulariser, "
                              "which this version of husai does not implement; use lam: 0")
        cid = condition_id(cond)
        if cid in seen:
            raise ConfigError(f"{where}: duplicate condition {cid}")
        seen.add(cid)
    keys = condition_keys(config)
    if config["release"]["candidate"] != "auto" and config["release"]["candidate"] not in keys:
        raise ConfigError(f"{source}: release/candidate {config['release']['candidate']!r} is neither 'auto' nor one "
                          f"of the configured '<hook>/<condition>' keys {keys}")
    if config["model"]["kind"] == "hf_transformer_lens":
        for key in ("hf_name", "revision"):
            if key not in config["model"]:
                raise ConfigError(f"{source}: model/{key} is required for kind hf_transformer_lens")
        for key in ("text", "cache_dir"):
            if key not in config:
                raise ConfigError(f"{source}: {key} is required for kind hf_transformer_lens")
        toy_only = sorted(set(config["model"]) & set(TOY_ONLY_KEYS))
        if toy_only:
            raise ConfigError(f"{source}: model/{toy_only[0]} belongs to the toy model, not hf_transformer_lens")
    if config["model"]["kind"] == "toy_modular_addition":
        p = config["model"].get("p", 59)
        if config["activations"]["position"] > 2:
            raise ConfigError(f"{source}: activations/position={config['activations']['position']} is outside "
                              "the toy model's 3-token context")
        hooks = known_hooks(config["model"].get("n_layers", 1))
        for i, hook in enumerate(config["activations"]["hooks"]):
            if hook not in hooks:
                raise ConfigError(f"{source}: activations/hooks/{i} {hook!r} is not a hook of the toy model; "
                                  f"known: {hooks}")
        if config["activations"]["n_shards"] > p * p:
            raise ConfigError(f"{source}: activations/n_shards exceeds the {p * p} input pairs")
    if policy is not None:
        check_policy(policy)
        need = policy["min_seeds"]
        if len(config["sae"]["seeds"]) < need:
            raise ConfigError(f"{source}: sae/seeds has {len(config['sae']['seeds'])} seeds but the policy "
                              f"{policy['policy_id']} needs at least min_seeds={need}")


def check_policy(policy: dict, source: str = "policy") -> None:
    _validate(policy, POLICY_SCHEMA_PATH, source)


def load_config(path: str | Path, policy_path: str | Path | None = None) -> dict:
    config = load_yaml(path)
    policy = load_yaml(policy_path or REPO_ROOT / config.get("policy", "config/policy.yaml"))
    check_config(config, source=str(path), policy=policy)
    return config


TOY_ONLY_KEYS = ("p", "train_fraction", "d_model", "n_heads", "d_mlp", "n_layers", "steps", "lr", "weight_decay",
                 "beta1", "beta2", "seed", "fourier_top_k")
BLOCK_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
               "mlp.hook_pre", "mlp.hook_post")


def known_hooks(n_layers: int) -> list[str]:
    """TransformerLens hooks of a block stack whose activation is [batch, pos, features]."""
    return ["hook_embed", "hook_pos_embed"] + [f"blocks.{i}.{h}" for i in range(n_layers) for h in BLOCK_HOOKS]
