"""OOD stress: how much worse is the SAE on inputs it never saw in training?

The out-of-distribution slice is declared in config before any run (e.g. every pair with a >= 50) and is
excluded from SAE training; the same SAE is then scored in-distribution (held-out rows outside the slice) and
out-of-distribution (the slice) on explained variance, splice loss recovered and a k-sparse probe's AP. The
gate reads the relative drops. The split is a pure function of the inputs and the spec, so the training rule
and the evaluation rule select exactly the same rows.
"""

from __future__ import annotations

import numpy as np
import torch

from husai import stats
from husai.metrics import explained_variance

FORMULA_VERSION = "ood-v1"
SPEC_KEYS = {
    "operand_range": {"a_min", "a_max", "b_min", "b_max"},
    "answer_range": {"c_min", "c_max"},
    "pairs": {"pairs"},
}
METRICS = ("explained_variance", "loss_recovered_vs_mean", "average_precision")


def ood_split(tokens_NT, spec: dict) -> np.ndarray:
    """Boolean mask over rows: True = out-of-distribution (never used to train the SAE).

    Kinds: operand_range (every given bound holds, inclusive: {"a_min": 50} = pairs with a >= 50),
    answer_range (on c = (a + b) mod p, p read from the `=` token), pairs (an explicit [[a, b], ...] list)."""
    tok = np.asarray(tokens_NT)
    kind = spec.get("kind")
    if kind not in SPEC_KEYS:
        raise ValueError(f"ood spec: unknown kind {kind!r}; choose one of {sorted(SPEC_KEYS)}")
    keys = set(spec) - {"kind"}
    if not keys or keys - SPEC_KEYS[kind]:
        raise ValueError(f"ood spec of kind {kind!r}: keys {sorted(keys)} must be a non-empty subset of "
                         f"{sorted(SPEC_KEYS[kind])}")
    a, b = tok[:, 0], tok[:, 1]
    if kind == "pairs":
        wanted = {(int(x), int(y)) for x, y in spec["pairs"]}
        mask = np.array([(int(x), int(y)) in wanted for x, y in zip(a, b, strict=True)], dtype=bool)
    else:
        values = {"a": a, "b": b} if kind == "operand_range" else {"c": (a + b) % tok[:, 2]}
        mask = np.ones(len(tok), dtype=bool)
        for key, bound in spec.items():
            if key == "kind":
                continue
            v = values[key.split("_")[0]]
            mask &= (v >= bound) if key.endswith("_min") else (v <= bound)
    if not mask.any() or mask.all():
        raise ValueError(f"ood spec {spec} selects {int(mask.sum())} of {len(mask)} rows; it must select some "
                         "but not all")
    return mask


@torch.no_grad()
def _sae_outputs(sae, x_ND, seed_index: int):
    x_hat, f, _ = sae(torch.as_tensor(np.asarray(x_ND), dtype=torch.float32))
    return x_hat[seed_index], f[seed_index]


def ood_seed_metrics(model, sae, tokens_NT, answers_N, acts_ND, *, ood_mask, in_eval_mask, probe_train_mask,
                     hook: str, position: int, mean_activation_D, probe_label: str = "c", probe_k: int = 8,
                     seed_index: int = 0, l2: float = 1e-2) -> dict:
    """In- and out-of-distribution metrics of one SAE seed.

    in_eval_mask: in-distribution rows not used to train the SAE (its held-out rows outside the slice);
    probe_train_mask: in-distribution training rows for the k-sparse probe (latents chosen on them only).
    The probe is scored on in_eval rows and on OOD rows; EV and splice use the same two row sets."""
    from husai.lanes.probes import LogisticProbe, label_average_precision, select_latents, task_labels
    from husai.lanes.splice import splice_metrics

    ood, ev_in, ptr = (np.asarray(m, dtype=bool) for m in (ood_mask, in_eval_mask, probe_train_mask))
    if (ood & (ev_in | ptr)).any():
        raise ValueError("ood_seed_metrics: in-distribution row sets overlap the OOD slice")
    tok, ans, X = np.asarray(tokens_NT), np.asarray(answers_N), np.asarray(acts_ND, dtype=np.float32)
    lab = task_labels(tok, int(tok[0, 2]))[probe_label]
    y, C = lab["y"], lab["n_classes"]
    Z_tr = _sae_outputs(sae, X[ptr], seed_index)[1].numpy()
    idx = select_latents(Z_tr, y[ptr], probe_k)
    probe = LogisticProbe(Z_tr[:, idx], y[ptr], C, l2)
    out = {}
    for name, rows in (("in", ev_in), ("out", ood)):
        x_hat, f = _sae_outputs(sae, X[rows], seed_index)
        sp = splice_metrics(model, sae, tok[rows], ans[rows], hook, position, mean_activation_D,
                            seed_index=seed_index)
        ap = label_average_precision(y[rows], probe.predict_proba(f.numpy()[:, idx]), C)
        out[name] = {"explained_variance": explained_variance(X[rows], x_hat),
                     "loss_recovered_vs_mean": sp["loss_recovered_vs_mean"],
                     "accuracy_spliced": sp["conditions"]["spliced"]["accuracy"],
                     "average_precision": ap["average_precision"], "ap_prior": ap["prior"], "n_rows": int(rows.sum())}
    out.update({"probe_label": probe_label, "probe_k": probe_k, "selected_latents": idx.tolist(),
                "formula_version": FORMULA_VERSION})
    return out


def ood_metrics(in_metrics: dict, out_metrics: dict, *, metrics=METRICS,
                confidence: float = stats.LCB_CONFIDENCE) -> dict:
    """Relative drop (in - out) / |in| per metric (all three are higher-is-better, so a positive drop is a loss).

    Values may be floats or per-seed lists (same seed order in and out); with >= 2 seeds the drop gets a
    one-sided t upper bound over the per-seed drops ('ucb'), the conservative side for a ceiling."""
    out = {}
    for m in metrics:
        a = np.atleast_1d(np.asarray(in_metrics[m], dtype=float))
        b = np.atleast_1d(np.asarray(out_metrics[m], dtype=float))
        if a.shape != b.shape:
            raise ValueError(f"ood metric {m!r}: {a.shape[0]} in-distribution values but {b.shape[0]} OOD values")
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(a) > 1e-12, (a - b) / np.abs(a), np.nan)
        bound = stats.lcb_mean(rel, confidence)
        point = float(np.nanmean(rel)) if np.isfinite(rel).any() else float("nan")
        many = "ucb" in bound and np.isfinite(bound["ucb"])
        out[m] = {"in": float(a.mean()), "out": float(b.mean()), "absolute_drop": float((a - b).mean()),
                  "relative_drop": point, "relative_drop_per_seed": rel.tolist(),
                  "relative_drop_bound": float(bound["ucb"]) if many else point,
                  "basis": "ucb" if many else "point", "method": bound["method"] if many else "single value",
                  "higher_is_better": True}
    return {"formula_version": FORMULA_VERSION, "metrics": out,
            "definition": "relative drop = (in - out) / |in|; gate: relative_drop_bound <= max_relative_drop"}
