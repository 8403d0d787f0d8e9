"""Canary smoke run at small sizes, its JSON-able output, and the pinned baseline file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from husai.opencl import decide, run_canary
from husai.opencl.platforms import discover_platforms, probe_build

BASELINE_FILE = Path(__file__).resolve().parents[2] / "config" / "platform_baseline.yaml"
SMALL_SIZES = [64, 128, 200]

POLICY = {
    "required_sizes": SMALL_SIZES,
    "required_kinds": ["pocl"],
    "throughput_floor_fraction": 0.0,  # small sizes on a shared CPU: throughput is not under test here
    "max_baseline_drift": 1e9,
    "max_rel_error": 1e-3,
    "max_abft_overhead": 1e9,
    "min_abft_recall": 1.0,
    "max_abft_false_positives": 0,
    "min_rusticl_clover_ratio": 0.85,
    "severity_by_check": {"correctness": "SEV1", "abft_recall": "SEV1", "platform_usable": "SEV2"},
    "severity_order": ["SEV1", "SEV2", "SEV3", "SEV4"],
    "default_severity": "SEV3",
}


@pytest.fixture(scope="module")
def pocl_metrics() -> dict:
    pocl = [info for info in discover_platforms() if info.kind == "pocl"]
    if not pocl:
        pytest.skip("no PoCL platform found")
    if all(probe_build(info) is not None for info in pocl):
        pytest.skip(f"PoCL cannot build kernels here: {[probe_build(info) for info in pocl]}")
    return run_canary(SMALL_SIZES, snapshots=2, iterations=2, platforms=["pocl"], seed=0)


def test_canary_smoke_on_pocl(pocl_metrics: dict) -> None:
    json.dumps(pocl_metrics, allow_nan=False)
    assert pocl_metrics["schema"] == "husai.opencl.canary/1" and pocl_metrics["sizes"] == SMALL_SIZES
    usable = {k: e for k, e in pocl_metrics["per_platform"].items() if e["usable"]}
    assert usable and all(e["kind"] == "pocl" for e in pocl_metrics["per_platform"].values())
    for entry in usable.values():
        assert sorted(entry["sizes"]) == sorted(str(n) for n in SMALL_SIZES)
        for m in entry["sizes"].values():
            assert m["runs"] == 2 * 2 * 2  # snapshots x iterations x (unchecked, checked)
            assert m["gflops_peak"] >= m["gflops_avg"] > 0 and m["time_p95_s"] > 0
            assert m["max_rel_error"] <= 1e-3
            assert m["abft_recall"] == 1.0 and m["abft_located"] == 1.0
            assert m["abft_false_positives"] == 0 and m["abft_clean_checks"] == 4
            assert set(m["abft_faults"]) == {"0.01", "1.0"}
            assert m["abft_calibration"]["n_runs"] == 3 and m["abft_calibration"]["thresholds"]
            assert m["abft_overhead"] > -1.0


def test_canary_feeds_the_policy(pocl_metrics: dict) -> None:
    baseline = yaml.safe_load(BASELINE_FILE.read_text())
    decision = decide(pocl_metrics, POLICY, baseline)
    usable_keys = [k for k, e in pocl_metrics["per_platform"].items() if e["usable"]]
    correctness = [c for c in decision["checks"] if c["code"] == "correctness"]
    assert {c["platform"] for c in correctness} == set(usable_keys)
    assert all(c["pass"] for c in correctness)
    assert not [c for c in decision["failed_checks"] if c["code"] in ("abft_recall", "required_size")]


def test_canary_records_missing_platform_and_rejects_bad_arguments() -> None:
    metrics = run_canary([8], snapshots=1, iterations=1, platforms=["no-such-platform"])
    assert metrics["missing_platforms"] == ["no-such-platform"] and metrics["per_platform"] == {}
    decision = decide(metrics, {**POLICY, "required_kinds": []}, {"gflops": {}})
    assert [c["code"] for c in decision["failed_checks"]] == ["platform_present"]
    with pytest.raises(ValueError, match="snapshots"):
        run_canary([64], snapshots=0, iterations=1)
    with pytest.raises(ValueError, match="sizes"):
        run_canary([], snapshots=1, iterations=1)


def test_pinned_baseline_file() -> None:
    baseline = yaml.safe_load(BASELINE_FILE.read_text())
    assert baseline["measured_on"] and str(baseline["date"]) == "2026-11-24" and baseline["method"]
    pocl = baseline["gflops"]["pocl"]
    for size in (1400, 2048, 3072):
        assert float(pocl[size]) > 0
