"""One condition's consistency evidence: every statistic over all seed pairs, beside two chance levels,
with a seed-level bootstrap interval, a permutation p-value, and an LCB of (trained - chance)."""

from __future__ import annotations

import numpy as np
import torch

from husai import stats
from husai.consistency import STATISTICS, chance_values, pairwise_matrices
from husai.metrics import FORMULAS, formula_versions
from husai.saes import init_decoder_rows


def condition_consistency(decoders: list[torch.Tensor], seeds: list[int], cfg: dict) -> dict:
    """cfg: tau, chance_pairs, bootstrap_resamples, permutation_resamples, n_random_for_permutation,
    control_seed, lcb_confidence."""
    if len(decoders) < 2:
        raise ValueError(f"consistency needs at least 2 seeds, got {len(decoders)}")
    d_sae, d_in = decoders[0].shape
    tau, ctrl = cfg["tau"], int(cfg.get("control_seed", 12345))
    assignment = {"method": cfg.get("assignment", "scipy"), "exact_max_n": cfg.get("exact_max_n", 4096)}
    trained = pairwise_matrices(decoders, tau, assignment)
    gauss = chance_values(d_sae, d_in, cfg["chance_pairs"], tau, seed=ctrl, assignment=assignment)
    untrained = chance_values(d_sae, d_in, cfg["chance_pairs"], tau, seed=ctrl + 1,
                              make_decoder=lambda g: init_decoder_rows(d_sae, d_in, g), assignment=assignment)
    # Permutation pool: the trained dictionaries plus R random ones of the same shape and layout.
    g = torch.Generator().manual_seed(ctrl + 2)
    pool = list(decoders) + [torch.randn((d_sae, d_in), generator=g, dtype=torch.float64)
                             for _ in range(cfg["n_random_for_permutation"])]
    pool_mats = pairwise_matrices(pool, tau, assignment)
    out = {"statistics": {}}
    for k, name in enumerate(STATISTICS):
        M = trained[name]
        ch_g, ch_u = stats.mean_ci(gauss[name]), stats.mean_ci(untrained[name])
        # Compare against the higher of the two chance levels (the conservative reference).
        ref_name, ref = ("gaussian", gauss[name]) if ch_g["mean"] >= ch_u["mean"] else ("untrained_init",
                                                                                          untrained[name])
        delta = stats.lcb_difference_vs_chance(M, ref, n_resamples=cfg["bootstrap_resamples"], seed=ctrl + 10 + k,
                                               confidence=cfg.get("lcb_confidence", 0.95))
        point = stats.mean_offdiag(M)
        ref_ci = stats.mean_ci(ref)
        out["statistics"][name] = {
            "formula_version": FORMULAS[name]["version"],
            "higher_is_better": FORMULAS[name]["higher_is_better"],
            "trained": {
                "mean": point,
                "pairwise": M.tolist(),
                "interval": stats.seed_bootstrap(M, n_resamples=cfg["bootstrap_resamples"], seed=ctrl + 20 + k),
            },
            "chance_gaussian": ch_g,
            "chance_untrained_init": ch_u,
            "chance_reference": ref_name,
            "delta_vs_chance": delta,
            "chance_halfwidth_ratio": (ref_ci["halfwidth"] / abs(point - ref_ci["mean"])
                                       if point != ref_ci["mean"] else float("inf")),
            "permutation": stats.permutation_pvalue(pool_mats[name], len(decoders),
                                                    n_resamples=cfg["permutation_resamples"], seed=ctrl + 30 + k),
        }
    out.update({
        "seeds": list(seeds), "n_seeds": len(seeds), "n_pairs": len(seeds) * (len(seeds) - 1) // 2,
        "d_sae": int(d_sae), "d_in": int(d_in), "tau": tau, "chance_pairs": cfg["chance_pairs"],
        "unit": "seed (pairs of one seed set are dependent; resampling and permutation act on seeds)",
        "formula_versions": formula_versions(*STATISTICS),
        "assignment": {**assignment, "max_matched_mcc_gap_bound": float(trained["matched_mcc_gap_bound"].max()),
                       "note": "scipy = exact Hungarian (gap 0); auction/sparse record a certified bound"},
    })
    return out


def pairwise_figure(report: dict, title: str, png_path, pdf_path=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from husai.io import write_with

    fig, axes = plt.subplots(1, len(STATISTICS), figsize=(4.2 * len(STATISTICS), 3.8))
    seeds = report["seeds"]
    for ax, name in zip(axes, STATISTICS, strict=True):
        st = report["statistics"][name]
        M = np.array(st["trained"]["pairwise"], dtype=float)
        np.fill_diagonal(M, np.nan)
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(seeds)):
            for j in range(len(seeds)):
                if i != j:
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set_yticks(range(len(seeds)), [str(s) for s in seeds])
        chance = st[f"chance_{st['chance_reference']}"]["mean"]
        ax.set_title(f"{name}\nmean {st['trained']['mean']:.3f} vs chance {chance:.3f}", fontsize=9)
        ax.set_xlabel("seed")
    axes[0].set_ylabel("seed")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    write_with(png_path, lambda p: fig.savefig(p, dpi=120, format="png"))
    if pdf_path:
        write_with(pdf_path, lambda p: fig.savefig(p, format="pdf", metadata={"CreationDate": None}))
    plt.close(fig)
