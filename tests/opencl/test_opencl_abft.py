"""ABFT: calibrated thresholds, recall on injected faults, no false alarms on clean runs."""

from __future__ import annotations

import numpy as np
import pytest

from husai.opencl import abft
from husai.opencl.checked import CheckedGemm
from husai.opencl.gemm import get_engine
from husai.opencl.platforms import PlatformInfo

FAULT_SIZES = (1e-2, 1.0)


def _numpy_gemm(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return A @ B


def _uniform(seed: int, M: int, K: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((M, K), dtype=np.float32), rng.random((K, N), dtype=np.float32)


def test_threshold_is_calibrated_and_recorded() -> None:
    cal = abft.calibrate(_numpy_gemm, 48, 40, 56, n_runs=4, seed=1)
    data = cal.to_dict()
    assert data["rule"] == "max" and data["n_runs"] == 4 and data["shape"] == [48, 40, 56]
    for family in abft.FAMILIES:
        maxima = cal.clean_max[family]
        assert len(maxima) == 4 and all(m >= 0 for m in maxima)
        assert cal.thresholds[family] == pytest.approx(max(maxima) * cal.safety_factor)
    mad = abft.calibrate(_numpy_gemm, 48, 40, 56, n_runs=6, seed=1, rule="mad")
    assert all(mad.thresholds[f] >= max(mad.clean_max[f]) for f in abft.FAMILIES)
    other = abft.calibrate(_numpy_gemm, 300, 40, 20, n_runs=4, seed=1)
    assert other.thresholds != cal.thresholds  # depends on the clean runs, not a constant


def test_host_abft_recall_and_false_positives() -> None:
    M, K, N = 96, 80, 112
    cal = abft.calibrate(_numpy_gemm, M, K, N, n_runs=5, seed=0)
    false_positives = 0
    for run in range(20):
        A, B = _uniform(100 + run, M, K, N)
        prediction = abft.predict(A, B, abft.make_probes(M, N, 2, seed=run))
        C = A @ B
        false_positives += not abft.verify(A, B, C, cal, prediction=prediction).passed
        if run < 2:
            recall = abft.measure_recall(prediction, C, cal, FAULT_SIZES, n_faults=10, seed=run)
            assert recall["recall"] == 1.0
            assert all(v["located"] == v["injected"] for v in recall["per_size"].values())
    assert false_positives == 0


def test_verify_locates_row_and_column() -> None:
    A, B = _uniform(7, 64, 50, 70)
    cal = abft.calibrate(_numpy_gemm, 64, 50, 70, n_runs=3, seed=2)
    result = abft.verify(A, B, abft.inject_fault(A @ B, 12, 34, 1e-2), cal)
    assert not result.passed and result.ratio > 1.0
    assert result.fault_rows[0] == 12 and result.fault_cols[0] == 34
    assert set(result.to_dict()) >= {"passed", "max_statistic", "threshold", "fault_rows", "fault_cols"}


def test_nan_in_c_is_a_fault() -> None:
    A, B = _uniform(8, 32, 32, 32)
    cal = abft.calibrate(_numpy_gemm, 32, 32, 32, n_runs=2)
    C = A @ B
    C[3, 4] = np.nan
    result = abft.verify(A, B, C, cal)
    assert not result.passed and 3 in result.fault_rows and 4 in result.fault_cols


def test_inject_fault_is_relative_to_the_entry() -> None:
    C = np.array([[2.0, 0.0], [4.0, -8.0]], dtype=np.float32)
    assert abft.inject_fault(C, 1, 1, 0.5)[1, 1] == pytest.approx(-4.0)
    assert abft.inject_fault(C, 0, 0, 1.0)[0, 0] == pytest.approx(4.0)
    zero_hit = abft.inject_fault(C, 0, 1, 1.0)[0, 1]
    assert zero_hit == pytest.approx(np.sqrt(np.mean(C.astype(np.float64) ** 2)))
    assert C[0, 0] == 2.0  # the input is not modified


def test_device_abft_recall_and_no_false_positives(platform: PlatformInfo) -> None:
    engine = get_engine(platform)
    M, K, N = 100, 72, 90
    clean_stats = []
    for run in range(4):
        A, B = _uniform(run, M, K, N)
        checked = CheckedGemm(engine.prepare(A, B), A, B, seed=run)
        checked.run_unchecked()
        clean_stats.append(checked.statistics())
    cal = abft.calibrate_from_statistics(clean_stats, shape=(M, K, N))
    false_positives = 0
    for run in range(20):
        A, B = _uniform(1000 + run, M, K, N)
        checked = CheckedGemm(engine.prepare(A, B), A, B, seed=run)
        C, result, _, _ = checked.run_checked(cal)
        false_positives += not result.passed
        if run < 2:
            counts = checked.measure_recall(C, cal, FAULT_SIZES, n_faults=10, seed=run)
            for size, c in counts.items():
                assert c["caught"] == c["injected"] == 10, size
                assert c["located"] == 10, size
            # the device buffer was restored after each injected fault
            assert checked.run_checked(cal)[1].passed
    assert false_positives == 0


def test_device_and_host_observations_agree(platform: PlatformInfo) -> None:
    engine = get_engine(platform)
    A, B = _uniform(5, 77, 31, 45)
    checked = CheckedGemm(engine.prepare(A, B), A, B, seed=5)
    C, _, _ = checked.run_unchecked()
    if not checked.on_device:
        pytest.skip(f"{platform.key} has no cl_khr_fp64: observations are taken on the host")
    host, device = abft.observe(C, checked.probes), checked.observe()
    for field in ("col_N", "row_M", "proj_P"):
        np.testing.assert_allclose(getattr(device, field), getattr(host, field), rtol=1e-12, atol=1e-9)
