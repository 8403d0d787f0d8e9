"""Provenance block written into every JSON output: what made this file, from what, with what."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from husai.io import sha256_file

TRACKED_PACKAGES = (
    "husai", "torch", "numpy", "scipy", "statsmodels", "transformer-lens", "sae-lens", "snakemake",
    "safetensors", "matplotlib",
)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys), so equal configs hash equal."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@cache
def git_sha(cwd: str | None = None) -> str:
    """HEAD's SHA with a '-dirty' suffix when tracked files differ; 'unknown' outside a git checkout."""
    if os.environ.get("HUSAI_GIT_SHA"):
        return os.environ["HUSAI_GIT_SHA"]
    here = cwd or str(Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@cache
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device: str | None = None) -> str:
    import torch

    if device and device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def input_hashes(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths if Path(p).is_file()}


def provenance(
    *,
    rule: str,
    config: Mapping[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    seed: int | list[int] | None = None,
    device: str | None = None,
    formulas: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "git_sha": git_sha(),
        "config_hash": config_hash(config) if config is not None else None,
        "rule": rule,
        "packages": package_versions(),
        "inputs": input_hashes(inputs),
        "seed": seed,
        "device": device_description(device),
        "formula_versions": dict(formulas or {}),
    }
