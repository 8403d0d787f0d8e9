"""Float32 GEMM ``C_MN = A_MK @ B_KN`` through pyopencl, with kernels compiled once per context.

Why a separate prepare/run split: the canary times many runs of one product, so buffers are uploaded
once (:meth:`GemmEngine.prepare`) and each :meth:`PreparedGemm.run` is timed by the WALL CLOCK around
the enqueue and ``queue.finish()``. Event profiling is not used: rusticl 22.3 reports bogus
nanosecond-sized event timestamps.

Methods (see :mod:`husai.opencl.kernels`): ``"naive"``, ``"local"`` (classic local-memory tiles,
``tile`` x ``tile`` work-groups, default 16) and ``"tiled"`` (register-blocked micro-tiles, the fastest
on PoCL CPU devices and the default). Non-multiple sizes: ``naive``/``local`` check bounds, ``tiled``
pads with zeros on the host. ``tiled`` also pads leading dimensions that are multiples of 256 floats
(1 KiB), which otherwise alias in the L1 cache (4K aliasing cost ~30% at n = 2048).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np

from husai.opencl import kernels
from husai.opencl.platforms import (
    PlatformInfo,
    PlatformNotFoundError,
    discover_platforms,
    open_device,
    probe_build,
    select_platform,
)

METHODS = ("naive", "local", "tiled")


@dataclasses.dataclass(frozen=True)
class TiledParams:
    """Micro-tile of the ``tiled`` kernel: ``rows_per_item`` x (``vectors_per_item`` * width) per item.

    The defaults (8 x 3 float16, 16 work-items per group) were the fastest of six variants swept at
    n = 512-3072 on PoCL 3.1 with AVX-512 (24 accumulator registers of 32); an AVX2 device (16 registers)
    wants a smaller micro-tile, e.g. ``TiledParams(6, 2)``.
    """

    rows_per_item: int = 8
    vectors_per_item: int = 3
    vector_width: int | None = None  # None: the device's preferred float vector width (<= 16)
    group_rows: int = 16  # work-items per work-group along M (they share a strip of B)


def resolve_platform(platform: PlatformInfo | str | None) -> PlatformInfo:
    """A platform that can build kernels: as given, selected by name/kind, or the first usable one."""
    if isinstance(platform, PlatformInfo):
        return platform
    if platform is not None:
        return select_platform(platform, require_build=True)
    found = discover_platforms()
    for info in found:
        if probe_build(info) is None:
            return info
    detail = (
        "; ".join(f"{info.describe()}: {probe_build(info)}" for info in found) or "no OpenCL ICD registered"
    )
    raise PlatformNotFoundError(f"no OpenCL platform can build kernels ({detail})")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _padded_ld(cols: int) -> int:
    ld = _round_up(max(cols, 1), 16)
    return ld + 16 if ld % 256 == 0 else ld


def _host_layout(X: np.ndarray, rows: int, ld: int) -> np.ndarray:
    """``X`` as a C-contiguous float32 (rows, ld) array, zero-padded; no copy when it already is one."""
    if X.shape == (rows, ld) and X.dtype == np.float32 and X.flags.c_contiguous:
        return X
    out = np.zeros((rows, ld), dtype=np.float32)
    out[: X.shape[0], : X.shape[1]] = X
    return out


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


class PreparedGemm:
    """One product with its buffers on the device; ``run()`` times it, ``read()`` returns ``C_MN``.

    ``padded`` (M, N, K) are the dimensions the kernel sees (after host zero-padding), ``lds`` the
    leading dimensions (lda, ldb, ldc) of the device buffers.
    """

    def __init__(
        self,
        engine: GemmEngine,
        kernel: Any,
        shape: tuple[int, int, int],
        padded: tuple[int, int, int],
        lds: tuple[int, int, int],
        A_host: np.ndarray,
        B_host: np.ndarray,
        sizes: tuple[tuple[int, int], tuple[int, int] | None],
        method: str,
    ) -> None:
        cl, ctx, mf = engine.cl, engine.ctx, engine.cl.mem_flags
        self.engine, self.method = engine, method
        self.M, self.N, self.K = shape
        self._rows, self.ldc = padded[0], lds[2]
        self._A = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=A_host)
        self._B = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=B_host)
        self.c_buffer = cl.Buffer(ctx, mf.READ_WRITE, size=max(4, self._rows * self.ldc * 4))
        self._kernel = kernel
        self._global, self._local = sizes
        dims = [np.int32(v) for v in (*padded, *lds)]
        self._kernel.set_args(*dims, self._A, self._B, self.c_buffer)

    @property
    def flops(self) -> float:
        return 2.0 * self.M * self.N * self.K

    def enqueue(self) -> Any:
        """Start the kernel without waiting; returns the event."""
        return self.engine.cl.enqueue_nd_range_kernel(
            self.engine.queue, self._kernel, self._global, self._local
        )

    def run(self) -> float:
        """Run the kernel once; wall-clock seconds from enqueue to ``queue.finish()``."""
        start = time.perf_counter()
        self.enqueue()
        self.engine.queue.finish()
        return time.perf_counter() - start

    def read(self) -> np.ndarray:
        """Copy ``C`` back into a new host array and return its (M, N) part."""
        out = np.empty((self._rows, self.ldc), dtype=np.float32)
        self.engine.cl.enqueue_copy(self.engine.queue, out, self.c_buffer)
        self.engine.queue.finish()
        return out if out.shape == (self.M, self.N) else out[: self.M, : self.N]


class GemmEngine:
    """The kernels of one OpenCL device, compiled on first use and cached for the context's lifetime."""

    def __init__(self, info: PlatformInfo) -> None:
        import pyopencl as cl

        self.cl, self.info = cl, info
        self.ctx, self.queue = open_device(info)
        self.device = self.ctx.devices[0]
        self._programs: dict[tuple[str, str], Any] = {}

    def kernel(self, name: str, source: str, options: str = "") -> Any:
        """A fresh kernel object (own arguments) from a program built once per (source, options)."""
        key = (source, options)
        if key not in self._programs:
            self._programs[key] = self.cl.Program(self.ctx, source).build(options=options)
        return self.cl.Kernel(self._programs[key], name)

    def tiled_shape(self, params: TiledParams) -> tuple[int, int, int]:
        """(rows_per_item, vectors_per_item, vector_width) after resolving the automatic width."""
        vw = params.vector_width
        if vw is None:
            preferred = int(self.device.preferred_vector_width_float or 1)
            vw = max(w for w in (1, 2, 4, 8, 16) if w <= max(1, preferred))
        return params.rows_per_item, params.vectors_per_item, vw

    def prepare(
        self,
        A_MK: np.ndarray,
        B_KN: np.ndarray,
        method: str = "tiled",
        tile: int = 16,
        params: TiledParams | None = None,
    ) -> PreparedGemm:
        A_MK, B_KN = _check_operands(A_MK, B_KN)
        (M, K), N = A_MK.shape, B_KN.shape[1]
        if method == "naive":
            kern = self.kernel("naive", kernels.NAIVE_SOURCE)
            A_h, B_h = _host_layout(A_MK, M, K), _host_layout(B_KN, K, N)
            return PreparedGemm(self, kern, (M, N, K), (M, N, K), (K, N, N), A_h, B_h, ((N, M), None), method)
        if method == "local":
            if tile < 1 or tile * tile > int(self.device.max_work_group_size):
                limit = self.device.max_work_group_size
                raise ValueError(f"tile={tile} does not fit the device work-group limit {limit}")
            kern = self.kernel("local_tiled", kernels.LOCAL_SOURCE, f"-DTILE={int(tile)}")
            Mp, Np, Kp = (_round_up(v, tile) for v in (M, N, K))
            A_h, B_h = _host_layout(A_MK, Mp, Kp), _host_layout(B_KN, Kp, Np)
            sizes = ((Np, Mp), (tile, tile))
            return PreparedGemm(self, kern, (M, N, K), (Mp, Np, Kp), (Kp, Np, Np), A_h, B_h, sizes, method)
        if method == "tiled":
            params = params or TiledParams()
            rm, nv, vw = self.tiled_shape(params)
            Mp, Np = _round_up(M, rm), _round_up(N, nv * vw)
            lda, ldb, ldc = _padded_ld(K), _padded_ld(Np), _padded_ld(Np)
            kern = self.kernel("tiled", kernels.tiled_source(rm, nv, vw))
            grid = (Np // (nv * vw), Mp // rm)
            sizes = (grid, (1, _largest_divisor_at_most(grid[1], params.group_rows)))
            A_h, B_h = _host_layout(A_MK, Mp, lda), _host_layout(B_KN, K, ldb)
            return PreparedGemm(self, kern, (M, N, K), (Mp, Np, K), (lda, ldb, ldc), A_h, B_h, sizes, method)
        raise ValueError(f"unknown GEMM method {method!r}; expected one of {METHODS}")

    def matmul(
        self,
        A_MK: np.ndarray,
        B_KN: np.ndarray,
        method: str = "tiled",
        tile: int = 16,
        params: TiledParams | None = None,
    ) -> np.ndarray:
        prepared = self.prepare(A_MK, B_KN, method, tile, params)
        prepared.run()
        return prepared.read()


def _check_operands(A_MK: np.ndarray, B_KN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A_MK, B_KN = np.asarray(A_MK), np.asarray(B_KN)
    if A_MK.ndim != 2 or B_KN.ndim != 2 or A_MK.shape[1] != B_KN.shape[0]:
        raise ValueError(f"GEMM needs A[M, K] and B[K, N]; got A{A_MK.shape} and B{B_KN.shape}")
    if min(A_MK.shape + B_KN.shape) == 0:
        raise ValueError(f"GEMM needs non-empty operands; got A{A_MK.shape} and B{B_KN.shape}")
    return np.ascontiguousarray(A_MK, dtype=np.float32), np.ascontiguousarray(B_KN, dtype=np.float32)


@functools.cache
def get_engine(info: PlatformInfo) -> GemmEngine:
    """The cached :class:`GemmEngine` of ``info`` (one context, kernels built once)."""
    return GemmEngine(info)


def gemm(
    A_MK: np.ndarray,
    B_KN: np.ndarray,
    method: str = "tiled",
    platform: PlatformInfo | str | None = None,
    tile: int = 16,
    params: TiledParams | None = None,
) -> np.ndarray:
    """``A_MK @ B_KN`` in float32 on an OpenCL platform (default: the first that can build kernels)."""
    return get_engine(resolve_platform(platform)).matmul(A_MK, B_KN, method, tile, params)


def timed_gemm(
    A_MK: np.ndarray,
    B_KN: np.ndarray,
    method: str = "tiled",
    platform: PlatformInfo | str | None = None,
    tile: int = 16,
    params: TiledParams | None = None,
) -> tuple[np.ndarray, float]:
    """(C_MN, wall-clock kernel seconds) for one run on already uploaded buffers."""
    prepared = get_engine(resolve_platform(platform)).prepare(A_MK, B_KN, method, tile, params)
    seconds = prepared.run()
    return prepared.read(), seconds
