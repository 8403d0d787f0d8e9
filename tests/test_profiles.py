"""The Snakemake profiles parse, say what they must, and name only rules that exist.

Fast and without Slurm: the b200 dry run goes through Snakemake's dry-run executor and the plugin's settings
parser; it runs with a PATH from which every Slurm command is removed, so it proves the same on a machine
with Slurm installed (after make test-slurm) as on one without. tests/slurm runs the profiles on a real
one-node Slurm (make test-slurm).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import yte

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.parent.name for p in (REPO / "profiles").glob("*/config.yaml"))
CLUSTER_PROFILES = ("b200", "clover", "rusticl", "ci-slurm")
SLURM_COMMANDS = {"sbatch", "srun", "salloc", "sattach", "sbcast", "squeue", "sacct", "sinfo", "scontrol", "scancel",
                  "sacctmgr", "sshare", "sstat", "sprio", "sreport", "sdiag", "strigger", "scrontab", "sview"}
SITE_VARIABLES = [k for k in os.environ if k.startswith("HUSAI_SLURM_") or k.startswith("HUSAI_RUSTICL_")]


def _profile(name: str, env: dict | None = None) -> dict:
    """The profile as Snakemake reads it (YTE-processed when it says __use_yte__)."""
    path = REPO / "profiles" / name / "config.yaml"
    saved = {k: os.environ.pop(k) for k in SITE_VARIABLES if k in os.environ}
    os.environ.update(env or {})
    try:
        with path.open() as f:
            return yte.process_yaml(f, require_use_yte=True)
    finally:
        for k in env or {}:
            os.environ.pop(k, None)
        os.environ.update(saved)


def _workflow_rules() -> tuple[set[str], set[str]]:
    """Every rule name and every rule in a `localrules:` directive, from the Snakefile and rules/*.smk."""
    rules, local = set(), set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text()
        rules |= set(re.findall(r"^\s*rule (\w+):", text, re.M))
        for block in re.findall(r"^\s*localrules:\s*\n((?:\s+\w+,?\s*\n)+)", text, re.M):
            local |= set(re.findall(r"\w+", block))
    return rules, local


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_is_yaml_and_a_snakemake_mapping(name):
    raw = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
    assert isinstance(raw, dict) and raw
    processed = _profile(name)
    assert isinstance(processed, dict)
    assert not any(k.startswith("?") or k.startswith("__") for k in processed), processed.keys()


def test_the_expected_profiles_exist():
    assert {"local", *CLUSTER_PROFILES} <= set(PROFILES)


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_cluster_profiles_use_the_slurm_executor_sanely(name):
    p = _profile(name)
    assert p["executor"] == "slurm"
    assert p["slurm-status-command"] in ("sacct", "squeue")
    defaults = p["default-resources"]
    assert defaults["mem_mb"] > 0 and defaults["runtime"] > 0  # for any rule that does not set its own
    # The plugin rejects --gres/--gpus (and everything else it manages) inside slurm_extra.
    for resources in [defaults, *p.get("set-resources", {}).values()]:
        assert not re.search(r"--(gres|gpus|mem|partition|account|time|cpus)", str(resources.get("slurm_extra", "")))


def test_b200_asks_for_gpus_with_the_plugin_resources_and_site_settings_from_the_environment():
    bare = _profile("b200")
    assert "slurm_account" not in bare["default-resources"]  # unset: the plugin guesses or submits without
    assert "slurm_partition" not in bare["default-resources"]
    train = bare["set-resources"]["train_condition"]
    assert train["gpu"] == 1 and train["cpus_per_gpu"] >= 1 and "gpu_model" not in train

    site = _profile("b200", {"HUSAI_SLURM_ACCOUNT": "proj42", "HUSAI_SLURM_PARTITION": "cpu",
                             "HUSAI_SLURM_GPU_PARTITION": "b200", "HUSAI_SLURM_GPU_MODEL": "b200",
                             "HUSAI_SLURM_CPUS_PER_GPU": "16"})
    assert site["default-resources"]["slurm_account"] == "proj42"
    assert site["default-resources"]["slurm_partition"] == "cpu"
    for rule in ("train_condition", "prepare_model", "extract_shard"):
        assert site["set-resources"][rule] == {"gpu": 1, "cpus_per_gpu": 16, "gpu_model": "b200",
                                               "slurm_partition": "b200"}, rule


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_profiles_name_only_existing_rules_and_never_group_a_local_rule(name):
    """Snakemake silently ignores unknown rule names in set-resources and groups: a renamed rule would lose its
    GPU. A grouped rule is never local, so grouping a `localrules:` rule would send it to Slurm."""
    rules, local = _workflow_rules()
    p = _profile(name)
    named = set(p.get("set-resources", {})) | set(p.get("groups", {}))
    assert named <= rules, f"profiles/{name} names rules the workflow lacks: {sorted(named - rules)}"
    assert not set(p.get("groups", {})) & local
    assert "check_release" in local  # the gate check runs on the submit host


def test_b200_documents_its_localrules_intent():
    text = (REPO / "profiles" / "b200" / "config.yaml").read_text()
    assert "localrules" in text and "submit host" in text


def test_opencl_profiles_set_the_platform_before_python():
    assert _profile("rusticl")["precommand"] == "export RUSTICL_ENABLE=radeonsi"
    assert _profile("rusticl", {"HUSAI_RUSTICL_DRIVER": "swrast"})["precommand"] == "export RUSTICL_ENABLE=swrast"
    assert _profile("clover")["precommand"] == "unset RUSTICL_ENABLE"
    site = _profile("rusticl", {"HUSAI_SLURM_OPENCL_PARTITION": "amd", "HUSAI_SLURM_OPENCL_GRES": "gpu:1"})
    assert site["default-resources"]["slurm_partition"] == "amd" and site["default-resources"]["gres"] == "gpu:1"


def test_ci_profile_fits_the_test_cluster():
    """squeue as status command needs MinJobAge >= 3 x the plugin's first wait (else it falls back to sacct,
    which hangs without slurmdbd); the partition is the one tools/slurm/configure.sh creates."""
    p = _profile("ci-slurm")
    conf = (REPO / "tools" / "slurm" / "configure.sh").read_text()
    min_job_age = int(re.search(r"^MinJobAge=(\d+)", conf, re.M).group(1))
    assert p["slurm-status-command"] == "squeue"
    assert min_job_age >= 3 * p["slurm-init-seconds-before-status-checks"]
    common = (REPO / "tools" / "slurm" / "common.sh").read_text()
    assert f"HUSAI_SLURM_PARTITION_NAME:-{p['default-resources']['slurm_partition']}}}" in common
    assert "slurm_account" not in p["default-resources"]  # nothing to validate an account against


@pytest.fixture
def path_without_slurm(tmp_path) -> str:
    """A PATH like the current one in which no Slurm command exists (links to everything else)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            name = entry.name
            if name in SLURM_COMMANDS or name.startswith("slurm") or (bin_dir / name).exists():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (bin_dir / name).symlink_to(entry.path)
    return str(bin_dir)


def test_b200_dry_run_parses_without_slurm(path_without_slurm):
    assert not any(shutil.which(cmd, path=path_without_slurm) for cmd in SLURM_COMMANDS)
    env = {k: v for k, v in os.environ.items() if k not in SITE_VARIABLES}
    env.update(PATH=path_without_slurm, HUSAI_SLURM_GPU_MODEL="b200")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "release_gate",
                          "--profile", "profiles/b200"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "This was a dry-run" in out
    assert re.search(r"rule train_condition:(?:\n .*)*\n\s+resources: .*gpu=1, cpus_per_gpu=8, gpu_model=b200", out)
    assert "Using profile profiles/b200" in out
