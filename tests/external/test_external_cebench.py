"""CE-Bench on tiny datasets in its format: hand-checked scores on a constructed case, batched = unbatched,
seed-batched = one seed at a time, and clear errors on bad rows and unpinned data."""

import hashlib
import json
import math

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from husai.checkpoint import save_seed
from husai.external import cebench as ce
from husai.saes import SAEConfig, build_sae


def tok(text: str) -> list[int]:
    """Stories in the tests are written as token ids: '0 0 3' -> [0, 0, 3]."""
    return [int(t) for t in text.split()]


def onehot_model(v: int = 4, n_ctx: int = 8):
    """hook_embed = one-hot(token): with an identity ReLU SAE the latents ARE the token indicators."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=v, d_head=v, n_heads=1, d_vocab=v, n_ctx=n_ctx, act_fn="relu",
                                  normalization_type=None, attn_only=True, device="cpu")
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.W_E.copy_(torch.eye(v))
    return model.eval()


def identity_sae(v: int = 4, seeds=(0,)):
    sae = build_sae(SAEConfig(architecture="relu", d_in=v, d_sae=v), list(seeds))
    with torch.no_grad():
        sae.W_enc_SDF.copy_(torch.eye(v).expand(len(seeds), v, v))
        sae.W_dec_SFD.copy_(torch.eye(v).expand(len(seeds), v, v))
        sae.b_enc_SF.zero_()
        sae.b_dec_SD.zero_()
    return sae


ROWS = [{"story1": "0 0 0", "story2": "1", "subject_title": "A"},
        {"story1": "2", "story2": "2", "subject_title": "B"}]


def test_hand_checked_scores():
    """Pair A: V1 = e0, V2 = e1 (3 and 1 tokens); pair B: V1 = V2 = e2.
    C_A = [1,1,0,0] -> max z = (1/2)/(1/sqrt 3) = sqrt(3)/2; C_B = 0 -> std 0 -> z = 0.
    I1_A = [.75,.25,0,0], I1_B = e2; with two subjects I2 of one is the other's I1, so
    D_A = D_B = [.75,.25,1,0] -> max z = .5/sqrt(.625/3); T_A = [1.75,1.25,1,0] -> .75/sqrt(1.625/3); T_B = D_B."""
    res = ce.score(onehot_model(), identity_sae(), ROWS, hook_name="hook_embed", tokenize=tok)
    z_d = 0.5 / math.sqrt(0.625 / 3)
    assert res["contrastive_score"][0] == pytest.approx(math.sqrt(3) / 4, abs=1e-6)
    assert res["independence_score"][0] == pytest.approx(z_d, abs=1e-6)
    assert res["interpretability_score"][0] == pytest.approx((0.75 / math.sqrt(1.625 / 3) + z_d) / 2, abs=1e-6)
    assert res["l0"] == [1.0] and (res["n_pairs"], res["n_subjects"], res["n_tokens"]) == (2, 2, 6)


def test_leave_own_subject_out_baseline_with_three_subjects():
    """Three subjects, one pair each, both stories identical: C = 0, and I2 of a subject = mean of the other two."""
    rows = [{"story1": s, "story2": s, "subject_title": t} for s, t in (("0", "A"), ("1", "B"), ("2 2", "C"))]
    res = ce.score(onehot_model(), identity_sae(), rows, hook_name="hook_embed", tokenize=tok)
    # each pair: I1 = e_i, I2 = (e_j + e_k)/2 -> D = [1, .5, .5, 0] up to order -> max z = .5/sqrt(.5/3)
    assert res["contrastive_score"][0] == 0.0
    assert res["independence_score"][0] == pytest.approx(0.5 / math.sqrt(0.5 / 3), abs=1e-6)


def _random_rows(n: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        a, b = (torch.randint(0, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g) for _ in "ab")
        rows.append({"story1": " ".join(map(str, a.tolist())), "story2": " ".join(map(str, b.tolist())),
                     "subject_title": f"s{i % 3}"})
    return rows


def _small_model(vocab: int = 20, d: int = 8):
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=d, d_head=4, n_heads=2, d_mlp=16, d_vocab=vocab, n_ctx=8,
                                  act_fn="relu", normalization_type="LN", device="cpu")
    return HookedTransformer(cfg).eval()


def test_batched_equals_unbatched_and_seed_batched_equals_single(tmp_path):
    """Right padding must not change any story's activations (causal attention), and scoring 3 seeds in one pass
    must give each seed what it gets alone."""
    model, rows = _small_model(), _random_rows(10, 20)
    sae = build_sae(SAEConfig(architecture="topk", d_in=8, d_sae=24, k=3), [0, 1, 2])
    meta = {"model_name": "tiny", "hook_name": "blocks.1.hook_resid_pre", "husai": {"condition": "c"}}
    dirs = [tmp_path / f"seed{s}" for s in range(3)]
    for s, d in enumerate(dirs):
        save_seed(sae, s, d, meta)
    kw = dict(dataset="local-test", dataset_revision="sha256:test", tokenize=tok)
    one_by_one = ce.run_cebench(model, dirs, rows, batch_size=1, **kw)
    batched = ce.run_cebench(model, dirs, rows, batch_size=4, **kw)
    alone = ce.run_cebench(model, dirs[1:2], rows, batch_size=3, **kw)[0]
    for a, b in zip(one_by_one, batched, strict=True):
        for m in ce.METRICS:
            assert a["metrics"][m] == pytest.approx(b["metrics"][m], abs=1e-5)
        assert a["l0"] == pytest.approx(b["l0"], abs=1e-9) and 0 < a["l0"] <= 3
    for m in ce.METRICS:
        assert alone["metrics"][m] == pytest.approx(batched[1]["metrics"][m], abs=1e-5)
    s = batched[2]
    assert (s["eval"], s["seed"], s["hook"], s["width"], s["condition"]) == ("cebench", 2, meta["hook_name"], 24, "c")
    assert s["dataset"]["revision"] == "sha256:test" and s["higher_is_better"] == dict.fromkeys(ce.METRICS, True)
    assert s["metrics"]["interpretability_score"] > 0


@pytest.mark.parametrize("rows, match", [
    ([], "non-empty list"),
    ([{"story1": "0", "story2": "1", "subject_title": "A"}] * 2, "2 distinct subject_title"),
    ([{"story1": "0", "story2": "", "subject_title": "A"}, ROWS[1]], "row 0 field 'story2'"),
    ([ROWS[0], {"story1": "0", "story2": "1"}], "row 1 field 'subject_title'"),
    ([ROWS[0], ["0", "1", "B"]], "row 1 is a list"),
])
def test_bad_rows_are_named(rows, match):
    with pytest.raises(ValueError, match=match):
        ce.validate_rows(rows)


def test_token_errors_and_truncation():
    model, sae = onehot_model(n_ctx=4), identity_sae()
    long_rows = [{"story1": "0 1 2 3 0", "story2": "1", "subject_title": "A"}, ROWS[1]]
    with pytest.raises(ValueError, match="row 0 story1: 5 tokens > the model's n_ctx 4"):
        ce.score(model, sae, long_rows, hook_name="hook_embed", tokenize=tok)
    assert ce.score(model, sae, long_rows, hook_name="hook_embed", tokenize=tok, max_tokens=4)["n_truncated"] == 1
    with pytest.raises(ValueError, match=r"row 1 story2: token ids must be non-empty and in \[0, 4\)"):
        ce.score(model, sae, [ROWS[0], {**ROWS[1], "story2": "7"}], hook_name="hook_embed", tokenize=tok)
    with pytest.raises(ValueError, match="no tokenizer"):
        ce.score(model, sae, ROWS, hook_name="hook_embed")


def test_dataset_revision_is_pinned(tmp_path):
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert ce.load_rows(path, digest) == ROWS
    with pytest.raises(ValueError, match="dataset_revision pins"):
        ce.load_rows(path, "sha256:" + "0" * 64)
    for rev in ("", "main", None):
        with pytest.raises(ValueError, match="pin dataset_revision"):
            ce.load_rows(ce.DATASET, rev)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"story1": "a", "subject_title": "A"}]))
    with pytest.raises(ValueError, match="bad.json: row 0 field 'story2'"):
        ce.load_rows(bad, "sha256:" + hashlib.sha256(bad.read_bytes()).hexdigest())


def test_sae_lens_format_baseline_scores_like_its_husai_twin(tmp_path):
    import shutil

    from husai.io import read_json, write_json

    model, rows = _small_model(), _random_rows(6, 20, seed=2)
    sae = build_sae(SAEConfig(architecture="topk", d_in=8, d_sae=24, k=3), [7])
    save_seed(sae, 0, tmp_path / "husai", {"model_name": "tiny", "hook_name": "blocks.0.hook_resid_post",
                                           "husai": {}})
    shutil.copytree(tmp_path / "husai", tmp_path / "lens")
    cfg = read_json(tmp_path / "lens" / "cfg.json")
    del cfg["metadata"]["husai"]
    write_json(tmp_path / "lens" / "cfg.json", cfg)
    kw = dict(dataset_revision="sha256:test", tokenize=tok)
    a = ce.run_cebench(model, [tmp_path / "husai"], rows, **kw)[0]
    b = ce.run_cebench(model, [tmp_path / "lens"], rows, **kw)[0]
    assert b["seed"] is None and b["width"] == 24 and b["l0"] == pytest.approx(a["l0"])
    for m in ce.METRICS:
        assert b["metrics"][m] == pytest.approx(a["metrics"][m], abs=1e-5)
    with pytest.raises(ValueError, match="husai seeds of one condition"):
        ce.run_cebench(model, [tmp_path / "husai", tmp_path / "lens"], rows, **kw)
