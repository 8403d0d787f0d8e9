"""Naive, local-memory and register-tiled GEMM kernels against numpy, on odd and square sizes."""

from __future__ import annotations

import numpy as np
import pytest

from husai.opencl.gemm import TiledParams, _padded_ld, get_engine, timed_gemm
from husai.opencl.platforms import PlatformInfo


def _operands(M: int, K: int, N: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)


def _rel_err(C: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    ref = A.astype(np.float64) @ B.astype(np.float64)
    return float(np.abs(C - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("method", ["naive", "local", "tiled"])
@pytest.mark.parametrize("shape", [(37, 53, 29), (128, 128, 128), (1, 1, 1), (200, 64, 17), (65, 300, 33)])
def test_gemm_matches_numpy(platform: PlatformInfo, method: str, shape: tuple[int, int, int]) -> None:
    A, B = _operands(*shape)
    C = get_engine(platform).matmul(A, B, method)
    assert C.shape == (shape[0], shape[2]) and C.dtype == np.float32
    assert _rel_err(C, A, B) <= 1e-5


@pytest.mark.parametrize("tile", [4, 8, 16])
def test_local_kernel_tile_parameter(platform: PlatformInfo, tile: int) -> None:
    A, B = _operands(45, 70, 23, seed=tile)
    assert _rel_err(get_engine(platform).matmul(A, B, "local", tile=tile), A, B) <= 1e-5


@pytest.mark.parametrize(
    "params", [TiledParams(4, 1, 4, 2), TiledParams(3, 2, 8, 4), TiledParams(2, 3, 1, 1), TiledParams()]
)
def test_tiled_micro_tiles(platform: PlatformInfo, params: TiledParams) -> None:
    A, B = _operands(61, 47, 83, seed=3)
    assert _rel_err(get_engine(platform).matmul(A, B, "tiled", params=params), A, B) <= 1e-5


def test_kernels_compile_once_per_context(platform: PlatformInfo) -> None:
    engine = get_engine(platform)
    A, B = _operands(20, 30, 40)
    engine.matmul(A, B, "tiled")
    programs = dict(engine._programs)
    engine.matmul(A, B, "tiled")
    engine.matmul(*_operands(33, 12, 7), "tiled")
    assert engine._programs == programs
    assert get_engine(platform) is engine


def test_timed_gemm_uses_wall_clock(platform: PlatformInfo) -> None:
    A, B = _operands(64, 64, 64)
    C, seconds = timed_gemm(A, B, "tiled", platform)
    assert 0.0 < seconds < 10.0
    assert _rel_err(C, A, B) <= 1e-5


def test_bad_operands_are_rejected(platform: PlatformInfo) -> None:
    engine = get_engine(platform)
    with pytest.raises(ValueError, match=r"A\[M, K\] and B\[K, N\]"):
        engine.matmul(np.ones((3, 4), np.float32), np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="unknown GEMM method"):
        engine.matmul(np.ones((3, 4), np.float32), np.ones((4, 2), np.float32), "fancy")


def test_leading_dimensions_avoid_power_of_two_strides() -> None:
    assert _padded_ld(2048) == 2064 and _padded_ld(1400) == 1408 and _padded_ld(37) == 48
