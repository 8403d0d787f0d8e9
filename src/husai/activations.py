"""Activation shards, the merged dataset, its manifest and QC.

Shard i holds the toy inputs whose row index is i mod n_shards, in an order drawn from shard seed
base_seed + i. The merge verifies each shard's recorded sha256 before using it, writes one memory-mappable
float32 array plus the inputs and the SAE train/held-out split, and a manifest with every file's sha256.
Training reads through `load_verified_dataset`, which refuses a failed QC or a file whose checksum changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from husai.io import ChecksumError, read_json, read_npy, sha256_file, verify_sha256, write_json, write_npy


class QCFailedError(RuntimeError):
    pass


def shard_rows(n_rows: int, n_shards: int, shard: int, seed: int) -> np.ndarray:
    rows = np.arange(shard, n_rows, n_shards)
    return rows[np.random.default_rng(seed).permutation(len(rows))]


@torch.no_grad()
def extract_hooks(model, tokens_NT: np.ndarray, hooks: list[str], position: int, batch: int = 1024) -> dict:
    """Activations at `position` for every hook, from one forward pass per batch: {hook: [N, d]} float32."""
    out = {h: [] for h in hooks}
    for start in range(0, len(tokens_NT), batch):
        t = torch.from_numpy(tokens_NT[start:start + batch])
        _, cache = model.run_with_cache(t, names_filter=list(hooks))
        for h in hooks:
            out[h].append(cache[h][:, position, :].to(torch.float32).cpu().numpy())
    return {h: np.concatenate(v, axis=0) for h, v in out.items()}


def write_shard(acts_ND: np.ndarray, tokens_NT: np.ndarray, acts_path, tokens_path, info_path, info: dict) -> None:
    write_npy(acts_path, acts_ND.astype(np.float32, copy=False))
    write_npy(tokens_path, tokens_NT)
    write_json(info_path, {**info, "shape": list(acts_ND.shape), "dtype": "float32",
                           "sha256": sha256_file(acts_path), "tokens_sha256": sha256_file(tokens_path)})


def quality_control(acts_ND: np.ndarray, thresholds: dict) -> dict:
    x = np.asarray(acts_ND, dtype=np.float64)
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    finite_rows = np.isfinite(x).all(axis=1)
    xf = x[finite_rows]
    var = xf.var(axis=0) if len(xf) else np.full(x.shape[1], np.nan)
    norms = np.linalg.norm(xf, axis=1) if len(xf) else np.array([np.nan])
    dup_fraction = 1.0 - len(np.unique(xf, axis=0)) / max(1, len(xf))
    low_var_fraction = float((var < thresholds["min_dim_variance"]).mean())
    failed = []
    if n_nan > thresholds["max_nan"]:
        failed.append(f"{n_nan} NaN values > max_nan={thresholds['max_nan']}")
    if n_inf > thresholds["max_inf"]:
        failed.append(f"{n_inf} Inf values > max_inf={thresholds['max_inf']}")
    if dup_fraction > thresholds["max_duplicate_fraction"]:
        failed.append(f"duplicate-row fraction {dup_fraction:.4f} > {thresholds['max_duplicate_fraction']}")
    if low_var_fraction > thresholds["max_low_variance_dim_fraction"]:
        failed.append(f"fraction of dims with variance < {thresholds['min_dim_variance']} is {low_var_fraction:.3f}"
                      f" > {thresholds['max_low_variance_dim_fraction']}")
    return {
        "n_rows": int(x.shape[0]), "d": int(x.shape[1]), "nan_count": n_nan, "inf_count": n_inf,
        "per_dim_mean": xf.mean(axis=0).tolist() if len(xf) else [], "per_dim_variance": var.tolist(),
        "norm_percentiles": {str(q): float(np.percentile(norms, q)) for q in (1, 5, 50, 95, 99)},
        "duplicate_row_fraction": float(dup_fraction), "low_variance_dim_fraction": low_var_fraction,
        "thresholds": dict(thresholds), "thresholds_passed": not failed, "failed_reasons": failed,
    }


def merge_shards(shard_infos: list[str], shard_acts: list[str], shard_tokens: list[str], out: dict,
                 *, heldout_fraction: float, split_seed: int, qc_thresholds: dict, extra_manifest: dict,
                 ood_spec: dict | None = None) -> dict:
    """Verify, concatenate and describe the shards. `out` maps acts/tokens/split/manifest/qc to paths."""
    acts, tokens, shard_records = [], [], []
    for info_path, a_path, t_path in zip(shard_infos, shard_acts, shard_tokens, strict=True):
        info = read_json(info_path)
        verify_sha256(a_path, info["sha256"], what="activation shard")
        verify_sha256(t_path, info["tokens_sha256"], what="token shard")
        acts.append(read_npy(a_path))
        tokens.append(read_npy(t_path))
        shard_records.append({"path": str(a_path), "sha256": info["sha256"], "seed": info.get("seed"),
                              "rows": info["shape"][0]})
    acts_ND = np.concatenate(acts).astype(np.float32, copy=False)
    tokens_NT = np.concatenate(tokens)
    n = len(acts_ND)
    heldout = np.zeros(n, dtype=bool)
    heldout[np.random.default_rng(split_seed).permutation(n)[: int(round(heldout_fraction * n))]] = True
    write_npy(out["acts"], acts_ND)
    write_npy(out["tokens"], tokens_NT)
    write_npy(out["split"], heldout)
    files = ["acts", "tokens", "split"]
    if "ood" in out:
        # The out-of-distribution slice is declared in config before any run; its rows never train an SAE.
        from husai.lanes.ood import ood_split

        write_npy(out["ood"], ood_split(tokens_NT, ood_spec) if ood_spec else np.zeros(n, dtype=bool))
        files.append("ood")
    qc = quality_control(acts_ND, qc_thresholds)
    write_json(out["qc"], qc)
    manifest = {
        **extra_manifest,
        "shape": list(acts_ND.shape), "dtype": "float32",
        "files": {k: {"path": str(out[k]), "sha256": sha256_file(out[k])} for k in files},
        "ood_spec": ood_spec,
        "shards": shard_records,
        "split": {"heldout_fraction": heldout_fraction, "split_seed": split_seed, "n_train": int((~heldout).sum()),
                  "n_heldout": int(heldout.sum()), "split_file": "split.npy (True = held-out row)"},
        "qc_passed": qc["thresholds_passed"],
    }
    write_json(out["manifest"], manifest)
    return manifest


def load_verified_dataset(manifest_path: str | Path, qc_path: str | Path) -> dict:
    """Arrays of the merged dataset after checking QC and every checksum; errors name the file."""
    qc = read_json(qc_path)
    if not qc.get("thresholds_passed", False):
        raise QCFailedError(f"{qc_path}: activation QC failed ({'; '.join(qc.get('failed_reasons', []))}); "
                            "refusing to train or evaluate on this data")
    manifest = read_json(manifest_path)
    arrays = {}
    for key, rec in manifest["files"].items():
        path = Path(rec["path"])
        if not path.is_absolute() and not path.exists():
            path = Path(manifest_path).parent / path.name
        try:
            verify_sha256(path, rec["sha256"], what=f"dataset file ({key})")
        except FileNotFoundError as e:
            raise ChecksumError(f"dataset file ({key}) {path} is missing") from e
        arrays[key] = read_npy(path, mmap=(key == "acts"))
    if list(arrays["acts"].shape) != manifest["shape"]:
        raise ChecksumError(f"{manifest_path}: acts shape {arrays['acts'].shape} != manifest {manifest['shape']}")
    heldout = arrays["split"].astype(bool)
    ood = arrays["ood"].astype(bool) if "ood" in arrays else np.zeros_like(heldout)
    acts = arrays["acts"]
    # OOD rows are excluded from both SAE training and in-distribution evaluation.
    return {"train": np.asarray(acts[~heldout & ~ood]), "heldout": np.asarray(acts[heldout & ~ood]),
            "ood": np.asarray(acts[ood]), "tokens": arrays["tokens"], "heldout_mask": heldout, "ood_mask": ood,
            "manifest": manifest}


def heldout_halves(heldout_ND: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split held-out rows into a 'selection' half and a 'report' half, deterministically from `seed`, so the
    data that chooses a candidate is never the data that reports it."""
    n = len(heldout_ND)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    return np.asarray(heldout_ND[np.sort(perm[: n // 2])]), np.asarray(heldout_ND[np.sort(perm[n // 2:])])
