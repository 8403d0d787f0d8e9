"""The OpenCL lane: an ABFT-guarded float32 GEMM on every OpenCL platform a node has.

Entry points for the workflow (all return plain JSON-able dicts; writing them is ``husai.io``'s job):

* :func:`run_canary` (``sizes, snapshots, iterations, platforms=None, seed=0``) -> per-platform metrics;
* :func:`decide` (``metrics, policy, baseline``) -> ``{"decision", "checks", "failed_checks", "severity"}``;
* :func:`abs_cosine_similarity_opencl` for the consistency similarity matrices.

Importing this package does not import pyopencl; discovery returns ``[]`` where it is missing.
"""

from husai.opencl.abft import AbftCalibration, AbftResult, calibrate, inject_fault, measure_recall, verify
from husai.opencl.canary import run_canary
from husai.opencl.gemm import TiledParams, gemm, get_engine, resolve_platform, timed_gemm
from husai.opencl.platforms import (
    PlatformInfo,
    PlatformNotFoundError,
    classify_kind,
    discover_platforms,
    probe_build,
    select_platform,
    usable_platforms,
)
from husai.opencl.policy import decide
from husai.opencl.similarity import AbftFaultError, abs_cosine_similarity_opencl

__all__ = [
    "AbftCalibration",
    "AbftFaultError",
    "AbftResult",
    "PlatformInfo",
    "PlatformNotFoundError",
    "TiledParams",
    "abs_cosine_similarity_opencl",
    "calibrate",
    "classify_kind",
    "decide",
    "discover_platforms",
    "gemm",
    "get_engine",
    "inject_fault",
    "measure_recall",
    "probe_build",
    "resolve_platform",
    "run_canary",
    "select_platform",
    "timed_gemm",
    "usable_platforms",
    "verify",
]
