#!/usr/bin/env python
"""Cross-check fewstep's iPNDM steppers (``ipndm``, ``ipndm_v``) against the authors' code
(zju-pi/diff-sampler, ``diff-solvers-main/solvers.py``: ``ipndm_sampler``, ``ipndm_v_sampler``).

Both run on the same model, noise, grid and float64 arithmetic:
  - model: the exact prediction of ``GaussianMixture.random(16, 8, seed=0)`` under VP-linear(0.1, 20),
    through ``fs.Denoiser.exact``. The authors' samplers work in EDM's variables (Karras et al. 2022,
    arXiv 2206.00364): a denoiser D(x~, sigma~) of x~ = x/alpha at sigma~ = sigma/alpha; the wrapper here
    maps sigma~ back to t (``t_of_lambda(-log sigma~)``) and returns fewstep's x0 there;
  - the grid: fewstep's grid t_0 > ... > t_N, handed to the authors' samplers as ``t_steps`` =
    sigma_i/alpha_i; they start from x~_T = latents * t_steps[0], so latents = x_T/sigma_T;
  - their result x~ is mapped back with x = alpha_N x~.
Prints max |official - fewstep| / max |x| per solver, max_order and spacing (target: float64
round-off, about 1e-13; ``ipndm_v`` with ``weights="official"``), beside the change of fewstep's own
output when x_T moves by one ulp, and the difference of the authors' result from ``ipndm_v`` with its
default exact weights (solvers/ipndm_v.h explains why they differ at max_order >= 3).

The authors' repository is not part of fewstep and its code is never copied here. Get it with
    git --git-dir=<mirror> show HEAD:diff-solvers-main/solvers.py > /tmp/diff-sampler-official/solvers.py
    git --git-dir=<mirror> show HEAD:diff-solvers-main/solver_utils.py > /tmp/diff-sampler-official/solver_utils.py
and run
    .venv/bin/python benchmarks/crosscheck_ipndm.py /tmp/diff-sampler-official
"""

from __future__ import annotations

import argparse
import importlib
import math
import platform
import sys

import torch

import fewstep as fs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", help="directory holding diff-solvers-main's solvers.py and solver_utils.py")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 8, 10, 20])
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    sys.path.insert(0, args.official)
    official = importlib.import_module("solvers")

    sched = fs.VPLinear(0.1, 20.0)
    den = fs.Denoiser.exact(fs.GaussianMixture.random(16, 8, seed=0), sched)
    x_T = fs.randn((args.samples, 16), seeds=list(range(args.samples)), dtype=torch.float64)
    calls = [0]

    def net(x_tilde: torch.Tensor, sigma_tilde, class_labels=None) -> torch.Tensor:
        calls[0] += 1
        s = float(torch.as_tensor(sigma_tilde).reshape(-1)[0])
        t = min(max(sched.t_of_lambda(-math.log(s)), sched.t_min), sched.t_max)
        return den(x_tilde * sched.alpha(t), t)[0]

    print(f"# fewstep {fs.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, threads {torch.get_num_threads()}")
    print(f"{'solver':>8} {'max_order':>9} {'spacing':>9} {'steps':>5} {'max|off-fs|/max|x|':>19} {'ulp sens':>9} "
          f"{'vs exact':>11}")
    worst = 0.0
    for solver, sampler in (("ipndm", official.ipndm_sampler), ("ipndm_v", official.ipndm_v_sampler)):
        for max_order in (2, 3, 4):  # the authors' samplers fail at max_order 1 (an empty history buffer)
            for spacing in ("logsnr", "karras", "time"):
                for steps in args.steps:
                    grid = fs.timesteps(sched, steps, spacing)
                    ts = grid.tolist()
                    t_steps = torch.tensor([sched.sigma(t) / sched.alpha(t) for t in ts])
                    # ipndm_v: the authors' closed-form weights (weights="official", solvers/ipndm_v.h);
                    # "exact" differs from them at max_order >= 3 on non-uniform steps (last column).
                    kw = {"weights": "official"} if solver == "ipndm_v" else {}
                    ours = fs.sample(den, x_T, solver=solver, timesteps=grid, max_order=max_order, **kw).x
                    nudged = fs.sample(den, x_T * (1 + 2.0**-52), solver=solver, timesteps=grid,
                                       max_order=max_order, **kw).x
                    exact = fs.sample(den, x_T, solver=solver, timesteps=grid, max_order=max_order).x
                    calls[0] = 0
                    x_tilde = sampler(net, x_T / sched.sigma(ts[0]), t_steps=t_steps, max_order=max_order)
                    assert calls[0] == steps
                    theirs = x_tilde * sched.alpha(ts[-1])
                    diff = ((theirs - ours).abs().max() / theirs.abs().max()).item()
                    sens = ((nudged - ours).abs().max() / ours.abs().max()).item()
                    vs_exact = ((theirs - exact).abs().max() / theirs.abs().max()).item()
                    worst = max(worst, diff)
                    print(f"{solver:>8} {max_order:>9} {spacing:>9} {steps:>5} {diff:19.2e} {sens:9.1e} {vs_exact:11.2e}")
    print(f"# worst relative difference: {worst:.2e}")


if __name__ == "__main__":
    main()
