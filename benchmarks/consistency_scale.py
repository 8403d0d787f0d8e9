"""Consistency at scale: similarity + matched assignment for all seed pairs, scipy vs auction vs sparse.

Why: the release target is PWMCC + matched MCC for 5 seeds at d_sae = 16384 (10 pairs) in <= 30 s on one H100,
where scipy's dense Hungarian alone takes ~36 s per pair. This script times each stage on synthetic but
realistic decoders and prints, per n, the speed-up of each scalable solver over scipy and its accuracy: the
measured gap to the exact matched MCC (where scipy ran) and the certified gap (dual bound, always).

Decoders: a shared base dictionary (clustered Gaussian directions, so many features have close competitors)
plus per-seed noise of per-feature strength, a fraction of seed-specific features, and a random row
permutation: matched |cos| spreads over roughly 0.3-0.9 (mean ~0.63), like trained SAEs across seeds.

    python benchmarks/consistency_scale.py                          # CPU: n = 1024 2048 4096
    python benchmarks/consistency_scale.py --device cuda            # GPU: n = 16384, 10 pairs
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from husai.assignment import (  # noqa: E402
    auction_assignment,
    auction_assignment_batched,
    consistency_pairs_at_scale,
    scipy_assignment,
    sparse_candidate_assignment,
)
from husai.consistency import abs_cosine, pwmcc_from_sim  # noqa: E402


def make_decoders(n: int, d_in: int, seeds: int, rng_seed: int = 0, unshared: float = 0.2) -> list:
    """S correlated dictionaries [n, d_in] (rows = features), as described in the module docstring."""
    g = torch.Generator().manual_seed(rng_seed)
    k = max(n // 16, 1)
    centers = torch.randn(k, d_in, generator=g)
    base = centers[torch.randint(0, k, (n,), generator=g)] + 0.8 * torch.randn(n, d_in, generator=g)
    base = torch.nn.functional.normalize(base, dim=1)
    out = []
    for _ in range(seeds):
        strength = 0.15 + 0.9 * torch.rand(n, 1, generator=g)
        W = base + strength * torch.nn.functional.normalize(torch.randn(n, d_in, generator=g), dim=1)
        fresh = torch.rand(n, generator=g) < unshared
        n_fresh = int(fresh.sum())
        W[fresh] = centers[torch.randint(0, k, (n_fresh,), generator=g)] + 0.8 * torch.randn(n_fresh, d_in,
                                                                                               generator=g)
        out.append(W[torch.randperm(n, generator=g)].contiguous())
    return out


def make_gaussian_decoders(n: int, d_in: int, seeds: int, rng_seed: int = 0) -> list:
    """Independent Gaussian dictionaries: the chance-level control (|cos| ~ 0.05-0.2, no real matches)."""
    g = torch.Generator().manual_seed(rng_seed)
    return [torch.randn(n, d_in, generator=g) for _ in range(seeds)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int = 1):
    """(result, seconds): the minimum over `repeat` runs, the usual defence against a noisy shared host."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_n(n: int, args) -> dict:
    make = make_decoders if args.kind == "realistic" else make_gaussian_decoders
    decoders = [W.to(args.device) for W in make(n, args.d_in, args.seeds, args.rng_seed)]
    pairs = list(itertools.combinations(range(args.seeds), 2))
    run_scipy = n <= args.scipy_max_n
    row = {"n": n, "pairs": len(pairs), "sim": 0.0, "scipy": 0.0 if run_scipy else None}
    acc = {m: {"s": 0.0, "gap": [], "cert": [], "rounds": [], "ok": True} for m in args.methods}
    sims, exact_means = [], []
    for i, j in pairs:
        sim, t = timed(lambda i=i, j=j: abs_cosine(decoders[i], decoders[j], args.chunk, args.device),
                       args.device, args.repeat)
        _, t_pw = timed(lambda sim=sim: pwmcc_from_sim(sim), args.device, args.repeat)
        row["sim"] += t + t_pw
        exact = None
        if run_scipy:
            exact, t = timed(lambda sim=sim: scipy_assignment(sim), args.device, args.repeat)
            row["scipy"] += t
            exact_means.append(exact.mean)
        for m in args.methods:
            if m == "auction_batched":
                continue
            solve = {"auction": lambda sim=sim: auction_assignment(sim, eps_final=args.eps_final),
                     "sparse": lambda sim=sim: sparse_candidate_assignment(sim, top_m=args.top_m)}[m]
            res, t = timed(solve, args.device, args.repeat)
            a = acc[m]
            a["s"] += t
            a["cert"].append(res.certified_gap / res.n)
            a["rounds"].append(res.rounds)
            a["ok"] &= res.converged
            if exact is not None:
                a["gap"].append(exact.mean - res.mean)
                inside = exact.total - res.total <= res.gap_bound + 1e-9 * n
                a["bound_ok"] = a.get("bound_ok", True) and inside
        if "auction_batched" in args.methods:
            sims.append(sim)
        del sim
    if "auction_batched" in args.methods:
        results, t = timed(lambda: auction_assignment_batched(sims, eps_final=args.eps_final), args.device,
                           args.repeat)
        a = acc["auction_batched"]
        a["s"] = t
        a["cert"] = [r.certified_gap / r.n for r in results]
        a["rounds"] = [results[0].rounds]
        a["ok"] = all(r.converged for r in results)
        if exact_means:
            a["gap"] = [e - r.mean for e, r in zip(exact_means, results, strict=True)]
        sims.clear()
    row["methods"] = acc
    return row


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: list[dict], methods: list[str]) -> None:
    print("| n | pairs | sim s | scipy s | method | method s | scipy / method | max gap | max cert. gap"
          " | rounds |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for m in methods:
            a = r["methods"][m]
            ratio = r["scipy"] / a["s"] if r["scipy"] is not None and a["s"] > 0 else None
            gap = max(a["gap"]) if a["gap"] else None
            flag = "" if a["ok"] else " (cap hit)"
            print(f"| {r['n']} | {r['pairs']} | {r['sim']:.2f} | {fmt(r['scipy'], '.2f')} | {m} |"
                  f" {a['s']:.2f} | {fmt(ratio, '.2f')} | {fmt(gap, '.1e')} | {max(a['cert']):.1e}{flag} |"
                  f" {max(a['rounds'])} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=None,
                   help="d_sae values (default 1024 2048 4096 on CPU, 16384 on CUDA)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=4096, help="row chunk of the similarity")
    p.add_argument("--scipy-max-n", type=int, default=4096, help="skip scipy above this n (it is O(n^3))")
    p.add_argument("--methods", nargs="+", default=None, choices=["auction", "auction_batched", "sparse"],
                   help="default: auction sparse on CPU; auction auction_batched sparse on CUDA")
    p.add_argument("--eps-final", type=float, default=None, help="auction target accuracy (default 1e-4*max)")
    p.add_argument("--top-m", type=int, default=32, help="sparse candidates per row and per column")
    p.add_argument("--rng-seed", type=int, default=0)
    p.add_argument("--kind", default="realistic", choices=["realistic", "gaussian"],
                   help="correlated seeds (default) or independent Gaussian dictionaries (chance level)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeat", type=int, default=1, help="time each step this many times, keep the minimum")
    p.add_argument("--e2e", action="store_true", help="also time consistency_pairs_at_scale end to end "
                   "(default on with CUDA)")
    p.add_argument("--e2e-method", default="auction", choices=["auction", "sparse"])
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if args.n is None:
        args.n = [16384] if cuda else [1024, 2048, 4096]
    if args.methods is None:
        args.methods = ["auction", "auction_batched", "sparse"] if cuda else ["auction", "sparse"]
    dev_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    print(f"# device: {dev_name}; torch {torch.__version__}; {args.kind} decoders; seeds {args.seeds}; "
          f"d_in {args.d_in}; "
          f"repeat {args.repeat} (min); load average before: {os.getloadavg()[0]:.2f}")
    skipped = [n for n in args.n if n > args.scipy_max_n]
    if skipped:
        print(f"# scipy skipped for n = {skipped} (> --scipy-max-n {args.scipy_max_n}): no exact gap there, "
              "only the certified (dual) gap")
    if args.device.startswith("cuda"):  # context, cuBLAS and kernel warm-up outside the timings
        w = torch.randn(512, 64, device=args.device)
        auction_assignment(abs_cosine(w, w, device=args.device))
        sync(args.device)
    rows, e2e = [], []
    for n in args.n:
        t0 = time.perf_counter()
        rows.append(run_n(n, args))
        print(f"# n={n} done in {time.perf_counter() - t0:.1f} s (incl. data generation); "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        if args.e2e or args.device.startswith("cuda"):
            make = make_decoders if args.kind == "realistic" else make_gaussian_decoders
            decoders = [W.to(args.device) for W in make(n, args.d_in, args.seeds, args.rng_seed)]
            sync(args.device)
            t0 = time.perf_counter()
            out = consistency_pairs_at_scale(decoders, tau=0.7, device=args.device, chunk=args.chunk,
                                             exact_max_n=0, large_method=args.e2e_method)
            sync(args.device)
            e2e.append((n, time.perf_counter() - t0, out["summary"]))
    print()
    print_table(rows, args.methods)
    print()
    print("gap = exact matched MCC - solver matched MCC (per pair, max over pairs); cert. gap = (dual upper"
          " bound - total) / n, an upper bound on that gap computed without scipy.")
    for r in rows:
        for m, a in r["methods"].items():
            if "bound_ok" in a and not a["bound_ok"]:
                print(f"WARNING: n={r['n']} {m}: a total fell outside its reported gap bound")
            total = r["sim"] + a["s"]
            print(f"n={r['n']} {m}: similarity + assignment for {r['pairs']} pairs = {total:.2f} s"
                  + (" (target <= 30 s on one H100)" if r["n"] >= 16384 else ""))
    for n, seconds, summ in e2e:
        print(f"end to end: consistency_pairs_at_scale(n={n}, {summ['n_pairs']} pairs,"
              f" methods {summ['methods']}, batch_pairs {summ['batch_pairs']}) = {seconds:.2f} s;"
              f" max mean gap bound {summ['max_mean_gap_bound']:.1e}"
              + (" (target <= 30 s on one H100)" if n >= 16384 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
