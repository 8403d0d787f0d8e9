"""Shared builders for activation-shard tests: write shards with husai.activations, then merge them."""

import numpy as np

from husai import activations as A

QC = {"max_nan": 0, "max_inf": 0, "max_duplicate_fraction": 0.01, "min_dim_variance": 1e-8,
      "max_low_variance_dim_fraction": 0.05}


def make_shards(tmp_path, data=None, n_shards=3):
    """n_shards shards of `data` (default: 90 x 6 Gaussian rows), shard i with seed 100 + i."""
    data = np.random.default_rng(0).normal(size=(90, 6)).astype(np.float32) if data is None else data
    paths = {"infos": [], "acts": [], "tokens": []}
    for i in range(n_shards):
        rows = A.shard_rows(len(data), n_shards, i, seed=100 + i)
        d = tmp_path / "shards"
        a, t, j = d / f"shard{i}.npy", d / f"shard{i}.tokens.npy", d / f"shard{i}.json"
        A.write_shard(data[rows], np.stack([rows] * 3, 1), a, t, j, {"shard": i, "seed": 100 + i})
        for k, p in zip(("infos", "acts", "tokens"), (j, a, t), strict=True):
            paths[k].append(p)
    return paths


def merge(tmp_path, paths):
    out = {k: tmp_path / f"{k}.{'json' if k in ('manifest', 'qc') else 'npy'}"
           for k in ("acts", "tokens", "split", "manifest", "qc")}
    A.merge_shards(paths["infos"], paths["acts"], paths["tokens"], out, heldout_fraction=0.25, split_seed=1,
                   qc_thresholds=QC, extra_manifest={"hook": "h"})
    return out
