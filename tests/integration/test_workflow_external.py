"""The external-benchmark rules in a real workflow run on a tiny toy study: SAEBench's core eval of every seed and
of a named baseline (a checkpoint written here, fetched into the cache by fetch_baseline), offline, feeding a
REQUIRED external_saebench gate whose value is a real delta against that baseline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from husai.external import saebench as sb

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sb.saebench_version() is None, reason="sae-bench not installed")]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
HOOK = "blocks.0.hook_resid_post"
MIN_DELTA = -0.05  # the test policy's non-inferiority margin on explained variance


def _baseline_checkpoint(path: Path) -> Path:
    """A TopK SAE at the study's hook, width and k (so its L0 matches): every pre-activation positive, so exactly
    k latents fire on every token; small decoder rows. Not trained: the gate's delta says how it compares."""
    from husai.checkpoint import save_seed
    from husai.saes import SAEConfig, build_sae

    sae = build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=48, k=4), [0])
    with torch.no_grad():
        sae.b_enc_SF.fill_(100.0)
        sae.W_dec_SFD.mul_(0.01)
    save_seed(sae, 0, path, {"model_name": "modadd-p23", "hook_name": HOOK, "hook_head_index": None,
                             "context_size": 3, "prepend_bos": False, "husai": {"condition": "reference-topk"}})
    return path


def _policy(repo: Path, out: Path) -> Path:
    policy = yaml.safe_load((repo / "config" / "policy.yaml").read_text())
    policy["policy_id"] = "husai-test-external"
    # the toy's `=` is not an output class: SAEBench's CE/KL pass is skipped there, explained variance is not
    policy["gates"]["external_saebench"] = {"required": True, "basis": "lcb", "eval": "saebench_core",
                                            "metrics": {"explained_variance": MIN_DELTA}}
    out.write_text(yaml.safe_dump(policy, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def ext_run(tmp_path_factory):
    repo = Path(__file__).resolve().parents[2]
    work = tmp_path_factory.mktemp("tiny_external")
    _baseline_checkpoint(work / "reference_sae")
    cfg = (repo / "tests" / "data" / "tiny_external_config.yaml").read_text()
    cfg = cfg.replace("__POLICY__", str(_policy(repo, work / "policy.yaml"))).replace("__BASELINE__", "reference_sae")
    (work / "config.yaml").write_text(cfg)
    cmd = [*SNAKEMAKE, "-s", str(repo / "Snakefile"), "--directory", str(work), "--configfile",
           str(work / "config.yaml"), "--cores", "2", "results/release/release_policy.json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, res


def test_external_rules_ran_offline_and_wrote_per_seed_summaries(ext_run):
    work, res = ext_run
    for rule in ("saebench_core", "fetch_baseline", "external_baseline"):
        assert f"rule {rule}:" in res.stdout + res.stderr, rule
    files = sorted((work / "results/external/modadd-p23" / HOOK / "topk-w48-k4-lam0").glob("seed*/saebench_core.json"))
    assert [f.parent.name for f in files] == ["seed0", "seed1", "seed2"]
    for f in files:
        s = json.loads(f.read_text())
        assert s["eval"] == "saebench_core" and s["run"]["offline"] is True
        assert s["key"] == f"{HOOK}/topk-w48-k4-lam0" and s["width"] == 48
        assert 0 < s["l0"] <= 4 + 1e-6 and -10 < s["metrics"]["explained_variance"] <= 1
        assert "ce_loss_score" in s["skipped_metrics"]  # the toy's `=` is not an output class: said, not faked
        assert s["run"]["data"]["scored_positions"].startswith("the `=` token")
        assert s["provenance"]["inputs"]
    base = json.loads((work / "results/external/baselines/tiny-topk-baseline/saebench_core.json").read_text())
    assert base["baseline_id"] == "tiny-topk-baseline" and base["run"]["offline"] is True
    assert base["l0"] == pytest.approx(4.0) and base["dataset"] == s["dataset"]  # same adapter, same data


def test_release_policy_has_a_real_external_saebench_delta(ext_run):
    work, _ = ext_run
    report = json.loads((work / "results/release/release_policy.json").read_text())
    g = next(g for g in report["gates"] if g["gate"] == "external_saebench")
    assert g["required"] is True and g["status"] in ("pass", "fail"), g
    assert not (g["reason"] or "").startswith("missing evidence"), g
    ext = g["external"]
    assert ext["baseline"]["id"] == "tiny-topk-baseline"
    d = ext["deltas"]["explained_variance"]
    cand = [json.loads(p.read_text())["metrics"]["explained_variance"] for p in
            sorted((work / "results/external").rglob("seed*/saebench_core.json"))]
    base = json.loads((work / "results/external/baselines/tiny-topk-baseline/saebench_core.json").read_text())
    assert d["delta_per_seed"] == pytest.approx([c - base["metrics"]["explained_variance"] for c in cand])
    check = g["checks"][0]
    assert check["threshold"] == MIN_DELTA and check["pass"] == (check["value"] >= MIN_DELTA)
    assert g["status"] == ("pass" if check["pass"] else "fail")
    # the verdict follows: a failed required gate means iterate
    assert (report["decision"] == "iterate") >= (g["status"] == "fail")
    assert report["external"]["conditions"][f"{HOOK}/topk-w48-k4-lam0"]["saebench_core"]["n_seeds"] == 3
    assert report["external"]["baselines"]["tiny-topk-baseline"]["saebench_core"]["present"] is True
    assert any(k.startswith("results/external/") for k in report["inputs"])
