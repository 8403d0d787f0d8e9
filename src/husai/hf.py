"""Pretrained models and public text for the full study (config/b200.yaml).

Network access happens ONLY in the download rules (`download_model`, `download_text`, which Snakemake retries);
every compute rule calls `offline()` first, so a missing cache fails loudly instead of silently downloading.
Everything lives under the config's `cache_dir` (HF_HOME points there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from husai.io import atomic_path, write_json


def use_cache(cache_dir: str | os.PathLike) -> Path:
    cache = Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HOME"] = str(cache / "hf")
    return cache


def offline(cache_dir: str | os.PathLike) -> Path:
    """Compute rules: read only from the cache, never the network."""
    cache = use_cache(cache_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return cache


def download_model(hf_name: str, revision: str, cache_dir, out_manifest) -> dict:
    from huggingface_hub import snapshot_download

    use_cache(cache_dir)
    path = snapshot_download(repo_id=hf_name, revision=revision,
                             allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"])
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    from husai.io import sha256_file

    manifest = {"hf_name": hf_name, "revision": revision, "snapshot": str(path),
                "files": {str(p.relative_to(path)): sha256_file(p) for p in files}}
    write_json(out_manifest, manifest)
    return manifest


def download_text(dataset: str, revision: str, split: str, text_field: str, n_docs: int, cache_dir, out_jsonl) -> int:
    """First n_docs documents of a public dataset, streamed once and written as JSON lines."""
    from datasets import load_dataset

    use_cache(cache_dir)
    stream = load_dataset(dataset, split=split, revision=revision, streaming=True)
    n = 0
    with atomic_path(out_jsonl) as tmp, open(tmp, "w") as f:
        for row in stream:
            if n >= n_docs:
                break
            f.write(json.dumps({"text": row[text_field]}) + "\n")
            n += 1
        if n < n_docs:  # inside the atomic block: no partial file survives
            raise RuntimeError(f"{dataset}:{split} has only {n} documents, config asks for {n_docs}")
    return n


def load_pretrained(hf_name: str, cache_dir, dtype: str = "float32", device: str = "cpu"):
    from transformer_lens import HookedTransformer

    offline(cache_dir)
    model = HookedTransformer.from_pretrained(hf_name, dtype=dtype, device=device)
    model.eval()
    return model


def token_sequences(texts: list[str], tokenizer, context_size: int, bos_id: int | None) -> np.ndarray:
    """Concatenate tokenised documents and cut them into rows of context_size tokens (BOS first when given)."""
    body = context_size - (1 if bos_id is not None else 0)
    stream: list[int] = []
    for t in texts:
        stream.extend(tokenizer.encode(t))
    n_rows = len(stream) // body
    if n_rows == 0:
        raise ValueError(f"text too short for one row of {context_size} tokens")
    rows = np.asarray(stream[: n_rows * body], dtype=np.int64).reshape(n_rows, body)
    if bos_id is not None:
        rows = np.concatenate([np.full((n_rows, 1), bos_id, dtype=np.int64), rows], axis=1)
    return rows


@torch.no_grad()
def extract_text_shard(model, rows_NT: np.ndarray, hooks: list[str], skip_first: int, batch: int = 32) -> dict:
    """Activations at every position after the first `skip_first` (BOS is not text) for every hook:
    {hook: [N * (T - skip_first), d]} float32, rows in (sequence, position) order."""
    out = {h: [] for h in hooks}
    for start in range(0, len(rows_NT), batch):
        t = torch.from_numpy(rows_NT[start:start + batch]).to(model.cfg.device)
        _, cache = model.run_with_cache(t, names_filter=list(hooks))
        for h in hooks:
            a = cache[h][:, skip_first:, :]
            out[h].append(a.reshape(-1, a.shape[-1]).to(torch.float32).cpu().numpy())
    return {h: np.concatenate(v) for h, v in out.items()}
