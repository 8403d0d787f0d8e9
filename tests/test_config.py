"""Bad configuration is refused before any job runs, with the key and value named."""

import copy

import pytest

from husai.config import ConfigError, check_config


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
    _assert_refused(cfg, policy, mutate, match)


def _assert_refused(cfg, policy, mutate, match):
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


REG = {"reference_seed": 0, "assignment_update_interval": 50}


@pytest.mark.parametrize("mutate,match", [
    # a regularised condition needs its unregularised sibling, the regulariser block, and a valid reference seed
    (lambda c: c["sae"]["conditions"].append({"architecture": "topk", "width": 128, "k": 8, "lam": 0.1}),
     r"sae/conditions/2/lam: .*sibling topk-w128-k8-lam0 .*not a configured condition"),
    (lambda c: c["sae"]["conditions"].append({"architecture": "topk", "width": 256, "k": 8, "lam": 0.1}),
     r"sae/conditions/2/lam: regularised conditions need the sae/regularizer block"),
    (lambda c: (c["sae"].update(regularizer={**REG, "reference_seed": 9}),
                c["sae"]["conditions"].append({"architecture": "topk", "width": 256, "k": 8, "lam": 0.1})),
     r"sae/regularizer/reference_seed: 9 is not one of sae/seeds"),
    (lambda c: (c["sae"].update(regularizer=REG),
                c["sae"]["conditions"].append({"architecture": "topk", "width": 256, "k": 8, "lam": 0.1}),
                c["release"].update(candidate="blocks.0.hook_resid_post/topk-w256-k8-lam0.1")),
     r"release/candidate .* is a regularised \(lam > 0\) condition"),
    (lambda c: (c["sae"].update(regularizer=REG),
                c["sae"]["conditions"].append({"architecture": "relu", "width": 256, "k": 8, "lam": 0.1,
                                               "calibrate": True})),
     r"its sibling relu-w256-k8-lam0 differs in more than lam"),
    (lambda c: c["sae"].pop("calibration"), r"sae/conditions/1/calibrate: calibrated conditions need the "
                                            r"sae/calibration block"),
    (lambda c: c["sae"]["conditions"][0].update(calibrate=True), r"sae/conditions/0/calibrate: 'topk' fixes its L0"),
    (lambda c: c["sae"]["conditions"].append({"architecture": "routed", "width": 256, "k": 8}),
     r"sae/conditions/2/n_experts: a routed condition needs n_experts >= 2"),
    (lambda c: c["sae"]["conditions"].append({"architecture": "matryoshka", "width": 256, "k": 8,
                                              "matryoshka_levels": [64, 32, 256]}),
     r"sae/conditions/2/matryoshka_levels: \[64, 32, 256\] must be strictly increasing"),
    (lambda c: c["sae"]["conditions"].append({"architecture": "topk", "width": 256, "k": 8, "tokens": 1000}),
     r"sae/conditions/2/tokens: tokens=1000 is not a multiple"),
    (lambda c: c["sae"].update(conditions=[]), r"sae/conditions is empty and no sweep generates a condition"),
])
def test_bad_regulariser_calibration_and_axis_config_is_named(cfg, policy, mutate, match):
    _assert_refused(cfg, policy, mutate, match)


def test_a_regularised_condition_with_its_sibling_is_valid(cfg, policy):
    good = copy.deepcopy(cfg)
    good["sae"]["regularizer"] = REG
    good["sae"]["conditions"].append({"architecture": "relu", "width": 256, "k": 8, "lam": 0.1, "calibrate": True,
                                      "l1_coefficient": 0.02})
    check_config(good, policy=policy)
    from husai.config import regularised_keys, sibling_id

    assert regularised_keys(good) == ["blocks.0.hook_resid_post/relu-w256-k8-lam0.1"]
    assert sibling_id(good["sae"]["conditions"][-1]) == "relu-w256-k8-lam0"


def test_the_embedded_default_calibrates_its_relu_condition(cfg):
    relu = [c for c in cfg["sae"]["conditions"] if c["architecture"] == "relu"]
    assert relu and all(c.get("calibrate") for c in relu)
