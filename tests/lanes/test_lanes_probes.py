"""Probe lane: AP by hand, leave-one-group-out folds, honest probes, and tripwires that fire on broken probes."""

import numpy as np
import pytest
import torch

from husai.io import read_json, write_json
from husai.lanes.probes import (
    LogisticProbe,
    aggregate_probes,
    average_precision,
    evaluate_fold,
    label_average_precision,
    make_folds,
    probe_tripwires,
    select_latents,
    task_labels,
)
from husai.toymodel import all_pairs

P, D = 13, 64
TOL, MIN_OVERFIT = 0.08, 0.95  # ~40 test rows per fold here: AP noise ~0.1 per fold


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny LBFGS fits are dominated by thread overhead on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    """All pairs of p=13 with Gaussian 'activations'; `sep` is a linearly separable label of them, `noise` is
    independent of them (so nothing can predict it out of fold)."""
    tokens, _ = all_pairs(P)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((len(tokens), D)).astype(np.float32)
    w = rng.standard_normal(D)
    w /= np.linalg.norm(w)
    side = np.sign(X @ w)
    X += (1.0 * side[:, None] * w).astype(np.float32)  # a margin of 2 between the classes
    sep = (side > 0).astype(np.int64)
    noise = rng.integers(0, 2, len(tokens))
    labels = {"sep": {"y": sep, "n_classes": 2}, "noise": {"y": noise, "n_classes": 2}}
    return tokens, X, labels


def _run(data, folds, **kw):
    tokens, X, labels = data
    return [evaluate_fold(X, labels, f, seed=0, **kw) for f in folds]


def _rec(res, probe, label):
    return [r for r in res["records"] if r["probe"] == probe and r["label"] == label][0]


def test_average_precision_hand_cases():
    # Ranking +, -, +, -: AP = (1/2)(1/1 + 2/3).
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(5 / 6)
    assert average_precision([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2]) == 1.0
    assert average_precision([1, 0, 0, 1], [0.5] * 4) == 0.5  # all tied: one threshold, AP = prevalence
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert label_average_precision(np.array([1, 0, 1]), proba, 2)["average_precision"] == 1.0
    multi = label_average_precision(np.array([0, 1, 2]), np.eye(3), 3)
    assert multi["average_precision"] == 1.0 and multi["prior"] == pytest.approx(1 / 3)


def test_task_labels_and_folds_partition_by_group():
    tokens, _ = all_pairs(P)
    lab = task_labels(tokens, P)
    assert (lab["c"]["y"] == (tokens[:, 0] + tokens[:, 1]) % P).all() and lab["c_mod2"]["n_classes"] == 2
    folds = make_folds(tokens, "a", 4, seed=3)
    assert len(folds) == 4
    seen = np.concatenate([f["test_rows"] for f in folds])
    assert sorted(seen) == list(range(P * P))  # each row tested exactly once
    for f in folds:
        a_test = set(tokens[f["test_rows"], 0])
        assert a_test == set(f["held_out_values"])
        assert not a_test & set(tokens[f["train_rows"], 0])  # the held-out group never trains
    assert make_folds(tokens, "a", 4, seed=3) == folds  # deterministic
    with pytest.raises(ValueError, match="group key"):
        make_folds(tokens, "zzz", 4, 0)
    with pytest.raises(ValueError, match="n_folds"):
        make_folds(tokens, "a", 99, 0)


def test_honest_probes_separable_label_ap_one_random_label_at_prior(data, tmp_path):
    res = _run(data, make_folds(data[0], "a", 4, seed=0))
    for r in res:
        assert _rec(r, "logistic_raw", "sep")["average_precision"] > 0.99
        assert _rec(r, "overfit_raw", "sep")["accuracy"] >= MIN_OVERFIT
        base = _rec(r, "baseline_prior", "sep")
        assert base["average_precision"] == pytest.approx(base["ap_prior"])  # constant score = prevalence
    noise_ap = np.mean([_rec(r, "logistic_raw", "noise")["average_precision"] for r in res])
    prior = np.mean([_rec(r, "logistic_raw", "noise")["ap_prior"] for r in res])
    assert abs(noise_ap - prior) < 0.1
    trip = probe_tripwires(res, shuffled_max_abs_excess_ap=TOL, overfit_min_accuracy=MIN_OVERFIT,
                           overfit_labels=("sep",))
    assert trip["pass"], trip
    agg = aggregate_probes(res, n_resamples=200)
    d = agg["probes"]["logistic_raw/sep"]["average_precision"]["delta_vs_baseline"]
    assert d["low"] <= d["mean"] <= d["high"] and d["mean"] > 0.4 and d["n_folds"] == 4
    write_json(tmp_path / "probes.json", {"folds": res, "aggregate": agg, "tripwires": trip})
    assert read_json(tmp_path / "probes.json")["tripwires"]["pass"] is True


def test_shuffled_tripwire_fires_on_probe_secretly_fit_on_true_labels(data):
    res = _run(data, make_folds(data[0], "a", 4, seed=0), shuffle_labels=lambda y, rng: y)
    trip = probe_tripwires(res, shuffled_max_abs_excess_ap=TOL, overfit_min_accuracy=MIN_OVERFIT,
                           overfit_labels=("sep",))
    assert not trip["shuffled_label"]["pass"] and not trip["pass"]
    assert trip["shuffled_label"]["per_label"]["sep"]["excess_ap_vs_chance"] > 0.3


def test_shuffled_tripwire_fires_on_probe_that_leaks_test_labels(data):
    tokens, X, labels = data
    folds = make_folds(tokens, "a", 4, seed=0)
    res = []
    for f in folds:
        te = np.asarray(f["test_rows"])

        def leaky(X_tr, y_tr, C, l2, it, te=te):  # trains on the test rows with their TRUE labels too
            return LogisticProbe(np.vstack([X_tr, X[te]]), np.r_[y_tr, labels["sep"]["y"][te]], C, l2, it)

        res.append(evaluate_fold(X, {"sep": labels["sep"]}, f, seed=0, fit_probe=leaky))
    trip = probe_tripwires(res, shuffled_max_abs_excess_ap=TOL, overfit_min_accuracy=MIN_OVERFIT,
                           overfit_labels=("sep",))
    assert not trip["shuffled_label"]["pass"]


def test_overfit_tripwire_fires_when_the_probe_has_no_capacity(data):
    class Blind:  # ignores its features: a silently broken pipeline
        def __init__(self, X, y, C, l2, it):
            self.prior = np.bincount(y, minlength=C) / len(y)

        def predict_proba(self, X):
            return np.tile(self.prior, (len(X), 1))

    res = _run(data, make_folds(data[0], "a", 4, seed=0), fit_probe=Blind)
    trip = probe_tripwires(res, shuffled_max_abs_excess_ap=TOL, overfit_min_accuracy=MIN_OVERFIT,
                           overfit_labels=("sep",))
    assert not trip["overfit"]["pass"] and trip["overfit"]["value"] < 0.8
    missing = probe_tripwires(res, shuffled_max_abs_excess_ap=TOL, overfit_min_accuracy=0.0,
                              overfit_labels=("absent",))
    assert not missing["overfit"]["pass"] and missing["overfit"]["missing_labels"] == ["absent"]


def test_sparse_probe_selects_the_informative_latent_on_train_rows_only(data):
    tokens, X, labels = data
    rng = np.random.default_rng(1)
    Z = np.abs(rng.standard_normal((len(tokens), 40))).astype(np.float32)
    Z[:, 5] = 0.0  # a dead latent
    Z[:, 17] = labels["sep"]["y"] * 3.0 + 0.1 * rng.random(len(tokens))
    assert select_latents(Z, labels["sep"]["y"], 1).tolist() == [17]
    assert 5 not in select_latents(Z, labels["sep"]["y"], 39).tolist()
    folds = make_folds(tokens, "b", 3, seed=0)
    res = _run(data, folds, latents_NF=Z, k_values=(1, 4))
    for r in res:
        k1 = _rec(r, "sparse_k1", "sep")
        assert k1["selected_latents"] == [17] and k1["average_precision"] > 0.99
    with pytest.raises(ValueError, match="group key"):
        evaluate_fold(X, {"b": task_labels(tokens, P)["b"]}, folds[0])
