#!/usr/bin/env python
"""End-to-end cost of one sample of the Fashion-MNIST teacher through the ``fewstep`` command, with
glibc's allocator defaults against the thresholds the command sets at startup
(``core/malloc_tuning.h``), side by side in one run.

Each round runs, in alternating order, ``fewstep sample --model models/fmnist-unet-eps.pt --n 64
--nfe N`` under ``FEWSTEP_MALLOC_TUNING=0`` (glibc's defaults, the behaviour before) and without it
(the thresholds), for N = ``--nfe`` and N = 1, and reads each child's CPU time (user + system) and
minor page faults from ``wait4``. The N = 1 runs measure what does not scale with the evaluations
(start-up, loading the network, writing the PNG); the difference of the two is the cost of the other
N - 1 evaluations, reported per evaluation. Figures are medians over the rounds, with the ratio
tuned / defaults; the machine, threads and versions are printed beside them.

    .venv/bin/python benchmarks/cost_per_sample.py --fewstep build/bin/fewstep --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(cmd: list[str], env: dict) -> tuple[float, float, float, int]:
    """(user s, system s, user + system s, minor faults) of one child process."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (status {status}):\n{err}")
    return usage.ru_utime, usage.ru_stime, usage.ru_utime + usage.ru_stime, usage.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fewstep", default=str(ROOT / "build" / "bin" / "fewstep"), help="the fewstep command")
    parser.add_argument("--model", default=str(ROOT / "models" / "fmnist-unet-eps.pt"))
    parser.add_argument("--solver", default="dpmpp_2m")
    parser.add_argument("--n", type=int, default=64, help="batch (samples in one call)")
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="LibTorch intra-op threads of the command")
    args = parser.parse_args()

    configs = {"defaults": {"FEWSTEP_MALLOC_TUNING": "0"}, "tuned": {}}
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "FEWSTEP_MALLOC_TUNING")}
    results: dict = {(c, n): [] for c in configs for n in (1, args.nfe)}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for config in order:
                for nfe in (args.nfe, 1):
                    cmd = [args.fewstep, "--threads", str(args.threads), "sample", "--model", args.model,
                           "--solver", args.solver, "--nfe", str(nfe), "--n", str(args.n), "--quiet",
                           "--out", os.path.join(tmp, "grid.png")]
                    results[(config, nfe)].append(run_once(cmd, {**base_env, **configs[config]}))

    version = subprocess.run([args.fewstep, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"# {version}; python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"--threads {args.threads}, {args.rounds} rounds (medians), alternating order")
    print(f"# fewstep sample --model {Path(args.model).name} --solver {args.solver} --n {args.n} --nfe N")
    med = {key: [statistics.median(v[i] for v in runs) for i in range(4)] for key, runs in results.items()}
    print(f"{'allocator':>10} {'N':>4} {'user s':>8} {'sys s':>8} {'cpu s':>8} {'minor faults':>13}")
    for (config, nfe), (u, s, c, f) in sorted(med.items()):
        print(f"{config:>10} {nfe:>4} {u:8.3f} {s:8.3f} {c:8.3f} {f:13.0f}")
    per_eval = {}
    for config in configs:
        hi, lo = med[(config, args.nfe)], med[(config, 1)]
        per_eval[config] = [(hi[i] - lo[i]) / (args.nfe - 1) for i in range(4)]
    d, t = per_eval["defaults"], per_eval["tuned"]
    print(f"\nper evaluation at batch {args.n} (N = {args.nfe} minus N = 1, / {args.nfe - 1}):")
    print(f"  cpu    {d[2] * 1e3:8.1f} ms -> {t[2] * 1e3:8.1f} ms   ratio tuned/defaults {t[2] / d[2]:.2f}")
    print(f"  system {d[1] * 1e3:8.1f} ms -> {t[1] * 1e3:8.1f} ms")
    print(f"  faults {d[3]:8.0f}    -> {t[3]:8.0f}")
    whole_d, whole_t = med[("defaults", args.nfe)][2], med[("tuned", args.nfe)][2]
    print(f"whole command at N = {args.nfe}: cpu {whole_d:.3f} s -> {whole_t:.3f} s, ratio {whole_t / whole_d:.2f}")


if __name__ == "__main__":
    main()
