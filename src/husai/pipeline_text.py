"""Rule functions for pretrained models on public text (the full study). The download rules are the only ones
that touch the network; the others run with HF_HUB_OFFLINE=1 (husai.hf.offline)."""

from __future__ import annotations

import json

import numpy as np
import torch

from husai import activations as A
from husai import hf
from husai.io import read_json, sha256_file, write_json
from husai.provenance import provenance


def download_model(input, output, params, config, rule):
    m = config["model"]
    manifest = hf.download_model(m["hf_name"], m["revision"], config["cache_dir"], output.manifest)
    print(f"cached {m['hf_name']}@{m['revision']}: {len(manifest['files'])} files")


def download_text(input, output, params, config, rule):
    t = config["text"]
    n = hf.download_text(t["dataset"], t["revision"], t["split"], t["text_field"], t["n_docs"], config["cache_dir"],
                         output.jsonl)
    print(f"cached {n} documents of {t['dataset']}@{t['revision']}")


def _texts(path) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def _rows(model, config, texts) -> np.ndarray:
    bos = model.tokenizer.bos_token_id if config["text"].get("prepend_bos", True) else None
    return hf.token_sequences(texts, model.tokenizer, config["text"]["context_size"], bos)


def prepare_model(input, output, params, config, rule):
    """The pretrained model's held-out next-token loss on the cached text (its 'model learned' evidence)."""
    m, t = config["model"], config["text"]
    model = hf.load_pretrained(m["hf_name"], config["cache_dir"], m.get("dtype", "float32"), m.get("device", "cpu"))
    texts = _texts(input.jsonl)
    n_eval = max(1, int(len(texts) * t["heldout_docs_fraction"]))
    rows = _rows(model, config, texts[-n_eval:])[: t["eval_rows"]]
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            losses.append(float(model(torch.from_numpy(rows[start:start + 16]).to(model.cfg.device),
                                      return_type="loss")))
    write_json(output.model_config, {"name": m["name"], "kind": m["kind"], "hf_name": m["hf_name"],
                                     "revision": m["revision"], "model_manifest_sha256": sha256_file(input.manifest),
                                     "provenance": provenance(rule=rule, config=config, inputs=[input.manifest])})
    write_json(output.metrics, {"heldout_loss": float(np.mean(losses)), "n_eval_rows": int(len(rows)),
                                "heldout_docs": n_eval,
                                "provenance": provenance(rule=rule, config=config, inputs=[input.manifest,
                                                                                           input.jsonl])})


def extract_text_shard(input, output, params, config, rule):
    """Shard i: the training documents' token rows i, i+n, ... in an order drawn from seed base_seed + i."""
    m, t, act = config["model"], config["text"], config["activations"]
    model = hf.load_pretrained(m["hf_name"], config["cache_dir"], m.get("dtype", "float32"), m.get("device", "cpu"))
    texts = _texts(input.jsonl)
    texts = texts[: len(texts) - max(1, int(len(texts) * t["heldout_docs_fraction"]))]  # held-out docs stay out
    rows = _rows(model, config, texts)
    shard, n_shards = int(params.shard), act["n_shards"]
    seed = act["base_seed"] + shard
    picked = A.shard_rows(len(rows), n_shards, shard, seed)[: t["rows_per_shard"]]
    hooks = list(params.hooks)
    skip = 1 if t.get("prepend_bos", True) else 0
    acts = hf.extract_text_shard(model, rows[picked], hooks, skip_first=skip)
    positions = rows[picked][:, skip:].reshape(-1, 1)
    for i, hook in enumerate(hooks):
        A.write_shard(acts[hook], positions, output.acts[i], output.tokens[i], output.info[i], {
            "shard": shard, "n_shards": n_shards, "seed": seed, "hook": hook, "positions": "all but BOS",
            "model_manifest_sha256": sha256_file(input.weights),
            "provenance": provenance(rule=rule, config=config, inputs=[input.weights, input.jsonl], seed=seed),
        })


def model_summary(path) -> dict:
    return read_json(path)
