"""Shards, merge, manifest and QC: corrupt shards and NaN activations are refused, naming the file."""

import numpy as np
import pytest
from shard_helpers import QC, make_shards, merge

from husai import activations as A
from husai.io import ChecksumError, read_json


def test_shards_partition_rows_and_seed_changes_order():
    parts = [A.shard_rows(100, 3, i, seed=i) for i in range(3)]
    assert sorted(np.concatenate(parts)) == list(range(100))
    assert not np.array_equal(A.shard_rows(100, 3, 0, seed=1), A.shard_rows(100, 3, 0, seed=2))


def test_merge_writes_manifest_split_and_passing_qc(tmp_path):
    data = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    out = merge(tmp_path, make_shards(tmp_path, data))
    m = read_json(out["manifest"])
    assert m["shape"] == [200, 6] and m["split"]["n_heldout"] == 50 and len(m["shards"]) == 3
    ds = A.load_verified_dataset(out["manifest"], out["qc"])
    assert ds["train"].shape == (150, 6) and ds["heldout"].shape == (50, 6)
    qc = read_json(out["qc"])
    assert qc["thresholds_passed"] and qc["nan_count"] == 0 and set(qc["norm_percentiles"]) >= {"50", "99"}


def test_corrupt_shard_is_named_before_merging(tmp_path):
    data = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    paths = make_shards(tmp_path, data)
    raw = bytearray(paths["acts"][1].read_bytes())
    raw[-3] ^= 0xFF  # flip bits in the data section
    paths["acts"][1].write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="shard1.npy"):
        merge(tmp_path, paths)


def test_merged_file_changed_after_manifest_is_refused(tmp_path):
    data = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    out = merge(tmp_path, make_shards(tmp_path, data))
    with open(out["acts"], "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    with pytest.raises(ChecksumError, match="acts.npy"):
        A.load_verified_dataset(out["manifest"], out["qc"])


def test_nan_activations_fail_qc_and_training_refuses(tmp_path):
    data = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    data[5, 1] = np.nan
    out = merge(tmp_path, make_shards(tmp_path, data))
    qc = read_json(out["qc"])
    assert not qc["thresholds_passed"] and qc["nan_count"] == 1
    assert any("NaN" in r for r in qc["failed_reasons"])
    with pytest.raises(A.QCFailedError, match="qc.json"):
        A.load_verified_dataset(out["manifest"], out["qc"])


def test_duplicates_and_dead_dims_fail_qc():
    x = np.zeros((10, 4))
    x[:, 0] = np.arange(10)
    qc = A.quality_control(np.r_[x, x], QC)
    assert not qc["thresholds_passed"]
    assert qc["duplicate_row_fraction"] == pytest.approx(0.5)
    assert qc["low_variance_dim_fraction"] == pytest.approx(0.75)
