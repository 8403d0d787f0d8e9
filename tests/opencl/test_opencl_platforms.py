"""Platform discovery by name, kind classification, and the clear error for an absent platform."""

from __future__ import annotations

import pytest

from husai.opencl import platforms
from husai.opencl.platforms import (
    PlatformInfo,
    PlatformNotFoundError,
    classify_kind,
    discover_platforms,
    probe_build,
    select_platform,
)


def _fake(name: str, device: str = "dev", version: str = "OpenCL 3.0") -> PlatformInfo:
    return PlatformInfo(name, "vendor", version, device, "cpu", classify_kind(name))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Portable Computing Language", "pocl"),
        ("rusticl", "rusticl"),
        ("Clover", "clover"),
        ("NVIDIA CUDA", "nvidia"),
        ("Intel(R) OpenCL", "other"),
    ],
)
def test_kind_comes_from_the_platform_name(name: str, kind: str) -> None:
    assert classify_kind(name) == kind


def test_selection_is_by_name_not_list_position() -> None:
    pocl, clover = _fake("Portable Computing Language", "pthread-cpu"), _fake("Clover", "AMD Radeon")
    for found in ([pocl, clover], [clover, pocl]):
        assert select_platform("clover", found) == clover
        assert select_platform("Portable Computing Language", found) == pocl
        assert select_platform("radeon", found) == clover  # device name also matches


def test_absent_platform_error_lists_what_was_found() -> None:
    found = [_fake("Portable Computing Language", "pthread-cpu"), _fake("Clover", "AMD Radeon")]
    with pytest.raises(PlatformNotFoundError) as err:
        select_platform("rusticl", found)
    message = str(err.value)
    assert "'rusticl' not found" in message
    assert "pocl:pthread-cpu" in message and "clover:AMD Radeon" in message


def test_absent_platform_error_on_real_discovery() -> None:
    with pytest.raises(PlatformNotFoundError, match="'no-such-platform' not found. Found: "):
        select_platform("no-such-platform")


def test_no_icd_gives_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    cl = pytest.importorskip("pyopencl")

    class NoPlatforms(cl.LogicError):  # what pyopencl raises for PLATFORM_NOT_FOUND_KHR
        def __init__(self) -> None:
            Exception.__init__(self, "clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

        def __str__(self) -> str:
            return "clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR"

    def raise_no_platforms() -> list:
        raise NoPlatforms()

    monkeypatch.setattr(cl, "get_platforms", raise_no_platforms)
    assert discover_platforms() == []
    with pytest.raises(PlatformNotFoundError, match="no OpenCL ICD registered"):
        select_platform("pocl")


def test_missing_pyopencl_gives_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platforms, "_import_cl", lambda: None)
    assert discover_platforms() == []


def test_discovery_finds_pocl_by_name() -> None:
    found = discover_platforms()
    if not found:
        pytest.skip("no OpenCL platform found (no ICD registered)")
    assert all(info.kind in platforms.KINDS for info in found)
    assert found == sorted(found, key=lambda info: (info.key, info.platform_version))
    pocl = [info for info in found if info.kind == "pocl"]
    if not pocl:
        pytest.skip(f"no PoCL platform among {[info.key for info in found]}")
    chosen = select_platform("pocl", found)
    assert chosen.kind == "pocl" and chosen.platform_name == "Portable Computing Language"
    assert chosen.to_dict()["key"] == chosen.key == f"pocl:{chosen.device_name}"


def test_probe_build_reports_a_reason_or_none() -> None:
    found = discover_platforms()
    if not found:
        pytest.skip("no OpenCL platform found (no ICD registered)")
    for info in found:
        outcome = probe_build(info)
        assert outcome is None or (isinstance(outcome, str) and outcome)
