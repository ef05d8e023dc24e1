"""Writes tests/data/golden_solvers.pt: every registered solver's output at NFE 10 on an exact mixture.

The file pins the sampling driver's numbers: `tests/python/test_golden_solvers.py` asserts that the
outputs it holds are reproduced bit for bit, so a refactor of the driver, the steppers or the noise
streams cannot change a result silently. Regenerate it only for an intended numerical change, and
say which in the commit message:

    PYTHONPATH=python python tests/data/make_golden_solvers.py

Problem: a 16-D, 8-component Gaussian mixture (GaussianMixture.random(dim=16, components=8, seed=0))
with its exact denoiser under VPLinear(0.1, 20), float64, 16 samples from fs.randn with seeds 0..15.

Cases (the key of each entry):
  - "det/<solver>": every deterministic registered solver with its default options, on the uniform
    log-SNR grid of the step count that spends NFE 10 (or the largest NFE <= 10 its evaluations per
    step allow; dpm_solver_fast reads steps as its budget through its own plan), plus a few option
    and spacing variants;
  - "adaptive/<name>": adaptive runs (PID control of an embedded error estimate);
  - "gen/<solver>": stochastic solvers with step noise from one torch.Generator seeded with 7;
  - "seeds/<solver>": stochastic solvers with per-sample seeds 0..15 (docs/sampling.md: step noise from
    streams derived from each seed, distinct from the x_T stream);
  - "micro/<mode>": the shipped micro-distilled samplers of this mixture (models/distilled/gmm16d-micro-*.pt,
    docs/micro.md) through fs.MicroSampler.sample with a budget of 10 evaluations.
Each entry stores x and the NFE spent. golden_solvers_cpu.txt records the CPU kernel set torch used
(AVX2, AVX512, ...): the test asserts bit-identity on that set, agreement to 1e-12 on others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import fewstep as fs

N, DIM, NFE = 16, 16, 10
SEEDS = list(range(N))


def problem() -> tuple[fs.Denoiser, torch.Tensor]:
    sched = fs.VPLinear(beta_min=0.1, beta_max=20.0)
    gmm = fs.GaussianMixture.random(dim=DIM, components=8, seed=0)
    model = fs.Denoiser.exact(gmm, sched)
    x_T = fs.randn((N, DIM), seeds=SEEDS, dtype=torch.float64)
    return model, x_T


MODELS = Path(__file__).resolve().parents[2] / "models" / "distilled"
MICRO_SAMPLERS = {mode: MODELS / f"gmm16d-micro-{mode}.pt"
                  for mode in ("residual", "residual_history", "step_size", "joint", "joint_history")}


def steps_at_nfe(info: dict, nfe: int = NFE) -> int:
    """Steps of a fixed grid spending `nfe` evaluations (the largest reachable budget <= nfe)."""
    if info["name"] == "dpm_solver_fast":
        return nfe  # its steps are the budget (Stepper::plan)
    k = info["nfe_per_step"]
    return nfe // k


DETERMINISTIC_VARIANTS = [
    ("dpm_solver_fast@karras", "dpm_solver_fast", {"spacing": "karras"}),
    ("dpm_solver_fast@time", "dpm_solver_fast", {"spacing": "time"}),
    ("unipc@order3", "unipc", {"order": 3}),
    ("unipc@bh1_noise", "unipc", {"variant": "bh1", "predict_x0": False}),
    ("deis@order3_rho", "deis", {"order": 3, "variable": "rho"}),
    ("dpmpp_3m@official", "dpmpp_3m", {"variant": "official"}),
    ("dpmpp_2m@denoise_to_zero", "dpmpp_2m", {"denoise_to_zero": True, "steps": 9}),
    ("heun@time", "heun", {"spacing": "time"}),
    ("dpm_solver_2m@taylor", "dpm_solver_2m", {"variant": "taylor"}),
    ("dpm_solver_3m@official", "dpm_solver_3m", {"d2_weight": "official"}),
    ("ipndm@karras", "ipndm", {"spacing": "karras"}),
    ("ipndm_v@karras", "ipndm_v", {"spacing": "karras"}),
]

ADAPTIVE = [
    ("dpm_adaptive", "dpm_adaptive", {}),
    ("heun_euler", "heun_euler", {"rtol": 1e-3, "atol": 1e-3}),
    ("dpm_solver_23_pi", "dpm_solver_23",
     {"controller": lambda: fs.PIDController(rtol=1e-3, atol=1e-4, pcoeff=0.4, icoeff=0.3)}),
]

STOCHASTIC = [
    ("ddim_eta1", "ddim", {"eta": 1.0}),
    ("ddpm", "ddpm", {}),
    ("euler_maruyama", "euler_maruyama", {}),
    ("dpmpp_2m_sde", "dpmpp_2m_sde", {}),
    ("euler_churn", "euler_churn", {"s_churn": 2.0}),
    ("heun_churn", "heun_churn", {"s_churn": 2.0}),
    ("consistency", "consistency", {}),
]


def run(model: fs.Denoiser, x_T: torch.Tensor, solver: str, kwargs: dict) -> fs.Solution:
    kw = dict(kwargs)
    if callable(kw.get("controller")):
        kw["controller"] = kw["controller"]()
    return fs.sample(model, x_T, solver=solver, **kw)


def cases() -> list[tuple[str, str, dict]]:
    out = []
    for info in fs.solvers():
        if info["stochastic"]:
            continue
        out.append((f"det/{info['name']}", info["name"], {"steps": steps_at_nfe(info)}))
    for key, solver, kw in DETERMINISTIC_VARIANTS:
        kw = dict(kw)
        kw.setdefault("steps", steps_at_nfe(fs.solver_info(solver)))
        out.append((f"det/{key}", solver, kw))
    for key, solver, kw in ADAPTIVE:
        out.append((f"adaptive/{key}", solver, kw))
    for key, solver, kw in STOCHASTIC:
        steps = steps_at_nfe(fs.solver_info(solver))
        out.append((f"gen/{key}", solver, {**kw, "steps": steps, "generator": lambda: torch.Generator().manual_seed(7)}))
        out.append((f"seeds/{key}", solver, {**kw, "steps": steps, "seeds": SEEDS}))
    return out


def compute() -> dict:
    """All cases' outputs: {key: {"x": tensor, "nfe": int}}."""
    model, x_T = problem()
    out = {}
    for key, solver, kw in cases():
        kw = dict(kw)
        if "generator" in kw:
            kw["generator"] = kw["generator"]()
        sol = run(model, x_T, solver, kw)
        out[key] = {"x": sol.x.clone(), "nfe": int(sol.nfe)}
    for mode, path in MICRO_SAMPLERS.items():
        sol = fs.MicroSampler.load(str(path)).sample(model, x_T, NFE)
        out[f"micro/{mode}"] = {"x": sol.x.clone(), "nfe": int(sol.nfe)}
    return out


def cpu_file(golden: Path) -> Path:
    """Beside the golden file: the CPU kernel set (torch.backends.cpu.get_cpu_capability) it was made with."""
    return golden.with_name(golden.stem + "_cpu.txt")


def recorded_cpu_capability(golden: Path = Path(__file__).with_name("golden_solvers.pt")) -> str | None:
    path = cpu_file(golden)
    return path.read_text().strip() if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("golden_solvers.pt")))
    args = parser.parse_args()
    torch.save(compute(), args.out)
    cpu_file(Path(args.out)).write_text(torch.backends.cpu.get_cpu_capability() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
