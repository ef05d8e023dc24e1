#!/usr/bin/env python
"""Cross-check fewstep's ``unipc`` against the official UniPC code (wl-zhao/UniPC, ``uni_pc.py``).

Both run on the same model, noise, grid and float64 arithmetic:
  - model: the exact noise prediction of ``GaussianMixture.random(16, 8, seed=0)`` under
    VP-linear(0.1, 20), through ``fs.Denoiser.exact`` (the official side calls it per time value);
  - the official ``NoiseScheduleVP('linear', continuous_beta_0=0.1, continuous_beta_1=20.)``;
  - the same float64 x_T and fewstep's log-SNR grid from t = 1 to 1e-3 (the official
    ``get_time_steps`` is replaced by that grid; its own log-SNR grid is compared separately);
  - multistep UniPC with ``lower_order_final=True`` and the corrector, as the official ``sample``.

Prints, per configuration, the max |official − fewstep| (target: float64 round-off), beside the
max change of fewstep's own output when x_T moves by one ulp (how much this few-step map
amplifies round-off), and the median per-sample error of both against ``fs.reference_solve``.

The official repository is not part of fewstep and its code is never copied here. Get it with
    git --git-dir=<mirror> archive HEAD uni_pc.py | tar -x -C /tmp/unipc-official
(a full ``archive HEAD`` may fail on large assets missing from a shallow mirror) and run
    .venv/bin/python benchmarks/crosscheck_unipc.py /tmp/unipc-official
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import platform
import sys

import torch

import fewstep as fs


def load_official(path: str):
    """Import uni_pc.py from a checkout (the directory or the file itself)."""
    file = path if path.endswith(".py") else os.path.join(path, "uni_pc.py")
    if not os.path.isfile(file):
        sys.exit(f"no uni_pc.py at {file!r}: pass the directory of an official UniPC checkout")
    spec = importlib.util.spec_from_file_location("official_uni_pc", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", help="directory of an official UniPC checkout (containing uni_pc.py)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 6, 8, 10])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # The official code builds small coefficient tensors with torch.tensor([...]) (default dtype):
    # float64 throughout is needed for a round-off comparison.
    torch.set_default_dtype(torch.float64)
    official = load_official(args.official)

    sched = fs.VPLinear(0.1, 20.0)
    gmm = fs.GaussianMixture.random(16, 8, seed=0)
    den = fs.Denoiser.exact(gmm, sched)
    t_T, t_0 = 1.0, 1e-3
    x_T = torch.randn(args.samples, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed))
    reference = fs.reference_solve(den, x_T, t_start=t_T, t_end=t_0).x

    calls = [0]

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # The official wrapper passes t expanded to the batch (all entries equal) and x as
        # images (its einsums are 'bkchw'): the 16-D samples travel as [B, 16, 1, 1].
        calls[0] += 1
        return den(x.reshape(x.shape[0], -1), float(t.reshape(-1)[0]))[1].reshape(x.shape)

    ns = official.NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0)

    def per_sample_median(x: torch.Tensor) -> float:
        return (x - reference).norm(dim=1).median().item()

    print(f"# fewstep {fs.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, threads {torch.get_num_threads()}")
    print(f"# GaussianMixture.random(16, 8, seed=0), VPLinear(0.1, 20), {args.samples} samples (seed {args.seed}), "
          f"float64, log-SNR grid t = {t_T} -> {t_0}, lower_order_final=True")
    grid_diff = 0.0
    worst = 0.0
    header = f"{'algorithm':>16} {'variant':>7} {'order':>5} {'NFE':>4} {'max|off-fs|':>12} {'ulp sens':>9} " \
             f"{'median err off':>14} {'median err fs':>13}"
    print(header)
    for algorithm in ["data_prediction", "noise_prediction"]:
        for variant in ["bh1", "bh2"]:
            for order in args.orders:
                for nfe in args.nfe:
                    grid = fs.timesteps(sched, nfe, "logsnr", t_start=t_T, t_end=t_0)
                    solver = official.UniPC(model_fn, ns, algorithm_type=algorithm, variant=variant)
                    own_grid = solver.get_time_steps("logSNR", t_T, t_0, nfe, x_T.device)
                    grid_diff = max(grid_diff, (own_grid - grid).abs().max().item())
                    solver.get_time_steps = lambda *a, **k: grid.clone()  # noqa: E731 — the shared grid
                    calls[0] = 0
                    with contextlib.redirect_stdout(io.StringIO()):  # the official code prints per step
                        x_off = solver.sample(x_T.clone()[:, :, None, None], steps=nfe, t_start=t_T, t_end=t_0,
                                              order=order, skip_type="logSNR", method="multistep",
                                              lower_order_final=True)
                    nfe_off = calls[0]
                    x_off = x_off.reshape(x_T.shape)
                    options = dict(order=order, variant=variant, predict_x0=algorithm == "data_prediction",
                                   lower_order_final=True)
                    out = fs.sample(den, x_T, solver="unipc", timesteps=grid, **options)
                    nudged = fs.sample(den, x_T * (1 + 2.0**-52), solver="unipc", timesteps=grid, **options)
                    sens = (nudged.x - out.x).abs().max().item()
                    assert out.nfe == nfe == nfe_off, (out.nfe, nfe, nfe_off)
                    diff = (x_off - out.x).abs().max().item()
                    worst = max(worst, diff)
                    print(f"{algorithm:>16} {variant:>7} {order:>5} {nfe:>4} {diff:12.2e} {sens:9.1e} "
                          f"{per_sample_median(x_off):14.4e} {per_sample_median(out.x):13.4e}")
    print(f"# max |official - fewstep| over all rows: {worst:.2e} (max |x| = {reference.abs().max().item():.1f})")
    print(f"# official log-SNR grid vs fewstep's: max |dt| = {grid_diff:.2e}")


if __name__ == "__main__":
    main()
