"""Splice metrics: does the base model still work when the SAE's reconstruction replaces its activation?

Reconstruction error measured in activation space (EV) says nothing about whether the error lands in directions
the model uses. Splicing x_hat into the forward pass at the SAE's hook and position measures that directly:
the model's loss and task accuracy at the answer position with (a) the clean activation, (b) the SAE's
reconstruction, (c) zeros and (d) the mean activation. Loss recovered puts the spliced loss on the scale
between an ablation (0) and clean (1). Correctness is per example and the same examples are scored clean and
spliced, so the comparison is paired: an exact McNemar test on the discordant pairs, not two independent
proportions. Wilson intervals for each accuracy and a signed Cohen's h (spliced - clean) sit beside it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from husai import stats
from husai.toymodel import ANSWER_POS

FORMULA_VERSION = "splice-v1"
CONDITIONS = ("clean", "spliced", "zero_ablation", "mean_ablation")


def wilson_interval(n_correct: int, n: int, confidence: float = 0.95) -> dict:
    low, high = proportion_confint(int(n_correct), int(n), alpha=1 - confidence, method="wilson")
    return {"low": float(low), "high": float(high), "confidence": confidence,
            "method": "Wilson score interval (statsmodels proportion_confint)"}


def cohens_h(p_new: float, p_ref: float) -> float:
    """Signed Cohen's h = 2 asin sqrt(p_new) - 2 asin sqrt(p_ref): negative when p_new is the lower rate."""
    return float(proportion_effectsize(p_new, p_ref))


def paired_correctness(correct_ref_N, correct_new_N) -> dict:
    """Exact McNemar test of paired per-example correctness (reference = clean, new = spliced).

    Table rows: reference correct / wrong; columns: new correct / wrong. Only the discordant cells inform the
    test; under H0 each discordant example is equally likely to go either way (exact binomial, two-sided)."""
    ref = np.asarray(correct_ref_N, dtype=bool)
    new = np.asarray(correct_new_N, dtype=bool)
    if ref.shape != new.shape or ref.ndim != 1:
        raise ValueError(f"paired correctness needs two [N] arrays of one shape, got {ref.shape} and {new.shape}")
    table = [[int((ref & new).sum()), int((ref & ~new).sum())],
             [int((~ref & new).sum()), int((~ref & ~new).sum())]]
    res = mcnemar(table, exact=True)
    n = len(ref)
    p_ref, p_new = float(ref.mean()), float(new.mean())
    return {
        "table": table,
        "table_layout": "rows: reference (clean) correct, wrong; columns: new (spliced) correct, wrong",
        "n_discordant": table[0][1] + table[1][0],
        "ref_only_correct": table[0][1], "new_only_correct": table[1][0],
        "statistic": float(res.statistic), "p_value": float(res.pvalue),
        "method": "exact McNemar test (statsmodels, binomial on discordant pairs, two-sided)",
        "accuracy_ref": p_ref, "accuracy_new": p_new,
        "wilson_ref": wilson_interval(int(ref.sum()), n), "wilson_new": wilson_interval(int(new.sum()), n),
        "cohens_h": cohens_h(p_new, p_ref),
    }


@torch.no_grad()
def _scored_run(model, tokens_NT, answers_N, hook, position, answer_position, replace, batch):
    """Per-example loss and correctness at answer_position, with `replace(acts_BD) -> acts_BD` applied at
    (hook, position) when given."""
    losses, correct = [], []
    for start in range(0, len(tokens_NT), batch):
        tok = tokens_NT[start:start + batch]
        ans = answers_N[start:start + batch]

        def hook_fn(acts, hook=None):
            acts[:, position, :] = replace(acts[:, position, :]).to(acts.dtype)
            return acts

        fwd = [] if replace is None else [(hook, hook_fn)]
        logits = model.run_with_hooks(tok, fwd_hooks=fwd)[:, answer_position, :].to(torch.float64)
        losses.append(torch.nn.functional.cross_entropy(logits, ans, reduction="none"))
        correct.append(logits.argmax(-1) == ans)
    return torch.cat(losses).numpy(), torch.cat(correct).numpy()


def _loss_recovered(l_ablate: float, l_splice: float, l_clean: float) -> float:
    den = l_ablate - l_clean
    return float((l_ablate - l_splice) / den) if abs(den) > 1e-12 else float("nan")


def splice_metrics(model, sae, tokens_NT, answers_N, hook: str, position: int, mean_activation_D,
                   *, answer_position: int = ANSWER_POS, seed_index: int = 0, batch: int = 4096,
                   confidence: float = 0.95) -> dict:
    """Clean, spliced, zero- and mean-ablated loss/accuracy of `model` at `answer_position`.

    `sae` is any module whose forward(x_BD) returns (x_hat_SBD, ...) (a husai BatchedSAE); its seed
    `seed_index` reconstructs acts[:, position, :] at `hook`. `mean_activation_D` should be the mean over the
    SAE's training rows, so mean-ablation is the "knows nothing about this input" reference. Loss recovered
    = (L_ablate - L_splice) / (L_ablate - L_clean), NaN when the ablation does not change the loss."""
    tokens = torch.as_tensor(np.asarray(tokens_NT), dtype=torch.long)
    answers = torch.as_tensor(np.asarray(answers_N), dtype=torch.long)
    if tokens.ndim != 2 or answers.shape != (tokens.shape[0],):
        raise ValueError(f"splice needs tokens [N, T] and answers [N], got {tuple(tokens.shape)}, "
                         f"{tuple(answers.shape)}")
    mean_D = torch.as_tensor(np.asarray(mean_activation_D), dtype=torch.float32)

    def reconstruct(x_BD):
        return sae(x_BD.to(torch.float32))[0][seed_index]

    replacements = {"clean": None, "spliced": reconstruct, "zero_ablation": torch.zeros_like,
                    "mean_ablation": lambda x: mean_D.expand_as(x)}
    runs = {name: _scored_run(model, tokens, answers, hook, position, answer_position, fn, batch)
            for name, fn in replacements.items()}
    n = len(tokens)
    conditions = {}
    for name, (loss_N, correct_N) in runs.items():
        conditions[name] = {"loss": float(loss_N.mean()), "accuracy": float(correct_N.mean()),
                            "n_correct": int(correct_N.sum()),
                            "accuracy_interval": wilson_interval(int(correct_N.sum()), n, confidence)}
    L = {k: v["loss"] for k, v in conditions.items()}
    paired = paired_correctness(runs["clean"][1], runs["spliced"][1])
    return {
        "formula_version": FORMULA_VERSION,
        "hook": hook, "position": int(position), "answer_position": int(answer_position), "n": n,
        "seed_index": seed_index,
        "conditions": conditions,
        "loss_recovered_vs_mean": _loss_recovered(L["mean_ablation"], L["spliced"], L["clean"]),
        "loss_recovered_vs_zero": _loss_recovered(L["zero_ablation"], L["spliced"], L["clean"]),
        "loss_increase": L["spliced"] - L["clean"],
        "accuracy_drop": conditions["clean"]["accuracy"] - conditions["spliced"]["accuracy"],
        "mcnemar": {k: paired[k] for k in ("table", "table_layout", "n_discordant", "ref_only_correct",
                                           "new_only_correct", "statistic", "p_value", "method")},
        "cohens_h": paired["cohens_h"],
        "cohens_h_definition": "2 asin sqrt(acc_spliced) - 2 asin sqrt(acc_clean); negative = spliced worse",
        "loss_recovered_definition": "(L_ablate - L_splice) / (L_ablate - L_clean); 1 = clean, 0 = ablation",
        "higher_is_better": {"loss_recovered_vs_mean": True, "loss_recovered_vs_zero": True,
                             "loss_increase": False, "accuracy_drop": False, "cohens_h": True},
    }


def aggregate_splice(per_seed: list[dict], *, confidence: float = stats.LCB_CONFIDENCE, alpha: float = 0.05) -> dict:
    """Seed-level summary: the seed is the unit, so bounds are one-sided t bounds over per-seed values.

    McNemar p-values of the seeds are Benjamini-Hochberg adjusted; a seed counts as a significant degradation
    when its adjusted p < alpha AND more examples went correct -> wrong than wrong -> correct."""
    if not per_seed:
        raise ValueError("aggregate_splice needs at least one per-seed splice result")
    out = {"n_seeds": len(per_seed), "formula_version": FORMULA_VERSION}
    for key in ("loss_recovered_vs_mean", "loss_recovered_vs_zero", "accuracy_drop", "loss_increase", "cohens_h"):
        out[key] = stats.lcb_mean([r[key] for r in per_seed], confidence)
    pvals = [r["mcnemar"]["p_value"] for r in per_seed]
    bh = stats.benjamini_hochberg(pvals, alpha)
    worse = [r["mcnemar"]["ref_only_correct"] > r["mcnemar"]["new_only_correct"] for r in per_seed]
    sig_worse = [bool(rej and w) for rej, w in zip(bh["reject"], worse, strict=True)]
    out["mcnemar"] = {"p_values": pvals, "p_adjusted": bh["p_adjusted"], "alpha": alpha,
                      "spliced_worse": worse, "significant_degradation": sig_worse,
                      "n_significant_degradation": int(sum(sig_worse)), "method": bh["method"]}
    out["bounds"] = ("loss_recovered/cohens_h: use 'lcb' (higher is better); accuracy_drop/loss_increase: use "
                     "'ucb' (lower is better)")
    finite = [r["loss_recovered_vs_mean"] for r in per_seed if math.isfinite(r["loss_recovered_vs_mean"])]
    out["worst_seed_loss_recovered_vs_mean"] = float(min(finite)) if finite else float("nan")
    return out
