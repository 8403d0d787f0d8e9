"""SAEBench adapter: forward parity with the husai forward (topk, relu), SAEBench's core eval offline on a tiny local
TransformerLens model, and sparse probing's offline refusals."""

import math

import pytest
import torch

from husai.checkpoint import load_seed, save_seed
from husai.external import saebench as sb
from husai.io import read_json, write_json
from husai.saes import SAEConfig, build_sae
from husai.toymodel import ToyModelConfig, build_model

pytestmark = pytest.mark.skipif(sb.saebench_version() is None,
                                reason=f"sae-bench not installed (install: {sb.SAEBENCH_INSTALL})")

P, D = 13, 16
HOOK = "blocks.0.hook_resid_post"
META = {"model_name": "toy-modadd-p13", "hook_name": HOOK, "hook_head_index": None, "context_size": 3,
        "prepend_bos": False, "husai": {"condition": "test"}}


def _checkpoint(path, arch: str, seed: int = 0, identity: bool = False):
    cfg = SAEConfig(architecture=arch, d_in=D, d_sae=2 * D, k=4 if arch == "topk" else None, l1_coefficient=0.01)
    sae = build_sae(cfg, [seed])
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        if identity:  # relu([x, -x]) decoded by [I; -I] is exactly x: a perfect reconstruction
            eye = torch.eye(D)
            sae.W_enc_SDF.copy_(torch.cat([eye, -eye], dim=1)[None])
            sae.W_dec_SFD.copy_(torch.cat([eye, -eye], dim=0)[None])
            sae.b_enc_SF.zero_()
            sae.b_dec_SD.zero_()
        else:  # non-zero biases so that parity covers them
            sae.b_enc_SF.copy_(0.1 * torch.randn(sae.b_enc_SF.shape, generator=g))
            sae.b_dec_SD.copy_(0.1 * torch.randn(sae.b_dec_SD.shape, generator=g))
    save_seed(sae, 0, path, META)
    return path


@pytest.fixture(scope="module")
def model():
    return build_model(ToyModelConfig(p=P, d_model=D, n_heads=2, d_mlp=32, fourier_top_k=2)).eval()


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_adapter_forward_equals_husai_forward(tmp_path, arch):
    ckpt = _checkpoint(tmp_path / arch, arch)
    husai_sae = load_seed(ckpt)
    adapter = sb.make_custom_sae(ckpt)
    x_BD = 2.0 * torch.randn(64, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x_hat, f, _ = husai_sae(x_BD)
        f_ad = adapter.encode(x_BD)
        assert torch.allclose(f_ad, f[0], atol=1e-5)
        assert torch.allclose(adapter.decode(f_ad), x_hat[0], atol=1e-5)
        assert torch.allclose(adapter(x_BD), x_hat[0], atol=1e-5)
        # SAEBench also feeds [batch, ctx, d_in]
        x_BLD = x_BD.reshape(8, 8, D)
        assert torch.allclose(adapter.decode(adapter.encode(x_BLD)), x_hat[0].reshape(8, 8, D), atol=1e-5)
        # the tensors SAEBench reads for its weight metrics are the checkpoint's, in sae-lens layout
        assert torch.equal(adapter.W_dec, husai_sae.W_dec_SFD[0]) and torch.equal(adapter.W_enc, husai_sae.W_enc_SDF[0])
        if arch == "topk":
            assert int((f_ad != 0).sum(-1).max()) <= 4


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_adapter_matches_sae_lens_and_is_formatted_for_saebench(tmp_path, arch):
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae
    from sae_lens import SAE

    ckpt = _checkpoint(tmp_path / arch, arch, seed=5)
    _, adapter, _ = load_and_format_sae("husai", sb.make_custom_sae(ckpt), "cpu")
    lens = SAE.load_from_disk(str(ckpt), device="cpu")
    x = torch.randn(32, D, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.allclose(adapter(x), lens.decode(lens.encode(x)), atol=1e-5)
    c = adapter.cfg
    assert (c.hook_name, c.hook_layer, c.model_name, c.context_size) == (HOOK, 0, META["model_name"], 3)
    assert (c.d_in, c.d_sae, c.architecture_str, c.dtype, c.prepend_bos) == (D, 2 * D, arch, "float32", False)
    assert c.metadata.hook_name == HOOK


@pytest.mark.parametrize("arch, extra", [("jumprelu", {}), ("batchtopk", {"k": 4}), ("matryoshka", {"k": 4}),
                                         ("routed", {"k": 4, "n_experts": 4})])
def test_adapter_is_the_husai_forward_for_every_architecture(tmp_path, arch, extra):
    """Including the forms sae-lens cannot load exactly (routed): SAEBench scores what husai trained."""
    sae = build_sae(SAEConfig(architecture=arch, d_in=D, d_sae=2 * D, **extra), [1])
    if arch == "batchtopk":
        sae.threshold_SF.fill_(0.05)  # finalised inference threshold
    save_seed(sae, 0, tmp_path / arch, META)
    x_BD = torch.randn(32, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        x_hat = load_seed(tmp_path / arch)(x_BD)[0][0]
        assert torch.allclose(sb.make_custom_sae(tmp_path / arch)(x_BD), x_hat, atol=1e-5)


def test_hook_layer_and_transcoder_refused(tmp_path):
    assert sb.hook_layer("blocks.3.hook_resid_pre") == 3 and sb.hook_layer("hook_embed") == 0
    with pytest.raises(ValueError, match="layer"):
        sb.hook_layer("ln_final.hook_normalized")
    save_seed(build_sae(SAEConfig(architecture="transcoder", d_in=D, d_sae=2 * D), [0]), 0, tmp_path / "tc", META)
    with pytest.raises(ValueError, match="transcoder"):
        sb.make_custom_sae(tmp_path / "tc")


def _tokens(n: int, hi: int, seed: int = 0):
    return torch.randint(0, hi, (n, 3), generator=torch.Generator().manual_seed(seed))


def test_core_eval_offline_perfect_reconstruction_scores_one(tmp_path, model):
    """An SAE that reconstructs exactly: SAEBench's spliced-in forward must leave the model unchanged."""
    ckpt = _checkpoint(tmp_path / "id", "relu", identity=True)
    s = sb.run_core_eval(ckpt, model, _tokens(48, P), dataset_name="toy-tokens", batch_size_prompts=8,
                         n_eval_reconstruction_batches=2, n_eval_sparsity_variance_batches=2)
    m = s["metrics"]
    assert s["eval"] == "saebench_core" and s["benchmark_version"] == sb.SAEBENCH_PIN and s["skipped_metrics"] == {}
    assert (s["hook"], s["width"], s["seed"]) == (HOOK, 2 * D, 0)
    assert m["ce_loss_with_sae"] == pytest.approx(m["ce_loss_without_sae"], abs=1e-5)
    assert m["ce_loss_score"] == pytest.approx(1.0, abs=1e-3)
    assert m["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-5) and m["kl_div_score"] == pytest.approx(1.0, abs=1e-3)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-5) and m["mse"] == pytest.approx(0.0, abs=1e-8)
    assert m["l0"] == pytest.approx(D, abs=0.5) and s["l0"] == m["l0"]
    assert s["higher_is_better"]["ce_loss_score"] is True and s["higher_is_better"]["mse"] is False
    assert 0 <= m["frac_alive"] <= 1
    write_json(tmp_path / "core.json", s)  # what the rule writes: plain JSON
    assert read_json(tmp_path / "core.json")["metrics"] == pytest.approx(m)


def test_core_eval_offline_topk_and_ce_loss_guard(tmp_path, model):
    ckpt = _checkpoint(tmp_path / "topk", "topk", seed=2)
    s = sb.run_core_eval(ckpt, model, _tokens(32, P).numpy(), batch_size_prompts=8,
                         n_eval_reconstruction_batches=1, n_eval_sparsity_variance_batches=2)
    m = s["metrics"]
    assert m["l0"] <= 4 + 1e-6 and all(math.isfinite(m[k]) for k in ("ce_loss_score", "kl_div_score",
                                                                      "explained_variance", "cossim"))
    # the toy's `=` token (id p) is an input but not an output class: CE-loss is skipped with the reason
    eq = _tokens(32, P + 1, seed=1)
    eq[:, 2] = P
    s2 = sb.run_core_eval(ckpt, model, eq, n_eval_reconstruction_batches=1, n_eval_sparsity_variance_batches=1)
    assert "ce_loss_score" not in s2["metrics"] and "d_vocab_out" in s2["skipped_metrics"]["ce_loss_score"]
    assert "kl_div_score" in s2["skipped_metrics"] and "explained_variance" in s2["metrics"]
    with pytest.raises(ValueError, match="d_vocab_out"):
        sb.run_core_eval(ckpt, model, eq, compute_ce_loss=True)
    with pytest.raises(ValueError, match="vocabulary"):
        sb.run_core_eval(ckpt, model, _tokens(8, P + 5) + 5)


def test_sparse_probing_refuses_offline_without_model(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path / "topk", "topk")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    kw = dict(results_path=tmp_path / "r", output_path=tmp_path / "o", model_cache_path=tmp_path / "c")
    with pytest.raises(sb.SAEBenchUnavailable, match="not in the Hugging Face cache"):
        sb.run_sparse_probing(ckpt, model_name="pythia-70m-deduped", **kw)
    with pytest.raises(sb.SAEBenchUnavailable, match="not a pretrained TransformerLens model"):
        sb.run_sparse_probing(ckpt, **kw)  # the toy's name from cfg.json
    with pytest.raises(sb.SAEBenchUnavailable, match="no tokenizer"):
        sb.run_sparse_probing(ckpt, model=build_model(ToyModelConfig(p=P, d_model=D, n_heads=2, d_mlp=32,
                                                                      fourier_top_k=2)), **kw)


def test_sparse_probing_runs_offline_with_a_local_model_and_tokenizer(tmp_path):
    """sae-probes ships its datasets; with a local model (and tokenizer) the real eval runs here, end to end."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[BOS]", "[EOS]", "the", "a", "is", "of", "and", "to", "in", "not", "true", "false"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                            eos_token="[EOS]").save_pretrained(tmp_path / "tok")
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=1, d_model=D, d_head=8, n_heads=2, d_mlp=32, d_vocab=len(words),
                                  n_ctx=1024, act_fn="relu", normalization_type="LN", device="cpu")
    model = HookedTransformer(cfg, tokenizer=PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")).eval()
    ckpt = _checkpoint(tmp_path / "topk", "topk")
    s = sb.run_sparse_probing(ckpt, model=model, model_name="tiny-words", results_path=tmp_path / "r",
                              output_path=tmp_path / "o", model_cache_path=tmp_path / "c",
                              dataset_names=["41_truthqa_tf"], ks=[1, 2])
    m = s["metrics"]
    assert s["eval"] == "saebench_sparse_probing" and s["eval_config"]["dataset_names"] == ["41_truthqa_tf"]
    for k in ("llm_test_accuracy", "sae_top_1_test_accuracy", "sae_top_2_test_auc"):
        assert 0.0 <= m[k] <= 1.0
    assert (tmp_path / "o" / "husai_custom_sae_eval_results.json").exists()


def _as_sae_lens_baseline(src, dst):
    """The same weights as a plain sae-lens checkpoint (no husai metadata): how a published baseline arrives."""
    import shutil

    shutil.copytree(src, dst)
    cfg = read_json(dst / "cfg.json")
    del cfg["metadata"]["husai"]
    write_json(dst / "cfg.json", cfg)
    return dst


def test_sae_lens_format_baseline_runs_through_the_same_eval(tmp_path, model):
    """A baseline saved by another trainer (sae-lens format) is scored by sae-lens' own forward; for an exactly
    representable architecture it must score exactly like the husai checkpoint it came from."""
    ckpt = _checkpoint(tmp_path / "topk", "topk", seed=6)
    base = _as_sae_lens_baseline(ckpt, tmp_path / "baseline")
    kw = dict(batch_size_prompts=8, n_eval_reconstruction_batches=1, n_eval_sparsity_variance_batches=2)
    a = sb.run_core_eval(ckpt, model, _tokens(24, P), **kw)
    b = sb.run_core_eval(base, model, _tokens(24, P), **kw)
    assert b["seed"] is None and b["architecture"] == "topk" and (b["hook"], b["width"]) == (HOOK, 2 * D)
    for k in ("ce_loss_score", "kl_div_score", "explained_variance", "l0", "frac_alive"):
        assert b["metrics"][k] == pytest.approx(a["metrics"][k], abs=1e-5)
