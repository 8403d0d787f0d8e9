"""Matched baselines: hook, width and L0 (within tolerance) must all match; a missing baseline gives a missing delta
(None with a reason), never a zero."""

import pytest

from husai.external.baselines import match_baseline, matched_deltas, metric_delta, parse_baseline_map
from husai.io import write_json

HOOK = "blocks.1.hook_resid_pre"


def summ(value, l0=32.0, seed=0, hook=HOOK, width=4096, metric="ce_loss_score", hib=True, eval_name="saebench_core"):
    return {"eval": eval_name, "seed": seed, "hook": hook, "width": width, "l0": l0,
            "metrics": {metric: value}, "higher_is_better": {metric: hib}}


def bmap(tol=0.1, **summaries):
    return {"l0_tolerance": tol, "entries": [
        {"id": "ref-k32", "hook": HOOK, "width": 4096, "l0": 32, "source": "ckpt/ref-k32", "summaries": summaries},
        {"id": "ref-k64", "hook": HOOK, "width": 4096, "l0": 64},
        {"id": "ref-w8192", "hook": HOOK, "width": 8192, "l0": 32},
        {"id": "ref-l0", "hook": "blocks.0.hook_resid_pre", "width": 4096, "l0": 32},
    ]}


@pytest.mark.parametrize("raw, match", [
    ({"entries": [{"id": "a", "hook": "h", "width": 8}]}, r"entries\[0\]: missing key\(s\) \['l0'\]"),
    ({"entries": [{"id": "a", "hook": "h", "width": 8, "l0": 4, "colour": 1}]}, r"unknown key\(s\) \['colour'\]"),
    ({"entries": [{"id": "a", "hook": "h", "width": 8, "l0": 4}] * 2}, "duplicate baseline id 'a'"),
    ({"entries": [{"id": "a", "hook": "h", "width": 0, "l0": 4}]}, r"entries\[0\].width"),
    ({"entries": [{"id": "a", "hook": "h", "width": 8, "l0": -1}]}, r"entries\[0\].l0"),
    ({"l0_tolerance": 1.5, "entries": []}, "l0_tolerance"),
    ([1, 2], "expected a mapping"),
])
def test_bad_map_is_named(raw, match):
    with pytest.raises(ValueError, match=match):
        parse_baseline_map(raw)


def test_match_needs_hook_width_and_l0():
    m = parse_baseline_map(bmap())
    assert match_baseline(m, hook=HOOK, width=4096, l0=33.0)["baseline"].id == "ref-k32"
    assert match_baseline(m, hook=HOOK, width=4096, l0=60.0)["baseline"].id == "ref-k64"
    assert match_baseline(m, hook=HOOK, width=8192, l0=32.0)["baseline"].id == "ref-w8192"
    far = match_baseline(m, hook=HOOK, width=4096, l0=45.0)  # 29% from 32, 42% from 64
    assert far["baseline"] is None and "ref-k32" in far["reason"] and "tolerance 10%" in far["reason"]
    assert "no baseline in the map for hook=blocks.5" in match_baseline(m, hook="blocks.5.x", width=4096,
                                                                        l0=32)["reason"]
    assert "width=2048" in match_baseline(m, hook=HOOK, width=2048, l0=32)["reason"]
    assert match_baseline(m, hook=HOOK, width=4096, l0=None)["baseline"] is None
    assert match_baseline(parse_baseline_map(None), hook=HOOK, width=4096, l0=32)["baseline"] is None


def test_delta_is_named_signed_and_per_seed(tmp_path):
    path = tmp_path / "ref.json"
    write_json(path, summ(0.80, l0=31.0))
    cand = [summ(0.85, l0=32.5, seed=s) for s in range(3)]
    cand[1]["metrics"]["ce_loss_score"] = 0.79
    out = matched_deltas("saebench_core", cand, bmap(saebench_core=str(path)), {"ce_loss_score": None})
    d = out["deltas"]["ce_loss_score"]
    assert out["baseline"]["id"] == d["baseline_id"] == "ref-k32" and out["reason"] is None
    assert d["delta_per_seed"] == pytest.approx([0.05, -0.01, 0.05]) and d["baseline_value"] == 0.80
    # lower is better: improvement = baseline - candidate
    low = metric_delta([summ(0.2, metric="mse")], [summ(0.3, metric="mse")], "mse", False, "ref")
    assert low["delta_per_seed"] == pytest.approx([0.1])


def test_missing_baseline_means_missing_delta_never_zero(tmp_path):
    cand = [summ(0.85, l0=45.0, seed=s) for s in range(3)]
    out = matched_deltas("saebench_core", cand, bmap(), {"ce_loss_score": True})
    d = out["deltas"]["ce_loss_score"]
    assert out["baseline"] is None and d["delta_per_seed"] is None and d["delta_mean"] is None
    assert "tolerance" in d["reason"]
    # matched entry but it has no summary for this eval / the file is absent
    out = matched_deltas("saebench_core", [summ(0.9)], bmap(), {"ce_loss_score": True})
    assert out["deltas"]["ce_loss_score"]["delta_per_seed"] is None and "no saebench_core summary" in out["reason"]
    out = matched_deltas("saebench_core", [summ(0.9)], bmap(saebench_core=str(tmp_path / "nope.json")),
                         {"ce_loss_score": True})
    assert "does not exist" in out["reason"]


def test_metric_missing_or_nan_or_directionless_gives_reason():
    base = [summ(0.8)]
    assert "missing or non-finite in 1 of 2" in metric_delta([summ(0.9), summ(float("nan"))], base, "ce_loss_score",
                                                             True, "ref")["reason"]
    assert "missing from baseline" in metric_delta([summ(0.9)], [summ(None)], "ce_loss_score", True, "ref")["reason"]
    assert "no higher-is-better" in metric_delta([summ(3.0)], base, "ce_loss_score", None, "ref")["reason"]


def test_baseline_measured_l0_must_also_match():
    cand = [summ(0.9, l0=32.0)]
    out = matched_deltas("saebench_core", cand, bmap(saebench_core=summ(0.8, l0=50.0)), {"ce_loss_score": True})
    assert out["deltas"]["ce_loss_score"]["delta_per_seed"] is None and "measured L0=50" in out["reason"]


def test_candidate_must_be_one_hook_and_width():
    with pytest.raises(ValueError, match="mix hooks"):
        matched_deltas("saebench_core", [summ(0.9), summ(0.9, width=8192)], bmap(), {"ce_loss_score": True})
