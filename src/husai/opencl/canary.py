"""Platform canary: per (platform, size) throughput, correctness and ABFT health of the tiled GEMM.

Why: before consistency jobs run on a Clover/rusticl/NVIDIA node, the node must show that its OpenCL
stack computes a float32 GEMM correctly, fast enough, and that the ABFT guard both stays quiet on clean
runs and catches injected faults. :func:`run_canary` measures; :mod:`husai.opencl.policy` decides.

Per (platform, size), with ``n = size`` and uniform [0, 1) inputs (one sign, so relative faults are
meaningful; see :mod:`husai.opencl.abft`):

1. calibrate ABFT thresholds on ``calibration_runs`` clean products of fresh inputs;
2. for each of ``snapshots`` fresh input pairs: ``iterations`` x (unchecked run, checked run),
   interleaved so both see the same machine state; every checked C is compared with numpy;
3. inject ``faults_per_size`` single-entry faults per relative size into each snapshot's C.

Timing is the wall clock (see :mod:`husai.opencl.gemm`). GFLOP/s use the kernel time; the ABFT overhead
compares totals that include reading C back: ``median(checked) / median(unchecked) - 1``; the one-off
host prediction per input pair is reported separately (``abft_predict_s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from husai.opencl import abft
from husai.opencl.checked import CheckedGemm
from husai.opencl.gemm import TiledParams, get_engine
from husai.opencl.platforms import PlatformInfo, discover_platforms, probe_build, select_platforms

SCHEMA = "husai.opencl.canary/1"


def _inputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)


def _relative_error(C_MN: np.ndarray, ref_MN: np.ndarray) -> tuple[float, float]:
    abs_err = float(np.max(np.abs(C_MN.astype(np.float64) - ref_MN))) if C_MN.size else 0.0
    scale = float(np.max(np.abs(ref_MN))) if ref_MN.size else 0.0
    return abs_err, abs_err / scale if scale > 0 else abs_err


def _calibrate(
    engine: Any, n: int, runs: int, rng: np.random.Generator, seed: int, abft_cfg: dict[str, Any]
) -> abft.AbftCalibration:
    clean = []
    for run in range(runs):
        A_NN, B_NN = _inputs(rng, n)
        checked = CheckedGemm(
            engine.prepare(A_NN, B_NN, "tiled", params=abft_cfg["params"]),
            A_NN,
            B_NN,
            abft_cfg["n_projections"],
            seed=seed + 7919 * (run + 1),
        )
        checked.run_unchecked()
        clean.append(checked.statistics())
    return abft.calibrate_from_statistics(
        clean,
        abft_cfg["rule"],
        abft_cfg["safety_factor"],
        abft_cfg["mad_z"],
        (n, n, n),
        abft_cfg["n_projections"],
    )


def measure_size(
    info: PlatformInfo,
    n: int,
    snapshots: int,
    iterations: int,
    seed: int = 0,
    calibration_runs: int = 3,
    faults_per_size: int = 5,
    fault_sizes: Sequence[float] = (1e-2, 1.0),
    abft_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All canary metrics of one (platform, size)."""
    cfg = {"rule": "max", "safety_factor": 10.0, "mad_z": 10.0, "n_projections": 2, "params": TiledParams()}
    cfg.update(abft_options or {})
    engine = get_engine(info)
    rng = np.random.default_rng([seed, n])
    calibration = _calibrate(engine, n, calibration_runs, rng, seed, cfg)
    kernel_s, unchecked_s, checked_s, predict_s = [], [], [], []
    max_abs = max_rel = 0.0
    false_positives = clean_checks = 0
    faults = {repr(float(r)): {"injected": 0, "caught": 0, "located": 0} for r in fault_sizes}
    for snap in range(snapshots):
        A_NN, B_NN = _inputs(rng, n)
        ref_NN = (A_NN @ B_NN).astype(np.float64)  # numpy's BLAS, the tool a user would otherwise pick
        checked = CheckedGemm(
            engine.prepare(A_NN, B_NN, "tiled", params=cfg["params"]),
            A_NN,
            B_NN,
            cfg["n_projections"],
            seed=seed + snap,
        )
        predict_s.append(checked.predict_seconds)
        checked.run_unchecked()  # warm-up: first enqueue compiles the work-group function
        C_NN = None
        for _ in range(iterations):
            _, k_s, total_s = checked.run_unchecked()
            kernel_s.append(k_s)
            unchecked_s.append(total_s)
            C_NN, result, k_s, total_s = checked.run_checked(calibration)
            kernel_s.append(k_s)
            checked_s.append(total_s)
            clean_checks += 1
            false_positives += not result.passed
            a, r = _relative_error(C_NN, ref_NN)
            max_abs, max_rel = max(max_abs, a), max(max_rel, r)
        if C_NN is not None and faults_per_size > 0:
            got = checked.measure_recall(
                C_NN, calibration, tuple(fault_sizes), faults_per_size, seed=seed + snap
            )
            for key, counts in got.items():
                for field in ("injected", "caught", "located"):
                    faults[key][field] += counts[field]
    return _summarise(
        n,
        kernel_s,
        unchecked_s,
        checked_s,
        predict_s,
        max_abs,
        max_rel,
        false_positives,
        clean_checks,
        faults,
        calibration,
    )


def _summarise(
    n: int,
    kernel_s: list[float],
    unchecked_s: list[float],
    checked_s: list[float],
    predict_s: list[float],
    max_abs: float,
    max_rel: float,
    false_positives: int,
    clean_checks: int,
    faults: dict[str, dict[str, int]],
    calibration: abft.AbftCalibration,
) -> dict[str, Any]:
    flops = 2.0 * n**3
    gflops = [flops / s / 1e9 for s in kernel_s if s > 0]
    med_unchecked = float(np.median(unchecked_s)) if unchecked_s else float("nan")
    med_checked = float(np.median(checked_s)) if checked_s else float("nan")
    med_predict = float(np.median(predict_s)) if predict_s else float("nan")
    for counts in faults.values():
        counts["recall"] = counts["caught"] / counts["injected"] if counts["injected"] else None
    recalls = [c["recall"] for c in faults.values() if c["recall"] is not None]
    injected = sum(c["injected"] for c in faults.values())
    return {
        "n": n,
        "runs": len(kernel_s),
        "gflops_avg": float(np.mean(gflops)) if gflops else None,
        "gflops_peak": float(np.max(gflops)) if gflops else None,
        "time_p95_s": float(np.percentile(kernel_s, 95)) if kernel_s else None,
        "time_median_s": float(np.median(kernel_s)) if kernel_s else None,
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
        "abft_overhead": med_checked / med_unchecked - 1.0,
        "abft_overhead_with_predict": (med_checked + med_predict) / med_unchecked - 1.0,
        "abft_predict_s": med_predict,
        "abft_recall": min(recalls) if recalls else None,
        "abft_located": sum(c["located"] for c in faults.values()) / injected if injected else None,
        "abft_faults": faults,
        "abft_false_positives": false_positives,
        "abft_clean_checks": clean_checks,
        "abft_calibration": calibration.to_dict(),
    }


def run_canary(
    sizes: Sequence[int],
    snapshots: int,
    iterations: int,
    platforms: Sequence[str] | None = None,
    seed: int = 0,
    calibration_runs: int = 3,
    faults_per_size: int = 5,
    fault_sizes: Sequence[float] = (1e-2, 1.0),
    abft_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure every discovered platform (or those matching ``platforms``, by name or kind).

    Returns a JSON-able dict with ``per_platform[<key>]`` holding the platform description, ``usable``
    (``False`` with ``error`` when it cannot build kernels) and ``sizes[str(n)]`` metrics.
    """
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 1 or snapshots < 1 or iterations < 1:
        raise ValueError(
            f"canary needs sizes >= 1, snapshots >= 1, iterations >= 1; got sizes={sizes}, "
            f"snapshots={snapshots}, iterations={iterations}"
        )
    found = discover_platforms()
    chosen = found if platforms is None else _chosen(platforms, found)
    missing = [name for name in platforms or () if not select_platforms(name, found)]
    per_platform: dict[str, Any] = {}
    for info in chosen:
        error = probe_build(info)
        entry: dict[str, Any] = {
            "platform": info.to_dict(),
            "kind": info.kind,
            "usable": error is None,
            "error": error,
            "sizes": {},
        }
        if error is None:
            for n in sizes:
                entry["sizes"][str(n)] = measure_size(
                    info,
                    n,
                    snapshots,
                    iterations,
                    seed,
                    calibration_runs,
                    faults_per_size,
                    fault_sizes,
                    abft_options,
                )
        per_platform[info.key] = entry
    return {
        "schema": SCHEMA,
        "sizes": sizes,
        "snapshots": snapshots,
        "iterations": iterations,
        "seed": seed,
        "requested_platforms": list(platforms) if platforms is not None else None,
        "missing_platforms": missing,
        "platforms_found": [info.to_dict() for info in found],
        "per_platform": per_platform,
    }


def _chosen(wanted: Sequence[str], found: list[PlatformInfo]) -> list[PlatformInfo]:
    chosen: list[PlatformInfo] = []
    for name in wanted:
        for info in select_platforms(name, found):
            if info not in chosen:
                chosen.append(info)
    return chosen
