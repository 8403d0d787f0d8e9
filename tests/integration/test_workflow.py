"""Run the real workflow on a tiny config: release_policy.json appears, the decision follows from the numbers,
the gate exits non-zero exactly on 'iterate', a rerun does nothing, and forcing one seed's metrics reruns only
what depends on it."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _smk(repo, workdir, *args, check=False):
    cmd = [*SNAKEMAKE, "-s", str(repo / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and res.returncode != 0:
        raise AssertionError(res.stdout[-3000:] + res.stderr[-3000:])
    return res


def _job_counts(output: str) -> dict:
    block = output.split("Job stats:")[-1]
    rows = re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)
    return {m.group(1): int(m.group(2)) for m in rows if m.group(1) != "total"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    repo = Path(__file__).resolve().parents[2]
    work = tmp_path_factory.mktemp("tiny")
    cfg = (repo / "tests" / "data" / "tiny_config.yaml").read_text()
    (work / "config.yaml").write_text(cfg.replace("__POLICY__", str(repo / "config" / "policy.yaml")))
    res = _smk(repo, work, "release_gate")
    return repo, work, res


def test_release_policy_written_and_decision_follows_numbers(tiny_run):
    repo, work, res = tiny_run
    report = json.loads((work / "results/release/release_policy.json").read_text())
    from husai.config import load_yaml

    assert {g["gate"] for g in report["gates"]} == set(load_yaml(repo / "config/policy.yaml")["gates"])
    for g in report["gates"]:
        if g["gate"] in ("splice", "probe_tripwires", "ood", "known_circuit", "transcoder"):
            assert g["checks"] and not (g["reason"] or "").startswith("missing evidence"), g
    sel = json.loads((work / "results/release/selected_candidate.json").read_text())
    assert report["candidate"] == sel["candidate"]
    failed_required = [g["gate"] for g in report["gates"] if g["required"] and g["status"] == "fail"]
    assert report["decision"] == ("iterate" if failed_required else "promote")
    assert [f["gate"] for f in report["failed_checks"]] == [g["gate"] for g in report["gates"]
                                                             if g["status"] == "fail"]
    for path, digest in report["inputs"].items():
        assert len(digest) == 64, path
    assert report["provenance"]["config_hash"] and report["provenance"]["packages"]["torch"]
    # the gate exits non-zero exactly on iterate, and the evidence survives either way
    assert (res.returncode != 0) == (report["decision"] == "iterate"), res.stderr[-2000:]
    if report["decision"] == "iterate":
        assert "release gate: decision = iterate" in (work / "results/logs/release_gate.log").read_text()
    assert (work / "results/release/release_policy.md").exists()


def test_every_json_output_has_provenance(tiny_run):
    _, work, _ = tiny_run
    outputs = [p for p in (work / "results").rglob("*.json") if "shards" not in p.parts and "evidence" not in p.parts]
    assert len(outputs) > 10
    for p in outputs:
        data = json.loads(p.read_text())
        if p.name == "cfg.json":
            continue  # the sae-lens config; provenance sits in train.json beside it
        assert "provenance" in data, p
        assert {"git_sha", "config_hash", "rule", "packages", "inputs", "device"} <= set(data["provenance"]), p


def test_checkpoints_load_in_sae_lens(tiny_run):
    from sae_lens import SAE

    _, work, _ = tiny_run
    ckpt = next((work / "results/saes").rglob("topk-*/seed1"))
    sae = SAE.load_from_disk(ckpt)
    assert sae.cfg.d_sae == 48 and sae.cfg.k == 4


def test_rerun_does_nothing_and_forcing_one_seed_reruns_only_dependents(tiny_run):
    repo, work, first = tiny_run
    dry = _smk(repo, work, "release_gate", "-n")
    counts = _job_counts(dry.stdout)
    computed = {k: v for k, v in counts.items() if k not in ("check_release", "release_gate")}
    assert computed == {}, dry.stdout[-2000:]
    target = next((work / "results/saes").rglob("relu-*/seed1/metrics.json")).relative_to(work)
    forced = _job_counts(_smk(repo, work, "release_gate", "-n", "--forcerun", str(target)).stdout)
    assert forced.get("seed_metrics") == 1
    assert forced.get("release_policy") == 1
    assert not {"train_model", "extract_shard", "merge_activations", "train_condition", "consistency"} & set(forced)


def test_partial_rerun_of_one_consistency_target(tiny_run):
    repo, work, _ = tiny_run
    target = next((work / "results/consistency").rglob("topk-*/consistency.json"))
    shutil.copy(target, work / "saved.json")
    target.unlink()
    res = _smk(repo, work, str(target.relative_to(work)), check=True)
    assert target.exists(), res.stdout[-2000:]
    old, new = json.loads((work / "saved.json").read_text()), json.loads(target.read_text())
    assert old["statistics"]["pwmcc"]["trained"] == new["statistics"]["pwmcc"]["trained"]


def test_bad_config_is_refused_before_any_job(tiny_run, tmp_path):
    repo, _, _ = tiny_run
    cfg = (repo / "tests" / "data" / "tiny_config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(
        cfg.replace("__POLICY__", str(repo / "config" / "policy.yaml")).replace("architecture: relu",
                                                                                 "architecture: reluu"))
    res = _smk(repo, tmp_path, "release_gate", "-n")
    assert res.returncode != 0
    assert "reluu" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_lint_is_clean(repo):
    res = subprocess.run([*SNAKEMAKE, "--lint", "-s", str(repo / "Snakefile")], cwd=repo, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_evidence_bundle_builds_verifies_and_catches_tampering(tiny_run, tmp_path):
    from husai.bundle import verify_bundle

    repo, work, _ = tiny_run
    _smk(repo, work, "evidence_bundle", check=True)
    run_id = json.loads((work / "results/evidence/run_id.json").read_text())["run_id"]
    bundle = work / "results/evidence" / run_id
    assert verify_bundle(bundle) == []
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    target = next(p for p in sorted(copy.rglob("*.csv")))
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    problems = verify_bundle(copy, results_dir=work / "results")
    assert problems and any(target.name in p for p in problems)
    report = tmp_path / "report.html"
    _smk(repo, work, "evidence_bundle", "--report", str(report), check=True)
    assert report.exists() and report.stat().st_size > 10_000
