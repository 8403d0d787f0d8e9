"""The `husai` command: checks a user runs by hand, outside Snakemake.

    husai verify-bundle results/evidence/<run_id> [--results DIR]   re-hash a bundle, re-check its tables
    husai check-config config/config.yaml [--policy FILE]          the checks Snakemake runs before any job

Exit status 0 when everything checks out, 1 with every problem listed otherwise (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _bundle_dir(path: Path) -> Path:
    """Accept the bundle folder, its MANIFEST.json, or results/evidence/run_id.json (which names the folder)."""
    if path.is_file() and path.name == "MANIFEST.json":
        return path.parent
    if path.is_file() and path.suffix == ".json":
        try:
            run_id = json.loads(path.read_text()).get("run_id")
        except (ValueError, AttributeError):
            run_id = None
        if run_id:
            return path.parent / run_id
    return path


def verify_bundle_cmd(args: argparse.Namespace) -> int:
    from husai.bundle import MANIFEST, default_results_dir, verify_bundle

    bundle = _bundle_dir(args.bundle)
    results = args.results or default_results_dir(bundle)
    problems = verify_bundle(bundle, results)
    if problems:
        print(f"FAILED: evidence bundle {bundle} (checked against {results}): {len(problems)} problem(s)",
              file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    from husai.io import sha256_file

    manifest = json.loads((bundle / MANIFEST).read_text())
    cells = sum(len(r) * len(t["files"]) for t in manifest["tables"].values() for r in t["rows"])
    print(f"OK: evidence bundle {bundle} (run {manifest['run_id']}): {len(manifest['files'])} files match their "
          f"sha256, {len(manifest['sources'])} source files unchanged under {results}, {cells} table cells equal "
          f"their source values; MANIFEST.json sha256 {sha256_file(bundle / MANIFEST)} (cite this to pin the bundle)")
    return 0


def check_config_cmd(args: argparse.Namespace) -> int:
    from husai.config import ConfigError, condition_keys, load_config

    try:
        config = load_config(args.config, args.policy)
    except (ConfigError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 1
    try:
        n_conditions = len(condition_keys(config))
    except KeyError:
        n_conditions = len(config["sae"]["conditions"])
    print(f"OK: {args.config} is valid ({n_conditions} conditions, {len(config['sae']['seeds'])} seeds, "
          f"policy {config['policy']})")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="husai", description="husai: seed-replicated SAE consistency studies")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify-bundle", help="re-hash an evidence bundle and re-check every table number")
    v.add_argument("bundle", type=Path, help="results/evidence/<run_id> (or its MANIFEST.json)")
    v.add_argument("--results", type=Path, default=None,
                   help="results directory the bundle was built from (default: the results/ folder holding the "
                        "bundle, else ./results; <bundle>/sources checks against the copies inside the bundle)")
    v.set_defaults(func=verify_bundle_cmd)
    c = sub.add_parser("check-config", help="validate a study config (schema + semantic checks + policy)")
    c.add_argument("config", type=Path)
    c.add_argument("--policy", type=Path, default=None, help="policy file (default: the config's `policy`)")
    c.set_defaults(func=check_config_cmd)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
