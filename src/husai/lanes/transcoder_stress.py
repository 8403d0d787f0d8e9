"""Transcoder stress: is the consistency finding specific to SAEs, or does a transcoder on the same hook agree?

A transcoder (in-hook -> out-hook) and an SAE trained on the same hook with the same seeds are each compared
with their OWN chance level (their dictionaries can differ in shape, and chance depends on shape); the stress
statistic is delta = (transcoder - its chance) - (SAE - its chance), with a one-sided seed-level bootstrap
bound. When the seed lists are the same, seeds are resampled jointly: seed s of both families saw the same
data order and init stream, so their values are paired and resampling them apart would overstate the noise.

No best-of-N: the function takes exactly one transcoder report and one SAE report, the configuration fixed in
config before the run; it records which ones it was given and never chooses among several.
"""

from __future__ import annotations

import numpy as np

from husai import stats
from husai.consistency import STATISTICS

FORMULA_VERSION = "transcoder-stress-v1"


def _chance_mean(stat: dict) -> tuple[float, str, float]:
    """The report's own chance reference (the higher of its two chance levels) and its CI half-width."""
    ref = stat.get("chance_reference", "gaussian")
    ch = stat[f"chance_{ref}"]
    return float(ch["mean"]), ref, float(ch.get("halfwidth", float("nan")))


def _excess(report: dict, name: str) -> tuple[np.ndarray, float, dict]:
    st = report["statistics"][name]
    M = np.asarray(st["trained"]["pairwise"], dtype=float)
    chance, ref, half = _chance_mean(st)
    return M, chance, {"trained_mean": stats.mean_offdiag(M), "chance_mean": chance, "chance_reference": ref,
                       "chance_halfwidth": half, "excess_over_chance": stats.mean_offdiag(M) - chance}


def transcoder_stress(transcoder_report: dict, sae_report: dict, *, n_resamples: int = 2000, seed: int = 0,
                      confidence: float = stats.LCB_CONFIDENCE, statistics=STATISTICS,
                      transcoder_condition: str | None = None, sae_condition: str | None = None) -> dict:
    """Per statistic: each family's excess over its own chance, and delta = excess_tc - excess_sae with a
    one-sided bootstrap LCB (and UCB) over seeds. The chance means are treated as fixed (their CI half-widths
    are recorded; the consistency gate already requires them to be small against the effect)."""
    if isinstance(transcoder_report, list) or isinstance(sae_report, list):
        raise TypeError("transcoder_stress takes ONE pre-registered configuration per family, not a list "
                        "(choosing the best of several after seeing results is not allowed)")
    tc_seeds, sae_seeds = list(transcoder_report["seeds"]), list(sae_report["seeds"])
    joint = tc_seeds == sae_seeds
    rng = np.random.default_rng(seed)
    S_tc, S_sae = len(tc_seeds), len(sae_seeds)
    if min(S_tc, S_sae) < 2:
        raise ValueError(f"transcoder stress needs >= 2 seeds per family, got {S_tc} and {S_sae}")
    draws_tc = stats._seed_resamples(S_tc, n_resamples, rng)
    draws_sae = draws_tc if joint else stats._seed_resamples(S_sae, n_resamples, rng)
    out = {"statistics": {}}
    for name in statistics:
        M_tc, ch_tc, tc = _excess(transcoder_report, name)
        M_sae, ch_sae, sae = _excess(sae_report, name)
        point = tc["excess_over_chance"] - sae["excess_over_chance"]
        boot_tc = np.array([stats.mean_offdiag(M_tc, r) for r in draws_tc]) - ch_tc
        boot_sae = np.array([stats.mean_offdiag(M_sae, r) for r in draws_sae]) - ch_sae
        boot = boot_tc - boot_sae
        out["statistics"][name] = {
            "transcoder": {**tc, "excess_lcb": float(np.percentile(boot_tc, 100 * (1 - confidence)))},
            "sae": {**sae, "excess_lcb": float(np.percentile(boot_sae, 100 * (1 - confidence)))},
            "delta": {"point": point, "lcb": float(np.percentile(boot, 100 * (1 - confidence))),
                      "ucb": float(np.percentile(boot, 100 * confidence)), "confidence": confidence,
                      "definition": "(transcoder - its chance) - (SAE - its chance), mean over seed pairs"},
        }
    out.update({
        "formula_version": FORMULA_VERSION,
        "transcoder_condition": transcoder_condition, "sae_condition": sae_condition,
        "transcoder_seeds": tc_seeds, "sae_seeds": sae_seeds, "seeds_resampled_jointly": joint,
        "method": (f"one-sided percentile bootstrap over seeds ({'joint' if joint else 'independent'} resampling "
                   f"of the two families), {n_resamples} resamples; chance means fixed"),
        "selection": "single pre-registered configuration per family (no best-of-N)",
    })
    return out
