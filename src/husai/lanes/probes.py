"""Leave-one-group-out probes: is the task information in the SAE's latents, and is the probing honest?

Labels come from the task (a, b, c = (a + b) mod p and derived ones). Folds hold out one group of a group key
(e.g. the values of a, binned), so a probe is scored on inputs whose group it never saw: a probe cannot win by
memorising pairs. Per (fold, label): a prior baseline, a logistic probe on raw activations, k-sparse logistic
probes on SAE latents (latents chosen on the train fold only), and two tripwire probes: labels shuffled
within the train fold (must stay at chance) and a probe fit and scored on one fold (must overfit it, proving
the probes have capacity). If either tripwire fails, the probe numbers mean nothing.

PR-AUC is average precision (step-wise, the standard definition; one-vs-rest macro over the classes present
in the test fold for multiclass labels). Logistic regression is multinomial, L2-penalised, fit by torch LBFGS.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats as sps

FORMULA_VERSION = "probes-v1"
LABELS = ("a", "b", "c", "c_mod2", "a_lt_b", "c_lt_half")
GROUP_KEYS = ("a", "b", "c", "row")


def task_labels(tokens_NT, p: int) -> dict[str, dict]:
    """Every task label as {"y": int array [N], "n_classes": int}; rows are [a, b, =] inputs."""
    tok = np.asarray(tokens_NT)
    a, b = tok[:, 0].astype(np.int64), tok[:, 1].astype(np.int64)
    c = (a + b) % p
    ys = {"a": (a, p), "b": (b, p), "c": (c, p), "c_mod2": (c % 2, 2), "a_lt_b": ((a < b).astype(np.int64), 2),
          "c_lt_half": ((2 * c < p).astype(np.int64), 2)}
    return {k: {"y": y, "n_classes": n} for k, (y, n) in ys.items()}


def make_folds(tokens_NT, group_key: str, n_folds: int, seed: int) -> list[dict]:
    """Leave-one-group-out folds: the distinct values of `group_key` are shuffled (by `seed`) and split into
    n_folds bins; fold i tests on the rows whose value is in bin i and trains on all other rows."""
    tok = np.asarray(tokens_NT)
    if group_key not in GROUP_KEYS:
        raise ValueError(f"unknown probe group key {group_key!r}; choose one of {GROUP_KEYS}")
    if group_key == "row":
        key = np.arange(len(tok))
    else:
        p = int(tok[0, 2])  # the `=` token id is p
        key = {"a": tok[:, 0], "b": tok[:, 1], "c": (tok[:, 0] + tok[:, 1]) % p}[group_key]
    values = np.unique(key)
    if not 2 <= n_folds <= len(values):
        raise ValueError(f"n_folds={n_folds} must be between 2 and the {len(values)} values of {group_key!r}")
    bins = np.array_split(np.random.default_rng(seed).permutation(values), n_folds)
    folds = []
    for i, held in enumerate(bins):
        test = np.isin(key, held)
        folds.append({"fold": i, "group_key": group_key, "held_out_values": sorted(int(v) for v in held),
                      "test_rows": np.flatnonzero(test).tolist(), "train_rows": np.flatnonzero(~test).tolist(),
                      "seed": seed, "n_folds": n_folds})
    return folds


# --- metrics -----------------------------------------------------------------------------------------------
def average_precision(positive_N, score_N) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (ties form one threshold)."""
    pos = np.asarray(positive_N, dtype=bool)
    s = np.asarray(score_N, dtype=np.float64)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(pos)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _classes_scored(y_N, n_classes: int) -> list[int]:
    return [1] if n_classes == 2 else [int(c) for c in np.unique(y_N)]


def label_average_precision(y_N, proba_NC, n_classes: int) -> dict:
    """Binary: AP of class 1. Multiclass: one-vs-rest macro AP over the classes present in y (a class with no
    positive has no AP). `prior` is the matching mean prevalence (what a constant score gets)."""
    y = np.asarray(y_N)
    classes = _classes_scored(y, n_classes)
    aps = [average_precision(y == c, proba_NC[:, c]) for c in classes]
    return {"average_precision": float(np.nanmean(aps)) if len(aps) else float("nan"),
            "prior": float(np.mean([(y == c).mean() for c in classes]))}


def chance_average_precision(y_N, n_classes: int, n_draws: int = 20, seed: int = 0) -> float:
    """Expected AP of a random ranking (Monte Carlo): above the prevalence when positives are few, so the
    shuffled-label tripwire compares against this, not against the bare prior."""
    y = np.asarray(y_N)
    rng = np.random.default_rng(seed)
    classes = _classes_scored(y, n_classes)
    return float(np.mean([np.mean([average_precision(y == c, rng.random(len(y))) for c in classes])
                          for _ in range(n_draws)]))


# --- the probes --------------------------------------------------------------------------------------------
class LogisticProbe:
    """Multinomial logistic regression on standardised features (mean/sd of the training rows)."""

    def __init__(self, X_ND, y_N, n_classes: int, l2: float = 1e-2, max_iter: int = 100):
        X = torch.as_tensor(np.asarray(X_ND), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(y_N), dtype=torch.long)
        self.mu_D, self.sd_D = X.mean(0), X.std(0).clamp_min(1e-6)
        Xs = (X - self.mu_D) / self.sd_D
        self.W_DC = torch.zeros(X.shape[1], n_classes, requires_grad=True)
        self.b_C = torch.zeros(n_classes, requires_grad=True)
        opt = torch.optim.LBFGS([self.W_DC, self.b_C], max_iter=max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-7, tolerance_change=1e-10)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Xs @ self.W_DC + self.b_C, y) + 0.5 * l2 * self.W_DC.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)

    @torch.no_grad()
    def predict_proba(self, X_ND) -> np.ndarray:
        X = (torch.as_tensor(np.asarray(X_ND), dtype=torch.float32) - self.mu_D) / self.sd_D
        return torch.softmax(X @ self.W_DC + self.b_C, dim=1).numpy()


def select_latents(Z_NF, y_N, k: int) -> np.ndarray:
    """The k latents with the largest one-way ANOVA F (class-mean separation over within-class spread) on the
    rows given, which must be training rows only. Constant (e.g. dead) latents rank last."""
    Z, y = np.asarray(Z_NF, dtype=np.float64), np.asarray(y_N)
    groups = [Z[y == c] for c in np.unique(y)]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        F = np.asarray(sps.f_oneway(*groups, axis=0).statistic, dtype=np.float64)
    F = np.where(np.isfinite(F), F, -np.inf)
    return np.argsort(-F, kind="stable")[:k]


def _score(name, label, y_test, proba, n_classes, chance, **extra) -> dict:
    ap = label_average_precision(y_test, proba, n_classes)
    return {"probe": name, "label": label, "average_precision": ap["average_precision"], "ap_prior": ap["prior"],
            "ap_chance": chance, "accuracy": float((proba.argmax(1) == y_test).mean()), **extra}


def evaluate_fold(acts_ND, labels: dict, fold: dict, *, latents_NF=None, k_values=(), l2: float = 1e-2,
                  overfit_l2: float = 1e-4, max_iter: int = 100, seed: int = 0, raw_probes: bool = True,
                  shuffle_labels=None, fit_probe=None) -> dict:
    """All probes of one fold for every label in `labels` (a task_labels() subset), as a flat record list.

    `shuffle_labels(y, rng)` and `fit_probe(X, y, n_classes, l2, max_iter) -> probe` default to a permutation
    and LogisticProbe; they are arguments so a test can feed a broken probe and watch the tripwires fire.
    raw_probes=False skips the raw-activation probes (logistic, shuffled, overfit), which do not depend on the
    SAE: compute them once per fold and the sparse probes per (condition, fold, seed); the prior baseline is
    always included (it costs nothing) so every record set carries its own reference."""
    shuffle = shuffle_labels or (lambda y, rng: rng.permutation(y))
    fit = fit_probe or (lambda X, y, C, l2_, it: LogisticProbe(X, y, C, l2_, it))
    X = np.asarray(acts_ND, dtype=np.float32)
    tr, te = np.asarray(fold["train_rows"]), np.asarray(fold["test_rows"])
    rng = np.random.default_rng([seed, fold["fold"]])
    records = []
    for label, spec in labels.items():
        if label == fold["group_key"]:
            raise ValueError(f"label {label!r} equals the group key: its test classes never occur in training")
        y, C = spec["y"], spec["n_classes"]
        y_tr, y_te = y[tr], y[te]
        chance = chance_average_precision(y_te, C, seed=seed)
        prior = np.bincount(y_tr, minlength=C) / len(y_tr)
        records.append(_score("baseline_prior", label, y_te, np.tile(prior, (len(te), 1)), C, chance))
        if raw_probes:
            raw = fit(X[tr], y_tr, C, l2, max_iter)
            records.append(_score("logistic_raw", label, y_te, raw.predict_proba(X[te]), C, chance))
            shuffled = fit(X[tr], shuffle(y_tr, rng), C, l2, max_iter)
            records.append(_score("shuffled_label_raw", label, y_te, shuffled.predict_proba(X[te]), C, chance))
            overfit = fit(X[te], y_te, C, overfit_l2, max_iter)
            records.append(_score("overfit_raw", label, y_te, overfit.predict_proba(X[te]), C, chance))
        if latents_NF is not None:
            Z = np.asarray(latents_NF, dtype=np.float32)
            for k in k_values:
                idx = select_latents(Z[tr], y_tr, int(k))
                probe = fit(Z[tr][:, idx], y_tr, C, l2, max_iter)
                records.append(_score(f"sparse_k{int(k)}", label, y_te, probe.predict_proba(Z[te][:, idx]), C,
                                      chance, k=int(k), selected_latents=idx.tolist()))
    return {"fold": fold["fold"], "group_key": fold["group_key"], "held_out_values": fold["held_out_values"],
            "n_train": len(tr), "n_test": len(te), "seed": seed, "l2": l2, "overfit_l2": overfit_l2,
            "formula_version": FORMULA_VERSION, "records": records}


# --- aggregation and tripwires -----------------------------------------------------------------------------
def _by_fold(per_fold: list[dict], metric: str) -> dict[tuple, dict[int, float]]:
    """{(probe, label): {fold: value averaged over the seeds/conditions that share the fold}}."""
    acc: dict[tuple, dict[int, list]] = {}
    for res in per_fold:
        for r in res["records"]:
            acc.setdefault((r["probe"], r["label"]), {}).setdefault(res["fold"], []).append(r[metric])
    return {key: {f: float(np.mean(v)) for f, v in folds.items()} for key, folds in acc.items()}


def _bootstrap_mean(values, confidence: float, n_resamples: int, seed: int) -> dict:
    v = np.asarray(values, dtype=float)
    out = {"mean": float(v.mean()), "n_folds": len(v), "confidence": confidence,
           "method": f"percentile bootstrap over folds (scipy.stats.bootstrap, {n_resamples} resamples)"}
    if len(v) < 2 or np.ptp(v) == 0:
        out.update(low=float(v.mean()) if len(v) else float("nan"), high=float(v.mean()) if len(v) else float("nan"))
        return out
    res = sps.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                        rng=np.random.default_rng(seed))
    out.update(low=float(res.confidence_interval.low), high=float(res.confidence_interval.high))
    return out


def aggregate_probes(per_fold: list[dict], *, confidence: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> dict:
    """Per (probe, label): mean AP and accuracy over folds, and the per-fold paired delta against the prior
    baseline of the same label with a bootstrap interval over folds (the fold is the unit)."""
    out = {}
    tables = {m: _by_fold(per_fold, m) for m in ("average_precision", "accuracy")}
    for (probe, label), ap_f in tables["average_precision"].items():
        entry = {"probe": probe, "label": label, "folds": sorted(ap_f)}
        for m, table in tables.items():
            vals = table[(probe, label)]
            base = table.get(("baseline_prior", label), {})
            folds = [f for f in sorted(vals) if f in base]
            entry[m] = {"per_fold": [vals[f] for f in sorted(vals)], "mean": float(np.mean(list(vals.values())))}
            if probe != "baseline_prior" and folds:
                deltas = [vals[f] - base[f] for f in folds]
                entry[m]["delta_vs_baseline"] = {"per_fold": deltas,
                                                 **_bootstrap_mean(deltas, confidence, n_resamples, seed)}
        out[f"{probe}/{label}"] = entry
    return {"formula_version": FORMULA_VERSION, "n_results": len(per_fold), "probes": out}


def probe_tripwires(per_fold: list[dict], *, shuffled_max_abs_excess_ap: float, overfit_min_accuracy: float,
                    overfit_labels=("c",)) -> dict:
    """(i) shuffled-label: max over labels of |mean over folds of (AP_shuffled - AP_chance)| must stay
    <= the tolerance; (ii) overfit: the min over folds of the same-fold probe's accuracy on `overfit_labels`
    must reach overfit_min_accuracy. Either failing means the probing pipeline is broken or leaks."""
    ap = _by_fold(per_fold, "average_precision")
    chance = _by_fold(per_fold, "ap_chance")
    prior = _by_fold(per_fold, "ap_prior")
    per_label = {}
    for (probe, label), vals in ap.items():
        if probe == "shuffled_label_raw":
            ex = [vals[f] - chance[(probe, label)][f] for f in sorted(vals)]
            per_label[label] = {"excess_ap_vs_chance": float(np.mean(ex)), "per_fold": ex,
                                "excess_ap_vs_prior": float(np.mean([vals[f] - prior[(probe, label)][f]
                                                                     for f in sorted(vals)]))}
    worst = max((abs(v["excess_ap_vs_chance"]) for v in per_label.values()), default=float("nan"))
    acc = _by_fold(per_fold, "accuracy")
    over = {lab: acc[("overfit_raw", lab)] for lab in overfit_labels if ("overfit_raw", lab) in acc}
    missing = [lab for lab in overfit_labels if lab not in over]
    low = min((min(v.values()) for v in over.values()), default=float("nan"))
    shuffled_ok = bool(np.isfinite(worst) and worst <= shuffled_max_abs_excess_ap)
    overfit_ok = bool(np.isfinite(low) and low >= overfit_min_accuracy and not missing)
    return {
        "shuffled_label": {"value": worst, "threshold": shuffled_max_abs_excess_ap, "comparison": "<=",
                           "pass": shuffled_ok, "per_label": per_label,
                           "definition": "max over labels of |mean over folds (AP_shuffled - AP_random_ranking)|"},
        "overfit": {"value": low, "threshold": overfit_min_accuracy, "comparison": ">=", "pass": overfit_ok,
                    "labels": list(overfit_labels), "missing_labels": missing,
                    "per_label": {lab: [v[f] for f in sorted(v)] for lab, v in over.items()},
                    "definition": "min over folds of the accuracy of a probe fit and scored on the same fold"},
        "pass": shuffled_ok and overfit_ok,
    }
