"""The external benchmarks' workflow side (husai.external.workflow, husai.pipeline_external): config checks that name
key and value, the evidence release_policy hands the gates (a missing baseline is a missing delta, never 0), the
fetch/download localrules' refusals, and the b200 study's external jobs in a dry run."""

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from husai.config import ConfigError, _validate, all_conditions, load_yaml
from husai.external import external_gate
from husai.external import saebench as sb
from husai.external import workflow as W
from husai.io import ChecksumError, read_json, write_json

HOOK = "blocks.0.hook_resid_post"
KEY = f"{HOOK}/topk-w48-k4-lam0"
SPEC = {"required": True, "basis": "lcb", "eval": "saebench_core", "metrics": {"explained_variance": -0.05}}


@pytest.fixture
def toy(repo):
    cfg = load_yaml(repo / "tests" / "data" / "tiny_external_config.yaml")
    cfg["policy"] = str(repo / "config" / "policy.yaml")
    cfg["external"]["baselines"]["entries"][0]["source"] = "reference_sae"
    return cfg


@pytest.fixture
def b200(repo):
    return load_yaml(repo / "config" / "b200.yaml")


def _with(cfg, path, value):
    cfg = copy.deepcopy(cfg)
    *head, last = path.split("/")
    node = cfg
    for k in head:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    node[int(last) if isinstance(node, list) else last] = value
    return cfg


# --- config -------------------------------------------------------------------------------------------------
def test_shipped_configs_pass_and_the_default_runs_no_external_benchmark(repo, toy, b200):
    W.check_external_config(toy)
    W.check_external_config(b200)
    _validate(b200, repo / "config" / "schema" / "config.schema.yaml", "b200")
    assert W.enabled_evals(b200) == ["saebench_core", "saebench_sparse_probing", "cebench"]
    default = load_yaml(repo / "config" / "config.yaml")
    assert W.enabled_evals(default) == [] and W.all_files(default) == []
    assert load_yaml(repo / "config" / "policy.yaml")["gates"]["external_saebench"]["required"] is False


@pytest.mark.parametrize("path, value, match", [
    ("external/cebench", {"enabled": True, "dataset": "GulkoA/contrastive-stories-v4", "revision": "main"},
     r"external/cebench/revision: 'main' does not pin"),
    ("external/cebench/revision", "v1.0", r"external/cebench/revision: 'v1.0' does not pin.*40-hex commit"),
    ("external/cebench/revision", "master", r"'master' does not pin"),
    ("external/cebench/dataset", "rows.jsonl", r"external/cebench/revision: '0{40}' does not pin rows.jsonl.*sha256"),
    ("external/baselines/entries/0/hook", "blocks.5.hook_resid_pre",
     r"external/baselines/entries/0/hook: 'blocks.5.hook_resid_pre' is not a configured hook"),
    ("external/baselines/entries/0/source", "sae_lens:no-sae-id", r"entries/0/source: 'sae_lens:no-sae-id' must"),
    ("external/baselines/entries/0/id", "a/b", r"entries/0/id: 'a/b' must be a file-name-safe id"),
    ("external/baselines/entries/0/summaries", {"autointerp": "x.json"}, r"entries/0/summaries: unknown eval"),
    ("external/baselines/l0_tolerance", 1.5, r"l0_tolerance must be a number in \[0, 1\), got 1.5"),
])
def test_bad_external_config_is_refused_naming_key_and_value(b200, path, value, match):
    with pytest.raises(ConfigError, match=match):
        W.check_external_config(_with(b200, path, value))


@pytest.mark.parametrize("ev", ["cebench", "saebench_sparse_probing"])
def test_text_evals_are_refused_on_the_toy_model(toy, ev):
    cfg = _with(toy, f"external/{ev}", {"enabled": True, "dataset": "d", "revision": "a" * 40})
    with pytest.raises(ConfigError, match=rf"external/{ev}/enabled: true, but the toy model .* has no tokenizer"):
        W.check_external_config(cfg)


def test_toy_core_eval_needs_the_equals_position(toy):
    with pytest.raises(ConfigError, match=r"external/saebench_core: the toy's SAEs are trained at "
                                          r"activations/position=1.*position 2"):
        W.check_external_config(_with(toy, "activations/position", 1))


def test_baseline_without_summaries_needs_a_source(toy):
    cfg = copy.deepcopy(toy)
    del cfg["external"]["baselines"]["entries"][0]["source"]
    with pytest.raises(ConfigError, match=r"entries/0/source is required: no precomputed summaries for "
                                          r"\['saebench_core'\]"):
        W.check_external_config(cfg)
    cfg["external"]["baselines"]["entries"][0]["summaries"] = {"saebench_core": "precomputed.json"}
    W.check_external_config(cfg)  # precomputed: nothing to evaluate, so no source needed
    assert W.baselines_to_evaluate(cfg) == []


def test_schema_rejects_unknown_external_keys(repo, b200):
    with pytest.raises(ConfigError, match="external/saebench_core"):
        _validate(_with(b200, "external/saebench_core/n_batches", 3), repo / "config/schema/config.schema.yaml", "c")


def test_files_the_workflow_makes(toy, b200):
    assert W.candidate_files(toy) == [f"results/external/modadd-p23/{KEY}/seed{s}/saebench_core.json"
                                      for s in (0, 1, 2)]
    assert W.baselines_to_evaluate(toy) == [("tiny-topk-baseline", "saebench_core")]
    assert W.all_files(toy)[-1] == "results/external/baselines/tiny-topk-baseline/saebench_core.json"
    n_keys = len(b200["activations"]["hooks"]) * len(all_conditions(b200))
    assert len(W.candidate_files(b200)) == 3 * n_keys * len(b200["sae"]["seeds"])
    assert len(W.baselines_to_evaluate(b200)) == 3 * len(b200["external"]["baselines"]["entries"])
    assert W.cebench_rows_file(b200) == "cache/cebench/GulkoA_contrastive-stories-v4@" + "0" * 40 + ".jsonl"


# --- evidence -----------------------------------------------------------------------------------------------
def _summary(ev, key, seed, ev_value, l0=4.0, **extra):
    hook, cond = key.split("/", 1)
    return {"eval": ev, "hook": hook, "condition": cond, "seed": seed, "width": 48, "l0": l0,
            "metrics": {"explained_variance": ev_value, "sae_top_1_test_accuracy": 0.5 + ev_value / 10},
            "higher_is_better": {"explained_variance": True, "sae_top_1_test_accuracy": True}, **extra}


@pytest.fixture
def written(tmp_path, toy, monkeypatch):
    """Candidate and other-condition summaries, and the computed baseline summary, at the workflow's paths."""
    monkeypatch.chdir(tmp_path)
    other = f"{HOOK}/relu-w48-k4-lam0"
    paths = []
    for s, v in zip((2, 0, 1), (0.70, 0.72, 0.68), strict=True):  # written out of seed order
        for ev in ("saebench_core", "saebench_sparse_probing"):
            p = W.summary_file("modadd-p23", HOOK, "topk-w48-k4-lam0", s, ev)
            write_json(p, _summary(ev, KEY, s, v))
            paths.append(p)
        p = W.summary_file("modadd-p23", HOOK, "relu-w48-k4-lam0", s, "saebench_core")
        write_json(p, _summary("saebench_core", other, s, 0.1))
        paths.append(p)
    base = W.baseline_file("tiny-topk-baseline", "saebench_core")
    write_json(base, _summary("saebench_core", f"{HOOK}/reference", None, 0.40, baseline_id="tiny-topk-baseline"))
    return toy, paths + [base]


def test_evidence_is_the_candidates_per_seed_summaries_and_a_filled_baseline_map(written):
    cfg, paths = written
    policy = {"gates": {"external_saebench": SPEC, "external_cebench": {"required": False, "metrics": {"x": 0}}}}
    out = W.external_evidence(cfg, policy, KEY, paths)
    ev = out["evidence"]
    assert [r["data"]["seed"] for r in ev["external_saebench"]] == [0, 1, 2]
    assert all(r["path"].endswith("/saebench_core.json") and KEY in r["path"] for r in ev["external_saebench"])
    assert ev["external_cebench"] is None  # not run: the gate says so, it does not pass
    entry = ev["external_baselines"]["entries"][0]
    assert entry["summaries"] == {"saebench_core": "results/external/baselines/tiny-topk-baseline/saebench_core.json"}
    g = external_gate("external_saebench", ev["external_saebench"], ev["external_baselines"], SPEC)
    assert g["status"] == "pass" and g["external"]["baseline"]["id"] == "tiny-topk-baseline"
    assert g["external"]["deltas"]["explained_variance"]["delta_per_seed"] == pytest.approx([0.32, 0.28, 0.30])
    rep = out["report"]
    assert rep["conditions"][KEY]["saebench_sparse_probing"]["n_seeds"] == 3  # recorded although no gate reads it
    assert rep["conditions"][KEY]["saebench_core"]["metrics_mean"]["explained_variance"] == pytest.approx(0.70)
    assert rep["baselines"]["tiny-topk-baseline"]["saebench_core"]["present"] is True


def test_a_policy_can_point_a_gate_at_sparse_probing(written):
    cfg, paths = written
    spec = {"required": False, "eval": "saebench_sparse_probing", "metrics": {"sae_top_1_test_accuracy": 0.0}}
    ev = W.external_evidence(cfg, {"gates": {"external_saebench": spec}}, KEY, paths)["evidence"]
    assert {r["data"]["eval"] for r in ev["external_saebench"]} == {"saebench_sparse_probing"}
    g = external_gate("external_saebench", ev["external_saebench"], ev["external_baselines"], spec)
    assert g["status"] == "skipped" and "no saebench_sparse_probing summary" in g["reason"]  # no baseline for it


def test_missing_baseline_summary_is_a_missing_delta_never_zero(written):
    cfg, paths = written
    base = paths[-1]
    Path(base).unlink()
    ev = W.external_evidence(cfg, {"gates": {"external_saebench": SPEC}}, KEY, paths)["evidence"]
    g = external_gate("external_saebench", ev["external_saebench"], ev["external_baselines"], SPEC)
    assert g["status"] == "fail" and g["value"] is None and g["checks"] == []
    assert "saebench_core summary results/external/baselines/tiny-topk-baseline/saebench_core.json does not " \
           "exist" in g["reason"]
    d = g["external"]["deltas"]["explained_variance"]
    assert d["delta_per_seed"] is None and d["delta_mean"] is None and d["reason"]
    optional = external_gate("external_saebench", ev["external_saebench"], ev["external_baselines"],
                             {**SPEC, "required": False})
    assert optional["status"] == "skipped" and optional["pass"] is None


def test_no_external_block_means_no_evidence(toy):
    cfg = copy.deepcopy(toy)
    del cfg["external"]
    out = W.external_evidence(cfg, {"gates": {"external_saebench": SPEC}}, KEY, [])
    assert out["evidence"]["external_saebench"] is None and out["report"]["evals"] == []
    g = external_gate("external_saebench", None, out["evidence"]["external_baselines"], {**SPEC, "required": False})
    assert g["status"] == "skipped" and "was not run" in g["reason"]


# --- localrules ---------------------------------------------------------------------------------------------
def _husai_ckpt(path, hook=HOOK, width=48, model_name="modadd-p23"):
    from husai.checkpoint import save_seed
    from husai.saes import SAEConfig, build_sae

    sae = build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=width, k=4), [0])
    save_seed(sae, 0, path, {"model_name": model_name, "hook_name": hook, "context_size": 3, "prepend_bos": False,
                             "husai": {"condition": "ref"}})
    return path


def _fetch(tmp_path, toy, source, **entry):
    from husai.pipeline_external import fetch_baseline

    e = {**toy["external"]["baselines"]["entries"][0], "source": str(source), **entry}
    out = SimpleNamespace(cfg=str(tmp_path / "cache/baselines/b/cfg.json"),
                          weights=str(tmp_path / "cache/baselines/b/sae_weights.safetensors"),
                          manifest=str(tmp_path / "cache/baselines/b/manifest.json"))
    fetch_baseline(SimpleNamespace(), out, SimpleNamespace(entry=e), toy, "fetch_baseline")
    return out


def test_fetch_baseline_copies_and_checks_a_local_checkpoint(tmp_path, toy):
    out = _fetch(tmp_path, toy, _husai_ckpt(tmp_path / "ref"))
    m = read_json(out.manifest)
    assert set(m["files"]) == {"cfg.json", "sae_weights.safetensors"} and m["source"].endswith("ref")
    with pytest.raises(SystemExit, match="is not a checkpoint directory"):
        _fetch(tmp_path, toy, tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="checkpoint has hook 'blocks.0.hook_resid_mid', width 48; the entry"):
        _fetch(tmp_path, toy, _husai_ckpt(tmp_path / "mid", hook="blocks.0.hook_resid_mid"))
    with pytest.raises(SystemExit, match="width 64; the entry declares .* width 48"):
        _fetch(tmp_path, toy, _husai_ckpt(tmp_path / "w64", width=64))
    with pytest.raises(SystemExit, match="checkpoint is for model 'gpt2'"):
        _fetch(tmp_path, toy, _husai_ckpt(tmp_path / "gpt2", model_name="gpt2"))


def test_fetch_baseline_saves_a_published_sae_with_sae_lens(tmp_path, toy, monkeypatch):
    import sae_lens

    src = _husai_ckpt(tmp_path / "published")
    calls = []

    def from_pretrained(release, sae_id, device="cpu"):
        calls.append((release, sae_id))
        return sae_lens.SAE.load_from_disk(str(src))

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", staticmethod(from_pretrained))
    out = _fetch(tmp_path, toy, "sae_lens:some-release/blocks.0/width_48")
    assert calls == [("some-release", "blocks.0/width_48")]
    cfg = read_json(out.cfg)
    assert cfg["d_sae"] == 48 and cfg["metadata"]["hook_name"] == HOOK


def test_download_cebench_refuses_the_placeholder_and_pins_a_local_file(tmp_path, b200):
    from husai.pipeline_external import download_cebench

    out = SimpleNamespace(rows=str(tmp_path / "rows.jsonl"), manifest=str(tmp_path / "rows.jsonl.manifest.json"))
    b200 = _with(b200, "cache_dir", str(tmp_path / "cache"))
    with pytest.raises(SystemExit, match="placeholder .* replace it with a real commit of GulkoA"):
        download_cebench(SimpleNamespace(), out, SimpleNamespace(), b200, "download_cebench")
    src = tmp_path / "stories.jsonl"
    src.write_text("".join(json.dumps({"story1": f"a {i}", "story2": f"b {i}", "subject_title": f"s{i % 2}"}) + "\n"
                           for i in range(4)))
    import hashlib

    pin = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    cfg = _with(_with(b200, "external/cebench/dataset", str(src)), "external/cebench/revision", pin)
    download_cebench(SimpleNamespace(), out, SimpleNamespace(), cfg, "download_cebench")
    m = read_json(out.manifest)
    assert m["n_rows"] == 4 and m["sha256"].startswith("sha256:") and m["dataset_revision"] == pin


def test_checkpoint_metadata_records_the_data_context(repo):
    """train_condition writes the text context (pretrained) or the toy's 3-token row: SAEBench reads it."""
    src = (repo / "src/husai/pipeline.py").read_text().split("def train_condition(")[1].split("\ndef ")[0]
    assert '"context_size": 3 if _is_toy(config) else config["text"]["context_size"]' in src
    assert 'config["text"].get("prepend_bos", True)' in src


# --- the b200 study -----------------------------------------------------------------------------------------
def test_b200_dry_run_schedules_the_external_jobs(repo, b200):
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "release_gate", "--configfile", "config/b200.yaml",
                          "--cores", "2"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", res.stdout, re.M)}
    n_keys = len(b200["activations"]["hooks"]) * len(all_conditions(b200))
    n_entries = len(b200["external"]["baselines"]["entries"])
    assert {r: counts.get(r) for r in ("saebench_core", "saebench_sparse_probing", "cebench")} == dict.fromkeys(
        ("saebench_core", "saebench_sparse_probing", "cebench"), n_keys)
    assert (counts.get("external_baseline"), counts.get("fetch_baseline"), counts.get("download_cebench")) == (
        3 * n_entries, n_entries, 1)


# --- the text-model path, end to end with a local model and tokenizer ------------------------------------------
class _Files(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


@pytest.fixture
def words_model(tmp_path):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[BOS]", "[EOS]", *"the a cat dog sat ran on mat far home red blue big".split()]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                            eos_token="[EOS]").save_pretrained(tmp_path / "tok")
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=len(words),
                                  n_ctx=64, act_fn="relu", normalization_type="LN", device="cpu")
    return HookedTransformer(cfg, tokenizer=PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")).eval()


@pytest.mark.skipif(sb.saebench_version() is None, reason="sae-bench not installed")
def test_text_model_rules_score_every_seed_core_probing_and_cebench(tmp_path, monkeypatch, words_model):
    import hashlib
    import random

    import husai.pipeline_external as P
    from husai.checkpoint import save_seed
    from husai.saes import SAEConfig, build_sae

    monkeypatch.chdir(tmp_path)
    rng = random.Random(0)
    vocab = "the a cat dog sat ran on mat far home red blue big".split()
    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choices(vocab, k=40))}) + "\n"
                                                 for _ in range(20)))
    (tmp_path / "stories.jsonl").write_text("".join(json.dumps(
        {"story1": " ".join(rng.choices(vocab, k=12)), "story2": " ".join(rng.choices(vocab, k=9)),
         "subject_title": f"s{i % 3}"}) + "\n" for i in range(9)))
    pin = "sha256:" + hashlib.sha256((tmp_path / "stories.jsonl").read_bytes()).hexdigest()
    hook, cond = "blocks.0.hook_resid_post", "topk-w32-k4-lam0"
    config = {"model": {"name": "tiny-words", "kind": "hf_transformer_lens", "hf_name": "x/tiny", "revision": "r"},
              "cache_dir": str(tmp_path / "cache"), "sae": {"seeds": [0, 1]},
              "text": {"dataset": "local", "revision": "r", "context_size": 8, "prepend_bos": True,
                       "heldout_docs_fraction": 0.25},
              "external": {"device": "cpu", "saebench_core": {"enabled": True, "batch_size_prompts": 4,
                                                              "n_eval_reconstruction_batches": 2,
                                                              "n_eval_sparsity_variance_batches": 2},
                           "cebench": {"enabled": True, "dataset": "stories.jsonl", "revision": pin, "n_pairs": 6,
                                       "batch_size": 4},
                           "saebench_sparse_probing": {"enabled": True, "dataset_names": ["41_truthqa_tf"],
                                                       "ks": [1, 2]}}}
    weights, train = [], []
    for s in (0, 1):
        sae = build_sae(SAEConfig(architecture="topk", d_in=16, d_sae=32, k=4), [s])
        d = tmp_path / "saes" / f"seed{s}"
        info = save_seed(sae, 0, d, {"model_name": "tiny-words", "hook_name": hook, "context_size": 8,
                                     "prepend_bos": True, "husai": {"condition": cond}})
        write_json(d / "train.json", {"seed": s, **info})
        weights.append(str(d / "sae_weights.safetensors"))
        train.append(str(d / "train.json"))
    monkeypatch.setattr(P, "_model", lambda config, input: (P.hf.offline(config["cache_dir"]), words_model)[1])
    params = SimpleNamespace(hook=hook, condition=cond)
    core_out = [str(tmp_path / f"out/seed{s}/saebench_core.json") for s in (0, 1)]
    P.saebench_core(_Files(weights=weights, train=train, text=[str(tmp_path / "text.jsonl")], model="m"),
                    _Files(summaries=core_out), params, config, "saebench_core")
    for s, path in zip((0, 1), core_out, strict=True):
        r = read_json(path)
        assert (r["seed"], r["key"], r["run"]["offline"]) == (s, f"{hook}/{cond}", True)
        assert r["run"]["data"]["n_docs"] == 5 and r["dataset"]["context_size"] == 8  # held-out docs, text rows
        assert 0 < r["l0"] <= 4 and "ce_loss_score" in r["metrics"] and r["skipped_metrics"] == {}
    sp_out = [str(tmp_path / f"out/seed{s}/saebench_sparse_probing.json") for s in (0, 1)]
    P.saebench_sparse_probing(_Files(weights=weights, train=train, model="m"), _Files(summaries=sp_out), params,
                              config, "saebench_sparse_probing")
    sp = [read_json(p) for p in sp_out]
    assert [r["seed"] for r in sp] == [0, 1] and all(r["eval_config"]["ks"] == [1, 2] for r in sp)
    assert all(0 <= r["metrics"]["sae_top_1_test_accuracy"] <= 1 for r in sp)
    assert not list((tmp_path / "out").glob("tmp*"))  # sae-probes' work files do not outlive the job
    rows = _Files(rows=str(tmp_path / "rows.jsonl"), manifest=str(tmp_path / "rows.jsonl.manifest.json"))
    P.download_cebench(_Files(), rows, SimpleNamespace(), config, "download_cebench")
    ce_out = [str(tmp_path / f"out/seed{s}/cebench.json") for s in (0, 1)]
    P.cebench(_Files(weights=weights, train=train, model="m", rows=rows.rows, rows_manifest=rows.manifest),
              _Files(summaries=ce_out), params, config, "cebench")
    ce = [read_json(p) for p in ce_out]
    assert [c["seed"] for c in ce] == [0, 1] and all(c["dataset"]["n_pairs"] == 6 for c in ce)
    assert all(math.isfinite(c["metrics"]["interpretability_score"]) for c in ce)
    assert ce[0]["dataset"]["local_sha256"] == pin
    write_json(tmp_path / "bad_train.json", {"seed": 0, "weights_sha256": "0" * 64})
    with pytest.raises(ChecksumError, match="SAE checkpoint .*sha256 mismatch"):
        P.saebench_core(_Files(weights=weights[:1], train=[str(tmp_path / "bad_train.json")], model="m",
                               text=[str(tmp_path / "text.jsonl")]), _Files(summaries=core_out[:1]), params, config,
                        "saebench_core")
