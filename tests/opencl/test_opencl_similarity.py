"""|cos| similarity of decoder rows on OpenCL with ABFT, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from husai.opencl import abft
from husai.opencl.platforms import PlatformInfo
from husai.opencl.similarity import AbftFaultError, abs_cosine_similarity_opencl


def _numpy_abs_cos(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A_n = A / np.linalg.norm(A, axis=1, keepdims=True)
    B_n = B / np.linalg.norm(B, axis=1, keepdims=True)
    return np.abs(A_n @ B_n.T)


@pytest.mark.parametrize(("d_a", "d_b", "d_in"), [(300, 257, 96), (64, 64, 32), (17, 129, 5)])
def test_matches_numpy(platform: PlatformInfo, d_a: int, d_b: int, d_in: int) -> None:
    rng = np.random.default_rng(d_a)
    W_A, W_B = rng.standard_normal((d_a, d_in)), rng.standard_normal((d_b, d_in)).astype(np.float32)
    sim, report = abs_cosine_similarity_opencl(W_A, W_B, platform=platform)
    assert sim.dtype == np.float32 and sim.shape == (d_a, d_b)
    np.testing.assert_allclose(sim, _numpy_abs_cos(W_A, W_B.astype(np.float64)), rtol=0, atol=1e-5)
    assert report["abft"]["passed"] and report["platform"]["key"] == platform.key
    assert report["calibration"]["thresholds"]


def test_identical_saes_have_unit_diagonal(platform: PlatformInfo) -> None:
    W = np.random.default_rng(1).standard_normal((40, 24))
    sim, _ = abs_cosine_similarity_opencl(W, -W, platform=platform)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)


def test_zero_row_gives_zero_similarity(platform: PlatformInfo) -> None:
    W = np.random.default_rng(2).standard_normal((10, 8))
    W[3] = 0.0
    sim, _ = abs_cosine_similarity_opencl(W, W, platform=platform)
    assert np.all(sim[3] == 0.0) and np.all(np.isfinite(sim))


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"W_dec_A\(10, 8\).*W_dec_B\(12, 9\)"):
        abs_cosine_similarity_opencl(np.ones((10, 8)), np.ones((12, 9)))
    with pytest.raises(ValueError, match=r"2-D.*W_dec_A\(10,\)"):
        abs_cosine_similarity_opencl(np.ones(10), np.ones((12, 9)))


def test_failed_check_raises_when_strict(platform: PlatformInfo) -> None:
    W = np.random.default_rng(3).standard_normal((30, 16))
    impossible = abft.AbftCalibration(
        {f: 1e-300 for f in abft.FAMILIES}, "max", 1.0, 1.0, {f: [] for f in abft.FAMILIES}
    )
    with pytest.raises(AbftFaultError, match="ABFT check failed") as err:
        abs_cosine_similarity_opencl(W, W, platform=platform, calibration=impossible)
    assert err.value.report["abft"]["passed"] is False
    sim, report = abs_cosine_similarity_opencl(W, W, platform=platform, calibration=impossible, strict=False)
    assert not report["abft"]["passed"] and sim.shape == (30, 30)
