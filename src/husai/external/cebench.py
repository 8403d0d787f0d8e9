"""CE-Bench (Gulko, Peng & Kumar, arXiv 2509.00691, BlackboxNLP 2025): contrastive, independence and
interpretability scores of an SAE from pairs of contrastive stories, with no LLM judge.

Dataset format (CE-Bench's public set `GulkoA/contrastive-stories-v4`, split `train`, ~5000 pairs over ~1000
subjects); what husai requires of each row:
    story1: str          one story about the subject, written from one prefix
    story2: str          a story about the same subject written from a contrasting prefix
    subject_title: str   the subject; groups pairs for the independence baseline
Other columns are ignored. The revision is pinned (`dataset_revision`: a hub commit, or `sha256:<hex>` of a
local JSON/JSONL file); an unpinned source is refused.

The format and the definitions below were read from CE-Bench's public repository (Yusen-Peng/CE-Bench: README,
ce_bench/CE_Bench.py, ce_bench/CE_Bench_v2.py); no code was copied.

What follows CE-Bench (its README and released code):
  - per pair and SAE latent: V1, V2 = mean latent activation over all tokens of story1 / story2 (tokenised by
    the model's tokenizer as `tokenizer(text)["input_ids"]`, SAE encode at the SAE's hook);
  - contrastive distance C = |V1 - V2|;
  - independence distance D = |I1 - I2|, I1 = token-weighted mean over both stories, I2 = the mean of the
    OTHER subjects' mean I1 (leave-own-subject-out);
  - interpretability distance T = C + D;
  - each per-pair distance vector is z-scored over latents ((x - mean) / std, torch's unbiased std, 1 where
    the std is 0) and the pair's score is its maximum; a score is the mean over pairs (CE-Bench's "max" entry).
husai's interpretation (documented choices, not CE-Bench's):
  - I2: one released CE_Bench.py leaves I2 at zero (`I2 += I2`), i.e. D = |I1|; CE_Bench_v2.py computes the
    leave-own-subject-out mean, which husai implements; the README's older "marked vs unmarked tokens"
    variant is not used (the released code averages all tokens);
  - CE-Bench's paper (as its README's reviewer notes summarise) maps the scores to a final interpretability
    score with a regression fitted to SAEBench results; husai reports the raw scores (no fitted model);
  - batched forward passes with right padding (exact: attention is causal, padded positions are never read);
    an optional `tokenize` callable (default: the model's tokenizer) lets tokenizer-less models be tested;
  - stories longer than the model's context are an error unless `max_tokens` truncates them (counted);
  - all seeds of a condition are scored in one pass (seed-batched SAE) and each seed gets its own summary,
    with its measured L0 over the story tokens (the matched-baseline key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from husai.checkpoint import CFG, load_seed
from husai.external.baselines import ReferenceSeed, is_husai_checkpoint, load_reference_sae
from husai.io import read_json
from husai.saes import BatchedSAE

DATASET = "GulkoA/contrastive-stories-v4"
FIELDS = ("story1", "story2", "subject_title")
FORMULA_VERSION = 1
METRICS = ("contrastive_score", "independence_score", "interpretability_score")


def load_rows(source: str | Path, dataset_revision: str) -> list[dict]:
    """CE-Bench rows from a local .json/.jsonl file (pinned by `sha256:<hex>` of its bytes) or the hub (pinned by
    a commit; offline it must already be in the datasets cache)."""
    if not dataset_revision or dataset_revision in ("main", "master"):
        raise ValueError(f"CE-Bench dataset {source}: pin dataset_revision (a commit or sha256:<hex>), "
                         f"got {dataset_revision!r}")
    path = Path(source)
    if path.suffix in (".json", ".jsonl"):
        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        if dataset_revision != digest:
            raise ValueError(f"{path}: content is {digest}, dataset_revision pins {dataset_revision}")
        text = path.read_text()
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
        return validate_rows(rows, where=str(path))
    from datasets import load_dataset

    try:
        ds = load_dataset(str(source), split="train", revision=dataset_revision)
    except Exception as e:  # offline and not cached, or a bad revision: say which
        raise RuntimeError(f"CE-Bench dataset {source}@{dataset_revision} could not be loaded ({e}); compute jobs "
                           "run offline: fetch it with the download rule first") from e
    return validate_rows(list(ds), where=f"{source}@{dataset_revision}")


def download_rows(dataset: str, dataset_revision: str, out_jsonl: str | Path) -> dict:
    """Download rule only (network): the pinned hub revision written as JSON lines; the returned manifest's
    `sha256` is the pin compute jobs pass to `load_rows(out_jsonl, ...)` offline."""
    from husai.io import write_text

    rows = load_rows(dataset, dataset_revision)
    write_text(out_jsonl, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return {"dataset": dataset, "dataset_revision": dataset_revision, "n_rows": len(rows),
            "sha256": "sha256:" + hashlib.sha256(Path(out_jsonl).read_bytes()).hexdigest()}


def validate_rows(rows, where: str = "CE-Bench rows") -> list[dict]:
    """Every row has non-empty string story1/story2/subject_title, and there are >= 2 subjects (the independence
    baseline of a subject is built from the others)."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: expected a non-empty list of rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{where}: row {i} is a {type(r).__name__}, not a mapping")
        for f in FIELDS:
            if not isinstance(r.get(f), str) or not r[f].strip():
                raise ValueError(f"{where}: row {i} field {f!r} must be a non-empty string, got {r.get(f)!r}")
    if len({r["subject_title"] for r in rows}) < 2:
        raise ValueError(f"{where}: needs >= 2 distinct subject_title values (independence uses the others)")
    return rows


def load_seeds(ckpt_dirs: list[str | Path]) -> BatchedSAE:
    """Several seed checkpoints of one condition as one seed-batched SAE (one model pass scores them all)."""
    saes = [load_seed(d) for d in ckpt_dirs]
    cfgs = {json.dumps(s.cfg.to_dict(), sort_keys=True) for s in saes}
    if len(cfgs) != 1:
        raise ValueError(f"checkpoints {list(map(str, ckpt_dirs))} are not one condition (SAE configs differ)")
    return type(saes[0]).from_seed_states(saes[0].cfg, [s.seeds[0] for s in saes], [s.seed_state(0) for s in saes])


def _stop_layer(hook_name: str) -> int | None:
    from husai.external.saebench import hook_layer

    try:
        return 0 if hook_name in ("hook_embed", "hook_pos_embed") else hook_layer(hook_name) + 1
    except ValueError:
        return None


def _max_z(x_SPF: torch.Tensor) -> torch.Tensor:
    """Per (seed, pair): max over latents of (x - mean) / std (unbiased; 1 where the std is 0), as CE-Bench."""
    std = x_SPF.std(dim=-1, keepdim=True)
    std = torch.where(std == 0, torch.ones_like(std), std)
    return ((x_SPF - x_SPF.mean(dim=-1, keepdim=True)) / std).amax(dim=-1)


@torch.no_grad()
def _pair_batches(model, sae: BatchedSAE, hook_name: str, toks: list[tuple[list[int], list[int]]], batch_size: int):
    """Yield (pair index slice, V1 [S,B,F], V2 [S,B,F], n1 [B], n2 [B], nonzero-latent count [S]) per batch."""
    device = next(model.parameters()).device
    stop = _stop_layer(hook_name)
    for start in range(0, len(toks), batch_size):
        stories = [t for pair in toks[start:start + batch_size] for t in pair]  # story1, story2, story1, ...
        lens = torch.tensor([len(t) for t in stories], device=device)
        tokens_QT = torch.zeros(len(stories), int(lens.max()), dtype=torch.long, device=device)
        for q, t in enumerate(stories):
            tokens_QT[q, :len(t)] = torch.tensor(t, device=device)
        _, cache = model.run_with_cache(tokens_QT, names_filter=[hook_name], stop_at_layer=stop)
        valid_QT = torch.arange(tokens_QT.shape[1], device=device) < lens[:, None]
        f_SNF = sae.encode(cache[hook_name][valid_QT])  # only real tokens are encoded
        story_N = torch.arange(len(stories), device=device).repeat_interleave(lens)
        sum_SQF = f_SNF.new_zeros(f_SNF.shape[0], len(stories), f_SNF.shape[2]).index_add_(1, story_N, f_SNF)
        mean_SQF = sum_SQF / lens.to(sum_SQF.dtype)[None, :, None]
        yield (slice(start, start + len(stories) // 2), mean_SQF[:, 0::2], mean_SQF[:, 1::2], lens[0::2].float(),
               lens[1::2].float(), (f_SNF != 0).sum(dim=(1, 2)).double())


def score(model, sae: BatchedSAE, rows: list[dict], *, hook_name: str, batch_size: int = 16,
          tokenize: Callable[[str], list[int]] | None = None, max_tokens: int | None = None) -> dict:
    """CE-Bench's three scores per seed of `sae` on validated rows: {metric: [S values], 'l0': [S], ...}.
    Two passes over the data (the first builds the per-subject means the independence baseline needs), so memory
    is O(seeds x subjects x latents), never O(pairs x latents)."""
    rows = validate_rows(rows)
    if tokenize is None:
        if getattr(model, "tokenizer", None) is None:
            raise ValueError("the model has no tokenizer: pass tokenize=<text -> token ids>")
        tokenize = lambda text: list(model.tokenizer(text)["input_ids"])  # noqa: E731  (CE-Bench's tokenisation)
    limit = min(x for x in (max_tokens, model.cfg.n_ctx) if x)
    toks, truncated = [], 0
    for i, r in enumerate(rows):
        pair = []
        for f in ("story1", "story2"):
            t = [int(x) for x in tokenize(r[f])]
            if not t or min(t) < 0 or max(t) >= model.cfg.d_vocab:
                raise ValueError(f"row {i} {f}: token ids must be non-empty and in [0, {model.cfg.d_vocab})")
            if len(t) > limit:
                if max_tokens is None:
                    raise ValueError(f"row {i} {f}: {len(t)} tokens > the model's n_ctx {model.cfg.n_ctx}; "
                                     "pass max_tokens to truncate")
                t, truncated = t[:limit], truncated + 1
            pair.append(t)
        toks.append(tuple(pair))
    sae.to(next(model.parameters()).device)
    subjects = sorted({r["subject_title"] for r in rows})
    subj_P = torch.tensor([subjects.index(r["subject_title"]) for r in rows])
    S, F, K = sae.n_seeds, sae.cfg.d_sae, len(subjects)
    sum_SKF = torch.zeros(S, K, F, dtype=torch.float64)
    count_K = torch.bincount(subj_P, minlength=K).double()
    for sl, V1, V2, n1, n2, _ in _pair_batches(model, sae, hook_name, toks, batch_size):
        I1 = ((V1 * n1[:, None] + V2 * n2[:, None]) / (n1 + n2)[:, None]).double().cpu()
        sum_SKF.index_add_(1, subj_P[sl], I1)
    mean_SKF = sum_SKF / count_K[None, :, None]
    total_SF = mean_SKF.sum(dim=1)
    per_pair = {m: [] for m in METRICS}
    nonzero_S, n_tokens = torch.zeros(S, dtype=torch.float64), 0.0
    for sl, V1, V2, n1, n2, nz in _pair_batches(model, sae, hook_name, toks, batch_size):
        V1, V2 = V1.double().cpu(), V2.double().cpu()
        n1, n2 = n1.double().cpu(), n2.double().cpu()
        I1 = (V1 * n1[:, None] + V2 * n2[:, None]) / (n1 + n2)[:, None]
        I2 = (total_SF[:, None] - mean_SKF[:, subj_P[sl]]) / (K - 1)
        C, D = (V1 - V2).abs(), (I1 - I2).abs()
        for m, x in zip(METRICS, (C, D, C + D), strict=True):
            per_pair[m].append(_max_z(x))
        nonzero_S += nz.cpu()
        n_tokens += float((n1 + n2).sum())
    out = {m: torch.cat(v, dim=1).mean(dim=1).tolist() for m, v in per_pair.items()}
    out.update(l0=(nonzero_S / n_tokens).tolist(), n_pairs=len(rows), n_subjects=K, n_truncated=truncated,
               n_tokens=int(n_tokens))
    return out


def run_cebench(model, ckpt_dirs: list[str | Path], rows: list[dict], *, dataset: str = DATASET,
                dataset_revision: str, hook_name: str | None = None, batch_size: int = 16,
                tokenize: Callable[[str], list[int]] | None = None, max_tokens: int | None = None) -> list[dict]:
    """CE-Bench summaries, one per checkpoint (seed), from one seed-batched pass; hook from cfg.json metadata.
    A single sae-lens-format checkpoint (a baseline) is scored through sae-lens' own forward."""
    metas = [read_json(Path(d) / CFG).get("metadata", {}) for d in ckpt_dirs]
    hook_name = hook_name or metas[0].get("hook_name")
    if not hook_name:
        raise ValueError(f"{ckpt_dirs[0]}: metadata.hook_name is missing; pass hook_name=...")
    if all(map(is_husai_checkpoint, ckpt_dirs)):
        sae = load_seeds(ckpt_dirs)
    elif len(ckpt_dirs) == 1:  # a baseline saved in sae-lens' format
        sae = ReferenceSeed(load_reference_sae(ckpt_dirs[0], hook_name=hook_name,
                                                model_name=metas[0].get("model_name") or "unrecorded"))
    else:
        raise ValueError(f"{list(map(str, ckpt_dirs))}: several checkpoints must all be husai seeds of one condition")
    res = score(model, sae, rows, hook_name=hook_name, batch_size=batch_size, tokenize=tokenize,
                max_tokens=max_tokens)
    return [{
        "eval": "cebench", "benchmark": "CE-Bench (arXiv 2509.00691), husai implementation",
        "benchmark_version": f"husai-cebench-v{FORMULA_VERSION}", "formula_version": FORMULA_VERSION,
        "checkpoint": str(d), "seed": sae.seeds[s], "architecture": sae.cfg.architecture,
        "condition": m.get("husai", {}).get("condition"), "model_name": m.get("model_name"), "hook": hook_name,
        "width": sae.cfg.d_sae, "l0": res["l0"][s],
        "dataset": {"name": dataset, "revision": dataset_revision, "n_pairs": res["n_pairs"],
                    "n_subjects": res["n_subjects"], "n_truncated": res["n_truncated"], "n_tokens": res["n_tokens"]},
        "metrics": {k: res[k][s] for k in METRICS}, "higher_is_better": dict.fromkeys(METRICS, True),
        "method": "per pair: max over latents of the z-scored |V1-V2| (contrastive), |I1-I2| (independence), "
                  "their sum (interpretability); mean over pairs; see husai.external.cebench",
    } for s, (d, m) in enumerate(zip(ckpt_dirs, metas, strict=True))]
