"""Bad configuration is refused before any job runs, with the key and value named."""

import copy

import pytest

from husai.config import ConfigError, check_config, load_yaml


@pytest.fixture
def cfg(repo):
    return load_yaml(repo / "config" / "config.yaml")


@pytest.fixture
def policy(repo):
    return load_yaml(repo / "config" / "policy.yaml")


def test_default_config_and_policy_are_valid(cfg, policy):
    check_config(cfg, policy=policy)


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c["sae"].update(bogus_key=1), "'bogus_key' was unexpected"),
    (lambda c: c["sae"]["conditions"][0].update(architecture="gatedx"), "sae/conditions/0/architecture"),
    (lambda c: c["sae"]["conditions"][0].update(k=999), "k=999 exceeds the SAE width d_sae=256"),
    (lambda c: c["sae"]["conditions"][0].update(lam=-1), "sae/conditions/0/lam"),
    (lambda c: c["activations"].update(hooks=["blocks.7.hook_resid_post"]), "activations/hooks/0"),
    (lambda c: c["sae"].update(seeds=[0, 1]), "needs at least min_seeds=3"),
    (lambda c: c["release"].update(candidate="topk-w1-k1-lam0"), "release/candidate"),
    (lambda c: c["model"].update(kind="gpt9"), "model/kind"),
])
def test_bad_config_is_named(cfg, policy, mutate, match):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(ConfigError, match=match):
        check_config(bad, policy=policy)


def test_policy_schema_rejects_unknown_gate_and_bad_severity(cfg, policy):
    bad = copy.deepcopy(policy)
    bad["gates"]["vibes"] = {"required": True}
    with pytest.raises(ConfigError, match="vibes"):
        check_config(cfg, policy=bad)
    bad = copy.deepcopy(policy)
    bad["severity"]["data_qc"] = "SEV9"
    with pytest.raises(ConfigError, match="severity/data_qc"):
        check_config(cfg, policy=bad)
