"""Seed-batched husai TopK training against sae-lens training the same S seeds, on the same data, same steps.

    python benchmarks/train_throughput.py                       # embedded sizes, CPU
    python benchmarks/train_throughput.py --device cuda --d-in 512 --d-sae 16384 --k 32 --batch 4096 \
        --seeds 5 --steps 300 --dtype bfloat16 --compile         # the H100 row

Contenders (each warmed up first, then timed end to end around its training call):
  husai            train_seed_batched: all S seeds as one batched model (fp32, or bf16 + fp32 masters)
  sae-lens seq     SAETrainer.fit once per seed, one after another (its fastest settings: autocast on GPU;
                   on CPU the faster of dense and `use_sparse_activations`)
  sae-lens multi   MultiSAETrainer: sae-lens' multi-SAE coordinator, S SAEs in lockstep on one stream
Prints seed-tokens/s (S * steps * batch / seconds), the ratios, and on CUDA the MFU in dense-equivalent
FLOPs (12 * d_in * d_sae per seed-token: encoder + decoder, forward + backward) against --peak-tflops.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time

import torch


def data(n_rows: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """Correlated Gaussian rows: the same tensor feeds every contender."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_rows, d_in, generator=g) @ (torch.randn(d_in, d_in, generator=g) / d_in**0.5)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Clock:
    """Wall-clock seconds (the number reported) and this process's CPU seconds (a cross-check on a shared
    machine, where other processes' load inflates wall-clock but not CPU time)."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @contextlib.contextmanager
    def measure(self, device: str):
        sync(device)
        w, c = time.perf_counter(), time.process_time()
        yield
        sync(device)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c


def run_husai(a, x) -> Clock:
    from husai.saes import SAEConfig
    from husai.training import TrainConfig, train_seed_batched

    cfg = SAEConfig("topk", a.d_in, a.d_sae, k=a.k, dead_after_steps=a.dead_window)
    tc = TrainConfig(steps=a.steps, batch_size=a.batch, lr=a.lr, warmup_steps=0, decay_fraction=0.0,
                     log_every=10**9, device=a.device, dtype=a.dtype, compile=a.compile)
    clock = Clock()
    with clock.measure(a.device):
        train_seed_batched(cfg, tc, x, list(range(a.seeds)))
    return clock


def _sae_lens_parts(a, sparse: bool):
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    def make_sae(seed):
        torch.manual_seed(seed)
        return TopKTrainingSAE(TopKTrainingSAEConfig(d_in=a.d_in, d_sae=a.d_sae, k=a.k, device=a.device,
                                                     use_sparse_activations=sparse))

    tcfg = SAETrainerConfig(total_training_samples=a.steps * a.batch, train_batch_size_samples=a.batch, lr=a.lr,
                            lr_end=a.lr, device=a.device, autocast=a.device.startswith("cuda"),
                            dead_feature_window=a.dead_window, logger=LoggingConfig(log_to_wandb=False))
    return make_sae, tcfg


def _batches(x, a, device):
    xd = x.to(device)
    g = torch.Generator().manual_seed(0)
    for _ in range(a.steps):
        yield xd[torch.randint(0, x.shape[0], (a.batch,), generator=g).to(device)]


def run_sae_lens_seq(a, x, sparse: bool) -> Clock:
    from sae_lens.training.sae_trainer import SAETrainer

    make_sae, tcfg = _sae_lens_parts(a, sparse)
    clock = Clock()
    for seed in range(a.seeds):
        trainer = SAETrainer(cfg=tcfg, sae=make_sae(seed), data_provider=_batches(x, a, a.device))
        with clock.measure(a.device), contextlib.redirect_stderr(io.StringIO()):  # (tqdm)
            trainer.fit()
    return clock


def run_sae_lens_multi(a, x, sparse: bool) -> Clock:
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    make_sae, tcfg = _sae_lens_parts(a, sparse)
    names = [f"seed{s}" for s in range(a.seeds)]
    trainer = MultiSAETrainer(cfg=tcfg, saes={n: make_sae(s) for s, n in enumerate(names)},
                              hook_names={n: "hook" for n in names},
                              data_provider=({"hook": b} for b in _batches(x, a, a.device)))
    clock = Clock()
    with clock.measure(a.device), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit()
    return clock


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    model = platform.processor() or "unknown model"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({model})"


def load() -> str:
    """The 1/5/15-minute load averages: on a shared machine, how busy it was while we measured."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-in", type=int, default=128)
    p.add_argument("--d-sae", type=int, default=256)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--dead-window", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per contender, interleaved; best is kept")
    p.add_argument("--skip", nargs="*", default=[], choices=["multi", "seq", "sparse"])
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    p.add_argument("--json", default="", help="also write the results here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    x = data(max(a.batch * 50, 20000), a.d_in)
    load_before = load()
    tokens = a.seeds * a.steps * a.batch
    warm = argparse.Namespace(**{**vars(a), "steps": 5, "seeds": 1})
    results = {}
    contenders = [("husai seed-batched", lambda b: run_husai(b, x))]
    sparse_opts = [False] if "sparse" in a.skip or a.device.startswith("cuda") else [False, True]
    if "seq" not in a.skip:
        contenders += [(f"sae-lens sequential{' (sparse acts)' if s else ''}",
                        lambda b, s=s: run_sae_lens_seq(b, x, s)) for s in sparse_opts]
    if "multi" not in a.skip:
        contenders += [(f"sae-lens MultiSAETrainer{' (sparse acts)' if s else ''}",
                        lambda b, s=s: run_sae_lens_multi(b, x, s)) for s in sparse_opts]
    failed = {}
    for name, fn in contenders:
        try:
            fn(warm)
        except Exception as e:  # e.g. sae-lens' sparse activations have no CPU backward in some versions
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    for _ in range(a.repeats):  # interleaved, so a burst of outside load hits every contender alike
        for name, fn in contenders:
            if name in failed:
                continue
            clock = fn(a)
            if name not in results or clock.wall < results[name]["seconds"]:
                results[name] = {"seconds": clock.wall, "cpu_seconds": clock.cpu,
                                 "seed_tokens_per_s": tokens / clock.wall,
                                 "seed_tokens_per_cpu_s": tokens / max(clock.cpu, 1e-9)}
    base = max((r["seed_tokens_per_s"] for n, r in results.items() if n.startswith("sae-lens seq")), default=None)
    husai = results["husai seed-batched"]["seed_tokens_per_s"]
    flops_per_token = 12 * a.d_in * a.d_sae
    print(f"machine: {machine(a.device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"load average (1/5/15 min) before: {load_before}; after: {load()}")
    print(f"d_in {a.d_in}, d_sae {a.d_sae}, k {a.k}, batch {a.batch}, seeds {a.seeds}, steps {a.steps}, "
          f"husai dtype {a.dtype}{' + compile' if a.compile else ''}")
    print(f"best of {a.repeats} interleaved runs each")
    print(f"{'contender':<40}{'seconds':>9}{'seed-tok/s':>13}{'husai x':>9}{'cpu-s':>9}{'husai x (cpu)':>15}" +
          ("    MFU" if a.device.startswith("cuda") else ""))
    husai_cpu = results["husai seed-batched"]["seed_tokens_per_cpu_s"]
    for name, r in results.items():
        line = (f"{name:<40}{r['seconds']:>9.2f}{r['seed_tokens_per_s']:>13,.0f}"
                f"{husai / r['seed_tokens_per_s']:>9.2f}{r['cpu_seconds']:>9.2f}"
                f"{husai_cpu / r['seed_tokens_per_cpu_s']:>15.2f}")
        if a.device.startswith("cuda"):
            r["mfu"] = r["seed_tokens_per_s"] * flops_per_token / (a.peak_tflops * 1e12)
            line += f"{r['mfu']:>7.1%}"
        print(line)
    for name, why in failed.items():
        print(f"{name:<40}not run: {why}")
    if base:
        print(f"husai / fastest sae-lens sequential: {husai / base:.2f}x")
    out = {"args": vars(a), "machine": machine(a.device), "load_before": load_before, "load_after": load(),
           "results": results, "failed": failed}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
