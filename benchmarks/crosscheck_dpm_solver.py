#!/usr/bin/env python
"""Cross-check fewstep's DPM-Solver family against the official DPM-Solver code
(LuChengTHU/dpm-solver, ``dpm_solver_pytorch.py``).

Both run on the same model, noise, grid and float64 arithmetic:
  - model: the exact noise prediction of ``GaussianMixture.random(16, 8, seed=0)`` under
    VP-linear(0.1, 20), through ``fs.Denoiser.exact`` (the official side calls it, through its
    ``model_wrapper``, at the time its solver asks for);
  - the official ``NoiseScheduleVP('linear', continuous_beta_0=0.1, continuous_beta_1=20.)``;
  - the same float64 x_T and fewstep's log-SNR grid from t = 1 to 1e-3: the official
    ``get_time_steps`` returns fewstep's grid for the outer grid (its own log-SNR grid is compared
    separately) and is left alone for the inner grids from which its singlestep solvers take r1, r2.

Part 1 prints, per fewstep solver and its official counterpart, the max |official − fewstep|
(target: float64 round-off) beside the max change of fewstep's own output when x_T moves by one
ulp (how much the few-step map amplifies round-off). Part 2 searches the official code's
configurations (algorithm, method, order, solver_type, skip_type, lower_order_final) and fewstep's
deterministic solvers (with their spacings and options) for the smallest median per-sample error
against ``fs.reference_solve`` at each NFE, spending exactly that many evaluations, and prints the
best of each side.

The official repository is not part of fewstep and its code is never copied here. Get it with
    git --git-dir=<mirror> show HEAD:dpm_solver_pytorch.py > /tmp/dpm-solver-official/dpm_solver_pytorch.py
(a full ``git archive HEAD`` may fail on large example assets missing from a mirror) and run
    .venv/bin/python benchmarks/crosscheck_dpm_solver.py /tmp/dpm-solver-official
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import platform
import sys
from typing import Callable, Optional

import torch

import fewstep as fs


def load_official(path: str):
    """Import dpm_solver_pytorch.py from a checkout (the directory or the file itself)."""
    file = path if path.endswith(".py") else os.path.join(path, "dpm_solver_pytorch.py")
    if not os.path.isfile(file):
        sys.exit(f"no dpm_solver_pytorch.py at {file!r}: pass the directory of an official dpm-solver checkout")
    spec = importlib.util.spec_from_file_location("official_dpm_solver", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Official:
    """Runs the official DPM_Solver.sample on the shared model, counting evaluations."""

    def __init__(self, module, den: fs.Denoiser, sched: fs.VPLinear, t_T: float, t_0: float) -> None:
        self.module = module
        self.den = den
        self.sched = sched
        self.t_T, self.t_0 = t_T, t_0
        self.calls = 0
        self.ns = module.NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0)
        self.grid_diff = 0.0

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # The official solver passes t expanded to the batch; all entries are equal.
            self.calls += 1
            assert bool((t == t.reshape(-1)[0]).all()), "official solver asked for per-sample times"
            return den(x, float(t.reshape(-1)[0]))[1]

        self.model_fn = module.model_wrapper(eps, self.ns, model_type="noise", guidance_type="uncond")

    def sample(self, x_T: torch.Tensor, algorithm: str, shared_grid: bool = True, **kwargs) -> tuple[torch.Tensor, int]:
        solver = self.module.DPM_Solver(self.model_fn, self.ns, algorithm_type=algorithm)
        if shared_grid and kwargs.get("skip_type") == "logSNR":
            own = solver.get_time_steps

            def get_time_steps(skip_type, t_T, t_0, N, device):
                if skip_type == "logSNR" and t_T == self.t_T and t_0 == self.t_0:
                    mine = fs.timesteps(self.sched, N, "logsnr", t_start=t_T, t_end=t_0).to(device)
                    diff = (own(skip_type, t_T, t_0, N, device) - mine).abs().max().item()
                    self.grid_diff = max(self.grid_diff, diff)
                    return mine
                return own(skip_type, t_T, t_0, N, device)

            solver.get_time_steps = get_time_steps
        self.calls = 0
        x = solver.sample(x_T.clone(), t_start=self.t_T, t_end=self.t_0, **kwargs)
        return x, self.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", help="directory of an official dpm-solver checkout (with dpm_solver_pytorch.py)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 6, 8, 10])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-search", action="store_true", help="only part 1 (agreement)")
    args = parser.parse_args()

    # The official code builds its times with torch.tensor(float) and torch.linspace (default
    # dtype): float64 throughout is needed for a round-off comparison.
    torch.set_default_dtype(torch.float64)
    module = load_official(args.official)

    sched = fs.VPLinear(0.1, 20.0)
    gmm = fs.GaussianMixture.random(16, 8, seed=0)
    den = fs.Denoiser.exact(gmm, sched)
    t_T, t_0 = 1.0, 1e-3
    x_T = torch.randn(args.samples, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed))
    reference = fs.reference_solve(den, x_T, t_start=t_T, t_end=t_0).x
    official = Official(module, den, sched, t_T, t_0)

    def median_error(x: torch.Tensor) -> float:
        return (x - reference).norm(dim=1).median().item()

    print(f"# fewstep {fs.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, threads {torch.get_num_threads()}")
    print(f"# GaussianMixture.random(16, 8, seed=0), VPLinear(0.1, 20), {args.samples} samples (seed {args.seed}), "
          f"float64, t = {t_T} -> {t_0}; reference: fs.reference_solve (rtol = atol = 1e-10)")

    # ------------------------------------------------------------ part 1: agreement
    # (fewstep solver, its options, steps from NFE, official algorithm, official sample() arguments)
    def fixed(order: int) -> Callable[[int], Optional[int]]:
        return lambda nfe: nfe // order if nfe % order == 0 else None

    pairs = []
    for v in ["dpmsolver", "taylor"]:
        pairs += [
            ("dpm_solver_2s", {"variant": v}, fixed(2), "dpmsolver",
             dict(order=2, method="singlestep_fixed", solver_type=v)),
            ("dpm_solver_3s", {"variant": v}, fixed(3), "dpmsolver",
             dict(order=3, method="singlestep_fixed", solver_type=v)),
            ("dpm_solver_fast", {"variant": v}, lambda nfe: nfe, "dpmsolver",
             dict(order=3, method="singlestep", solver_type=v)),
            ("dpmpp_2s", {"variant": v}, fixed(2), "dpmsolver++",
             dict(order=2, method="singlestep_fixed", solver_type=v)),
        ]
    for lof in [True, False]:
        pairs += [
            ("dpmpp_2m", {"lower_order_final": lof}, fixed(1), "dpmsolver++",
             dict(order=2, method="multistep", lower_order_final=lof)),
            ("dpmpp_3m", {"lower_order_final": lof, "variant": "official"}, fixed(1), "dpmsolver++",
             dict(order=3, method="multistep", lower_order_final=lof)),
            ("dpmpp_3m", {"lower_order_final": lof}, fixed(1), "dpmsolver++",
             dict(order=3, method="multistep", lower_order_final=lof)),
        ]
        for v in ["dpmsolver", "taylor"]:
            pairs += [
                ("dpm_solver_2m", {"variant": v, "lower_order_final": lof}, fixed(1), "dpmsolver",
                 dict(order=2, method="multistep", solver_type=v, lower_order_final=lof)),
                ("dpm_solver_3m", {"variant": v, "d2_weight": "official", "lower_order_final": lof}, fixed(1),
                 "dpmsolver", dict(order=3, method="multistep", solver_type=v, lower_order_final=lof)),
            ]
    pairs.append(("ddim", {}, fixed(1), "dpmsolver++", dict(order=1, method="multistep")))

    print("\n## Part 1: fewstep vs the official code on the same grid (uniform log-SNR)")
    print(f"{'fewstep solver':>15} {'options':>40} {'official':>50} {'NFE':>4} {'max|off-fs|':>12} "
          f"{'ulp sens':>9} {'median off':>11} {'median fs':>11}")
    worst = {}
    for name, options, steps_of, algorithm, kwargs in pairs:
        for nfe in args.nfe:
            steps = steps_of(nfe)
            if steps is None:
                continue
            out = fs.sample(den, x_T, solver=name, steps=steps, spacing="logsnr", t_start=t_T, t_end=t_0, **options)
            nudged = fs.sample(den, x_T * (1 + 2.0**-52), solver=name, steps=steps, spacing="logsnr", t_start=t_T,
                               t_end=t_0, **options)
            x_off, nfe_off = official.sample(x_T, algorithm, steps=nfe, skip_type="logSNR", **kwargs)
            assert out.nfe == nfe == nfe_off, (name, options, out.nfe, nfe, nfe_off)
            diff = (x_off - out.x).abs().max().item()
            sens = (nudged.x - out.x).abs().max().item()
            key = (name, tuple(sorted(options.items())))
            worst[key] = max(worst.get(key, 0.0), diff)
            opt = ",".join(f"{k}={v}" for k, v in options.items())
            off = f"{algorithm} " + ",".join(f"{k}={v}" for k, v in kwargs.items())
            print(f"{name:>15} {opt:>40} {off:>50} {nfe:>4} {diff:12.2e} {sens:9.1e} "
                  f"{median_error(x_off):11.4e} {median_error(out.x):11.4e}")
    print("\n# max |official - fewstep| per fewstep configuration over the NFE above "
          f"(max |x| = {reference.abs().max().item():.1f}):")
    for (name, options), diff in worst.items():
        print(f"#   {name:>15} {dict(options)!s:>45}: {diff:.2e}")
    print(f"# official log-SNR grid vs fewstep's: max |dt| = {official.grid_diff:.2e}")

    if args.skip_search:
        return

    # ------------------------------------------------------------ part 2: best configurations
    print("\n## Part 2: best median per-sample error at each NFE (exactly that many evaluations)")
    official_configs = []
    for algorithm, skip, solver_type in itertools.product(["dpmsolver", "dpmsolver++"],
                                                           ["logSNR", "time_uniform", "time_quadratic"],
                                                           ["dpmsolver", "taylor"]):
        for order in [1, 2, 3]:
            official_configs.append((algorithm, dict(method="singlestep", order=order, skip_type=skip,
                                                     solver_type=solver_type)))
            official_configs.append((algorithm, dict(method="singlestep_fixed", order=order, skip_type=skip,
                                                     solver_type=solver_type)))
            for lof in [True, False]:
                official_configs.append((algorithm, dict(method="multistep", order=order, skip_type=skip,
                                                         solver_type=solver_type, lower_order_final=lof)))

    # fewstep: every registered deterministic solver with default options, plus the option
    # variants of the DPM-Solver family; steps chosen so that exactly NFE evaluations are spent.
    extra_options = {
        "dpm_solver_2s": [{"variant": "taylor"}],
        "dpm_solver_3s": [{"variant": "taylor"}],
        "dpm_solver_fast": [{"variant": "taylor"}],
        "dpmpp_2s": [{"variant": "taylor"}],
        "dpmpp_2m": [{"lower_order_final": False}],
        "dpmpp_3m": [{"lower_order_final": False}, {"variant": "official"}],
        "dpm_solver_2m": [{"variant": "taylor"}, {"lower_order_final": False}],
        "dpm_solver_3m": [{"d2_weight": "official"}, {"variant": "taylor"}, {"lower_order_final": False},
                          {"d2_weight": "official", "lower_order_final": False}],
        "ipndm": [{"max_order": 3}, {"max_order": 2}],
        "ipndm_v": [{"max_order": 3}, {"max_order": 2}],
    }
    fewstep_configs = []
    for info in fs.solvers():
        if info["stochastic"]:
            continue
        for options in [{}] + extra_options.get(info["name"], []):
            for spacing in ["logsnr", "time", "quadratic"]:
                fewstep_configs.append((info["name"], info["nfe_per_step"], options, spacing))

    print(f"{'NFE':>4} {'best official (median)':>24} {'configuration':<95} {'best fewstep (median)':>22} "
          f"{'configuration':<60} {'official/fewstep':>16}")
    for nfe in args.nfe:
        best_off = (float("inf"), None)
        for algorithm, kwargs in official_configs:
            if kwargs["method"] == "singlestep_fixed" and nfe % kwargs["order"] != 0:
                continue
            if kwargs["method"] == "multistep" and nfe < kwargs["order"]:
                continue
            try:
                x, used = official.sample(x_T, algorithm, shared_grid=False, steps=nfe, **kwargs)
            except Exception as err:  # a configuration the official code rejects
                print(f"# official {algorithm} {kwargs} at NFE {nfe}: {type(err).__name__}: {err}")
                continue
            if used != nfe or not torch.isfinite(x).all():
                continue
            err = median_error(x)
            if err < best_off[0]:
                best_off = (err, f"{algorithm} " + ",".join(f"{k}={v}" for k, v in kwargs.items()))
        best_fs = (float("inf"), None)
        for name, per_step, options, spacing in fewstep_configs:
            for steps in sorted({max(1, nfe // per_step), nfe}):
                try:
                    out = fs.sample(den, x_T, solver=name, steps=steps, spacing=spacing, t_start=t_T, t_end=t_0,
                                    **options)
                except (ValueError, TypeError, RuntimeError):
                    continue
                if out.nfe != nfe or not torch.isfinite(out.x).all():
                    continue
                err = median_error(out.x)
                if err < best_fs[0]:
                    opt = ",".join(f"{k}={v}" for k, v in options.items())
                    best_fs = (err, f"{name} steps={steps} spacing={spacing} {opt}".strip())
                break
        ratio = best_off[0] / best_fs[0]
        print(f"{nfe:>4} {best_off[0]:24.4e} {best_off[1]:<95} {best_fs[0]:22.4e} {best_fs[1]:<60} {ratio:16.2f}")


if __name__ == "__main__":
    main()
