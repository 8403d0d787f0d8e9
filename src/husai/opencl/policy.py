"""Platform decision as data: canary metrics + policy + pinned baseline -> promote or iterate.

Why data: which numbers block a node, and how badly, is a release decision that changes more often than
the code; every threshold and the severity table therefore come from the ``policy`` dict (the workflow
reads it from config), none is written here.

Expected ``policy`` keys (all required unless marked optional):

``required_sizes``            sizes every usable platform must report (missing -> failing ``required_size``)
``required_kinds``            platform kinds that must be present and usable, e.g. ``["pocl"]`` (may be [])
``throughput_floor_fraction`` floor = baseline GFLOP/s x this (``throughput_floor``)
``max_baseline_drift``        allowed ``|gflops_avg / baseline - 1|`` (``baseline_drift``: re-pin it)
``max_rel_error``             max relative error against numpy (``correctness``)
``max_abft_overhead``         max ABFT overhead fraction (``abft_overhead``)
``min_abft_recall``           min fraction of injected faults caught (``abft_recall``)
``max_abft_false_positives``  max clean runs flagged (``abft_false_positives``)
``min_rusticl_clover_ratio``  min mean-throughput ratio rusticl / Clover; evaluated only when both kinds
                              are usable, else ``not_applicable`` (``rusticl_clover_ratio``)
``severity_by_check``         check code -> severity label, e.g. ``{"correctness": "SEV1", ...}``
``severity_order``            labels from most to least severe, e.g. ``["SEV1", "SEV2", "SEV3", "SEV4"]``
``default_severity``          (optional) label for failed codes missing from ``severity_by_check``

Other check codes: ``platform_present`` (a requested platform or required kind was not found),
``platform_usable`` (found but cannot build kernels), ``baseline_present`` (no pinned baseline for a
measured (kind, size)). ``baseline`` is ``{"gflops": {kind: {size: gflops}}}`` (sizes as int or str).

Output: ``{"decision": "promote" | "iterate", "checks": [...], "failed_checks": [...], "severity": label or
None}``; each check is ``{code, platform, size, value, threshold, pass, status, reason}`` with ``pass``
``None`` and ``status`` ``"not_applicable"`` for checks that could not apply. The highest severity among
failed checks wins.
"""

from __future__ import annotations

import math
from typing import Any

REQUIRED_KEYS = (
    "required_sizes",
    "required_kinds",
    "throughput_floor_fraction",
    "max_baseline_drift",
    "max_rel_error",
    "max_abft_overhead",
    "min_abft_recall",
    "max_abft_false_positives",
    "min_rusticl_clover_ratio",
    "severity_by_check",
    "severity_order",
)


def validate_policy(policy: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in policy]
    if missing:
        raise ValueError(f"platform policy is missing keys {missing}; expected {list(REQUIRED_KEYS)}")
    order = list(policy["severity_order"])
    unknown = sorted({label for label in policy["severity_by_check"].values() if label not in order})
    if unknown:
        raise ValueError(f"severity_by_check uses labels {unknown} that are not in severity_order {order}")


def _check(
    code: str, where: tuple[str | None, int | None], value: Any, threshold: Any, ok: bool | None, reason: str
) -> dict[str, Any]:
    status = "not_applicable" if ok is None else ("pass" if ok else "fail")
    platform, size = where
    return {
        "code": code,
        "platform": platform,
        "size": size,
        "value": value,
        "threshold": threshold,
        "pass": ok,
        "status": status,
        "reason": reason,
    }


# (check code, metric key, policy key, comparison, description): the checks, not their thresholds.
_SIZE_LIMITS = (
    ("correctness", "max_rel_error", "max_rel_error", "<=", "max relative error vs numpy"),
    ("abft_overhead", "abft_overhead", "max_abft_overhead", "<=", "ABFT overhead fraction"),
    ("abft_recall", "abft_recall", "min_abft_recall", ">=", "ABFT recall on injected faults"),
    (
        "abft_false_positives",
        "abft_false_positives",
        "max_abft_false_positives",
        "<=",
        "ABFT false positives on clean runs",
    ),
)


def _baseline_gflops(baseline: dict[str, Any], kind: str, size: int) -> float | None:
    table = (baseline.get("gflops") or {}).get(kind) or {}
    value = table.get(size, table.get(str(size)))
    return None if value is None else float(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _size_checks(
    key: str, kind: str, size: int, m: dict[str, Any], policy: dict[str, Any], baseline: dict[str, Any]
) -> list[dict[str, Any]]:
    where = (key, size)
    out = []
    for code, metric, limit_key, op, what in _SIZE_LIMITS:
        value, limit = m.get(metric), policy[limit_key]
        ok = _finite(value) and (value <= limit if op == "<=" else value >= limit)
        out.append(_check(code, where, value, limit, ok, f"{what} {value} must be {op} {limit}"))
    gflops, base = m.get("gflops_avg"), _baseline_gflops(baseline, kind, size)
    if base is None:
        reason = f"no pinned baseline GFLOP/s for kind {kind!r} at size {size}"
        return [*out, _check("baseline_present", where, None, None, False, reason)]
    fraction = policy["throughput_floor_fraction"]
    floor = base * fraction
    reason = f"mean GFLOP/s {gflops} must be >= baseline {base} x {fraction}"
    out.append(_check("throughput_floor", where, gflops, floor, _finite(gflops) and gflops >= floor, reason))
    drift = abs(gflops / base - 1.0) if _finite(gflops) and base > 0 else None
    limit = policy["max_baseline_drift"]
    reason = f"|mean GFLOP/s / baseline {base} - 1| = {drift} must be <= {limit}"
    out.append(_check("baseline_drift", where, drift, limit, drift is not None and drift <= limit, reason))
    return out


def _ratio_check(per_platform: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    """Mean GFLOP/s of usable rusticl over usable Clover platforms, on the sizes both measured."""
    limit = policy["min_rusticl_clover_ratio"]
    by_size: dict[str, dict[int, list[float]]] = {"rusticl": {}, "clover": {}}
    for entry in per_platform.values():
        if entry.get("usable") and entry.get("kind") in by_size:
            for size, m in entry.get("sizes", {}).items():
                if _finite(m.get("gflops_avg")):
                    by_size[entry["kind"]].setdefault(int(size), []).append(m["gflops_avg"])
    common = sorted(set(by_size["rusticl"]) & set(by_size["clover"]))
    if not common:
        absent = [kind for kind, sizes in by_size.items() if not sizes] or ["common-size"]
        reason = (
            f"not applicable: no usable {' or '.join(absent)} throughput data for both rusticl and Clover"
        )
        return _check("rusticl_clover_ratio", (None, None), None, limit, None, reason)

    def mean(kind: str) -> float:
        values = [v for size in common for v in by_size[kind][size]]
        return sum(values) / len(values)

    ratio = mean("rusticl") / mean("clover")
    reason = f"rusticl/Clover mean GFLOP/s ratio {ratio:.3f} over sizes {common} must be >= {limit}"
    return _check("rusticl_clover_ratio", (None, None), ratio, limit, ratio >= limit, reason)


def severity_of(failed: list[dict[str, Any]], policy: dict[str, Any]) -> str | None:
    """The most severe label (earliest in ``severity_order``) among the failed checks' mapped labels."""
    if not failed:
        return None
    order, table = list(policy["severity_order"]), policy["severity_by_check"]
    labels = []
    for check in failed:
        label = table.get(check["code"], policy.get("default_severity"))
        if label is None:
            raise ValueError(
                f"no severity for failed check {check['code']!r}: add it to severity_by_check "
                "or set default_severity"
            )
        if label not in order:
            raise ValueError(f"severity {label!r} for {check['code']!r} is not in severity_order {order}")
        labels.append(label)
    return min(labels, key=order.index)


def _platform_checks(
    key: str, entry: dict[str, Any], policy: dict[str, Any], baseline: dict[str, Any]
) -> list[dict[str, Any]]:
    usable = bool(entry.get("usable"))
    reason = "platform builds and runs kernels" if usable else f"unusable: {entry.get('error')}"
    out = [_check("platform_usable", (key, None), usable, True, usable, reason)]
    if not usable:
        return out
    sizes = {int(s): m for s, m in entry.get("sizes", {}).items()}
    for size in (int(s) for s in policy["required_sizes"]):
        present = size in sizes
        reason = (
            f"size {size} measured on {key}" if present else f"required size {size} missing on platform {key}"
        )
        out.append(_check("required_size", (key, size), present, True, present, reason))
    for size, m in sorted(sizes.items()):
        out.extend(_size_checks(key, entry.get("kind", "other"), size, m, policy, baseline))
    return out


def decide(metrics: dict[str, Any], policy: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Evaluate canary ``metrics`` (from :func:`husai.opencl.canary.run_canary`) against ``policy``."""
    validate_policy(policy)
    per_platform = metrics.get("per_platform", {})
    checks: list[dict[str, Any]] = []
    for name in metrics.get("missing_platforms") or []:
        reason = f"requested platform {name!r} was not found"
        checks.append(_check("platform_present", (name, None), False, True, False, reason))
    usable_kinds = {entry.get("kind") for entry in per_platform.values() if entry.get("usable")}
    for kind in policy["required_kinds"]:
        ok = kind in usable_kinds
        checks.append(
            _check("platform_present", (kind, None), ok, True, ok, f"a usable {kind!r} platform is required")
        )
    for key, entry in sorted(per_platform.items()):
        checks.extend(_platform_checks(key, entry, policy, baseline))
    checks.append(_ratio_check(per_platform, policy))
    failed = [c for c in checks if c["pass"] is False]
    return {
        "decision": "iterate" if failed else "promote",
        "checks": checks,
        "failed_checks": failed,
        "severity": severity_of(failed, policy),
    }
