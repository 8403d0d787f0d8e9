"""Tiled OpenCL GEMM vs numpy's BLAS on the same CPU, and the ABFT overhead.

Run: ``python benchmarks/opencl_gemm.py [--platform pocl] [--sizes 512 1024 2048] [--repeats 7]``.
Prints Markdown tables: GFLOP/s of the ``tiled`` kernel (and ``local``/``naive`` up to 1024) against
``numpy.matmul`` (float32) at each n, runs interleaved so both see the same machine state, medians of
wall-clock times; then the ABFT overhead at ``--abft-size``. ``--baseline-sizes`` prints the canary's
mean GFLOP/s per size, the number pinned in ``config/platform_baseline.yaml``.

It reports which BLAS numpy uses (threadpoolctl when importable, else ``numpy.show_config``, plus the
OpenBLAS core in use) and the ``OPENBLAS_*`` environment, which changes numpy's speed.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import platform as py_platform
import statistics
import time
from pathlib import Path

import numpy as np

from husai.opencl.canary import run_canary
from husai.opencl.checked import CheckedGemm
from husai.opencl.gemm import METHODS, get_engine, resolve_platform


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        pass
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    text = f"{blas.get('name')} {blas.get('version')} [{blas.get('openblas configuration', '')}]"
    libs = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "libscipy_openblas*.so"))
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
            for symbol in ("scipy_openblas_get_corename64_", "openblas_get_corename"):
                if hasattr(handle, symbol):
                    fn = getattr(handle, symbol)
                    fn.restype = ctypes.c_char_p
                    text += f"; core in use: {fn().decode()}"
                    break
        except OSError:
            continue
    return text


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return py_platform.processor() or "unknown"


def _busy_seconds() -> tuple[float, float]:
    """(CPU-seconds all processes were busy, CPU-seconds this process used) so far."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    t = os.times()
    return busy, t.user + t.system


def _median_gflops(n: int, seconds: list[float]) -> float:
    return 2.0 * n**3 / statistics.median(seconds) / 1e9


def bench_size(engine, n: int, repeats: int, methods: list[str], rng: np.random.Generator) -> list[str]:
    A = rng.random((n, n), dtype=np.float32)
    B = rng.random((n, n), dtype=np.float32)
    ref = A @ B
    prepared = {m: engine.prepare(A, B, m) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in [*methods, "numpy"]}
    for m in methods:
        prepared[m].run()  # warm-up (PoCL compiles the work-group function on first enqueue)
    for _ in range(repeats):
        for m in methods:
            times[m].append(prepared[m].run())
        start = time.perf_counter()
        np.matmul(A, B)
        times["numpy"].append(time.perf_counter() - start)
    numpy_gflops = _median_gflops(n, times["numpy"])
    rows = []
    for m in methods:
        C = prepared[m].read()
        err = float(np.abs(C - ref).max() / np.abs(ref).max())
        g = _median_gflops(n, times[m])
        best = 2.0 * n**3 / min(times[m]) / 1e9
        rows.append(
            f"| {n} | {m} | {g:.1f} | {best:.1f} | {numpy_gflops:.1f} | {g / numpy_gflops:.2f} | {err:.1e} |"
        )
    return rows


def bench_abft(engine, n: int, repeats: int, rng: np.random.Generator) -> list[str]:
    from husai.opencl import abft

    A = rng.random((n, n), dtype=np.float32)
    B = rng.random((n, n), dtype=np.float32)
    clean = []
    for run in range(3):
        A_c, B_c = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        c = CheckedGemm(engine.prepare(A_c, B_c), A_c, B_c, seed=run + 1)
        c.run_unchecked()
        clean.append(c.statistics())
    calibration = abft.calibrate_from_statistics(clean)
    checked = CheckedGemm(engine.prepare(A, B), A, B, seed=0)
    checked.run_unchecked()
    unchecked_s, checked_s, observe_s, one_shot_s, predict_s = [], [], [], [], []
    passed = True
    for rep in range(repeats):
        unchecked_s.append(checked.run_unchecked()[2])
        _, result, _, total = checked.run_checked(calibration)
        checked_s.append(total)
        passed &= result.passed
        start = time.perf_counter()
        checked.observe()
        observe_s.append(time.perf_counter() - start)
        # one-shot: a fresh prediction computed on the host while the kernel runs
        fresh = CheckedGemm(checked.prepared, A, B, seed=rep, eager=False)
        _, result, _, total = fresh.run_checked(calibration)
        one_shot_s.append(total)
        predict_s.append(fresh.predict_seconds)
        passed &= result.passed
    base, with_check = statistics.median(unchecked_s), statistics.median(checked_s)
    one_shot = statistics.median(one_shot_s)
    return [
        f"| {n} | {base * 1e3:.1f} | {with_check * 1e3:.1f} | {(with_check / base - 1) * 100:.1f}% "
        f"| {statistics.median(observe_s) * 1e3:.2f} | {statistics.median(predict_s) * 1e3:.1f} "
        f"| {(one_shot / base - 1) * 100:.1f}% | {checked.on_device} | {passed} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default=None, help="name or kind (default: first usable)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--slow-methods-max-n", type=int, default=1024, help="run naive/local up to this n")
    parser.add_argument("--abft-size", type=int, default=2048)
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    busy0, ours0, wall0 = *_busy_seconds(), time.perf_counter()
    info = resolve_platform(args.platform)
    engine = get_engine(info)
    rng = np.random.default_rng(args.seed)
    print(f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), load average {os.getloadavg()}")
    print(f"- OpenCL: {info.platform_name} / {info.device_name} / {info.platform_version}")
    print(f"- numpy {np.__version__} BLAS: {blas_description()}")
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("OPENBLAS_", "OMP_", "POCL_"))}
    print(f"- environment: {env or 'no OPENBLAS_/OMP_/POCL_ variables'}")
    print()
    print("| n | kernel | GFLOP/s (median) | GFLOP/s (best) | numpy GFLOP/s (median) | ratio | max rel err |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        methods = ["tiled"] + ([m for m in METHODS if m != "tiled"] if n <= args.slow_methods_max_n else [])
        for row in bench_size(engine, n, args.repeats, methods, rng):
            print(row, flush=True)
    print()
    print(
        "| n | GEMM + read (ms) | + ABFT check (ms) | overhead | device observe (ms) "
        "| host predict, once per input (ms) | one-shot overhead (predict overlapped) | observed on device "
        "| clean runs passed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in bench_abft(engine, args.abft_size, args.repeats, rng):
        print(row, flush=True)
    if args.baseline_sizes:
        metrics = run_canary(
            args.baseline_sizes, snapshots=2, iterations=3, platforms=[info.key], seed=args.seed
        )
        print()
        print("| n | canary mean GFLOP/s | peak | p95 time (s) | ABFT overhead | recall | false positives |")
        print("|---|---|---|---|---|---|---|")
        for key, entry in metrics["per_platform"].items():
            if key != info.key:
                continue
            for size, m in entry["sizes"].items():
                print(
                    f"| {size} | {m['gflops_avg']:.1f} | {m['gflops_peak']:.1f} | {m['time_p95_s']:.4f} "
                    f"| {m['abft_overhead'] * 100:.1f}% | {m['abft_recall']} | {m['abft_false_positives']} |"
                )
    busy1, ours1 = _busy_seconds()
    others = (busy1 - busy0 - (ours1 - ours0)) / ((time.perf_counter() - wall0) * (os.cpu_count() or 1))
    print(f"\n- load average after: {os.getloadavg()}")
    print(f"- other processes kept {max(others, 0.0) * 100:.0f}% of the CPUs busy during this run")


if __name__ == "__main__":
    main()
