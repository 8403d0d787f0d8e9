"""The `husai` command: verify-bundle and check-config exit 0/1 with a message naming what is wrong."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_bundle import make_results, tiny_config

from husai import bundle as B
from husai.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = tiny_config(REPO)
    results = make_results(tmp_path_factory.mktemp("cli") / "results", cfg)
    cfg_file = results.parent / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    out = B.build_bundle(results, cfg, cfg["policy"], cfg_file)
    (results / "evidence" / "run_id.json").write_text(json.dumps({"run_id": out.name}))
    return results, out


def test_verify_bundle_ok(study, capsys):
    results, out = study
    assert main(["verify-bundle", str(out)]) == 0
    msg = capsys.readouterr().out
    assert msg.startswith("OK: evidence bundle") and "table cells equal their source values" in msg
    # the bundle folder, its manifest, or results/evidence/run_id.json all name the same bundle
    assert main(["verify-bundle", str(out / "MANIFEST.json")]) == 0
    assert main(["verify-bundle", str(results / "evidence" / "run_id.json")]) == 0
    assert main(["verify-bundle", str(out), "--results", str(out / "sources")]) == 0


def test_verify_bundle_fails_on_a_copy_with_one_byte_changed(study, tmp_path, capsys):
    _, out = study
    bad = tmp_path / out.name
    shutil.copytree(out, bad)
    target = bad / "tables" / "gates.tex"
    raw = bytearray(target.read_bytes())
    raw[0] ^= 0x20
    target.write_bytes(bytes(raw))
    assert main(["verify-bundle", str(bad), "--results", str(out.parents[1])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: evidence bundle") and "sha256 mismatch: tables/gates.tex" in err


def test_verify_bundle_outside_results_needs_results(study, tmp_path, capsys):
    _, out = study
    moved = tmp_path / "elsewhere" / out.name
    shutil.copytree(out, moved)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["verify-bundle", str(moved)]) == 1
    finally:
        os.chdir(cwd)
    assert "pass --results" in capsys.readouterr().err
    assert main(["verify-bundle", str(tmp_path / "nothing-here")]) == 1
    assert "no manifest" in capsys.readouterr().err


def test_check_config(tmp_path, capsys):
    assert main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["sae"]["conditions"][0]["k"] = 10_000
    cfg["policy"] = str(REPO / "config" / "policy.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "config error" in err and "bad.yaml" in err and "k=10000" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err


def test_console_script_exit_codes(study, tmp_path):
    _, out = study
    bad = tmp_path / out.name
    shutil.copytree(out, bad)
    (bad / "README.md").write_text("edited\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, "-m", "husai.cli", "verify-bundle", str(bad), "--results",
                          str(out.parents[1])], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and "sha256 mismatch: README.md" in res.stderr
    res = subprocess.run([sys.executable, "-m", "husai.cli"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "verify-bundle" in res.stderr
    script = Path(sys.executable).parent / "husai"
    if script.exists():  # installed console script (pyproject [project.scripts])
        res = subprocess.run([str(script), "check-config", str(REPO / "config" / "config.yaml")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr


def test_check_config_runs_the_external_benchmark_checks(tmp_path, capsys):
    """check-config refuses what Snakemake would refuse before any job: here an unpinned CE-Bench revision."""
    cfg = yaml.safe_load((REPO / "config" / "b200.yaml").read_text())
    assert main(["check-config", str(REPO / "config" / "b200.yaml")]) == 0
    cfg["external"]["cebench"]["revision"] = "main"
    bad = tmp_path / "b200_unpinned.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["check-config", str(bad), "--policy", str(REPO / "config" / "policy_b200.yaml")]) == 1
    assert "external/cebench/revision: 'main' does not pin" in capsys.readouterr().err
