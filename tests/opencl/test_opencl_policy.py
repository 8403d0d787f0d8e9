"""Platform policy as data: floors vs baseline, required sizes, rusticl/Clover ratio, severity table."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from husai.opencl.policy import REQUIRED_KEYS, decide

# The example policy (the workflow's config carries the real one).
EXAMPLE_POLICY: dict[str, Any] = {
    "required_sizes": [64, 128],
    "required_kinds": [],
    "throughput_floor_fraction": 0.5,
    "max_baseline_drift": 1.0,
    "max_rel_error": 1e-3,
    "max_abft_overhead": 0.05,
    "min_abft_recall": 1.0,
    "max_abft_false_positives": 0,
    "min_rusticl_clover_ratio": 0.85,
    "severity_by_check": {
        "correctness": "SEV1",
        "abft_recall": "SEV1",
        "platform_present": "SEV2",
        "platform_usable": "SEV2",
        "required_size": "SEV2",
        "abft_false_positives": "SEV2",
        "throughput_floor": "SEV3",
        "rusticl_clover_ratio": "SEV3",
        "baseline_present": "SEV3",
        "abft_overhead": "SEV4",
        "baseline_drift": "SEV4",
    },
    "severity_order": ["SEV1", "SEV2", "SEV3", "SEV4"],
}

BASELINE = {
    "gflops": {
        "pocl": {64: 10.0, 128: 40.0},
        "rusticl": {"64": 20.0, "128": 40.0},
        "clover": {64: 20, 128: 40},
    }
}


def _size_metrics(gflops: float = 50.0, **overrides: Any) -> dict[str, Any]:
    m = {
        "gflops_avg": gflops,
        "gflops_peak": gflops * 1.2,
        "time_p95_s": 0.001,
        "max_abs_error": 1e-5,
        "max_rel_error": 1e-6,
        "abft_overhead": 0.02,
        "abft_recall": 1.0,
        "abft_false_positives": 0,
    }
    m.update(overrides)
    return m


def _platform(kind: str, sizes: dict[int, dict[str, Any]], usable: bool = True) -> dict[str, Any]:
    return {
        "kind": kind,
        "usable": usable,
        "error": None if usable else "unknown target CPU 'generic'",
        "sizes": {str(n): m for n, m in sizes.items()},
    }


def _metrics(**platforms: dict[str, Any]) -> dict[str, Any]:
    return {
        "per_platform": {f"{p['kind']}:{name}": p for name, p in platforms.items()},
        "missing_platforms": [],
    }


def _good(kind: str, gflops: float = 20.0) -> dict[str, Any]:
    return _platform(kind, {64: _size_metrics(gflops * 0.5), 128: _size_metrics(gflops)})


def _codes(decision: dict[str, Any]) -> set[str]:
    return {c["code"] for c in decision["failed_checks"]}


def _ratio_check(decision: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in decision["checks"] if c["code"] == "rusticl_clover_ratio")


def test_all_good_promotes_and_ratio_is_not_applicable_without_both() -> None:
    decision = decide(_metrics(cpu=_good("pocl")), EXAMPLE_POLICY, BASELINE)
    assert decision["decision"] == "promote" and decision["failed_checks"] == []
    assert decision["severity"] is None
    ratio = _ratio_check(decision)
    assert ratio["status"] == "not_applicable" and ratio["pass"] is None
    for check in decision["checks"]:
        assert set(check) >= {"code", "platform", "size", "value", "threshold", "pass", "reason"}


def test_rusticl_clover_ratio_passes() -> None:
    decision = decide(_metrics(r=_good("rusticl", 45.0), c=_good("clover", 50.0)), EXAMPLE_POLICY, BASELINE)
    ratio = _ratio_check(decision)
    assert ratio["status"] == "pass" and ratio["value"] == pytest.approx(0.9)
    assert decision["decision"] == "promote"


def test_rusticl_clover_ratio_fails() -> None:
    decision = decide(_metrics(r=_good("rusticl", 40.0), c=_good("clover", 50.0)), EXAMPLE_POLICY, BASELINE)
    ratio = _ratio_check(decision)
    assert ratio["status"] == "fail" and ratio["value"] == pytest.approx(0.8) and ratio["threshold"] == 0.85
    assert decision["decision"] == "iterate" and decision["severity"] == "SEV3"
    assert _codes(decision) == {"rusticl_clover_ratio"}


def test_ratio_not_applicable_when_clover_is_unusable() -> None:
    metrics = _metrics(r=_good("rusticl"), c=_platform("clover", {}, usable=False))
    ratio = _ratio_check(decide(metrics, EXAMPLE_POLICY, BASELINE))
    assert ratio["status"] == "not_applicable" and "clover" in ratio["reason"]


def test_missing_required_size_names_platform_and_size() -> None:
    metrics = _metrics(cpu=_platform("pocl", {64: _size_metrics(20.0)}))
    decision = decide(metrics, EXAMPLE_POLICY, BASELINE)
    [missing] = [c for c in decision["failed_checks"] if c["code"] == "required_size"]
    assert missing["platform"] == "pocl:cpu" and missing["size"] == 128
    assert "128" in missing["reason"] and "pocl:cpu" in missing["reason"]
    assert decision["decision"] == "iterate" and decision["severity"] == "SEV2"


def test_throughput_floor_failure() -> None:
    slow = _platform("pocl", {64: _size_metrics(20.0), 128: _size_metrics(15.0)})  # floor at 128: 40 x 0.5
    decision = decide(_metrics(cpu=slow), EXAMPLE_POLICY, BASELINE)
    [floor] = [c for c in decision["failed_checks"] if c["code"] == "throughput_floor"]
    assert floor["size"] == 128 and floor["value"] == 15.0 and floor["threshold"] == pytest.approx(20.0)
    assert decision["severity"] == "SEV3"


def test_severity_highest_wins_from_the_table() -> None:
    bad = _platform(
        "pocl", {64: _size_metrics(20.0, abft_overhead=0.5), 128: _size_metrics(40.0, max_rel_error=0.1)}
    )
    decision = decide(_metrics(cpu=bad), EXAMPLE_POLICY, BASELINE)
    assert _codes(decision) == {"abft_overhead", "correctness"}
    assert decision["severity"] == "SEV1"
    lenient = copy.deepcopy(EXAMPLE_POLICY)
    lenient["severity_by_check"]["correctness"] = "SEV4"
    assert decide(_metrics(cpu=bad), lenient, BASELINE)["severity"] == "SEV4"
    reordered = copy.deepcopy(EXAMPLE_POLICY)
    reordered["severity_order"] = ["SEV4", "SEV3", "SEV2", "SEV1"]
    assert decide(_metrics(cpu=bad), reordered, BASELINE)["severity"] == "SEV4"


def test_abft_recall_false_positives_and_drift() -> None:
    bad = _platform(
        "pocl", {64: _size_metrics(50.0, abft_recall=0.9), 128: _size_metrics(40.0, abft_false_positives=2)}
    )
    decision = decide(_metrics(cpu=bad), EXAMPLE_POLICY, BASELINE)
    assert _codes(decision) == {"abft_recall", "abft_false_positives", "baseline_drift"}
    assert decision["severity"] == "SEV1"


def test_unusable_platform_missing_baseline_and_missing_request() -> None:
    metrics = _metrics(cpu=_good("pocl"), gpu=_platform("nvidia", {}, usable=False), odd=_good("other"))
    metrics["missing_platforms"] = ["rusticl"]
    policy = copy.deepcopy(EXAMPLE_POLICY)
    policy["required_kinds"] = ["pocl", "clover"]
    decision = decide(metrics, policy, BASELINE)
    failed = {(c["code"], c["platform"]) for c in decision["failed_checks"]}
    assert ("platform_usable", "nvidia:gpu") in failed
    assert ("platform_present", "rusticl") in failed and ("platform_present", "clover") in failed
    assert ("baseline_present", "other:odd") in failed
    assert ("platform_present", "pocl") not in failed


def test_policy_keys_are_required_and_labels_checked() -> None:
    for key in REQUIRED_KEYS:
        broken = {k: v for k, v in EXAMPLE_POLICY.items() if k != key}
        with pytest.raises(ValueError, match=key):
            decide(_metrics(cpu=_good("pocl")), broken, BASELINE)
    broken = copy.deepcopy(EXAMPLE_POLICY)
    broken["severity_by_check"]["correctness"] = "SEV9"
    with pytest.raises(ValueError, match="SEV9"):
        decide(_metrics(cpu=_good("pocl")), broken, BASELINE)


def test_failed_code_without_severity_needs_a_default() -> None:
    policy = copy.deepcopy(EXAMPLE_POLICY)
    del policy["severity_by_check"]["throughput_floor"]
    slow = _platform("pocl", {64: _size_metrics(20.0), 128: _size_metrics(15.0)})
    with pytest.raises(ValueError, match="throughput_floor"):
        decide(_metrics(cpu=slow), policy, BASELINE)
    policy["default_severity"] = "SEV2"
    assert decide(_metrics(cpu=slow), policy, BASELINE)["severity"] == "SEV2"


def test_ratio_uses_sizes_both_kinds_measured() -> None:
    rusticl = _platform("rusticl", {64: _size_metrics(18.0)})
    clover = _platform("clover", {64: _size_metrics(20.0), 128: _size_metrics(40.0)})
    ratio = _ratio_check(decide(_metrics(r=rusticl, c=clover), EXAMPLE_POLICY, BASELINE))
    assert ratio["status"] == "pass" and ratio["value"] == pytest.approx(0.9) and "[64]" in ratio["reason"]
