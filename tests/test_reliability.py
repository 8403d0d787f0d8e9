"""The reliability table: bad input gets a clear error that names the culprit (key, value or file) before any work
is done. One row per bad input; each row builds the damage, runs the check that guards it, and names the error
type and the culprit the message must contain. Plus: a writer SIGKILLed mid-write leaves no partial file behind.

Resume-after-SIGKILL (bit-identical on CPU) is covered by tests/saes/test_batched.py; two concurrent runs on one
results directory by tests/test_locking.py.
"""

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from shard_helpers import QC, make_shards, merge

from husai import activations as A
from husai.checkpoint import load_seed, save_seed
from husai.config import ConfigError, check_config, load_yaml
from husai.io import ChecksumError, SafetensorsFormatError, read_json, save_safetensors, sha256_file

REPO = Path(__file__).resolve().parents[1]

# --- builders: each returns a zero-argument callable that runs the guarding check on damaged input ----------


def bad_config(mutate):
    def build(tmp_path):
        cfg, policy = load_yaml(REPO / "config/config.yaml"), load_yaml(REPO / "config/policy.yaml")
        bad = copy.deepcopy(cfg)
        mutate(bad)
        return lambda: check_config(bad, source="config.yaml", policy=policy)

    return build




def truncated_shard(tmp_path):
    paths = make_shards(tmp_path)
    raw = paths["acts"][1].read_bytes()
    paths["acts"][1].write_bytes(raw[: len(raw) // 2])
    return lambda: merge(tmp_path, paths)


def flipped_shard_bytes(tmp_path):
    paths = make_shards(tmp_path)
    raw = bytearray(paths["acts"][1].read_bytes())
    raw[-5] ^= 0xFF
    paths["acts"][1].write_bytes(bytes(raw))
    return lambda: merge(tmp_path, paths)


def nan_rows(tmp_path):
    data = np.random.default_rng(0).normal(size=(90, 6)).astype(np.float32)
    data[[3, 40]] = np.nan
    out = merge(tmp_path, make_shards(tmp_path, data))
    return lambda: A.load_verified_dataset(out["manifest"], out["qc"])


def merged_file_truncated_after_manifest(tmp_path):
    out = merge(tmp_path, make_shards(tmp_path))
    raw = out["acts"].read_bytes()
    out["acts"].write_bytes(raw[:-64])
    return lambda: A.load_verified_dataset(out["manifest"], out["qc"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from husai.saes import SAEConfig
    from husai.training import TrainConfig, train_seed_batched

    sae, _ = train_seed_batched(SAEConfig("topk", 8, 16, k=2), TrainConfig(steps=2, batch_size=8),
                                torch.randn(32, 8, generator=torch.Generator().manual_seed(0)), [0])
    d = tmp_path_factory.mktemp("ckpt")
    save_seed(sae, 0, d, {"model_name": "t", "hook_name": "h"})
    return d, sae


def damaged_checkpoint(damage):
    def build(tmp_path, checkpoint):
        import shutil

        src, sae = checkpoint
        d = tmp_path / "seed0"
        shutil.copytree(src, d)
        expected = damage(d / "sae_weights.safetensors", sae)
        return lambda: load_seed(d, expected_sha256=expected)

    return build


def _truncate(w, sae):
    w.write_bytes(w.read_bytes()[:100])


def _wrong_shape(w, sae):
    state = sae.seed_state(0)
    state["W_dec"] = state["W_dec"][:, :7].contiguous()
    save_safetensors(w, state)


def _pickle(w, sae):
    import torch

    torch.save(sae.seed_state(0), w)


def _changed_after_recorded(w, sae):
    recorded = sha256_file(w)
    state = sae.seed_state(0)
    state["b_dec"] = state["b_dec"] + 1
    save_safetensors(w, state)
    return recorded


# --- the table ------------------------------------------------------------------------------------------------
# (what is bad, builder, error type, the culprit the message must name)

TABLE = [
    ("config: unknown architecture", bad_config(lambda c: c["sae"]["conditions"][0].update(architecture="gatedx")),
     ConfigError, r"sae/conditions/0/architecture: .*'gatedx'"),
    ("config: k > width", bad_config(lambda c: c["sae"]["conditions"][0].update(k=999)),
     ConfigError, r"sae/conditions/0/k: k=999 exceeds the SAE width d_sae=\d+"),
    ("config: fewer seeds than the policy's minimum", bad_config(lambda c: c["sae"].update(seeds=[0, 1])),
     ConfigError, r"sae/seeds has 2 seeds .* min_seeds=3"),
    ("config: negative lambda", bad_config(lambda c: c["sae"]["conditions"][0].update(lam=-0.5)),
     ConfigError, r"sae/conditions/0/lam: -0.5"),
    ("config: unknown hook", bad_config(lambda c: c["activations"].update(hooks=["blocks.7.hook_resid_post"])),
     ConfigError, r"activations/hooks/0 'blocks.7.hook_resid_post' is not a hook"),
    ("config: unknown key", bad_config(lambda c: c["sae"].update(bogus_key=1)),
     ConfigError, r"'bogus_key' was unexpected"),
    ("data: truncated shard", truncated_shard, ChecksumError, r"activation shard .*shard1\.npy: sha256 mismatch"),
    ("data: flipped bytes in a shard", flipped_shard_bytes, ChecksumError,
     r"activation shard .*shard1\.npy: sha256 mismatch"),
    ("data: NaN rows", nan_rows, A.QCFailedError, r"qc\.json: activation QC failed \(12 NaN values > max_nan=0"),
    ("data: merged file truncated after its manifest", merged_file_truncated_after_manifest, ChecksumError,
     r"dataset file \(acts\) .*acts\.npy: sha256 mismatch"),
    ("checkpoint: truncated safetensors", damaged_checkpoint(_truncate), SafetensorsFormatError,
     r"sae_weights\.safetensors: not a valid safetensors file"),
    ("checkpoint: wrong shape", damaged_checkpoint(_wrong_shape), SafetensorsFormatError,
     r"sae_weights\.safetensors: tensor 'W_dec' has shape \(16, 7\), expected \(16, 8\)"),
    ("checkpoint: a pickle where safetensors belongs", damaged_checkpoint(_pickle), SafetensorsFormatError,
     r"sae_weights\.safetensors: is a pickle/torch\.save file"),
    ("checkpoint: changed after its hash was recorded", damaged_checkpoint(_changed_after_recorded), ChecksumError,
     r"SAE checkpoint .*sae_weights\.safetensors: sha256 mismatch"),
]


@pytest.mark.parametrize("what,build,error,culprit", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_is_refused_naming_the_culprit(what, build, error, culprit, tmp_path, request, monkeypatch):
    import husai.training

    args = (tmp_path, request.getfixturevalue("checkpoint")) if what.startswith("checkpoint") else (tmp_path,)
    check = build(*args)

    def no_compute(*a, **k):
        raise AssertionError(f"{what}: work started before the bad input was refused")

    monkeypatch.setattr(husai.training, "train_seed_batched", no_compute)
    with pytest.raises(error, match=culprit):
        check()


def test_quality_control_names_nan_rows_without_raising():
    """QC records the reason (the merge keeps the evidence); training is what refuses (row 'data: NaN rows')."""
    x = np.random.default_rng(0).normal(size=(50, 4))
    x[7, 2] = np.nan
    qc = A.quality_control(x, QC)
    assert not qc["thresholds_passed"] and qc["nan_count"] == 1
    assert any("1 NaN values > max_nan=0" in r for r in qc["failed_reasons"])


# --- atomic writes: a writer killed mid-write leaves no partial file at the destination ------------------------

_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    import numpy as np
    from husai.io import write_npy
    slow = {slow!r}
    if slow:  # hold the write open half-way, so the kill lands mid-write deterministically
        real_save = np.save
        def half_then_hang(f, arr, allow_pickle=False):
            real_save(f, arr[: len(arr) // 2], allow_pickle=allow_pickle)
            f.flush()
            print("half-written", flush=True)
            time.sleep(120)
        np.save = half_then_hang
    print("writing", flush=True)
    write_npy({dest!r}, np.full(({rows}, 1024), 7.0, dtype=np.float32))
""")


def _spawn_writer(dest: Path, slow: bool, rows: int):
    code = _WRITER.format(src=str(REPO / "src"), dest=str(dest), slow=slow, rows=rows)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _temp_files(folder: Path, name: str):
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")]


def test_sigkill_mid_write_leaves_old_file_intact(tmp_path):
    dest = tmp_path / "acts.npy"
    np.save(dest, np.arange(10, dtype=np.float32))
    before = dest.read_bytes()
    proc = _spawn_writer(dest, slow=True, rows=4096)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert proc.stdout.readline().strip() == "half-written"
        partial = _temp_files(tmp_path, dest.name)
        assert len(partial) == 1 and partial[0].stat().st_size > 1_000_000  # the kill lands mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert dest.read_bytes() == before  # the destination never saw the partial write


def test_sigkill_at_any_moment_never_exposes_a_partial_file(tmp_path):
    """Without the hook: kill a real write_npy of ~64 MB at increasing delays. Whatever the timing, the destination
    is either absent or a complete, readable array; only a hidden .tmp file may remain."""
    for delay in (0.05, 0.2, 0.6):
        dest = tmp_path / f"acts_{delay}.npy"
        proc = _spawn_writer(dest, slow=False, rows=16384)
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if dest.exists():
            arr = np.load(dest)
            assert arr.shape == (16384, 1024) and float(arr[-1, -1]) == 7.0
        for p in _temp_files(tmp_path, dest.name):
            p.unlink()


def test_write_json_is_atomic_and_readable(tmp_path):
    from husai.io import write_json

    p = tmp_path / "x.json"
    write_json(p, {"a": float("nan"), "b": [1, 2]})
    assert read_json(p) == {"a": None, "b": [1, 2]} and not _temp_files(tmp_path, "x.json")
