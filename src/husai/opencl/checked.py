"""ABFT-checked GEMM on an OpenCL device: host float64 predictions, device float64 observations.

Why observe on the device: checking C needs one full pass over it, and on the host that pass (float32 ->
float64 conversion plus reductions, single-threaded numpy) costs ~15% of a 2048^3 GEMM on PoCL. Two
small float64 reduction kernels (column checksums with the projection weights ``r``; row checksums with
``s``) read the C buffer where it already is, with all device cores. The predictions stay on the host in
float64 (:func:`husai.opencl.abft.predict`) and depend only on A and B, so they are computed once per
input pair. Devices without ``cl_khr_fp64`` fall back to observing the read-back C on the host.

Fault injection writes the perturbed entry into the device C buffer (and restores it afterwards), so
recall is measured through the same path as a real check.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from husai.opencl import abft
from husai.opencl.gemm import GemmEngine, PreparedGemm


def _hsum(name: str, width: int) -> str:
    return "(" + " + ".join(f"({name}).s{lane:x}" for lane in range(width)) + ")"


def checksum_source(n_probes: int, col_width: int = 8, row_width: int = 16) -> str:
    """Column and row checksum kernels for ``n_probes`` probe vectors (probe 0 is all ones).

    ``abft_cols``: one work-item per ``col_width`` columns, looping over the rows;
    ``abft_rows``: one work-item per row. Both accumulate in float64.
    """
    P, cw, rw = n_probes, col_width, row_width
    col_decl = "\n".join(f"    double{cw} a{p} = (double{cw})(0.0);" for p in range(P))
    col_acc = "\n".join(
        ["      a0 += v;"]
        + [f"      a{p} = fma((double{cw})(R_PM[{p} * M + i]), v, a{p});" for p in range(1, P)]
    )
    col_store = "\n".join(f"    vstore{cw}(a{p}, 0, out_PN + {p} * N + j0);" for p in range(P))
    col_tail = "\n".join(
        ["        t0 += v;"] + [f"        t{p} = fma(R_PM[{p} * M + i], v, t{p});" for p in range(1, P)]
    )
    row_decl = "\n".join(f"  double{rw} s{p} = (double{rw})(0.0);" for p in range(P))
    row_acc = "\n".join(
        ["    s0 += v;"]
        + [f"    s{p} = fma(vload{rw}(0, S_PN + {p} * N + j), v, s{p});" for p in range(1, P)]
    )
    row_tail = "\n".join(["    t[0] += v;"] + [f"    t[{p}] += S_PN[{p} * N + j] * v;" for p in range(1, P)])
    row_fold = "\n".join(f"  out_MP[i * {P} + {p}] = t[{p}] + {_hsum(f's{p}', rw)};" for p in range(P))
    return f"""
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
__kernel void abft_cols(const int M, const int N, const int ldc, __global const float *C,
                        __global const double *R_PM, __global double *out_PN)
{{
  const int j0 = get_global_id(0) * {cw};
  if (j0 >= N) return;
  if (j0 + {cw} <= N) {{
{col_decl}
    for (int i = 0; i < M; ++i) {{
      const double{cw} v = convert_double{cw}(vload{cw}(0, C + i * ldc + j0));
{col_acc}
    }}
{col_store}
  }} else {{
    for (int j = j0; j < N; ++j) {{
      double {", ".join(f"t{p} = 0.0" for p in range(P))};
      for (int i = 0; i < M; ++i) {{
        const double v = (double)C[i * ldc + j];
{col_tail}
      }}
{chr(10).join(f"      out_PN[{p} * N + j] = t{p};" for p in range(P))}
    }}
  }}
}}

__kernel void abft_rows(const int M, const int N, const int ldc, __global const float *C,
                        __global const double *S_PN, __global double *out_MP)
{{
  const int i = get_global_id(0);
  if (i >= M) return;
  __global const float *row = C + i * ldc;
{row_decl}
  int j = 0;
  for (; j + {rw} <= N; j += {rw}) {{
    const double{rw} v = convert_double{rw}(vload{rw}(0, row + j));
{row_acc}
  }}
  double t[{P}];
  for (int p = 0; p < {P}; ++p) t[p] = 0.0;
  for (; j < N; ++j) {{
    const double v = (double)row[j];
{row_tail}
  }}
{row_fold}
}}
"""


_COL_WIDTH, _ROW_WIDTH = 8, 16  # measured on PoCL at n = 2048: the fastest pair


def device_has_fp64(engine: GemmEngine) -> bool:
    return "cl_khr_fp64" in str(engine.device.extensions).split()


class CheckedGemm:
    """A prepared GEMM plus its ABFT prediction; times unchecked and checked runs the same way.

    ``eager=True`` computes the prediction now (the canary reports its cost separately); ``eager=False``
    defers it to the first :meth:`run_checked`, where it overlaps the kernel (one-shot products).
    """

    def __init__(
        self,
        prepared: PreparedGemm,
        A_MK: np.ndarray,
        B_KN: np.ndarray,
        n_projections: int = 2,
        seed: int = 0,
        on_device: bool | None = None,
        eager: bool = True,
    ) -> None:
        self.prepared, self.engine = prepared, prepared.engine
        self.probes = abft.make_probes(prepared.M, prepared.N, n_projections, seed)
        self._inputs = (np.asarray(A_MK, np.float32), np.asarray(B_KN, np.float32))
        self.prediction: abft.AbftPrediction | None = None
        self.predict_seconds = float("nan")
        if eager:
            self.ensure_prediction()
        self.on_device = device_has_fp64(self.engine) if on_device is None else on_device
        if self.on_device:
            self._setup_device()

    def ensure_prediction(self) -> abft.AbftPrediction:
        """The host float64 prediction, computed (and timed) on first use."""
        if self.prediction is None:
            start = time.perf_counter()
            self.prediction = abft.predict(*self._inputs, self.probes)
            self.predict_seconds = time.perf_counter() - start
        return self.prediction

    def _setup_device(self) -> None:
        cl, ctx, p = self.engine.cl, self.engine.ctx, self.prepared
        P = self.probes.R_MP.shape[1]
        src = checksum_source(P, _COL_WIDTH, _ROW_WIDTH)
        self._k_cols = self.engine.kernel("abft_cols", src)
        self._k_rows = self.engine.kernel("abft_rows", src)
        mf = cl.mem_flags
        R_PM = np.ascontiguousarray(self.probes.R_MP.T)
        S_PN = np.ascontiguousarray(self.probes.S_NP.T)
        self._R = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=R_PM)
        self._S = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=S_PN)
        self._out_PN = np.empty((P, p.N))
        self._out_MP = np.empty((p.M, P))
        self._bcols = cl.Buffer(ctx, mf.WRITE_ONLY, size=self._out_PN.nbytes)
        self._brows = cl.Buffer(ctx, mf.WRITE_ONLY, size=self._out_MP.nbytes)
        dims = (np.int32(p.M), np.int32(p.N), np.int32(p.ldc), p.c_buffer)
        self._k_cols.set_args(*dims, self._R, self._bcols)
        self._k_rows.set_args(*dims, self._S, self._brows)

    def observe(self, C_MN: np.ndarray | None = None) -> abft.AbftObservation:
        """Checksums of the current C (device buffer, or ``C_MN`` on the host when not on a device)."""
        if not self.on_device:
            return abft.observe(self.prepared.read() if C_MN is None else C_MN, self.probes)
        cl, queue, p = self.engine.cl, self.engine.queue, self.prepared
        cl.enqueue_nd_range_kernel(queue, self._k_cols, (-(-p.N // _COL_WIDTH),), None)
        cl.enqueue_nd_range_kernel(queue, self._k_rows, (p.M,), None)
        cl.enqueue_copy(queue, self._out_PN, self._bcols)
        cl.enqueue_copy(queue, self._out_MP, self._brows)
        queue.finish()
        proj = np.einsum("pn,np->p", self._out_PN[1:], self.probes.S_NP[:, 1:])
        return abft.AbftObservation(self._out_PN[0].copy(), self._out_MP[:, 0].copy(), proj)

    def statistics(self, C_MN: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return abft.statistics(self.ensure_prediction(), self.observe(C_MN))

    def run_unchecked(self) -> tuple[np.ndarray, float, float]:
        """(C, kernel seconds, total seconds incl. read-back)."""
        start = time.perf_counter()
        kernel_s = self.prepared.run()
        C_MN = self.prepared.read()
        return C_MN, kernel_s, time.perf_counter() - start

    def run_checked(
        self, calibration: abft.AbftCalibration
    ) -> tuple[np.ndarray, abft.AbftResult, float, float]:
        """(C, ABFT result, kernel seconds, total seconds incl. read-back and verification).

        Without an ``eager`` prediction, it is computed on the host while the kernel runs and the kernel
        seconds include it.
        """
        start = time.perf_counter()
        self.prepared.enqueue()
        self.ensure_prediction()
        self.engine.queue.finish()
        kernel_s = time.perf_counter() - start
        C_MN = self.prepared.read()
        result = abft.verify_statistics(self.statistics(C_MN), calibration)
        return C_MN, result, kernel_s, time.perf_counter() - start

    def verify_with_fault(
        self, C_MN: np.ndarray, row: int, col: int, rel_size: float, calibration: abft.AbftCalibration
    ) -> abft.AbftResult:
        """Verify after perturbing one entry in the device C (restored afterwards)."""
        faulty = abft.inject_fault(C_MN, row, col, rel_size)
        if not self.on_device:
            return abft.verify_statistics(self.statistics(faulty), calibration)
        original = np.array([C_MN[row, col]], dtype=np.float32)
        self._write_entry(row, col, np.array([faulty[row, col]], dtype=np.float32))
        try:
            return abft.verify_statistics(self.statistics(), calibration)
        finally:
            self._write_entry(row, col, original)

    def _write_entry(self, row: int, col: int, value: np.ndarray) -> None:
        offset = (row * self.prepared.ldc + col) * 4
        self.engine.cl.enqueue_copy(self.engine.queue, self.prepared.c_buffer, value, dst_offset=offset)
        self.engine.queue.finish()

    def measure_recall(
        self,
        C_MN: np.ndarray,
        calibration: abft.AbftCalibration,
        rel_sizes: tuple[float, ...] = (1e-2, 1.0),
        n_faults: int = 5,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Like :func:`husai.opencl.abft.measure_recall`, through the device buffer."""
        rng = np.random.default_rng(seed)
        out: dict[str, Any] = {}
        for rel in rel_sizes:
            caught = located = 0
            for _ in range(n_faults):
                i, j = int(rng.integers(self.prepared.M)), int(rng.integers(self.prepared.N))
                result = self.verify_with_fault(C_MN, i, j, rel, calibration)
                caught += not result.passed
                located += (i in result.fault_rows) and (j in result.fault_cols)
            out[repr(float(rel))] = {"injected": n_faults, "caught": caught, "located": located}
        return out
