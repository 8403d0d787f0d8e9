"""SAEBench (sae-bench 0.6.0) adapter: a husai checkpoint becomes a SAEBench custom SAE, and two evals run on it.

Why an adapter, not sae-lens' loader: "evaluation equals training". SAEBench calls `sae.encode`/`sae.decode`; here
both ARE the husai forward of the checkpoint (`encode_with_pre`/`decode` of one seed), so every architecture,
including forms sae-lens cannot load exactly (BatchTopK's, routed), is scored on the function that was trained.
`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]` (rows = features), `b_enc`, `b_dec` hold the same values for
SAEBench's weight-based metrics. sae-bench pins numpy < 2 and a CUDA torch, so it is installed `--no-deps` over
husai's stack (requirements/saebench.txt) and imported lazily: this module imports without it.

- `run_core_eval`: SAEBench's `core` eval (KL/CE-loss with the SAE spliced in, explained variance, L0, shrinkage,
  feature density) via `sae_bench.evals.core.main.run_evals` on any TransformerLens model and a local token
  dataset, offline (SAEBench's `multiple_evals` is bypassed: it loads the model from the hub).
- `run_sparse_probing`: SAEBench's `sparse_probing_sae_probes`. sae-probes ships its 113 datasets but embeds them
  with `HookedTransformer.from_pretrained(model_name)`: offline that model must be in the HF cache, else
  `SAEBenchUnavailable` is raised before any work; a local model with a tokenizer can be passed instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import warnings
from pathlib import Path

import torch

from husai.checkpoint import CFG, load_seed
from husai.io import read_json
from husai.saes import TRANSCODERS, BatchedSAE

SAEBENCH_PIN = "0.6.0"
SAEBENCH_INSTALL = "pip install --no-deps -r requirements/saebench.txt"
SUMMARY_VERSION = 1
# SAEBench core metric -> higher is better (None: no direction, e.g. L0 or the l2 ratio whose target is 1).
CORE_DIRECTIONS = {"kl_div_score": True, "kl_div_with_sae": False, "ce_loss_score": True, "ce_loss_with_sae": False,
                   "explained_variance": True, "explained_variance_legacy": True, "mse": False, "cossim": True,
                   "frac_alive": True, "average_max_decoder_cosine_sim": False}  # others: no direction


class SAEBenchUnavailable(RuntimeError):
    """sae-bench (or an eval's data/model) cannot be used here; the message says what is missing and what to do."""


def saebench_version() -> str | None:
    try:
        return importlib.metadata.version("sae-bench")
    except importlib.metadata.PackageNotFoundError:
        return None


def require_saebench() -> str:
    """Import check with an actionable message; returns the installed version (must equal the pin)."""
    v = saebench_version()
    if v is None:
        raise SAEBenchUnavailable(f"sae-bench is not installed; install it over husai's stack: `{SAEBENCH_INSTALL}`")
    if v != SAEBENCH_PIN:
        raise SAEBenchUnavailable(f"sae-bench {v} is installed, husai's adapter is written for {SAEBENCH_PIN}")
    return v


def hook_layer(hook_name: str) -> int:
    """The block index SAEBench stops the model after (`stop_at_layer = hook_layer + 1`); embeddings are 0."""
    m = re.match(r"blocks\.(\d+)\.", hook_name)
    if m or hook_name in ("hook_embed", "hook_pos_embed"):
        return int(m.group(1)) if m else 0
    raise ValueError(f"cannot tell the layer of hook {hook_name!r}; SAEBench needs hook_layer")


@functools.cache
def adapter_class() -> type:
    """The adapter class, defined on first use so that importing this module does not need sae-bench."""
    require_saebench()
    from sae_bench.custom_saes.base_sae import BaseSAE

    class HusaiSAEBenchSAE(BaseSAE):
        """One husai seed as a SAEBench custom SAE. x may be [..., d_in]; the leading axes are flattened."""

        def __init__(self, husai_sae: BatchedSAE, *, model_name: str, hook_name: str, context_size: int | None,
                     prepend_bos: bool, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
            c = husai_sae.cfg
            super().__init__(c.d_in, c.d_sae, model_name, hook_layer(hook_name), torch.device(device), dtype,
                             hook_name)
            self.husai = husai_sae
            with torch.no_grad():
                self.W_enc.copy_(husai_sae.W_enc_SDF[0])
                self.W_dec.copy_(husai_sae.W_dec_SFD[0])
                self.b_enc.copy_(husai_sae.b_enc_SF[0])
                self.b_dec.copy_(husai_sae.b_dec_SD[0])
            for k, v in {"architecture": c.architecture, "activation_fn_str": c.architecture, "device": str(device),
                         "apply_b_dec_to_input": husai_sae.apply_b_dec_to_input, "context_size": context_size,
                         "prepend_bos": prepend_bos, "normalize_activations": "none"}.items():
                setattr(self.cfg, k, v)
            self.to(device=torch.device(device), dtype=dtype)

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            lead = x.shape[:-1]
            f_SNF, _ = self.husai.encode_with_pre(x.reshape(-1, x.shape[-1]))
            return f_SNF[0].reshape(*lead, -1).to(x.dtype)

        def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
            lead = feature_acts.shape[:-1]
            x_hat_SND = self.husai.decode(feature_acts.reshape(1, -1, feature_acts.shape[-1]))
            return x_hat_SND[0].reshape(*lead, -1).to(feature_acts.dtype)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decode(self.encode(x))

    return HusaiSAEBenchSAE


def make_custom_sae(ckpt_dir: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32, **overrides):
    """Load a husai checkpoint as a SAEBench custom SAE. Model/hook facts come from cfg.json's metadata (written
    by husai's training rule); `overrides` (model_name, hook_name, context_size, prepend_bos) replace them."""
    meta = read_json(Path(ckpt_dir) / CFG).get("metadata", {})
    sae = load_seed(ckpt_dir)
    if sae.cfg.architecture in TRANSCODERS:
        raise ValueError(f"{ckpt_dir}: {sae.cfg.architecture} is a transcoder; SAEBench evaluates SAEs that "
                         "reconstruct their own input")
    facts = {k: overrides.get(k, meta.get(k)) for k in ("model_name", "hook_name", "context_size", "prepend_bos")}
    for k in ("model_name", "hook_name"):
        if not facts[k]:
            raise ValueError(f"{Path(ckpt_dir) / CFG}: metadata.{k} is missing; pass {k}=...")
    facts["prepend_bos"] = bool(facts["prepend_bos"])
    return adapter_class()(sae, device=device, dtype=dtype, **facts)


def load_for_saebench(ckpt_dir: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32, **overrides):
    """A husai checkpoint through the adapter; a baseline in plain sae-lens format through sae-lens (SAEBench's
    native path). Either way formatted by SAEBench's `load_and_format_sae`, as its own runners do."""
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    from husai.external.baselines import is_husai_checkpoint, load_reference_sae

    if is_husai_checkpoint(ckpt_dir):
        sae = make_custom_sae(ckpt_dir, device=device, dtype=dtype, **overrides)
    else:
        sae = load_reference_sae(ckpt_dir, device=device, **overrides).to(dtype=dtype)
    return load_and_format_sae("husai", sae, device)[1]


def _token_dataset(dataset, context_size: int, d_vocab: int):
    """A `datasets.Dataset` with a `tokens` column of rows >= context_size, every id in [0, d_vocab)."""
    import datasets
    import numpy as np

    if isinstance(dataset, datasets.Dataset) and "tokens" not in dataset.column_names:
        return dataset  # raw text: sae-lens tokenizes it with the model's tokenizer
    if isinstance(dataset, str | Path):
        dataset = np.load(dataset, allow_pickle=False)
    rows = dataset["tokens"] if isinstance(dataset, datasets.Dataset) else dataset
    rows_NT = torch.as_tensor(np.asarray(rows))
    if rows_NT.ndim != 2 or rows_NT.dtype.is_floating_point or rows_NT.shape[0] == 0:
        raise ValueError(f"token dataset must be a non-empty 2-D integer array [rows, positions], got "
                         f"{tuple(rows_NT.shape)} {rows_NT.dtype}")
    if rows_NT.shape[1] < context_size:
        raise ValueError(f"token rows have {rows_NT.shape[1]} positions, context_size is {context_size}")
    lo, hi = int(rows_NT.min()), int(rows_NT.max())
    if lo < 0 or hi >= d_vocab:
        raise ValueError(f"token ids span [{lo}, {hi}], the model's vocabulary is [0, {d_vocab})")
    return datasets.Dataset.from_dict({"tokens": rows_NT[:, :context_size].tolist()})


def summary(eval_name: str, adapter, ckpt_dir, groups: dict, config: dict, dataset: dict, skipped: dict) -> dict:
    """The husai-side record of one SAEBench eval of one checkpoint (one seed); the gates read `metrics`."""
    import sae_lens

    info = read_json(Path(ckpt_dir) / CFG).get("metadata", {}).get("husai", {})
    metrics = {k: v for group in groups.values() for k, v in group.items()}  # SAEBench's names are unique
    return {
        "eval": eval_name, "benchmark": "sae_bench", "benchmark_version": saebench_version(),
        "sae_lens_version": sae_lens.__version__, "summary_version": SUMMARY_VERSION,
        "checkpoint": str(ckpt_dir), "seed": info.get("seed"),
        "architecture": info.get("architecture") or adapter.cfg.architecture_str,
        "condition": info.get("condition"), "model_name": adapter.cfg.model_name, "hook": adapter.cfg.hook_name,
        "width": adapter.cfg.d_sae, "l0": metrics.get("l0"), "dataset": dataset,
        "metrics": metrics, "metric_groups": groups,
        "higher_is_better": {k: CORE_DIRECTIONS.get(k) for k in metrics}, "skipped_metrics": skipped,
        "eval_config": config,
        "adapter": "husai.external.saebench: encode/decode = the husai forward of the checkpoint (parity-tested)",
    }


def run_core_eval(ckpt_dir: str | Path, model, dataset, *, dataset_name: str = "local", context_size: int | None = None,
                  batch_size_prompts: int = 8, n_eval_reconstruction_batches: int = 4,
                  n_eval_sparsity_variance_batches: int = 4, compute_kl: bool | None = None,
                  compute_ce_loss: bool | None = None, featurewise: bool = True, ignore_tokens=None,
                  exclude_special_tokens_from_reconstruction: bool = False, shuffle_seed: int = 42,
                  device: str = "cpu", dtype: str = "float32", **overrides) -> dict:
    """SAEBench's `core` eval of one checkpoint on `model` (a TransformerLens model) and `dataset`: a token array
    [rows, positions] (tensor, numpy, list, or a .npy path) or a `datasets.Dataset` (`tokens` or `text` column).

    ignore_tokens=None ignores the tokenizer's BOS/EOS/PAD ids, as SAEBench's own core runs do.
    compute_kl/compute_ce_loss=None run SAEBench's splice pass (KL and CE-loss scores) only when every token id is
    below the model's d_vocab_out (that pass always scores next-token loss on the input ids, and the toy's `=` is
    not an output class) and record why it was skipped otherwise; True makes that an error."""
    require_saebench()
    import sae_bench.sae_bench_utils.general_utils as general_utils
    from sae_bench.evals.core import main as core
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_lens.training.activations_store import ActivationsStore

    adapter = load_for_saebench(ckpt_dir, device=device, dtype=general_utils.str_to_dtype(dtype),
                                **({"context_size": context_size} if context_size else {}), **overrides)
    context_size = adapter.cfg.context_size
    if not context_size:
        raise ValueError(f"{ckpt_dir}: no context_size in the checkpoint metadata; pass context_size=...")
    ds = _token_dataset(dataset, context_size, model.cfg.d_vocab)
    skipped = {}
    if "tokens" in ds.column_names:
        hi = max(max(r) for r in ds["tokens"])
        if hi >= model.cfg.d_vocab_out:  # SAEBench's splice pass always scores next-token loss on the input ids
            why = f"token id {hi} >= d_vocab_out {model.cfg.d_vocab_out}: next-token loss cannot score it"
            if compute_ce_loss or compute_kl:
                raise ValueError(f"compute_ce_loss/compute_kl requested but {why}")
            compute_ce_loss = compute_kl = False
            skipped = dict.fromkeys(("ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae",
                                     "ce_loss_without_sae", "kl_div_score", "kl_div_with_ablation",
                                     "kl_div_with_sae"), why)
    compute_ce_loss = True if compute_ce_loss is None else compute_ce_loss
    compute_kl = True if compute_kl is None else compute_kl
    if ignore_tokens is None:
        tok = getattr(model, "tokenizer", None)
        ignore_tokens = () if tok is None else (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    ignore_tokens = {int(t) for t in ignore_tokens if t is not None}
    cfg = CoreEvalConfig(
        model_name=adapter.cfg.model_name, batch_size_prompts=batch_size_prompts,
        n_eval_reconstruction_batches=n_eval_reconstruction_batches,
        n_eval_sparsity_variance_batches=n_eval_sparsity_variance_batches,
        exclude_special_tokens_from_reconstruction=exclude_special_tokens_from_reconstruction,
        dataset=dataset_name, context_size=context_size, compute_kl=compute_kl, compute_ce_loss=compute_ce_loss,
        compute_l2_norms=True, compute_sparsity_metrics=True, compute_variance_metrics=True,
        compute_featurewise_density_statistics=featurewise, compute_featurewise_weight_based_metrics=featurewise,
        llm_dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fewer samples.*")
        warnings.filterwarnings("ignore", message="To copy construct from a tensor.*")
        store = ActivationsStore.from_sae(model, adapter, dataset=ds, context_size=context_size, streaming=False,
                                          store_batch_size_prompts=batch_size_prompts, device=device,
                                          total_tokens=len(ds))
        store.shuffle_input_dataset(seed=shuffle_seed)
        groups, feature_metrics = core.run_evals(adapter, store, model, cfg, ignore_tokens=ignore_tokens)
    if featurewise:
        groups["misc_metrics"] = core.calculate_misc_metrics(feature_metrics)
    groups.pop("token_stats", None)  # counts, not metrics; kept in `dataset`
    from dataclasses import asdict

    return summary("saebench_core", adapter, ckpt_dir, groups, asdict(cfg),
                   {"name": dataset_name, "rows": len(ds), "context_size": context_size,
                    "ignored_token_ids": sorted(ignore_tokens),
                    "tokens_reconstruction": context_size * n_eval_reconstruction_batches * batch_size_prompts,
                    "tokens_sparsity_variance": context_size * n_eval_sparsity_variance_batches * batch_size_prompts},
                   skipped)


def _require_cached_model(model_name: str) -> str:
    """sae-probes loads `model_name` from the hub; offline that must already be in the HF cache."""
    from huggingface_hub import try_to_load_from_cache
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        repo = get_official_model_name(model_name)
    except ValueError as e:
        raise SAEBenchUnavailable(f"sparse_probing_sae_probes embeds its datasets with "
                                  f"HookedTransformer.from_pretrained({model_name!r}), which is not a pretrained "
                                  "TransformerLens model; pass model=<a local model with a tokenizer>") from e
    hub = os.environ.get("HF_HUB_CACHE") or str(Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    if not isinstance(try_to_load_from_cache(repo, "config.json", cache_dir=Path(hub).expanduser()), str):
        raise SAEBenchUnavailable(
            f"sparse_probing_sae_probes needs the weights and tokenizer of {repo} (for {model_name!r}); they are not "
            f"in the Hugging Face cache ({hub}) and this job must not download: run the model download rule first")
    return repo


def run_sparse_probing(ckpt_dir: str | Path, *, results_path: str | Path, output_path: str | Path,
                       model_cache_path: str | Path, model=None, model_name: str | None = None,
                       dataset_names: list[str] | None = None, ks=(1, 2, 5), reg_type: str = "l1",
                       include_llm_baseline: bool = True, random_seed: int = 42, device: str = "cpu",
                       allow_download: bool = False) -> dict:
    """SAEBench's `sparse_probing_sae_probes` eval of one checkpoint (sae-probes' 'normal' setting).

    model=None: sae-probes loads `model_name` itself, which offline requires it in the HF cache (checked first,
    unless allow_download). A given model (with a tokenizer) pre-fills sae-probes' activation cache instead."""
    require_saebench()
    try:
        from sae_probes.generate_model_activations import ensure_dataset_activations
    except ImportError as e:
        raise SAEBenchUnavailable(f"sparse_probing_sae_probes needs sae-probes: `{SAEBENCH_INSTALL}`") from e
    from dataclasses import asdict

    import sae_bench.evals.sparse_probing_sae_probes.main as sp
    from sae_bench.evals.sparse_probing_sae_probes.eval_config import SparseProbingSaeProbesEvalConfig

    adapter = load_for_saebench(ckpt_dir, device=device, **({"model_name": model_name} if model_name else {}))
    name = adapter.cfg.model_name
    config = SparseProbingSaeProbesEvalConfig(
        model_name=name, random_seed=random_seed, reg_type=reg_type, setting="normal", ks=list(ks),
        results_path=str(results_path), model_cache_path=str(model_cache_path),
        include_llm_baseline=include_llm_baseline, **({"dataset_names": dataset_names} if dataset_names else {}))
    if model is not None:
        if getattr(model, "tokenizer", None) is None:
            raise SAEBenchUnavailable("sae-probes tokenizes text datasets: the given model has no tokenizer")
        ensure_dataset_activations(model_name=name, dataset_short_names=config.dataset_names,
                                   hook_names=[adapter.cfg.hook_name], model_cache_path=model_cache_path,
                                   device=device, model=model)
    elif not allow_download:
        _require_cached_model(name)
    results = sp.run_eval(config, [("husai", adapter)], device, str(output_path), force_rerun=True)
    out = next(iter(results.values()))
    groups = {g: {k: v for k, v in vals.items() if v is not None}
              for g, vals in out["eval_result_metrics"].items()}
    s = summary("saebench_sparse_probing", adapter, ckpt_dir, groups, asdict(config),
                {"name": "sae-probes", "datasets": list(config.dataset_names)}, {})
    s["higher_is_better"] = {k: True for k in s["metrics"]}  # accuracies, AUCs and F1s
    return s
