"""Paper figures drawn from JSON that the workflow already wrote: nothing here trains, resamples or estimates.

Each function takes plain dicts (the parsed consistency.json / metrics.json / canary files), draws one figure
and writes it as PNG and PDF atomically. PDFs carry no creation date, so an unchanged input gives an unchanged
file. Intervals are the ones stored in the JSON, labelled with the method written beside them there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from husai.io import write_with

PDF_METADATA = {"CreationDate": None, "ModDate": None}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, png: str | Path, pdf: str | Path | None) -> list[Path]:
    plt = _plt()
    write_with(png, lambda p: fig.savefig(p, dpi=130, format="png", metadata={"Software": None}))
    out = [Path(png)]
    if pdf:
        write_with(pdf, lambda p: fig.savefig(p, format="pdf", metadata=PDF_METADATA))
        out.append(Path(pdf))
    plt.close(fig)
    return out


def _chance(st: dict) -> dict:
    return st[f"chance_{st['chance_reference']}"]


def short_labels(keys: list[str]) -> tuple[list[str], str]:
    """'<hook>/<condition>' keys without the hook when every key has the same one (then named in the title)."""
    hooks = {k.split("/", 1)[0] for k in keys if "/" in k}
    if len(hooks) == 1 and all("/" in k for k in keys):
        return [k.split("/", 1)[1] for k in keys], f" [{hooks.pop()}]"
    return list(keys), ""


def trained_vs_chance(consistency: dict[str, dict], png, pdf=None, candidate: str | None = None) -> list[Path]:
    """Per statistic: each condition's trained mean with its seed-bootstrap interval beside both chance levels
    (random Gaussian dictionaries, untrained SAE init) with their intervals."""
    plt = _plt()
    conds = list(consistency)
    labels, where = short_labels(conds)
    stats = list(next(iter(consistency.values()))["statistics"])
    fig, axes = plt.subplots(1, len(stats), figsize=(4.2 * len(stats), 3.6), squeeze=False)
    x = np.arange(len(conds))
    series = (("trained", "o", "C0", -0.2), ("chance_gaussian", "s", "C7", 0.0), ("chance_untrained_init", "^",
                                                                                  "C3", 0.2))
    for ax, name in zip(axes[0], stats, strict=True):
        for key, marker, color, dx in series:
            pts = []
            for c in conds:
                st = consistency[c]["statistics"][name]
                e = st[key]
                lo, hi = (e["interval"]["low"], e["interval"]["high"]) if key == "trained" else (e["low"], e["high"])
                pts.append((e["mean"], lo, hi))
            m, lo, hi = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            ax.errorbar(x + dx, m, yerr=[m - lo, hi - m], fmt=marker, color=color, capsize=3,
                        label=key.replace("_", " "))
        ax.set_xticks(x, [lab + (" *" if c == candidate else "") + (" (λ>0)" if consistency[c].get("regularised")
                                                                     else "")
                          for c, lab in zip(conds, labels, strict=True)], rotation=20, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("cross-seed similarity")
    axes[0][0].legend(fontsize=7, loc="best")
    inflated = any(v.get("regularised") for v in consistency.values())
    fig.suptitle("Trained vs chance (95% intervals: seed bootstrap for trained, Student t over draws for chance)"
                 + ("; * = candidate" if candidate else "")
                 + ("; λ>0: inflated by construction, judged in regularised.json" if inflated else "") + where,
                 fontsize=9)
    fig.tight_layout()
    return save(fig, png, pdf)


def frontier(rows: list[dict], png, pdf=None, statistic: str = "pwmcc") -> list[Path]:
    """The L0-EV-consistency frontier: per condition, seed mean ± sd of L0 against explained variance, and
    against the trained consistency statistic with its bootstrap interval.

    rows: {condition, l0: [per seed], ev: [per seed], cons: {mean, low, high}, regularised: bool (optional)}.
    A regularised (lambda > 0) condition's consistency is drawn hollow: it is inflated by construction."""
    plt = _plt()
    def sd(v):
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    labels, where = short_labels([r["condition"] for r in rows])
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        l0, ev = np.asarray(r["l0"], float), np.asarray(r["ev"], float)
        color = f"C{i % 10}"
        a1.errorbar(l0.mean(), ev.mean(), xerr=sd(l0), yerr=sd(ev), fmt="o", color=color, capsize=3,
                    label=lab)
        if r.get("cons"):
            c = r["cons"]
            a2.errorbar(l0.mean(), c["mean"], xerr=sd(l0), yerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]],
                        fmt="o", color=color, capsize=3, mfc="none" if r.get("regularised") else color)
    a1.set_xlabel("L0 (mean ± sd over seeds)")
    a1.set_ylabel("explained variance (mean ± sd)")
    a2.set_xlabel("L0 (mean ± sd over seeds)")
    a2.set_ylabel(f"{statistic}, trained (95% seed bootstrap)"
                  + ("; hollow = λ>0, inflated" if any(r.get("regularised") for r in rows) else ""))
    a1.legend(fontsize=7)
    fig.suptitle("Sparsity, reconstruction and consistency per condition" + where, fontsize=10)
    fig.tight_layout()
    return save(fig, png, pdf)


def lcb_forest(rows: list[dict], png, pdf=None, threshold: float | None = None, statistic: str = "") -> list[Path]:
    """Forest plot: per condition and statistic, the point estimate of (trained − chance) and its one-sided
    lower confidence bound; the bar runs from the LCB to the point. rows: {label, point, lcb, highlight}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    labels, where = short_labels([r["label"] for r in rows])
    for yi, r in zip(y, rows, strict=True):
        color = "C3" if r.get("highlight") else "C0"
        ax.plot([r["lcb"], r["point"]], [yi, yi], color=color, lw=2)
        ax.plot(r["point"], yi, "o", color=color)
        ax.plot(r["lcb"], yi, "|", color=color, ms=12, mew=2)
    ax.axvline(0, color="k", lw=0.8)
    if threshold is not None:
        ax.axvline(threshold, color="C2", ls="--", lw=1, label=f"policy min_delta = {threshold:g}")
        ax.legend(fontsize=7, loc="best")
    lo = min([0.0, *(r["lcb"] for r in rows), threshold or 0.0])
    hi = max([*(r["point"] for r in rows), threshold or 0.0])
    ax.set_xlim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.08 * (hi - lo + 1e-9))
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"{statistic} trained − chance: point (dot) and one-sided 95% LCB (bar end)")
    ax.set_title("Lower confidence bounds per condition (red: release candidate)" + where, fontsize=9)
    fig.tight_layout()
    return save(fig, png, pdf)


def canary_throughput(metrics: dict, png, pdf=None) -> list[Path]:
    """GEMM throughput (GFLOP/s, mean over runs) per platform and size, from a canary metrics file."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, entry in sorted(metrics.get("per_platform", {}).items()):
        sizes = sorted((int(n), m.get("gflops_avg")) for n, m in entry.get("sizes", {}).items())
        sizes = [(n, g) for n, g in sizes if g is not None]
        if sizes:
            ax.plot(*zip(*sizes, strict=True), "o-", label=key)
    ax.set_xlabel("matrix size n (n × n GEMM)")
    ax.set_ylabel("GFLOP/s (mean over runs)")
    ax.set_title("Platform canary throughput", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, png, pdf)


def has_throughput(metrics: dict) -> bool:
    plats = metrics.get("per_platform") if isinstance(metrics, dict) else None
    return isinstance(plats, dict) and any(
        isinstance(e, dict) and any(isinstance(m, dict) and m.get("gflops_avg") is not None
                                    for m in (e.get("sizes") or {}).values()) for e in plats.values())
