"""External benchmarks (SAEBench, CE-Bench) measured against matched baselines, and their release gates.

Importing this package needs neither sae-bench nor a model: the adapters import their heavy dependencies when
they run. The gates reuse husai.gate's `check`/`_gate`/`_missing`, so an external gate has exactly the shape of
every other gate in release_policy.json, plus an `external` block naming the baseline and the per-seed deltas.

Gate policy (one block per gate in the policy file; thresholds are data, none live here):

    external_saebench:
      required: false              # the embedded default has no external benchmark: skipped, never passed
      basis: lcb                   # lcb (default): one-sided Student-t LCB over candidate seeds; or point
      eval: saebench_core          # which summaries (default per gate: saebench_core / cebench)
      l0_tolerance: 0.1            # optional: overrides the baseline map's tolerance
      metrics:                     # metric -> minimum improvement over the matched baseline (first = primary)
        ce_loss_score: -0.02
        explained_variance: -0.02
"""

from __future__ import annotations

from dataclasses import replace

from husai import stats
from husai.external.baselines import BaselineMap, match_baseline, matched_deltas, parse_baseline_map
from husai.gate import _gate, _missing, check

__all__ = ["EVAL_OF_GATE", "BaselineMap", "external_gate", "match_baseline", "matched_deltas", "parse_baseline_map"]

EVAL_OF_GATE = {"external_saebench": "saebench_core", "external_cebench": "cebench"}


def _unwrap(items) -> tuple[list[dict], list[str]]:
    """Summaries as plain dicts or as gate evidence {'path', 'data'}; returns (summaries, evidence paths)."""
    data, paths = [], []
    for it in items or []:
        if isinstance(it, dict) and "data" in it and "path" in it:
            data.append(it["data"])
            paths.append(str(it["path"]))
        else:
            data.append(it)
            if it.get("path"):
                paths.append(str(it["path"]))
    return data, paths


def _metric_specs(name: str, spec: dict) -> list[tuple[str, float, bool | None]]:
    raw = spec.get("metrics")
    if isinstance(raw, dict):
        out = [(m, v, None) if not isinstance(v, dict) else (m, v["min_delta"], v.get("higher_is_better"))
               for m, v in raw.items()]
    elif isinstance(raw, list):
        out = [(d["metric"], d["min_delta"], d.get("higher_is_better")) for d in raw]
    else:
        out = []
    if not out:
        raise ValueError(f"policy gates.{name}.metrics: give at least one metric -> min_delta")
    for m, v, _ in out:
        if not isinstance(v, int | float):
            raise ValueError(f"policy gates.{name}.metrics.{m}: min_delta must be a number, got {v!r}")
    return out


def external_gate(name: str, summaries, baselines, spec: dict, *, confidence: float = stats.LCB_CONFIDENCE,
                  l0: float | None = None) -> dict:
    """One external-benchmark gate: each policy metric's improvement over the baseline matched on hook, width and
    L0, per candidate seed; its LCB (basis `lcb`) or mean (`point`) must reach the policy's min_delta.

    summaries: the candidate's per-seed summaries of spec['eval'] (None/empty = benchmark not run); baselines:
    the config's baseline map. Absent summaries, no matched baseline, a missing metric, or too few seeds for an
    LCB are missing evidence: a required gate fails with that reason, an optional one is `skipped`."""
    eval_name = spec.get("eval") or EVAL_OF_GATE.get(name)
    if eval_name is None:
        raise ValueError(f"policy gates.{name}: say which summaries it reads (eval: saebench_core | cebench | ...)")
    metrics = _metric_specs(name, spec)
    basis = spec.get("basis", "lcb")
    if basis not in ("lcb", "point"):
        raise ValueError(f"policy gates.{name}.basis must be lcb or point, got {basis!r}")
    cand, paths = _unwrap(summaries)
    if not cand:
        return _missing(name, spec, f"no {eval_name} summaries (the external benchmark was not run in this "
                                    "configuration)")
    wrong = sorted({s.get("eval") for s in cand} - {eval_name}, key=str)
    if wrong:
        raise ValueError(f"gate {name} reads {eval_name} summaries, got {wrong}")
    bmap = parse_baseline_map(baselines)
    if "l0_tolerance" in spec:
        bmap = replace(bmap, l0_tolerance=float(spec["l0_tolerance"]))
    ext = matched_deltas(eval_name, cand, bmap, {m: hib for m, _, hib in metrics}, l0=l0)
    if ext["reason"]:
        g = _missing(name, spec, ext["reason"])
        g["external"] = ext
        return g
    checks, missing = [], []
    for metric, min_delta, _ in metrics:
        d = ext["deltas"][metric]
        if d["delta_per_seed"] is None:
            missing.append(f"{metric}: {d['reason']}")
            continue
        b = stats.lcb_mean(d["delta_per_seed"], confidence)
        d.update(mean=b["mean"], lcb=b["lcb"], n_seeds=b["n"], method=b["method"])
        if basis == "lcb" and b["n"] < 2:
            missing.append(f"{metric}: an LCB needs >= 2 candidate seeds, have {b['n']}")
            continue
        value = b["lcb"] if basis == "lcb" else b["mean"]
        checks.append(check(f"{metric}_improvement_vs_{ext['baseline']['id']}", value, min_delta, ">=", basis,
                            b["method"] if basis == "lcb" else "mean over candidate seeds"))
    if missing:
        g = _missing(name, spec, "; ".join(missing))
        g["external"] = ext
        return g
    b = next(x for x in bmap.entries if x.id == ext["baseline"]["id"])
    src = b.summaries.get(eval_name)
    base_paths = [str(p) for p in (src if isinstance(src, list) else [src]) if isinstance(p, str)
                  or hasattr(p, "__fspath__")]
    g = _gate(name, spec, checks, paths + base_paths)
    g["external"] = ext
    return g
