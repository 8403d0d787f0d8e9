"""Matched baselines for external benchmarks: an external score means little alone (SAEBench and CE-Bench scores move
with width and sparsity), so every external number husai reports is a DELTA against a reference SAE evaluated by
the same adapter on the same data and matched on hook, width and L0.

The map lives in config (`external.baselines`):

    l0_tolerance: 0.1            # relative: |L0_baseline - L0_candidate| / L0_candidate <= 0.1
    entries:
      - id: pythia70m-res1-w4096-topk32     # named in every output that uses it
        hook: blocks.1.hook_resid_pre
        width: 4096
        l0: 32                              # its measured L0 (as declared when the map was written)
        source: <checkpoint dir or sae_lens:<release>/<sae_id>>
        summaries: {saebench_core: <path or [paths]>, cebench: <path or [paths]>}

A candidate whose hook, width or L0 has no entry gets NO delta: `delta_per_seed = None` with the reason, never 0.

A baseline's `source` may be a husai checkpoint or any SAE saved in sae-lens' on-disk format (e.g. a published SAE
saved with `save_inference_model`): `load_reference_sae` loads the latter with sae-lens itself, and the SAEBench and
CE-Bench adapters accept both, so candidate and baseline go through the same eval code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from husai.io import read_json

DEFINITION = "improvement = candidate - baseline if higher is better, else baseline - candidate (per candidate seed)"


@dataclass(frozen=True)
class Baseline:
    id: str
    hook: str
    width: int
    l0: float
    source: str = ""
    summaries: dict = field(default_factory=dict)  # eval name -> path, [paths], summary dict or [summary dicts]

    def describe(self) -> dict:
        return {"id": self.id, "hook": self.hook, "width": self.width, "l0": self.l0, "source": self.source}


@dataclass(frozen=True)
class BaselineMap:
    entries: tuple[Baseline, ...]
    l0_tolerance: float = 0.1


def parse_baseline_map(raw, where: str = "external.baselines") -> BaselineMap:
    """Validate the config block; errors name the entry and key. An absent block is an empty map."""
    if isinstance(raw, BaselineMap):
        return raw
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with 'entries', got {type(raw).__name__}")
    tol = raw.get("l0_tolerance", 0.1)
    if not isinstance(tol, int | float) or not 0 <= tol < 1:
        raise ValueError(f"{where}.l0_tolerance must be a number in [0, 1), got {tol!r}")
    entries, seen = [], set()
    for i, e in enumerate(raw.get("entries") or []):
        here = f"{where}.entries[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{here}: expected a mapping, got {type(e).__name__}")
        missing = [k for k in ("id", "hook", "width", "l0") if k not in e]
        if missing:
            raise ValueError(f"{here}: missing key(s) {missing}")
        unknown = sorted(set(e) - {"id", "hook", "width", "l0", "source", "summaries"})
        if unknown:
            raise ValueError(f"{here}: unknown key(s) {unknown}")
        if e["id"] in seen:
            raise ValueError(f"{here}: duplicate baseline id {e['id']!r}")
        if not isinstance(e["width"], int) or e["width"] < 1:
            raise ValueError(f"{here}.width must be a positive integer, got {e['width']!r}")
        if not isinstance(e["l0"], int | float) or e["l0"] <= 0:
            raise ValueError(f"{here}.l0 must be a positive number, got {e['l0']!r}")
        if not isinstance(e.get("summaries", {}), dict):
            raise ValueError(f"{here}.summaries must map eval name -> summary path(s)")
        seen.add(e["id"])
        entries.append(Baseline(id=str(e["id"]), hook=str(e["hook"]), width=e["width"], l0=float(e["l0"]),
                                source=str(e.get("source", "")), summaries=dict(e.get("summaries", {}))))
    return BaselineMap(tuple(entries), float(tol))


def l0_gap(l0_baseline: float, l0_candidate: float) -> float:
    return abs(l0_baseline - l0_candidate) / l0_candidate


def match_baseline(bmap: BaselineMap, *, hook: str, width: int, l0: float | None) -> dict:
    """The entry with this hook and width whose L0 is nearest the candidate's, within the tolerance (ties: by id).
    Returns {'baseline': Baseline | None, 'l0_gap', 'reason'}."""
    want = f"hook={hook}, width={width}, L0={l0}"
    if l0 is None or not l0 > 0:
        return {"baseline": None, "l0_gap": None, "reason": f"candidate has no measured L0 to match ({want})"}
    same = [b for b in bmap.entries if b.hook == hook and b.width == width]
    if not same:
        return {"baseline": None, "l0_gap": None,
                "reason": f"no baseline in the map for hook={hook}, width={width} ({len(bmap.entries)} entries)"}
    best = min(same, key=lambda b: (l0_gap(b.l0, l0), b.id))
    gap = l0_gap(best.l0, l0)
    if gap > bmap.l0_tolerance:
        return {"baseline": None, "l0_gap": gap,
                "reason": f"nearest baseline {best.id!r} (L0={best.l0}) is {gap:.1%} away from L0={l0}, "
                          f"tolerance {bmap.l0_tolerance:.0%}"}
    return {"baseline": best, "l0_gap": gap, "reason": None}


def baseline_summaries(baseline: Baseline, eval_name: str) -> tuple[list[dict] | None, str | None]:
    """The baseline's summaries for one eval (paths are read here); (None, reason) when absent or unreadable."""
    src = baseline.summaries.get(eval_name)
    if not src:
        return None, f"baseline {baseline.id!r} has no {eval_name} summary in the map"
    items = src if isinstance(src, list) else [src]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(item)
            continue
        if not Path(item).exists():
            return None, f"baseline {baseline.id!r}: {eval_name} summary {item} does not exist"
        out.append(read_json(item))
    return out, None


def mean_l0(summaries: list[dict]) -> float | None:
    vals = [s.get("l0") for s in summaries]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def _absent(v) -> bool:
    return v is None or not math.isfinite(v)


def metric_delta(candidate: list[dict], baseline: list[dict] | None, metric: str, higher_is_better: bool | None,
                 baseline_id: str | None, reason: str | None = None) -> dict:
    """Per-seed improvement of the candidate over the baseline's mean value of `metric`.

    The baseline is a fixed reference (its own seed spread is reported, not propagated); what is missing stays
    None with the reason, so no gate can read a missing delta as 'no change'."""
    out = {"metric": metric, "higher_is_better": higher_is_better, "baseline_id": baseline_id,
           "definition": DEFINITION, "candidate_per_seed": [s.get("metrics", {}).get(metric) for s in candidate],
           "baseline_per_seed": None, "baseline_value": None, "delta_per_seed": None, "delta_mean": None,
           "reason": reason}
    if reason is None and baseline is None:
        out["reason"] = "no matched baseline"
    if baseline is not None:
        out["baseline_per_seed"] = [s.get("metrics", {}).get(metric) for s in baseline]
    if out["reason"]:
        return out
    if higher_is_better is None:
        out["reason"] = f"{metric} has no higher-is-better direction; an improvement is undefined"
    elif not candidate or any(_absent(v) for v in out["candidate_per_seed"]):
        out["reason"] = f"{metric} missing or non-finite in {sum(map(_absent, out['candidate_per_seed']))} of " \
                        f"{len(candidate)} candidate summaries"
    elif not baseline or any(_absent(v) for v in out["baseline_per_seed"]):
        out["reason"] = f"{metric} missing from baseline {baseline_id!r}'s summaries"
    if out["reason"]:
        return out
    base = sum(out["baseline_per_seed"]) / len(out["baseline_per_seed"])
    sign = 1.0 if higher_is_better else -1.0
    out["baseline_value"] = base
    out["delta_per_seed"] = [sign * (v - base) for v in out["candidate_per_seed"]]
    out["delta_mean"] = sum(out["delta_per_seed"]) / len(out["delta_per_seed"])
    return out


def matched_deltas(eval_name: str, candidate: list[dict], bmap, metrics: dict[str, bool | None],
                   l0: float | None = None) -> dict:
    """Match the candidate (hook, width, measured L0 from its summaries unless `l0` is given) and compute each
    metric's delta. metrics: name -> higher_is_better (None: take it from the summaries)."""
    bmap = parse_baseline_map(bmap)
    hooks = {s.get("hook") for s in candidate}
    widths = {s.get("width") for s in candidate}
    if len(hooks) != 1 or len(widths) != 1:
        raise ValueError(f"{eval_name}: candidate summaries mix hooks {sorted(map(str, hooks))} or widths {widths}")
    hook, width = hooks.pop(), widths.pop()
    l0 = mean_l0(candidate) if l0 is None else l0
    m = match_baseline(bmap, hook=hook, width=width, l0=l0)
    b, reason = m["baseline"], m["reason"]
    base = None
    if b is not None:
        base, reason = baseline_summaries(b, eval_name)
    if base is not None:
        bl0 = mean_l0(base)
        if bl0 is not None and l0_gap(bl0, l0) > bmap.l0_tolerance:
            reason = (f"baseline {b.id!r} measured L0={bl0:.4g} in {eval_name}, {l0_gap(bl0, l0):.1%} away from "
                      f"the candidate's {l0:.4g} (tolerance {bmap.l0_tolerance:.0%})")
            base = None
    deltas = {}
    for metric, hib in metrics.items():
        if hib is None:
            dirs = {s.get("higher_is_better", {}).get(metric) for s in candidate}
            hib = dirs.pop() if len(dirs) == 1 else None
        deltas[metric] = metric_delta(candidate, base, metric, hib, b.id if b else None, reason)
    return {"eval": eval_name, "candidate": {"hook": hook, "width": width, "l0": l0, "n_seeds": len(candidate)},
            "baseline": b.describe() if b else None, "l0_gap": m["l0_gap"], "l0_tolerance": bmap.l0_tolerance,
            "reason": reason, "deltas": deltas}


def is_husai_checkpoint(ckpt_dir: str | Path) -> bool:
    return bool(read_json(Path(ckpt_dir) / "cfg.json").get("metadata", {}).get("husai"))


def load_reference_sae(ckpt_dir: str | Path, *, device: str = "cpu", **facts):
    """A baseline in sae-lens' format, loaded by sae-lens (so it runs the forward its trainer meant); `facts`
    (model_name, hook_name, context_size, prepend_bos) fill or replace its cfg.json metadata."""
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(ckpt_dir), device=device)
    meta = read_json(Path(ckpt_dir) / "cfg.json").get("metadata", {})  # load_from_disk does not keep it
    for k in ("model_name", "hook_name", "hook_head_index", "context_size", "prepend_bos", *facts):
        v = facts.get(k) if facts.get(k) is not None else meta.get(k)
        if v is not None:
            setattr(sae.cfg.metadata, k, v)
    missing = [k for k in ("model_name", "hook_name") if not getattr(sae.cfg.metadata, k)]
    if missing:
        raise ValueError(f"{Path(ckpt_dir) / 'cfg.json'}: metadata lacks {missing}; pass them")
    return sae


class ReferenceSeed(torch.nn.Module):
    """A sae-lens SAE behind the seed-batched interface CE-Bench scoring uses: encode(x [B, D]) -> [1, B, F]."""

    def __init__(self, sae):
        super().__init__()
        self.sae = sae
        arch = sae.cfg.architecture
        self.cfg = SimpleNamespace(d_sae=sae.cfg.d_sae, architecture=arch() if callable(arch) else arch)
        self.seeds, self.n_seeds = [None], 1

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x_BD.to(self.sae.dtype)).float().unsqueeze(0)
