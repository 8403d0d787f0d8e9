"""Sweeps: config grids expanded into ordinary SAE conditions (so every grid point is a `{condition}` wildcard).

A `sweeps:` block holds up to four named grids; each is a cross product and each point becomes one condition
`{architecture, width, k, lam, ...}` exactly as if it had been written under `sae/conditions`:

* frontier:   architectures x widths x k (x lam), the architecture frontier at matched L0. relu and jumprelu
              points get `calibrate: true` (their sparsity coefficient is calibrated to the target L0 = k);
              `architecture_keys: {routed: {n_experts: 4}, ...}` adds keys per architecture.
* matryoshka: widths x k x levels (x lam); a levels list gets the width appended when it does not end there.
* routed:     widths x k x n_experts (x lam).
* scaling:    architectures x widths x k x tokens (x lam); `tokens` is the condition's training-token budget
              (steps = tokens / batch_size), written into the condition id as `-t<tokens>`. Hooks are already
              crossed with every condition (activations/hooks), so hook layers need no axis here.

Every grid takes `lam` (default [0]) and `keys` (extra condition keys for all of its points). Order is
deterministic: explicit conditions first, then the grids in the order above, each in nested-loop order.

Duplicates: a point whose condition id is already present is merged when the two specs are identical (after
`lam` defaults to 0) and refused with a ConfigError naming both origins when they differ, so no grid silently
overrides a hand-written condition. Two explicit conditions with one id stay an error (a typo, not a merge).
Expansion is idempotent: expanding an already expanded config gives the same list.
"""

from __future__ import annotations

import itertools

SWEEP_KINDS = ("frontier", "matryoshka", "routed", "scaling")


class SweepError(ValueError):
    pass


def calibratable(architecture: str) -> bool:
    """True for architectures whose L0 is set by a penalty coefficient (relu: L1, jumprelu: L0), not by k."""
    from husai.saes import get_architecture

    return get_architecture(architecture).sparsity_coefficient_field is not None


def normalised(spec: dict) -> dict:
    return {"lam": 0, **spec}


def _point(arch: str, width: int, k: int, lam: float, grid: dict, **axes) -> dict:
    spec = {"architecture": arch, "width": int(width), "k": int(k), "lam": lam, **axes}
    if calibratable(arch):
        spec["calibrate"] = True
    spec.update(grid.get("keys", {}))
    spec.update(grid.get("architecture_keys", {}).get(arch, {}))
    return spec


def grid_points(kind: str, grid: dict) -> list[dict]:
    lams = grid.get("lam", [0])
    if kind == "frontier":
        return [_point(a, w, k, lam, grid) for a, w, k, lam in
                itertools.product(grid["architectures"], grid["widths"], grid["k"], lams)]
    if kind == "matryoshka":
        out = []
        for w, k, levels, lam in itertools.product(grid["widths"], grid["k"], grid["levels"], lams):
            lv = sorted({int(x) for x in levels})
            if lv and lv[-1] > w:
                raise SweepError(f"sweeps/matryoshka/levels: level {lv[-1]} exceeds the width {w}")
            out.append(_point("matryoshka", w, k, lam, grid, matryoshka_levels=lv if lv[-1:] == [w] else lv + [w]))
        return out
    if kind == "routed":
        return [_point("routed", w, k, lam, grid, n_experts=int(e)) for w, k, e, lam in
                itertools.product(grid["widths"], grid["k"], grid["n_experts"], lams)]
    if kind == "scaling":
        return [_point(a, w, k, lam, grid, tokens=int(t)) for a, w, k, t, lam in
                itertools.product(grid["architectures"], grid["widths"], grid["k"], grid["tokens"], lams)]
    raise SweepError(f"sweeps/{kind}: unknown sweep kind; known {list(SWEEP_KINDS)}")


def expand(config: dict) -> list[tuple[dict, str]]:
    """Every condition with its origin ('sae/conditions/<i>' or 'sweeps/<kind>'), duplicates merged or refused."""
    from husai.config import condition_id

    seen: dict[str, tuple[dict, str]] = {}
    out: list[tuple[dict, str]] = []

    def add(spec: dict, origin: str, explicit: bool) -> None:
        cid = condition_id(spec)
        if cid in seen:
            prev, where = seen[cid]
            if explicit and where.startswith("sae/conditions/"):
                raise SweepError(f"{origin}: duplicate condition {cid} (also {where})")
            if normalised(prev) != normalised(spec):
                raise SweepError(f"{origin} generates condition {cid} as {normalised(spec)}, but {where} defines it "
                                 f"as {normalised(prev)}; one id cannot name two trainings: remove one of them")
            return  # identical: merged
        seen[cid] = (spec, origin)
        out.append((spec, origin))

    for i, spec in enumerate(config["sae"]["conditions"]):
        add(spec, f"sae/conditions/{i}", explicit=True)
    for kind in SWEEP_KINDS:
        if kind in config.get("sweeps", {}):
            for spec in grid_points(kind, config["sweeps"][kind]):
                add(spec, f"sweeps/{kind}", explicit=False)
    return out
