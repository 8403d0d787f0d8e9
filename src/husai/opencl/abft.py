"""Algorithm-based fault tolerance (ABFT) for ``C_MN = A_MK @ B_KN``.

Why: a GEMM on an unfamiliar OpenCL stack (Clover, rusticl, a new driver) can be silently wrong. ABFT
checks the product against cheap identities computed independently in float64 on the host:

* column checksums ``e^T C`` against ``(e^T A) B`` (one value per column: locates the column),
* row checksums ``C e`` against ``A (B e)`` (one per row: locates the row),
* ``k`` random projections ``r^T C s`` against ``(r^T A)(B s)`` (Gaussian ``r``, ``s``).

Each residual is divided by the same identity evaluated on absolute values (``(e^T|A|)|B|`` etc.), the
scale of the float32 rounding error, giving a dimensionless statistic per row, column and projection.
The threshold per family is CALIBRATED on clean runs (:func:`calibrate`): ``max over clean runs x
safety_factor`` (rule ``"max"``) or ``median + z * 1.4826 * MAD`` of the clean maxima, never below their
maximum (rule ``"mad"``). The calibration data travel with the thresholds (:meth:`AbftCalibration.to_dict`).

Cost: :func:`predict` makes three float64 passes over A and B in cache-sized row blocks; it depends on
the inputs only, so it is computed once per input pair (and can run while the device computes).
Checking C needs one pass over it: :func:`observe` on the host, or on the device with
``husai.opencl.checked`` (float64 reduction kernels), which is what keeps the per-GEMM overhead small.

Faults (:func:`inject_fault`) are relative to the entry they hit, so recall is measured on products with
entries of one sign (e.g. uniform [0, 1) inputs): a relative fault on a near-zero entry is below float32
noise and harmless.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FAMILIES = ("row", "col", "proj")
_TINY = np.finfo(np.float64).tiny
_BLOCK_BYTES = 512 * 1024  # float64 row block kept in L2


@dataclasses.dataclass(frozen=True)
class AbftProbes:
    """Checksum vectors: column 0 of ``R_MP`` and ``S_NP`` is all ones, columns 1.. are projections."""

    R_MP: np.ndarray
    S_NP: np.ndarray

    @property
    def n_projections(self) -> int:
        return self.R_MP.shape[1] - 1


def make_probes(M: int, N: int, n_projections: int = 2, seed: int = 0) -> AbftProbes:
    rng = np.random.default_rng(seed)
    R_MP = np.ones((M, 1 + n_projections))
    S_NP = np.ones((N, 1 + n_projections))
    R_MP[:, 1:] = rng.standard_normal((M, n_projections))
    S_NP[:, 1:] = rng.standard_normal((N, n_projections))
    return AbftProbes(R_MP, S_NP)


@dataclasses.dataclass(frozen=True)
class AbftPrediction:
    """Float64 checksums predicted from A and B, with their absolute-value scales."""

    probes: AbftProbes
    col_N: np.ndarray
    row_M: np.ndarray
    proj_P: np.ndarray
    col_scale_N: np.ndarray
    row_scale_M: np.ndarray
    proj_scale_P: np.ndarray


def _row_blocks(n_rows: int, n_cols: int) -> range:
    step = max(8, _BLOCK_BYTES // (8 * max(n_cols, 1)))
    return range(0, n_rows, step)


def predict(A_MK: np.ndarray, B_KN: np.ndarray, probes: AbftProbes) -> AbftPrediction:
    """Checksums of ``A @ B`` in float64 without forming the product (passes: A, B, A)."""
    (M, K), N = A_MK.shape, B_KN.shape[1]
    R_MP, S_NP = probes.R_MP, probes.S_NP
    absR_MP, absS_NP = np.abs(R_MP), np.abs(S_NP)
    P = R_MP.shape[1]
    RA_PK, absRA_PK = np.zeros((P, K)), np.zeros((P, K))
    step_a = _row_blocks(M, K)
    for i in step_a:
        blk = A_MK[i : i + step_a.step].astype(np.float64)
        RA_PK += R_MP[i : i + step_a.step].T @ blk
        absRA_PK += absR_MP[i : i + step_a.step].T @ np.abs(blk, out=blk)
    BS_KP, absBS_KP = np.empty((K, P)), np.empty((K, P))
    RAB_PN, absRAB_PN = np.zeros((P, N)), np.zeros((P, N))
    step_b = _row_blocks(K, N)
    for k in step_b:
        blk = B_KN[k : k + step_b.step].astype(np.float64)
        BS_KP[k : k + step_b.step] = blk @ S_NP
        RAB_PN += RA_PK[:, k : k + step_b.step] @ blk
        np.abs(blk, out=blk)
        absBS_KP[k : k + step_b.step] = blk @ absS_NP
        absRAB_PN += absRA_PK[:, k : k + step_b.step] @ blk
    ABS_MP, absABS_MP = np.empty((M, P)), np.empty((M, P))
    for i in step_a:
        blk = A_MK[i : i + step_a.step].astype(np.float64)
        ABS_MP[i : i + step_a.step] = blk @ BS_KP
        absABS_MP[i : i + step_a.step] = np.abs(blk, out=blk) @ absBS_KP
    proj_P = np.einsum("pn,np->p", RAB_PN[1:], S_NP[:, 1:])
    proj_scale_P = np.einsum("pn,np->p", absRAB_PN[1:], absS_NP[:, 1:])
    return AbftPrediction(
        probes, RAB_PN[0], ABS_MP[:, 0], proj_P, absRAB_PN[0], absABS_MP[:, 0], proj_scale_P
    )


@dataclasses.dataclass(frozen=True)
class AbftObservation:
    """Float64 checksums of the computed ``C`` (host: :func:`observe`; device: ``husai.opencl.checked``)."""

    col_N: np.ndarray
    row_M: np.ndarray
    proj_P: np.ndarray


def observe(C_MN: np.ndarray, probes: AbftProbes) -> AbftObservation:
    """Column sums, row sums and projections of ``C_MN`` in float64, one host pass."""
    M, N = C_MN.shape
    R_MP, S_NP = probes.R_MP, probes.S_NP
    RC_PN = np.zeros((R_MP.shape[1], N))
    CS_MP = np.empty((M, S_NP.shape[1]))
    steps = _row_blocks(M, N)
    for i in steps:
        blk = C_MN[i : i + steps.step].astype(np.float64)
        RC_PN += R_MP[i : i + steps.step].T @ blk
        CS_MP[i : i + steps.step] = blk @ S_NP
    return AbftObservation(RC_PN[0], CS_MP[:, 0], np.einsum("pn,np->p", RC_PN[1:], S_NP[:, 1:]))


def statistics(prediction: AbftPrediction, observed: AbftObservation | np.ndarray) -> dict[str, np.ndarray]:
    """Relative residual per row, column and projection (NaN/Inf in C give +inf).

    ``observed`` is an :class:`AbftObservation` or the computed ``C_MN`` itself (observed on the host).
    """
    if not isinstance(observed, AbftObservation):
        observed = observe(np.asarray(observed), prediction.probes)
    pairs = {
        "row": (observed.row_M, prediction.row_M, prediction.row_scale_M),
        "col": (observed.col_N, prediction.col_N, prediction.col_scale_N),
        "proj": (observed.proj_P, prediction.proj_P, prediction.proj_scale_P),
    }
    out = {}
    for family, (obs, pred, scale) in pairs.items():
        with np.errstate(invalid="ignore", over="ignore"):
            stat = np.abs(obs - pred) / np.maximum(scale, _TINY)
        out[family] = np.where(np.isfinite(stat), stat, np.inf)
    return out


def _max_or_zero(values: np.ndarray) -> float:
    return float(values.max()) if values.size else 0.0


@dataclasses.dataclass(frozen=True)
class AbftCalibration:
    """Per-family thresholds and the clean-run maxima they came from."""

    thresholds: dict[str, float]
    rule: str
    safety_factor: float
    mad_z: float
    clean_max: dict[str, list[float]]
    shape: tuple[int, int, int] | None = None
    n_projections: int = 2

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape) if self.shape else None
        out["n_runs"] = len(next(iter(self.clean_max.values()), []))
        return out


def calibrate_from_statistics(
    clean: Sequence[dict[str, np.ndarray]],
    rule: str = "max",
    safety_factor: float = 10.0,
    mad_z: float = 10.0,
    shape: tuple[int, int, int] | None = None,
    n_projections: int = 2,
) -> AbftCalibration:
    """Thresholds from the statistics of clean (fault-free) runs."""
    if not clean:
        raise ValueError("ABFT calibration needs at least one clean run")
    if rule not in ("max", "mad"):
        raise ValueError(f"unknown ABFT calibration rule {rule!r}; expected 'max' or 'mad'")
    clean_max = {f: [_max_or_zero(stats[f]) for stats in clean] for f in FAMILIES}
    thresholds = {}
    for family, maxima in clean_max.items():
        values = np.asarray(maxima)
        if rule == "max":
            threshold = values.max() * safety_factor
        else:
            median = np.median(values)
            mad = np.median(np.abs(values - median))
            threshold = max(median + mad_z * 1.4826 * mad, values.max())
        thresholds[family] = float(max(threshold, _TINY))
    return AbftCalibration(thresholds, rule, safety_factor, mad_z, clean_max, shape, n_projections)


def calibrate(
    gemm_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    M: int,
    K: int,
    N: int,
    n_runs: int = 5,
    seed: int = 0,
    n_projections: int = 2,
    rule: str = "max",
    safety_factor: float = 10.0,
    mad_z: float = 10.0,
    sampler: Callable[[np.random.Generator, tuple[int, int]], np.ndarray] | None = None,
) -> AbftCalibration:
    """Run ``gemm_fn`` on ``n_runs`` fresh random inputs (uniform [0, 1) by default) and calibrate."""
    rng = np.random.default_rng(seed)
    draw = sampler or (lambda g, shape: g.random(shape, dtype=np.float32))
    clean = []
    for run in range(n_runs):
        A_MK, B_KN = draw(rng, (M, K)), draw(rng, (K, N))
        probes = make_probes(M, N, n_projections, seed=seed + run)
        clean.append(statistics(predict(A_MK, B_KN, probes), gemm_fn(A_MK, B_KN)))
    return calibrate_from_statistics(clean, rule, safety_factor, mad_z, (M, K, N), n_projections)


@dataclasses.dataclass(frozen=True)
class AbftResult:
    """Outcome of :func:`verify`: ``passed`` unless some statistic exceeds its family's threshold."""

    passed: bool
    max_statistic: dict[str, float]
    threshold: dict[str, float]
    ratio: float  # max over families of statistic / threshold (> 1 means a detected fault)
    fault_rows: list[int]
    fault_cols: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify_statistics(
    stats: dict[str, np.ndarray], calibration: AbftCalibration, max_candidates: int = 16
) -> AbftResult:
    thresholds = calibration.thresholds
    max_stat = {f: _max_or_zero(stats[f]) for f in FAMILIES}
    ratio = max(max_stat[f] / thresholds[f] for f in FAMILIES)

    def candidates(family: str) -> list[int]:
        over = np.flatnonzero(stats[family] > thresholds[family])
        order = np.argsort(-stats[family][over], kind="stable")[:max_candidates]
        return [int(i) for i in over[order]]

    return AbftResult(
        ratio <= 1.0, max_stat, dict(thresholds), float(ratio), candidates("row"), candidates("col")
    )


def verify(
    A_MK: np.ndarray,
    B_KN: np.ndarray,
    C_MN: np.ndarray,
    calibration: AbftCalibration,
    prediction: AbftPrediction | None = None,
    seed: int = 0,
) -> AbftResult:
    """Check ``C_MN`` against ``A_MK @ B_KN``; pass a precomputed ``prediction`` to reuse it."""
    if prediction is None:
        probes = make_probes(A_MK.shape[0], B_KN.shape[1], calibration.n_projections, seed)
        prediction = predict(A_MK, B_KN, probes)
    return verify_statistics(statistics(prediction, C_MN), calibration)


def inject_fault(C_MN: np.ndarray, row: int, col: int, rel_size: float) -> np.ndarray:
    """A copy of ``C_MN`` with ``C[row, col] += rel_size * |C[row, col]|`` (RMS of C if that entry is 0)."""
    out = np.array(C_MN, dtype=C_MN.dtype, copy=True)
    base = abs(float(out[row, col]))
    if base == 0.0:
        base = float(np.sqrt(np.mean(np.square(out, dtype=np.float64)))) or 1.0
    out[row, col] = out.dtype.type(float(out[row, col]) + rel_size * base)
    return out


def measure_recall(
    prediction: AbftPrediction,
    C_MN: np.ndarray,
    calibration: AbftCalibration,
    rel_sizes: Sequence[float] = (1e-2, 1.0),
    n_faults: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Inject ``n_faults`` single-entry faults per size into a clean ``C``: how many are caught, located."""
    rng = np.random.default_rng(seed)
    M, N = C_MN.shape
    per_size: dict[str, dict[str, Any]] = {}
    for rel in rel_sizes:
        caught = located = 0
        for _ in range(n_faults):
            i, j = int(rng.integers(M)), int(rng.integers(N))
            result = verify_statistics(statistics(prediction, inject_fault(C_MN, i, j, rel)), calibration)
            caught += not result.passed
            located += (i in result.fault_rows) and (j in result.fault_cols)
        per_size[repr(float(rel))] = {
            "injected": n_faults,
            "caught": caught,
            "located": located,
            "recall": caught / n_faults if n_faults else float("nan"),
        }
    recalls = [v["recall"] for v in per_size.values()]
    return {"per_size": per_size, "recall": min(recalls) if recalls else float("nan")}
