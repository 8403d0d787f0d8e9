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
    """<arch>-w<width>-k<k>-lam<λ>, plus the axes a sweep can vary for some conditions: experts (-e<n>), matryoshka
    levels (-m<a_b_c>), a training-token budget (-t<tokens>). Conditions without those keys keep the short id.
    `calibrate` is not in the id: k is the target L0 either way, and one id may name only one training."""
    cid = f"{cond['architecture']}-w{cond['width']}-k{cond['k']}-lam{format_lam(cond.get('lam', 0.0))}"
    if "n_experts" in cond:
        cid += f"-e{cond['n_experts']}"
    if "matryoshka_levels" in cond:
        cid += "-m" + "_".join(str(x) for x in cond["matryoshka_levels"])
    if "tokens" in cond:
        cid += f"-t{cond['tokens']}"
    return cid


def all_conditions(config: dict) -> list[dict]:
    """The explicit conditions plus every sweep point (husai.sweeps); idempotent on an already expanded config."""
    from husai.sweeps import expand

    return [spec for spec, _ in expand(config)]


def expand_sweeps(config: dict) -> dict:
    """In place: sae/conditions becomes the explicit conditions plus every sweep point, so code that reads
    config['sae']['conditions'] (rules, scripts, the evidence bundle) sees the sweeps. Returns config."""
    config["sae"]["conditions"] = all_conditions(config)
    return config


def conditions_by_id(config: dict) -> dict[str, dict]:
    return {condition_id(c): c for c in all_conditions(config)}


def condition_keys(config: dict) -> list[str]:
    """Every trained condition as '<hook>/<condition id>': conditions are crossed with hooks."""
    return [f"{h}/{condition_id(c)}" for h in config["activations"]["hooks"] for c in all_conditions(config)]


def is_regularised(cond: dict) -> bool:
    return float(cond.get("lam", 0)) > 0


def sibling_id(cond: dict) -> str:
    """The unregularised (lam = 0) condition a regularised one is pulled toward and judged against."""
    return condition_id({**cond, "lam": 0})


def regularised_keys(config: dict) -> list[str]:
    return [f"{h}/{condition_id(c)}" for h in config["activations"]["hooks"] for c in all_conditions(config)
            if is_regularised(c)]


def check_config(config: dict[str, Any], source: str = "config", policy: dict | None = None) -> None:
    """Schema + semantic checks of the config and of every condition its sweeps generate (the config is not
    changed; `expand_sweeps` does that). Raises ConfigError naming the offending key and value."""
    _validate(config, SCHEMA_PATH, source)
    _check_conditions(config, source)
    keys = condition_keys(config)
    if config["release"]["candidate"] != "auto" and config["release"]["candidate"] not in keys:
        raise ConfigError(f"{source}: release/candidate {config['release']['candidate']!r} is neither 'auto' nor one "
                          f"of the configured '<hook>/<condition>' keys {keys}")
    if config["release"]["candidate"] in regularised_keys(config):
        raise ConfigError(f"{source}: release/candidate {config['release']['candidate']!r} is a regularised (lam > 0) "
                          "condition: its within-condition consistency is inflated by construction, so it cannot be "
                          "released on it; pre-register an unregularised condition")
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
    from husai.external.workflow import check_external_config  # imported here: that module imports this one

    check_external_config(config, source=source)
    if policy is not None:
        check_policy(policy)
        need = policy["min_seeds"]
        if len(config["sae"]["seeds"]) < need:
            raise ConfigError(f"{source}: sae/seeds has {len(config['sae']['seeds'])} seeds but the policy "
                              f"{policy['policy_id']} needs at least min_seeds={need}")


def _check_conditions(config: dict, source: str) -> None:
    """Semantic checks of every condition, explicit or generated by a sweep; errors name where it came from."""
    import jsonschema

    from husai.saes import architectures
    from husai.sweeps import SweepError, calibratable, expand

    try:
        specs = expand(config)
    except SweepError as e:
        raise ConfigError(f"{source}: {e}") from e
    if not specs:
        raise ConfigError(f"{source}: sae/conditions is empty and no sweep generates a condition")
    item_schema = load_yaml(SCHEMA_PATH)["properties"]["sae"]["properties"]["conditions"]["items"]
    known, ids = architectures(), {condition_id(c): c for c, _ in specs}
    training, seeds = config["sae"]["training"], config["sae"]["seeds"]
    for cond, origin in specs:
        cid = condition_id(cond)
        where = f"{source}: {origin}" + ("" if origin.startswith("sae/") else f" ({cid})")
        if not origin.startswith("sae/"):
            errors = list(jsonschema.Draft202012Validator(item_schema).iter_errors(cond))
            if errors:
                raise ConfigError(f"{where}: generated condition {cond} is invalid: {errors[0].message}")
        arch = cond["architecture"]
        if arch not in known:
            raise ConfigError(f"{where}/architecture: unknown architecture {arch!r}; known {known}")
        if arch.endswith("transcoder"):
            raise ConfigError(f"{where}/architecture: {arch!r} maps one hook to another; transcoders "
                              "are trained by the transcoder lane (lanes/transcoder), not as an SAE condition")
        if cond["k"] > cond["width"]:
            raise ConfigError(f"{where}/k: k={cond['k']} exceeds the SAE width d_sae={cond['width']}")
        if cond.get("calibrate") and not calibratable(arch):
            raise ConfigError(f"{where}/calibrate: {arch!r} fixes its L0 with k; only relu and jumprelu conditions "
                              "are calibrated")
        if cond.get("calibrate") and "calibration" not in config["sae"]:
            raise ConfigError(f"{where}/calibrate: calibrated conditions need the sae/calibration block "
                              "(n_grid, max_rounds, tolerance, seed)")
        if "tokens" in cond and cond["tokens"] % training["batch_size"]:
            raise ConfigError(f"{where}/tokens: tokens={cond['tokens']} is not a multiple of "
                              f"sae/training/batch_size={training['batch_size']} (steps = tokens / batch_size)")
        if arch == "routed":
            e = cond.get("n_experts", 0)
            if e < 2 or cond["width"] % e or cond["k"] > cond["width"] // max(e, 1):
                raise ConfigError(f"{where}/n_experts: a routed condition needs n_experts >= 2 dividing width="
                                  f"{cond['width']} and k <= width / n_experts; got n_experts={e}, k={cond['k']}")
        levels = cond.get("matryoshka_levels")
        if levels is not None and (levels != sorted(set(levels)) or levels[-1] != cond["width"]):
            raise ConfigError(f"{where}/matryoshka_levels: {levels} must be strictly increasing and end at "
                              f"width={cond['width']}")
        if is_regularised(cond):
            _check_regularised(cond, ids, seeds, config["sae"], where)


def _check_regularised(cond: dict, ids: dict, seeds: list, sae: dict, where: str) -> None:
    sib = sibling_id(cond)
    if sib not in ids:
        raise ConfigError(f"{where}/lam: lam={cond['lam']} trains toward the decoder of its unregularised sibling "
                          f"{sib} (same keys, lam 0), which is not a configured condition; add it")
    if {**ids[sib], "lam": 0} != {**cond, "lam": 0}:
        raise ConfigError(f"{where}: its sibling {sib} differs in more than lam ({ids[sib]} vs {cond})")
    reg = sae.get("regularizer")
    if reg is None:
        raise ConfigError(f"{where}/lam: regularised conditions need the sae/regularizer block "
                          "(reference_seed, assignment_update_interval)")
    if reg["reference_seed"] not in seeds:
        raise ConfigError(f"sae/regularizer/reference_seed: {reg['reference_seed']} is not one of sae/seeds {seeds}")
    if len(seeds) - 1 < 2:
        raise ConfigError(f"sae/seeds: judging a regularised condition needs >= 2 seeds besides reference_seed "
                          f"{reg['reference_seed']}, got {seeds}")


def check_policy(policy: dict, source: str = "policy") -> None:
    _validate(policy, POLICY_SCHEMA_PATH, source)


def load_config(path: str | Path, policy_path: str | Path | None = None) -> dict:
    config = load_yaml(path)
    policy = load_yaml(policy_path or REPO_ROOT / config.get("policy", "config/policy.yaml"))
    check_config(config, source=str(path), policy=policy)
    return expand_sweeps(config)


TOY_ONLY_KEYS = ("p", "train_fraction", "d_model", "n_heads", "d_mlp", "n_layers", "steps", "lr", "weight_decay",
                 "beta1", "beta2", "seed", "fourier_top_k")
BLOCK_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
               "mlp.hook_pre", "mlp.hook_post")


def known_hooks(n_layers: int) -> list[str]:
    """TransformerLens hooks of a block stack whose activation is [batch, pos, features]."""
    return ["hook_embed", "hook_pos_embed"] + [f"blocks.{i}.{h}" for i in range(n_layers) for h in BLOCK_HOOKS]
