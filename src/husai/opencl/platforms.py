"""OpenCL platform discovery by name, never by list position.

Why by name: installing another ICD (Debian's mesa-opencl-icd brings Clover and rusticl) changes the order
of ``pyopencl.get_platforms()``, so "platform 0" means different things on different nodes. Every
platform/device pair is described by a small frozen :class:`PlatformInfo` and re-opened by matching its
names (:func:`open_device`).

Why a build probe: a platform can be listed yet unable to compile anything. The PoCL 3.0 wheel (LLVM 14)
asks clang for ``-target-cpu generic`` on CPUs its LLVM does not know (e.g. AMD Zen 5) and every build
fails with "unknown target CPU 'generic'". :func:`probe_build` turns that into a recorded reason instead of
a crash deep inside a GEMM.

``discover_platforms`` returns ``[]`` when pyopencl is not importable or no ICD is registered
(``PLATFORM_NOT_FOUND_KHR``), so callers can skip cleanly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

KINDS = ("pocl", "rusticl", "clover", "nvidia", "other")

# Substrings of the platform name (case-insensitive) -> kind. Order matters only for overlapping names.
_KIND_BY_NAME_SUBSTRING = (
    ("portable computing language", "pocl"),
    ("rusticl", "rusticl"),
    ("clover", "clover"),
    ("nvidia cuda", "nvidia"),
)

_PROBE_SOURCE = "__kernel void husai_probe(__global float *x) { x[get_global_id(0)] += 1.0f; }\n"


class PlatformNotFoundError(LookupError):
    """The asked-for platform is not among the discovered ones (the message lists what was found)."""


@dataclasses.dataclass(frozen=True)
class PlatformInfo:
    """One OpenCL (platform, device) pair, identified by names only."""

    platform_name: str
    platform_vendor: str
    platform_version: str
    device_name: str
    device_type: str
    kind: str

    @property
    def key(self) -> str:
        """Stable identifier used in metrics dicts: ``<kind>:<device name>``."""
        return f"{self.kind}:{self.device_name}"

    def to_dict(self) -> dict[str, str]:
        out = dataclasses.asdict(self)
        out["key"] = self.key
        return out

    def describe(self) -> str:
        return f"{self.key} (platform {self.platform_name!r}, {self.platform_version})"


def classify_kind(platform_name: str) -> str:
    """Map a platform name string to one of :data:`KINDS`."""
    lowered = platform_name.lower()
    for needle, kind in _KIND_BY_NAME_SUBSTRING:
        if needle in lowered:
            return kind
    return "other"


def _import_cl() -> Any | None:
    try:
        import pyopencl as cl
    except ImportError:
        return None
    return cl


def _device_type_name(cl: Any, device: Any) -> str:
    dtype = int(device.type)
    for name in ("GPU", "CPU", "ACCELERATOR"):
        if dtype & int(getattr(cl.device_type, name)):
            return name.lower()
    return "other"


def _cl_platforms(cl: Any) -> list[Any]:
    try:
        return list(cl.get_platforms())
    except (cl.LogicError, cl.RuntimeError):  # PLATFORM_NOT_FOUND_KHR: no ICD registered
        return []


def _cl_devices(cl: Any, platform: Any) -> list[Any]:
    try:
        return list(platform.get_devices())
    except (cl.LogicError, cl.RuntimeError):  # DEVICE_NOT_FOUND: e.g. rusticl without RUSTICL_ENABLE
        return []


def _info_for(cl: Any, platform: Any, device: Any) -> PlatformInfo:
    name = platform.name.strip()
    return PlatformInfo(
        platform_name=name,
        platform_vendor=platform.vendor.strip(),
        platform_version=platform.version.strip(),
        device_name=device.name.strip(),
        device_type=_device_type_name(cl, device),
        kind=classify_kind(name),
    )


def discover_platforms() -> list[PlatformInfo]:
    """All (platform, device) pairs pyopencl can see, sorted by key; ``[]`` without an ICD."""
    cl = _import_cl()
    if cl is None:
        return []
    found = [_info_for(cl, p, d) for p in _cl_platforms(cl) for d in _cl_devices(cl, p)]
    return sorted(found, key=lambda info: (info.key, info.platform_version))


def _matches(info: PlatformInfo, wanted: str) -> bool:
    w = wanted.strip().lower()
    return (
        w in (info.kind, info.key.lower()) or w in info.platform_name.lower() or w in info.device_name.lower()
    )


def select_platforms(name_or_kind: str, found: list[PlatformInfo] | None = None) -> list[PlatformInfo]:
    """Every discovered pair whose kind, key, platform name or device name matches (case-insensitive)."""
    found = discover_platforms() if found is None else found
    return [info for info in found if _matches(info, name_or_kind)]


def select_platform(
    name_or_kind: str, found: list[PlatformInfo] | None = None, require_build: bool = False
) -> PlatformInfo:
    """The first matching pair (by key order); with ``require_build`` the first that compiles a kernel.

    Raises :class:`PlatformNotFoundError` naming what was asked and listing what was found (with build
    errors when ``require_build`` rejected them).
    """
    found = discover_platforms() if found is None else found
    matches = select_platforms(name_or_kind, found)
    rejected: list[str] = []
    for info in matches:
        if not require_build:
            return info
        error = probe_build(info)
        if error is None:
            return info
        rejected.append(f"{info.describe()}: cannot build kernels: {error}")
    listing = "; ".join(info.describe() for info in found) or "none (no OpenCL ICD registered)"
    msg = f"OpenCL platform {name_or_kind!r} not found. Found: {listing}."
    if rejected:
        msg += " Matching but unusable: " + " | ".join(rejected)
    raise PlatformNotFoundError(msg)


@functools.cache
def open_device(info: PlatformInfo) -> tuple[Any, Any]:
    """(context, in-order queue) for ``info``, re-found by names; cached so kernels compile once."""
    cl = _import_cl()
    if cl is None:
        raise PlatformNotFoundError("pyopencl is not importable")
    for platform in _cl_platforms(cl):
        for device in _cl_devices(cl, platform):
            if _info_for(cl, platform, device) == info:
                ctx = cl.Context([device])
                return ctx, cl.CommandQueue(ctx)
    raise PlatformNotFoundError(f"{info.describe()} disappeared since discovery")


@functools.cache
def probe_build(info: PlatformInfo) -> str | None:
    """``None`` when ``info`` compiles and runs a trivial kernel, else the (first line of the) reason."""
    cl = _import_cl()
    try:
        ctx, queue = open_device(info)
        program = cl.Program(ctx, _PROBE_SOURCE).build()
        import numpy as np

        x = np.zeros(4, dtype=np.float32)
        buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
        cl.Kernel(program, "husai_probe")(queue, (4,), None, buf)
        cl.enqueue_copy(queue, x, buf)
        queue.finish()
        if not np.all(x == 1.0):
            return f"probe kernel returned {x.tolist()} instead of ones"
    except Exception as exc:  # any build or run failure makes the platform unusable
        return _summarise_error(exc)
    return None


def _summarise_error(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    return text.splitlines()[0].strip() if text.strip() else type(exc).__name__


def usable_platforms(found: list[PlatformInfo] | None = None) -> list[PlatformInfo]:
    """The discovered pairs that pass :func:`probe_build`."""
    found = discover_platforms() if found is None else found
    return [info for info in found if probe_build(info) is None]
