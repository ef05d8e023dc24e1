#!/usr/bin/env python3
"""fewstep-bench peers: fewstep against diffusers' schedulers and k-diffusion's samplers, side by side.

Same model, same x_T, same number of network evaluations (NFE 4, 5, 6, 8, 10, 15, 20), on two problems:

- ``mixture``: the 16-D, 8-component Gaussian mixture of ``fewstep-bench solvers`` with its exact
  denoiser, under diffusers' default discrete schedule (1000 linear betas); error = median per-sample
  distance ||x - x_ref||_2 to the float64 solution of the probability-flow ODE at sigma = 0.
- ``fmnist``: the shipped Fashion-MNIST teacher (models/fmnist-unet-eps.pt, VPLinear(0.1, 20));
  error = median coupled RMS error against a 500-step UniPC solve to sigma = 0 from the same x_T, and
  FD-FMNIST of the best configuration of each library.

Every library runs every configuration it offers with a fewstep counterpart (diffusers: each scheduler
at each timestep spacing, sigma schedule and final-step setting; k-diffusion: each deterministic
sampler with Karras and exponential sigmas; fewstep: its solvers, spacings and final steps); a run
whose counted NFE differs from the target is skipped. For each NFE the best configuration of each
library is printed with the ratio of fewstep's best error to the best peer's (< 1: fewstep is more
accurate), all runs go to JSON, and one plot shows error against NFE for the best of each library.
Not part of the test suite; needs requirements-interop.txt. Run it through ``fewstep-bench peers``
or directly: ``python benchmarks/peers.py --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

import fewstep as fs  # noqa: E402

NFES = [4, 5, 6, 8, 10, 15, 20]
N_TRAIN = 1000


# ---- problems ---------------------------------------------------------------------------------


class Problem:
    """A model seen three ways (fewstep VP Denoiser, diffusers eps at a scheduler sigma, k-diffusion D(x, sigma))."""

    name: str
    fs_model: Any          # fewstep Denoiser (VP)
    ve_model: Any          # fewstep VE view, for k-diffusion's D(x, sigma)
    alphas_cumprod: torch.Tensor
    x_T: torch.Tensor      # VP state at t_max
    reference: torch.Tensor

    def eps(self, x_vp: torch.Tensor, sigma_tilde: float) -> torch.Tensor:
        """eps at the VP state x_vp and noise level sigma/alpha = sigma_tilde."""
        raise NotImplementedError

    def error(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        raise NotImplementedError


class Mixture(Problem):
    def __init__(self, samples: int) -> None:
        self.name = "mixture"
        self.gmm = fs.GaussianMixture.random(dim=16, components=8, seed=0)
        self.alphas_cumprod = fs.adapters.alphas_cumprod_from_config({})
        self.schedule = fs.VPDiscrete.from_alphas_cumprod(self.alphas_cumprod)
        self.fs_model = fs.Denoiser.exact(self.gmm, self.schedule)
        s_min = float(self.schedule.sigma_tilde(self.schedule.t_min))
        self.s_max = float(self.schedule.sigma_tilde(self.schedule.t_max))
        self.ve_model = fs.Denoiser.exact(self.gmm, fs.VE(s_min, self.s_max))
        self.x_T = fs.randn((samples, 16), seeds=range(samples), dtype=torch.float64)
        # The probability-flow ODE solved in float64 to sigma/alpha = 1e-7 (the sigma = 0 end, to 1e-7).
        ve_ref = fs.Denoiser.exact(self.gmm, fs.VE(1e-7, self.s_max))
        x_ve = self.x_T * math.sqrt(1 + self.s_max**2)
        self.reference = fs.reference_solve(ve_ref, x_ve, rtol=1e-10, atol=1e-10).x

    def eps(self, x_vp: torch.Tensor, sigma_tilde: float) -> torch.Tensor:
        alpha = 1 / math.sqrt(1 + sigma_tilde**2)
        return self.gmm.denoise(x_vp, alpha, sigma_tilde * alpha)[1]

    def error(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        e = (x.double() - self.reference).norm(dim=1)
        return float(e.median()), e


class Fmnist(Problem):
    def __init__(self, samples: int, model_path: str, cache: str, reference_steps: int) -> None:
        self.name = "fmnist"
        file = fs.load_model_file(model_path)
        self.fs_model = file["denoiser"]
        self.schedule = file["schedule"]
        t = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
        self.alphas_cumprod = self.schedule.alpha(t) ** 2  # the teacher's schedule at diffusers' timesteps
        self.ve_model = fs.ve_view(self.fs_model)
        self.x_T = fs.randn((samples, 1, 28, 28), seeds=range(samples), dtype=torch.float32)
        path = os.path.join(cache, f"peers-fmnist-ref-{samples}-{reference_steps}.pt")
        if os.path.exists(path):
            self.reference = torch.load(path)
        else:
            grid = fs.timesteps(self.schedule, reference_steps, "logsnr", final_sigma="zero")
            self.reference = fs.sample(self.fs_model, self.x_T, solver="unipc", timesteps=grid).x
            os.makedirs(cache, exist_ok=True)
            torch.save(self.reference, path + ".tmp")
            os.replace(path + ".tmp", path)

    def eps(self, x_vp: torch.Tensor, sigma_tilde: float) -> torch.Tensor:
        t = float(self.schedule.t_of_lambda(-math.log(sigma_tilde)))
        t = min(max(t, self.schedule.t_min), self.schedule.t_max)
        return self.fs_model(x_vp, t)[1]

    def error(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        c = fs.coupled_error(x, self.reference)
        return c.median, c.per_sample


# ---- the three libraries ----------------------------------------------------------------------


def fewstep_configs(fmnist: bool) -> list[dict]:
    solvers = [("ddim", {}), ("dpmpp_2m", {}), ("dpmpp_3m", {}), ("unipc", {"order": 2}), ("unipc", {"order": 3}),
               ("deis", {"order": 3, "variable": "t"}), ("deis", {"order": 3, "variable": "lambda"})]
    if not fmnist:
        solvers += [("euler", {}), ("heun", {}), ("dpmpp_2s", {}), ("dpm_solver_fast", {})]
    spacings = ["logsnr", "quadratic", "karras", "time"]
    return [{"solver": s, "options": o, "spacing": sp, "final_sigma": f}
            for s, o in solvers for sp in spacings for f in ("min", "zero")]


def run_fewstep(problem: Problem, cfg: dict, nfe: int) -> Optional[torch.Tensor]:
    stepper_nfe = fs.solver_info(cfg["solver"])["nfe_per_step"]
    if cfg["solver"] == "dpm_solver_fast":
        if cfg["final_sigma"] != "min":
            return None
        return fs.sample(problem.fs_model, problem.x_T, solver="dpm_solver_fast", steps=nfe,
                         spacing=cfg["spacing"]).x if cfg["spacing"] in ("logsnr", "time", "quadratic") else None
    if cfg["final_sigma"] == "zero":
        # `steps` evaluations end with one evaluation for the step to sigma = 0.
        if (nfe - 1) % stepper_nfe:
            return None
        steps = (nfe - 1) // stepper_nfe + 1
    else:
        if nfe % stepper_nfe:
            return None
        steps = nfe // stepper_nfe
    if steps < 1:
        return None
    grid = fs.timesteps(problem.fs_model.schedule, steps, cfg["spacing"], final_sigma=cfg["final_sigma"])
    out = fs.sample(problem.fs_model, problem.x_T, solver=cfg["solver"], timesteps=grid, **cfg["options"])
    return out.x if out.nfe == nfe else None


def diffusers_configs(fmnist: bool) -> list[dict]:
    spacings = [{"timestep_spacing": "linspace"}, {"timestep_spacing": "trailing"}, {"use_karras_sigmas": True}]
    if not fmnist:
        spacings += [{"timestep_spacing": "leading", "steps_offset": 1}, {"use_exponential_sigmas": True}]
    finals = [{"final_sigmas_type": "zero"}, {"final_sigmas_type": "sigma_min"}]
    out = []
    for order in (2, 3):
        for sp in spacings:
            for f in finals:
                out.append(("DPMSolverMultistepScheduler", dict(solver_order=order, **sp, **f)))
                out.append(("UniPCMultistepScheduler", dict(solver_order=order, **sp, **f)))
            out.append(("DEISMultistepScheduler", dict(solver_order=order, **sp)))
            out.append(("DPMSolverMultistepScheduler", dict(solver_order=order, algorithm_type="dpmsolver",
                                                            final_sigmas_type="sigma_min", **sp)))
        for sp in ({}, {"use_karras_sigmas": True}):  # singlestep has linspace only
            for f in finals:
                for lof in (False, True):
                    out.append(("DPMSolverSinglestepScheduler", dict(solver_order=order, lower_order_final=lof,
                                                                     **sp, **f)))
    for sp in spacings:
        for f in finals:
            out.append(("EulerDiscreteScheduler", dict(**sp, **f)))
        if "use_exponential_sigmas" not in sp or not fmnist:
            out.append(("HeunDiscreteScheduler", dict(sp)))
    for sp in ({"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"}):
        for one in (True, False):
            out.append(("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=one, **sp)))
    return [{"scheduler": n, "config": c} for n, c in out]


def run_diffusers(problem: Problem, cfg: dict, nfe: int, diffusers: Any) -> Optional[torch.Tensor]:
    cls = getattr(diffusers, cfg["scheduler"])
    betas = (1 - problem.alphas_cumprod / torch.cat([torch.ones(1, dtype=torch.float64),
                                                     problem.alphas_cumprod[:-1]])).tolist()
    try:
        scheduler = cls(trained_betas=betas, **cfg["config"])
    except (ValueError, NotImplementedError):
        return None
    steps = (nfe + 1) // 2 if cfg["scheduler"] == "HeunDiscreteScheduler" else nfe
    try:
        scheduler.set_timesteps(steps)
    except ValueError:
        return None
    ac = scheduler.alphas_cumprod.double()
    sigmas = getattr(scheduler, "sigmas", None)
    x = problem.x_T.float() * float(scheduler.init_noise_sigma)
    calls = 0
    for i, t in enumerate(scheduler.timesteps):
        inp = scheduler.scale_model_input(x, t)
        if sigmas is not None and cfg["scheduler"] != "DDIMScheduler":
            s = float(sigmas[i])
        else:
            a = float(ac[int(t)])
            s = math.sqrt((1 - a) / a)
        eps = problem.eps(inp.to(problem.x_T.dtype), s).float()
        calls += 1
        x = scheduler.step(eps, t, x).prev_sample
    if calls != nfe or not torch.isfinite(x).all():
        return None
    return x.to(problem.x_T.dtype)


def k_diffusion_configs() -> list[dict]:
    samplers = ["sample_euler", "sample_heun", "sample_dpm_2", "sample_lms", "sample_dpmpp_2m",
                "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"]
    out = [{"sampler": s, "sigmas": k} for s in samplers for k in ("karras", "exponential")]
    return out + [{"sampler": "sample_dpm_fast", "sigmas": "-"}]


_TWO_EVALS = {"sample_heun", "sample_dpm_2", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde"}


def run_k_diffusion(problem: Problem, cfg: dict, nfe: int, kd: Any) -> Optional[torch.Tensor]:
    ve = problem.ve_model.schedule
    s_min, s_max = ve.t_min, ve.t_max
    calls = [0]

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return problem.ve_model(x, float(sigma.reshape(-1)[0]))[0]

    x = problem.x_T * math.sqrt(1 + s_max**2)  # the problem's dtype: the Fashion-MNIST teacher is float32
    extra: dict = {}
    if cfg["sampler"] in ("sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m_sde",
                          "sample_dpmpp_3m_sde"):
        extra["eta"] = 0.0  # deterministic: the probability-flow ODE
    if cfg["sampler"] == "sample_dpm_fast":
        out = kd.sample_dpm_fast(model, x, s_min, s_max, nfe, disable=True)
    else:
        n = (nfe + 1) // 2 if cfg["sampler"] in _TWO_EVALS else nfe
        if cfg["sigmas"] == "karras":
            sig = kd.get_sigmas_karras(n, s_min, s_max, device="cpu").double().to(x.dtype)
        else:
            sig = kd.get_sigmas_exponential(n, s_min, s_max, device="cpu").double().to(x.dtype)
        out = getattr(kd, cfg["sampler"])(model, x, sig, disable=True, **extra)
    if calls[0] != nfe or not torch.isfinite(out).all():
        return None
    return out.to(problem.x_T.dtype)


# ---- the sweep --------------------------------------------------------------------------------


def describe(lib: str, cfg: dict) -> str:
    if lib == "fewstep":
        opts = ",".join(f"{k}={v}" for k, v in cfg["options"].items())
        return f"{cfg['solver']}{'(' + opts + ')' if opts else ''} {cfg['spacing']} final={cfg['final_sigma']}"
    if lib == "diffusers":
        c = ",".join(f"{k}={v}" for k, v in cfg["config"].items())
        return f"{cfg['scheduler']}({c})"
    return f"{cfg['sampler']} {cfg['sigmas']}"


def sweep(problem: Problem, nfes: list[int], diffusers: Any, kd: Any, fmnist: bool) -> list[dict]:
    runs = []
    libraries: list[tuple[str, list[dict], Callable]] = [
        ("fewstep", fewstep_configs(fmnist), lambda c, n: run_fewstep(problem, c, n)),
        ("diffusers", diffusers_configs(fmnist), lambda c, n: run_diffusers(problem, c, n, diffusers)),
        ("k-diffusion", k_diffusion_configs(), lambda c, n: run_k_diffusion(problem, c, n, kd)),
    ]
    for nfe in nfes:
        for lib, configs, run in libraries:
            for cfg in configs:
                start = time.perf_counter()
                try:
                    with torch.inference_mode():
                        x = run(cfg, nfe)
                except (ValueError, RuntimeError, NotImplementedError, IndexError) as e:  # a config the library refuses
                    x = None
                    if os.environ.get("FEWSTEP_PEERS_DEBUG"):
                        print(f"  {lib} {describe(lib, cfg)} nfe={nfe}: {e}", file=sys.stderr)
                if x is None:
                    continue
                median, _ = problem.error(x)
                runs.append({"problem": problem.name, "library": lib, "nfe": nfe, "config": describe(lib, cfg),
                             "settings": cfg, "median_error": median, "seconds": time.perf_counter() - start})
        print(f"[peers] {problem.name}: NFE {nfe} done ({len(runs)} runs so far)", file=sys.stderr, flush=True)
    return runs


def best_per_library(runs: list[dict]) -> dict:
    best: dict = {}
    for r in runs:
        key = (r["problem"], r["nfe"], r["library"])
        if math.isfinite(r["median_error"]) and (key not in best or r["median_error"] < best[key]["median_error"]):
            best[key] = r
    return best


def fd_of_best(problem: Fmnist, best: dict, nfes: list[int], evaluator: Any, fd_samples: int, diffusers: Any,
               kd: Any) -> None:
    """FD-FMNIST of each library's best configuration at each NFE, on `fd_samples` samples."""
    saved_x, saved_ref = problem.x_T, problem.reference
    problem.x_T = fs.randn((fd_samples, 1, 28, 28), seeds=range(fd_samples), dtype=torch.float32)
    try:
        for nfe in nfes:
            for lib in ("fewstep", "diffusers", "k-diffusion"):
                r = best.get(("fmnist", nfe, lib))
                if r is None:
                    continue
                with torch.inference_mode():
                    if lib == "fewstep":
                        x = run_fewstep(problem, r["settings"], nfe)
                    elif lib == "diffusers":
                        x = run_diffusers(problem, r["settings"], nfe, diffusers)
                    else:
                        x = run_k_diffusion(problem, r["settings"], nfe, kd)
                report = evaluator.evaluate(x.float())
                r["fd"], r["fd_floor"], r["fd_samples"] = report.fd, report.fd_floor, fd_samples
    finally:
        problem.x_T, problem.reference = saved_x, saved_ref


def print_table(best: dict, problem: str, nfes: list[int], with_fd: bool) -> list[str]:
    lines = [f"\n{problem}: best configuration of each library (median error; ratio = fewstep / best peer)"]
    for nfe in nfes:
        row = {lib: best.get((problem, nfe, lib)) for lib in ("fewstep", "diffusers", "k-diffusion")}
        peers = [r["median_error"] for lib, r in row.items() if lib != "fewstep" and r is not None]
        ratio = row["fewstep"]["median_error"] / min(peers) if row["fewstep"] and peers else float("nan")
        lines.append(f"NFE {nfe:2d}  ratio {ratio:5.2f}")
        for lib, r in row.items():
            if r is None:
                lines.append(f"    {lib:11s} -")
                continue
            fd = f"  FD {r['fd']:.2f} (floor {r['fd_floor']:.2f}, n={r['fd_samples']})" if with_fd and "fd" in r else ""
            lines.append(f"    {lib:11s} {r['median_error']:.3e}  {r['config']}{fd}")
    print("\n".join(lines))
    return lines


def plot(best: dict, problems: list[str], nfes: list[int], path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(problems), figsize=(5.5 * len(problems), 4.2), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        for lib, style in (("fewstep", "o-"), ("diffusers", "s--"), ("k-diffusion", "^:")):
            pts = [(n, best[(problem, n, lib)]["median_error"]) for n in nfes if (problem, n, lib) in best]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{lib} (best config)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(n) for n in nfes])
        ax.set_xlabel("NFE")
        ax.set_ylabel("median error" if problem == "mixture" else "median coupled RMS error")
        ax.set_title({"mixture": "16-D Gaussian mixture (exact model)",
                      "fmnist": "Fashion-MNIST teacher"}.get(problem, problem))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep-bench peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", default="mixture,fmnist", help="comma-separated: mixture, fmnist")
    p.add_argument("--nfe", default=",".join(map(str, NFES)), help="comma-separated NFE targets")
    p.add_argument("--samples", type=int, default=1000, help="mixture samples")
    p.add_argument("--fmnist-samples", type=int, default=200, help="Fashion-MNIST samples for the coupled error")
    p.add_argument("--fd-samples", type=int, default=1000, help="samples for FD-FMNIST of each library's best")
    p.add_argument("--reference-steps", type=int, default=500, help="UniPC steps of the Fashion-MNIST reference")
    p.add_argument("--model", default=os.path.join(ROOT, "models", "fmnist-unet-eps.pt"))
    p.add_argument("--classifier", default=os.path.join(ROOT, "models", "fmnist-classifier.pt"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "out", "bench", "peers.json"))
    p.add_argument("--plot", default=os.path.join(ROOT, "out", "bench", "peers.png"))
    p.add_argument("--cache", default=os.path.join(ROOT, "out", "bench"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nfes = [int(n) for n in args.nfe.split(",")]
    problems = [s for s in args.problems.split(",") if s]
    import diffusers  # noqa: PLC0415

    diffusers.utils.logging.set_verbosity_error()
    kd = fs.adapters.load_k_diffusion_sampling()
    started = time.time()
    runs, lines = [], []
    best: dict = {}
    for name in problems:
        if name == "mixture":
            problem: Problem = Mixture(args.samples)
        elif name == "fmnist":
            problem = Fmnist(args.fmnist_samples, args.model, args.cache, args.reference_steps)
        else:
            raise SystemExit(f"--problems: unknown problem {name!r} (mixture, fmnist)")
        problem_runs = sweep(problem, nfes, diffusers, kd, name == "fmnist")
        runs += problem_runs
        best.update(best_per_library(problem_runs))
        if name == "fmnist" and args.fd_samples > 0:
            evaluator = fs.FmnistEvaluator(args.classifier, cache_dir=args.cache)
            fd_of_best(problem, best, nfes, evaluator, args.fd_samples, diffusers, kd)
        lines += print_table(best, name, nfes, name == "fmnist")
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "fewstep": fs.__version__,
               "diffusers": diffusers.__version__, "seconds": time.time() - started}
    result = {"machine": machine, "nfe": nfes, "runs": runs,
              "best": [dict(r, problem=k[0]) for k, r in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1]))],
              "table": lines}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(args.out + ".tmp", args.out)
    plot(best, problems, nfes, args.plot)
    print(f"\n[peers] {len(runs)} runs in {machine['seconds']:.0f} s; JSON {args.out}, plot {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
