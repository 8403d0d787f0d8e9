"""envs/*.yaml pin exactly what pyproject.toml pins, and every rule names an env that exists."""

import re
import tomllib

import yaml


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_env_pins_agree_with_pyproject(repo):
    project = _pins(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"])
    envs = sorted((repo / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        pins = _pins(pip)
        assert pins, env
        for name, version in pins.items():
            assert project.get(name) == version, f"{env.name}: {name}=={version}, pyproject has {project.get(name)}"


def test_every_rule_has_log_benchmark_conda_resources_and_existing_env(repo):
    for smk in sorted((repo / "rules").glob("*.smk")):
        text = smk.read_text()
        for rule in re.split(r"\n(?=rule )", text)[1:]:
            name = rule.split(":")[0].split()[1]
            for directive in ("log:", "benchmark:", "conda:", "resources:", "script:"):
                assert directive in rule, f"{smk.name}: rule {name} lacks {directive}"
            env = re.search(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', rule).group(1)
            assert (repo / env).exists(), f"{smk.name}: rule {name} names missing {env}"


def test_envs_do_not_install_the_repo_by_relative_path(repo):
    """Snakemake copies env files into .snakemake/conda/, so a relative `-e ../` would point at the wrong place;
    the workflow scripts put src/ on sys.path instead."""
    for env in sorted((repo / "envs").glob("*.yaml")):
        assert "-e ." not in env.read_text(), env.name
    for script in sorted((repo / "workflow" / "scripts").glob("*.py")):
        assert "sys.path.insert(0" in script.read_text(), script.name


def test_saebench_post_deploy_matches_requirements(repo):
    req = _pins((repo / "requirements" / "saebench.txt").read_text().splitlines())
    post = _pins(line.strip().rstrip("\\") for line in (repo / "envs" / "saebench.post-deploy.sh").read_text()
                 .splitlines())
    assert req and req == post
