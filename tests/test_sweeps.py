"""Sweeps: config grids become ordinary conditions (ids, automatic calibration, token budgets), duplicates merge
when identical and are refused when they differ, expansion is idempotent, and bad grid points are named."""

import copy

import pytest

from husai.config import ConfigError, all_conditions, check_config, condition_id, expand_sweeps, load_config
from husai.sweeps import expand


def _ids(config):
    return [condition_id(c) for c in all_conditions(config)]


def test_condition_ids_keep_their_form_and_gain_a_token_suffix():
    assert condition_id({"architecture": "topk", "width": 256, "k": 8, "lam": 0}) == "topk-w256-k8-lam0"
    assert condition_id({"architecture": "relu", "width": 256, "k": 8, "calibrate": True}) == "relu-w256-k8-lam0"
    assert condition_id({"architecture": "routed", "width": 64, "k": 4, "lam": 0.5, "n_experts": 4,
                         "tokens": 6400}) == "routed-w64-k4-lam0.5-e4-t6400"


def test_every_grid_kind_expands_in_a_fixed_order(cfg, policy):
    cfg["sweeps"] = {
        "frontier": {"architectures": ["topk", "relu", "jumprelu"], "widths": [128, 256], "k": [8],
                     "architecture_keys": {"jumprelu": {"jumprelu_bandwidth": 0.1},
                                           "relu": {"l1_coefficient": 0.02}}},  # as the explicit relu: merged
        "matryoshka": {"widths": [256], "k": [8], "levels": [[32, 128], [64, 256]]},
        "routed": {"widths": [256], "k": [8], "n_experts": [2, 4]},
        "scaling": {"architectures": ["topk"], "widths": [256], "k": [8], "tokens": [256 * 100, 256 * 400]},
    }
    check_config(cfg, policy=policy)
    ids = _ids(cfg)
    assert ids == ["topk-w256-k8-lam0", "relu-w256-k8-lam0",  # explicit first; frontier's copies merge into them
                   "topk-w128-k8-lam0", "relu-w128-k8-lam0", "jumprelu-w128-k8-lam0", "jumprelu-w256-k8-lam0",
                   "matryoshka-w256-k8-lam0-m32_128_256", "matryoshka-w256-k8-lam0-m64_256",
                   "routed-w256-k8-lam0-e2", "routed-w256-k8-lam0-e4",
                   "topk-w256-k8-lam0-t25600", "topk-w256-k8-lam0-t102400"]
    specs = {condition_id(c): c for c in all_conditions(cfg)}
    assert specs["relu-w128-k8-lam0"]["calibrate"] and specs["jumprelu-w256-k8-lam0"]["calibrate"]
    assert "calibrate" not in specs["topk-w128-k8-lam0"]
    assert specs["jumprelu-w128-k8-lam0"]["jumprelu_bandwidth"] == 0.1
    # idempotent: expanding the expanded config changes nothing, and the raw config is untouched by checking
    assert len(cfg["sae"]["conditions"]) == 2
    once = expand_sweeps(copy.deepcopy(cfg))
    assert _ids(expand_sweeps(copy.deepcopy(once))) == ids == [condition_id(c) for c in once["sae"]["conditions"]]
    check_config(once, policy=policy)


def test_a_sweep_point_differing_from_an_explicit_condition_is_refused(cfg, policy):
    # the embedded relu condition keeps a fallback l1_coefficient; the frontier's relu point has none
    cfg["sweeps"] = {"frontier": {"architectures": ["relu"], "widths": [256], "k": [8]}}
    with pytest.raises(ConfigError, match=r"sweeps/frontier generates condition relu-w256-k8-lam0 .* sae/conditions/1"):
        check_config(cfg, policy=policy)


def test_explicit_duplicates_stay_an_error(cfg, policy):
    cfg["sae"]["conditions"].append(dict(cfg["sae"]["conditions"][0]))
    with pytest.raises(ConfigError, match=r"sae/conditions/2: duplicate condition topk-w256-k8-lam0"):
        check_config(cfg, policy=policy)


@pytest.mark.parametrize("sweeps,match", [
    ({"routed": {"widths": [256], "k": [8], "n_experts": [3]}}, r"sweeps/routed \(routed-w256-k8-lam0-e3\)/n_experts"),
    ({"routed": {"widths": [256], "k": [100], "n_experts": [4]}}, r"k <= width / n_experts"),
    ({"matryoshka": {"widths": [64], "k": [8], "levels": [[128]]}}, r"level 128 exceeds the width 64"),
    ({"scaling": {"architectures": ["topk"], "widths": [256], "k": [8], "tokens": [1000]}},
     r"tokens=1000 is not a multiple of sae/training/batch_size=256"),
    ({"frontier": {"architectures": ["topk"], "widths": [128], "k": [8], "keys": {"calibrate": True}}},
     r"'topk' fixes its L0 with k"),
    ({"frontier": {"architectures": ["topk"], "widths": [128], "k": [8], "keys": {"bogus": 1}}},
     r"generated condition .* is invalid: .*'bogus'"),
    ({"frontier": {"architectures": ["gated"], "widths": [256], "k": [8]}}, r"sweeps/frontier/architectures/0"),
])
def test_bad_grid_points_are_named(cfg, policy, sweeps, match):
    cfg["sweeps"] = sweeps
    with pytest.raises(ConfigError, match=match):
        check_config(cfg, policy=policy)


def test_regularised_sweep_points_need_their_sibling(cfg, policy):
    cfg["sae"]["regularizer"] = {"reference_seed": 0, "assignment_update_interval": 50}
    cfg["sweeps"] = {"frontier": {"architectures": ["topk"], "widths": [128], "k": [8], "lam": [0.1]}}
    with pytest.raises(ConfigError, match=r"topk-w128-k8-lam0.1.*sibling topk-w128-k8-lam0"):
        check_config(cfg, policy=policy)
    cfg["sweeps"]["frontier"]["lam"] = [0, 0.1]
    check_config(cfg, policy=policy)
    assert [o for _, o in expand(cfg)][-2:] == ["sweeps/frontier", "sweeps/frontier"]


def test_the_all_architectures_test_config_generates_its_conditions(repo, tmp_path):
    text = (repo / "tests/data/all_architectures_config.yaml").read_text()
    (tmp_path / "c.yaml").write_text(text.replace("__POLICY__", str(repo / "config/policy.yaml")))
    config = load_config(tmp_path / "c.yaml")
    ids = [condition_id(c) for c in config["sae"]["conditions"]]
    assert {c["architecture"] for c in config["sae"]["conditions"]} == {
        "topk", "relu", "batchtopk", "jumprelu", "matryoshka", "routed"}
    assert {"topk-w48-k4-lam0.5", "matryoshka-w48-k4-lam0-m12_24_48", "routed-w48-k4-lam0-e4",
            "topk-w48-k4-lam0-t4800"} <= set(ids)
    assert len(ids) == len(set(ids))
