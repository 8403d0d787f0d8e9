"""The OpenCL platform the lane's tests run on: a PoCL that can build kernels, else the first usable one; the
tests skip, naming why, when no platform can build (e.g. the PyPI PoCL 3.0 wheel on CPUs its LLVM 14 lacks)."""

from __future__ import annotations

import pytest

from husai.opencl.platforms import PlatformInfo, discover_platforms, probe_build


@pytest.fixture(scope="module")
def platform() -> PlatformInfo:
    found = discover_platforms()
    if not found:
        pytest.skip("no OpenCL platform found (no ICD registered)")
    usable = [info for info in found if probe_build(info) is None]
    if not usable:
        reasons = "; ".join(f"{info.describe()}: {probe_build(info)}" for info in found)
        pytest.skip(f"no OpenCL platform can build kernels: {reasons}")
    return next((info for info in usable if info.kind == "pocl"), usable[0])
