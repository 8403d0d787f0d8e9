"""The profiles on a real Slurm: the one-node cluster of tools/slurm (partition "ci" on 127.0.0.1, no GPU,
no slurmdbd). Skipped unless HUSAI_SLURM=1, which tools/slurm/run-test.sh (`make test-slurm`) sets after
starting the cluster.

- the tiny husai workflow goes green through the slurm executor plugin with profiles/ci-slurm, every
  computing rule as a Slurm job, and the gate target then runs on the submit host (localrules);
- asking for a GPU on this node fails at submission with Slurm's own message, from a two-line Snakefile and
  from husai's real train_condition through profiles/b200;
- profiles/rusticl and profiles/clover set the OpenCL platform's environment before the job's Python starts.

The run uses a snapshot of the working tree (Snakefile, rules, scripts, src, profiles), so edits made while
it runs cannot change the workflow between the submit host and its jobs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PARTITION = os.environ.get("HUSAI_SLURM_PARTITION_NAME", "ci")
GRES_REFUSED = "Invalid generic resource (gres) specification"
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("HUSAI_SLURM") != "1",
                       reason="needs the one-node Slurm of tools/slurm: make test-slurm"),
]


def _snapshot_tree(dst: Path) -> Path:
    """Copy the files git would see (tracked and untracked, not ignored) into dst."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = None
    if listed is None:  # not a git checkout: everything but the usual outputs
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".venv", "results", ".snakemake", ".git",
                                                                   "__pycache__"))
        return dst
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def _smk(tree: Path, workdir: Path, *args, snakefile: Path | None = None, env: dict | None = None,
         limit_s: int = 1500) -> subprocess.CompletedProcess:
    """Run snakemake on the submit host; `timeout -k` because a waiting snakemake ignores SIGTERM."""
    cmd = ["timeout", "-k", "30", str(limit_s), sys.executable, "-m", "snakemake",
           "-s", str(snakefile or tree / "Snakefile"), "--directory", str(workdir), *args]
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree / "src"),
                                                                         os.environ.get("PYTHONPATH")]))}
    # Site variables a developer may have exported must not leak into these runs.
    run_env = {k: v for k, v in run_env.items() if not k.startswith("HUSAI_SLURM_") or k == "HUSAI_SLURM"}
    run_env.update(env or {})
    res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=run_env)
    assert res.returncode not in (124, 137), f"snakemake hung past {limit_s}s:\n{_tail(res)}"
    return res


def _tail(res: subprocess.CompletedProcess, n: int = 4000) -> str:
    return (res.stdout[-n:] + "\n---stderr---\n" + res.stderr[-n:]).strip()


def _job_stats(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in output else ""
    rows = re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)
    return {m.group(1): int(m.group(2)) for m in rows if m.group(1) != "total"}


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job; the cluster keeps finished jobs visible for MinJobAge (300 s)."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("|", 1) for line in out.split())


def _probe_snakefile(path: Path, resources: str) -> Path:
    """A one-rule workflow whose job writes the environment it saw."""
    path.write_text(f"rule probe:\n    output: 'probe.env'\n    resources: {resources}\n"
                    "    shell: 'env > {output}'\n")
    return path


def _probe_env(workdir: Path) -> dict[str, str]:
    lines = (workdir / "probe.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return _snapshot_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    res = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"no Slurm controller answers (tools/slurm/start.sh): {res.stderr}"
    return dict(re.findall(r"^(\w+)\s+=\s+(.*?)\s*$", res.stdout, re.M))


@pytest.fixture(scope="module")
def tiny_run(tree, cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    template = (tree / "tests" / "data" / "tiny_config.yaml").read_text()
    (work / "config.yaml").write_text(template.replace("__POLICY__", str(tree / "config" / "policy.yaml")))
    # release_policy.json, not release_gate: the gate rule always exits 0 by design, while check_release
    # fails on an "iterate" decision, which the tiny study may well reach.
    start = time.monotonic()
    res = _smk(tree, work, "--configfile", str(work / "config.yaml"),
               "--profile", str(tree / "profiles" / "ci-slurm"), "results/release/release_policy.json")
    return work, res, time.monotonic() - start


def test_cluster_fits_the_ci_profile(cluster, tree):
    profile = yaml.safe_load((tree / "profiles" / "ci-slurm" / "config.yaml").read_text())
    assert profile["slurm-status-command"] == "squeue"
    min_job_age = int(cluster["MinJobAge"].split()[0])
    assert min_job_age >= 3 * profile["slurm-init-seconds-before-status-checks"], cluster["MinJobAge"]
    assert profile["default-resources"]["slurm_partition"] == PARTITION
    sinfo = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%G|%T"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    assert sinfo and all(line.startswith("(null)|") for line in sinfo), sinfo  # no GPUs on this node


def test_tiny_workflow_is_green_through_slurm(tiny_run):
    work, res, seconds = tiny_run
    assert res.returncode == 0, _tail(res)
    out = res.stdout + res.stderr
    report = json.loads((work / "results/release/release_policy.json").read_text())
    assert report["decision"] in ("promote", "iterate")

    submitted = SUBMITTED.findall(out)
    assert submitted, "no job went through sbatch:\n" + _tail(res)
    states = _slurm_states([job_id for job_id, _ in submitted])
    assert set(states.values()) == {"COMPLETED"}, states
    # Every computing rule of the DAG ran inside a Slurm job (alone or in a group), none on the submit host:
    # each job's Slurm log is the output of the Snakemake that ran the rule there.
    logs = {p: p.read_text() for p in (work / "results/logs/slurm").rglob("*.log")}
    ran_in_slurm = {m for text in logs.values() for m in re.findall(r"^\s*rule (\w+):", text, re.M)}
    rules_run = set(_job_stats(out))
    assert {"train_model", "extract_shard", "train_condition", "consistency", "release_policy"} <= rules_run
    assert rules_run <= ran_in_slurm, (rules_run, ran_in_slurm)
    assert not re.search(r"^localrule ", out, re.M), "a computing rule ran on the submit host"
    group_logs = [text for path, text in logs.items() if path.parent.name.startswith("group_")]
    assert any(len(re.findall(r"^\s*rule seed_metrics:", t, re.M)) > 1 for t in group_logs), "no grouped job"
    # Benchmarks are written inside the job; they prove the rule's script ran there.
    assert list((work / "results/benchmarks").rglob("train_condition.tsv"))
    print(f"tiny workflow through Slurm: {seconds:.0f} s, {len(submitted)} Slurm jobs")


def test_gate_target_runs_on_the_submit_host(tree, tiny_run):
    work, first, _ = tiny_run
    assert first.returncode == 0, _tail(first)
    res = _smk(tree, work, "--configfile", str(work / "config.yaml"),
               "--profile", str(tree / "profiles" / "ci-slurm"), "release_gate", limit_s=300)
    out = res.stdout + res.stderr
    assert not SUBMITTED.search(out), "the gate target was submitted to Slurm:\n" + _tail(res)
    assert re.search(r"^localrule check_release:", out, re.M), _tail(res)
    decision = json.loads((work / "results/release/release_policy.json").read_text())["decision"]
    assert (res.returncode == 0) == (decision == "promote"), _tail(res)


@pytest.mark.parametrize("resources", ["gres='gpu:1'", "gpu=1"])
def test_gpu_request_is_refused_with_a_clear_message(tree, cluster, tmp_path, resources):
    snakefile = _probe_snakefile(tmp_path / "Snakefile", resources)
    res = _smk(tree, tmp_path, "--profile", str(tree / "profiles" / "ci-slurm"), snakefile=snakefile,
               limit_s=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, _tail(res)
    assert "Error in rule probe" in out and "SLURM sbatch failed" in out, _tail(res)
    assert GRES_REFUSED in out, _tail(res)
    assert not (tmp_path / "probe.env").exists()


def test_b200_train_condition_asks_for_a_gpu_and_is_refused_here(tree, tiny_run, tmp_path):
    """husai's real GPU rule through the real b200 profile: the sbatch line carries the GPU request (--gpus, from
    the plugin's `gpu` resource), and a node without GPUs refuses it at once. (Status by squeue: this cluster
    has no slurmdbd for b200's sacct.)"""
    work, first, _ = tiny_run
    assert first.returncode == 0, _tail(first)
    copy = tmp_path / "b200"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("slurm"))
    target = next((copy / "results/saes").rglob("topk-*/seed0/sae_weights.safetensors")).relative_to(copy)
    res = _smk(tree, copy, "--configfile", str(copy / "config.yaml"), "--profile", str(tree / "profiles/b200"),
               "--slurm-status-command", "squeue", "--forcerun", "train_condition", str(target),
               env={"HUSAI_SLURM_PARTITION": PARTITION}, limit_s=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, _tail(res)
    assert "Error in rule train_condition" in out and GRES_REFUSED in out, _tail(res)
    call = re.search(r"sbatch call:\s*(sbatch .*)", out)
    assert call, _tail(res)
    assert "--gpus=1" in call.group(1) and "--cpus-per-gpu=8" in call.group(1), call.group(1)
    assert f"-p {PARTITION}" in call.group(1) and "--mem " in call.group(1) and " -t " in call.group(1)


@pytest.mark.parametrize("profile, submit_env, expected", [
    ("rusticl", {}, "radeonsi"),
    ("clover", {"RUSTICL_ENABLE": "swrast"}, None),  # cleared in the job even when the submit shell set it
])
def test_opencl_profiles_set_the_platform_before_python_starts(tree, cluster, tmp_path, profile, submit_env,
                                                               expected):
    snakefile = _probe_snakefile(tmp_path / "Snakefile", "mem_mb=200, runtime=2")
    res = _smk(tree, tmp_path, "--profile", str(tree / "profiles" / profile), "--slurm-status-command", "squeue",
               "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "10", snakefile=snakefile,
               env={"HUSAI_SLURM_OPENCL_PARTITION": PARTITION, **submit_env}, limit_s=300)
    assert res.returncode == 0, _tail(res)
    seen = _probe_env(tmp_path)
    assert seen.get("SLURM_JOB_ID"), seen  # it ran inside a Slurm job
    assert seen.get("RUSTICL_ENABLE") == expected, {k: v for k, v in seen.items() if "RUSTICL" in k}
