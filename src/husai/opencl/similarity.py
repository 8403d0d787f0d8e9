"""|cosine| similarity between two SAEs' decoder rows on OpenCL, guarded by ABFT.

Why: the consistency metrics need ``|cos|`` between every feature of SAE A and every feature of SAE B,
a ``[d_sae_A, d_in] x [d_in, d_sae_B]`` GEMM. Running it through the ABFT-checked OpenCL GEMM lets those
jobs use Clover/rusticl nodes without trusting their stacks blindly.

Rows are normalised in float64 on the host (a zero row stays zero, giving similarity 0 instead of NaN),
cast to float32, multiplied by the ``tiled`` kernel, and checked. Unless a calibration is passed in,
thresholds are calibrated on ``calibration_runs`` clean products of random unit rows of the same shapes
on the same platform (the statistic is normalised by ``|A||B|``, so it transfers across inputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from husai.opencl import abft
from husai.opencl.checked import CheckedGemm
from husai.opencl.gemm import get_engine, resolve_platform
from husai.opencl.platforms import PlatformInfo


class AbftFaultError(RuntimeError):
    """The ABFT check of a similarity product failed; ``report`` holds the details."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _unit_rows(W_FD: np.ndarray) -> np.ndarray:
    W64 = np.asarray(W_FD, dtype=np.float64)
    norms = np.linalg.norm(W64, axis=1, keepdims=True)
    return (W64 / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _random_unit_rows(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return _unit_rows(rng.standard_normal(shape))


def calibrate_similarity(
    info: PlatformInfo,
    d_a: int,
    d_b: int,
    d_in: int,
    runs: int = 3,
    seed: int = 0,
    safety_factor: float = 10.0,
) -> abft.AbftCalibration:
    """ABFT thresholds for ``[d_a, d_in] x [d_in, d_b]`` unit-row products on ``info``."""
    engine = get_engine(info)
    rng = np.random.default_rng([seed, d_a, d_b, d_in])
    clean = []
    for run in range(runs):
        A_FD, B_GD = _random_unit_rows(rng, (d_a, d_in)), _random_unit_rows(rng, (d_b, d_in))
        B_DG = np.ascontiguousarray(B_GD.T)
        checked = CheckedGemm(engine.prepare(A_FD, B_DG, "tiled"), A_FD, B_DG, seed=seed + 101 * (run + 1))
        checked.run_unchecked()
        clean.append(checked.statistics())
    return abft.calibrate_from_statistics(clean, "max", safety_factor, shape=(d_a, d_in, d_b))


def abs_cosine_similarity_opencl(
    W_dec_A_FD: np.ndarray,
    W_dec_B_FD: np.ndarray,
    platform: PlatformInfo | str | None = None,
    calibration: abft.AbftCalibration | None = None,
    calibration_runs: int = 3,
    seed: int = 0,
    strict: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(|A_n @ B_n^T|`` as float32 ``[d_sae_A, d_sae_B]``, ABFT report``)``.

    Raises ``ValueError`` naming the shapes when an input is not 2-D or ``d_in`` differs, and
    :class:`AbftFaultError` when ``strict`` and the ABFT check fails.
    """
    A = np.asarray(W_dec_A_FD)
    B = np.asarray(W_dec_B_FD)
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(
            f"decoder matrices must be 2-D [d_sae, d_in]; got W_dec_A{A.shape} and W_dec_B{B.shape}"
        )
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"decoder d_in differs: W_dec_A{A.shape} has d_in={A.shape[1]}, "
            f"W_dec_B{B.shape} has d_in={B.shape[1]}"
        )
    if min(A.shape + B.shape) == 0:
        raise ValueError(f"decoder matrices must be non-empty; got W_dec_A{A.shape} and W_dec_B{B.shape}")
    info = resolve_platform(platform)
    A_n_FD = _unit_rows(A)
    B_n_DG = np.ascontiguousarray(_unit_rows(B).T)
    if calibration is None:
        calibration = calibrate_similarity(info, A.shape[0], B.shape[0], A.shape[1], calibration_runs, seed)
    prepared = get_engine(info).prepare(A_n_FD, B_n_DG, "tiled")
    checked = CheckedGemm(prepared, A_n_FD, B_n_DG, seed=seed, eager=False)  # predict while it runs
    C_FG, result, kernel_s, total_s = checked.run_checked(calibration)
    report = {
        "platform": info.to_dict(),
        "abft": result.to_dict(),
        "calibration": calibration.to_dict(),
        "kernel_seconds": kernel_s,
        "checked_seconds": total_s,
        "predict_seconds": checked.predict_seconds,
        "observed_on_device": checked.on_device,
    }
    if strict and not result.passed:
        raise AbftFaultError(
            f"ABFT check failed for the similarity GEMM on {info.key}: ratio {result.ratio:.3g}, "
            f"rows {result.fault_rows}, cols {result.fault_cols}",
            report,
        )
    return np.abs(C_FG).astype(np.float32, copy=False), report
