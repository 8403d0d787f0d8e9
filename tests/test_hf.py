"""The pretrained-model path: downloads only in download rules, compute offline, text shards well formed,
and the full-study grid's dry run stays in the low thousands of jobs."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from husai import hf


class CharTokenizer:
    bos_token_id = 0

    def encode(self, text):
        return [1 + (ord(c) % 30) for c in text]


def test_token_sequences_prepend_bos_and_cut_rows():
    rows = hf.token_sequences(["abcdefg", "hij"], CharTokenizer(), context_size=4, bos_id=0)
    assert rows.shape == (3, 4) and (rows[:, 0] == 0).all()
    assert rows[0, 1:].tolist() == CharTokenizer().encode("abc")
    with pytest.raises(ValueError, match="too short"):
        hf.token_sequences(["a"], CharTokenizer(), context_size=8, bos_id=0)


def test_extract_text_shard_skips_bos_and_keeps_row_order():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(n_layers=2, d_model=16, d_head=8, n_heads=2, d_mlp=32,
                                                      d_vocab=32, n_ctx=8, act_fn="relu"))
    rows = np.random.default_rng(0).integers(1, 32, size=(5, 6))
    rows[:, 0] = 0
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    out = hf.extract_text_shard(model, rows, hooks, skip_first=1, batch=2)
    assert set(out) == set(hooks) and out[hooks[0]].shape == (5 * 5, 16)
    _, cache = model.run_with_cache(torch.from_numpy(rows))
    np.testing.assert_allclose(out[hooks[1]][5:10], cache[hooks[1]][1, 1:].numpy(), rtol=0, atol=1e-6)


def test_offline_sets_hub_offline_and_download_uses_cache(tmp_path, monkeypatch):
    for key in ("HF_HUB_OFFLINE", "HF_HOME"):
        monkeypatch.delenv(key, raising=False)
    hf.offline(tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_HOME"].startswith(str(tmp_path))
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "config.json").write_text("{}")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: str(snap))
    m = hf.download_model("org/model", "abc123", tmp_path, tmp_path / "manifest.json")
    assert m["revision"] == "abc123" and "config.json" in m["files"]


def test_download_text_writes_exactly_n_docs_and_refuses_short_datasets(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: iter([{"text": f"doc {i}"} for i in range(5)]))
    out = tmp_path / "t.jsonl"
    assert hf.download_text("d", "r", "train", "text", 3, tmp_path, out) == 3
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["doc 0", "doc 1", "doc 2"]
    with pytest.raises(RuntimeError, match="only 5 documents"):
        hf.download_text("d", "r", "train", "text", 9, tmp_path, tmp_path / "u.jsonl")
    assert not (tmp_path / "u.jsonl").exists()


def test_only_download_rules_may_reach_the_network(repo):
    text = (repo / "rules" / "model.smk").read_text()
    for rule in ("download_model", "download_text"):
        body = text.split(f"rule {rule}:")[1].split("rule ")[0]
        assert "retries:" in body, rule
    src = (repo / "src" / "husai" / "pipeline_text.py").read_text()
    for fn in ("prepare_model", "extract_text_shard"):
        body = src.split(f"def {fn}(")[1].split("\ndef ")[0]
        assert "hf.load_pretrained" in body  # load_pretrained calls hf.offline() first
    assert "offline(cache_dir)" in (repo / "src" / "husai" / "hf.py").read_text().split("def load_pretrained")[1]


def test_b200_dry_run_job_count(repo):
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "release_gate", "--configfile", "config/b200.yaml",
                          "--cores", "2"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    total = int(re.search(r"^total\s+(\d+)", res.stdout, re.M).group(1))
    assert 100 <= total <= 3000, total
    for rule in ("download_model", "download_text", "prepare_model", "extract_shard", "train_condition",
                 "consistency", "select_candidate", "release_policy"):
        assert re.search(rf"^{rule}\s+\d+", res.stdout, re.M), rule
    assert "train_model" not in res.stdout


def test_b200_config_rejects_toy_keys(repo):
    from husai.config import ConfigError, check_config, load_yaml

    cfg = load_yaml(repo / "config" / "b200.yaml")
    check_config(cfg, policy=load_yaml(repo / "config" / "policy_b200.yaml"))
    cfg["model"]["p"] = 59
    with pytest.raises(ConfigError, match="model/p belongs to the toy model"):
        check_config(cfg)
