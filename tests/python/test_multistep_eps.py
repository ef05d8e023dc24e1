"""Noise-prediction multistep solvers: multistep DPM-Solver (dpm_solver_2m, dpm_solver_3m) and iPNDM
(ipndm, ipndm_v), against small reference implementations written here from the papers, on the exact
Gaussian mixture in float64, and their convergence orders.

The references share nothing with fewstep but the model's noise prediction and the grid: the schedule
terms come from conftest's closed form of VP-linear, the multistep DPM-Solver from Lu et al. 2022
(arXiv 2206.00927, the noise form of the Taylor expansion; the multistep bookkeeping of the authors'
algorithm: warm-up orders 1, 2, ..., lower_order_final on grids of fewer than 10 steps), iPNDM from
Zhang & Chen 2022 (arXiv 2204.13902) in EDM's variables (y = x/alpha, sigma~ = sigma/alpha,
dy/dsigma~ = eps; Karras et al. 2022, arXiv 2206.00364, eq. 4), with the variable-step weights
integrated from numpy's Lagrange polynomials. benchmarks/crosscheck_dpm_solver.py and
benchmarks/crosscheck_ipndm.py compare the same steppers with the authors' own code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fewstep as fs
from conftest import vp_linear_log_alpha

DIM, N = 16, 32


def terms(t: float) -> tuple[float, float, float]:
    """alpha, sigma, lambda of VP-linear(0.1, 20) at t (conftest's closed form, not fewstep's)."""
    log_a = vp_linear_log_alpha(t)
    log_s = 0.5 * math.log(-math.expm1(2.0 * log_a))
    return math.exp(log_a), math.exp(log_s), log_a - log_s


@pytest.fixture(scope="module")
def problem() -> tuple[fs.Denoiser, torch.Tensor, torch.Tensor]:
    sched = fs.VPLinear(beta_min=0.1, beta_max=20.0)
    model = fs.Denoiser.exact(fs.GaussianMixture.random(dim=DIM, components=8, seed=0), sched)
    x_T = fs.randn((N, DIM), seeds=list(range(N)), dtype=torch.float64)
    reference = fs.reference_solve(model, x_T, t_start=1.0, t_end=1e-3).x
    return model, x_T, reference


def grid_of(model: fs.Denoiser, steps: int, spacing: str = "logsnr") -> list[float]:
    return fs.timesteps(model.schedule, steps, spacing).tolist()


def eps_of(model: fs.Denoiser):
    return lambda x, t: model(x, t)[1]


# ------------------------------------------------------------------ reference implementations

def dpm_solver_multistep_reference(eps_fn, x: torch.Tensor, grid: list[float], order: int, solver_type: str,
                                   lower_order_final: bool, d2_weight: float) -> torch.Tensor:
    """Multistep DPM-Solver in noise form, written from the Taylor expansion of
    x_t = (alpha_t/alpha_s) x_s - sigma_t int_0^h e^{h-u} eps(lambda_s + u) du."""
    steps = len(grid) - 1
    times, eps = [grid[0]], [eps_fn(x, grid[0])]
    for i in range(1, steps + 1):
        k = min(order, i)
        if lower_order_final and steps < 10:
            k = min(k, steps + 1 - i)
        a_s, _, l_s = terms(times[-1])
        a_t, s_t, l_t = terms(grid[i])
        h = l_t - l_s
        e0 = eps[-1]
        m1 = math.expm1(h)                   # int_0^h e^{h-u} du
        m2 = math.expm1(h) - h               # int_0^h e^{h-u} u du
        m3 = math.expm1(h) - h - h * h / 2   # int_0^h e^{h-u} u^2/2 du
        new = (a_t / a_s) * x - s_t * m1 * e0
        if k >= 2:
            l_1 = terms(times[-2])[2]
            r0 = (l_s - l_1) / h
            d1_0 = (e0 - eps[-2]) / r0
            if k == 2:
                if solver_type == "dpmsolver":
                    new = new - 0.5 * s_t * m1 * d1_0
                else:
                    new = new - s_t * (m2 / h) * d1_0
            else:
                r1 = (l_1 - terms(times[-3])[2]) / h
                d1_1 = (eps[-2] - eps[-3]) / r1
                first = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)       # h eps'
                second = (d1_0 - d1_1) / (r0 + r1)                  # h^2 eps''/2
                new = new - s_t * (m2 / h) * first - d2_weight * s_t * (m3 / h**2) * second
        x = new
        times.append(grid[i])
        if i < steps:
            eps.append(eps_fn(x, grid[i]))
    return x


AB_FIXED = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def lagrange_weights(nodes: list[float], a: float, b: float) -> list[float]:
    """(1/(b - a)) int_a^b L_j, L_j the Lagrange basis of `nodes`, in u = (s - a)/(b - a)."""
    u = [(n - a) / (b - a) for n in nodes]
    out = []
    for j, uj in enumerate(u):
        poly = np.polynomial.Polynomial([1.0])
        for m, um in enumerate(u):
            if m != j:
                poly = poly * np.polynomial.Polynomial([-um, 1.0]) / (uj - um)
        integral = poly.integ()
        out.append(float(integral(1.0) - integral(0.0)))
    return out


def ipndm_reference(eps_fn, x: torch.Tensor, grid: list[float], max_order: int, variable: bool) -> torch.Tensor:
    """iPNDM in EDM's variables: y = x/alpha, sigma~ = sigma/alpha, Adams-Bashforth on dy/dsigma~ = eps."""
    sig = [terms(t)[1] / terms(t)[0] for t in grid]
    y = x / terms(grid[0])[0]
    history: list[torch.Tensor] = []  # most recent first
    for i in range(len(grid) - 1):
        d = eps_fn(y * terms(grid[i])[0], grid[i])
        history.insert(0, d)
        p = min(max_order, i + 1)
        w = lagrange_weights([sig[i - j] for j in range(p)], sig[i], sig[i + 1]) if variable else AB_FIXED[p]
        y = y + (sig[i + 1] - sig[i]) * sum(wj * dj for wj, dj in zip(w, history[:p]))
        del history[max_order - 1:]
    return y * terms(grid[-1])[0]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# ------------------------------------------------------------------ agreement to round-off

DPM_CASES = [
    ("dpm_solver_2m", 2, {"variant": "dpmsolver"}, 1.0),
    ("dpm_solver_2m", 2, {"variant": "taylor"}, 1.0),
    ("dpm_solver_3m", 3, {"variant": "dpmsolver"}, 2.0),
    ("dpm_solver_3m", 3, {"variant": "taylor"}, 2.0),
    ("dpm_solver_3m", 3, {"variant": "dpmsolver", "d2_weight": "official"}, 1.0),
    ("dpm_solver_3m", 3, {"variant": "taylor", "d2_weight": "official"}, 1.0),
]


@pytest.mark.parametrize("lower_order_final", [True, False])
@pytest.mark.parametrize("steps", [5, 10, 25])
@pytest.mark.parametrize("solver,order,options,d2_weight", DPM_CASES)
def test_dpm_solver_multistep_matches_the_reference(problem, solver: str, order: int, options: dict,
                                                    d2_weight: float, steps: int, lower_order_final: bool) -> None:
    model, x_T, _ = problem
    grid = grid_of(model, steps)
    out = fs.sample(model, x_T, solver=solver, timesteps=grid, lower_order_final=lower_order_final, **options)
    assert out.nfe == steps
    want = dpm_solver_multistep_reference(eps_of(model), x_T, grid, order, options["variant"], lower_order_final,
                                          d2_weight)
    assert relative_difference(out.x, want) < 1e-12


@pytest.mark.parametrize("spacing", ["logsnr", "karras", "quadratic"])
@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
@pytest.mark.parametrize("solver", ["ipndm", "ipndm_v"])
def test_ipndm_matches_the_reference(problem, solver: str, max_order: int, spacing: str) -> None:
    model, x_T, _ = problem
    grid = grid_of(model, 8, spacing)
    out = fs.sample(model, x_T, solver=solver, timesteps=grid, max_order=max_order)
    assert out.nfe == 8
    want = ipndm_reference(eps_of(model), x_T, grid, max_order, variable=solver == "ipndm_v")
    assert relative_difference(out.x, want) < 1e-12


def test_relations_between_the_forms(problem) -> None:
    model, x_T, _ = problem
    grid = grid_of(model, 12)
    run = lambda solver, **kw: fs.sample(model, x_T, solver=solver, timesteps=grid, **kw).x  # noqa: E731
    # First order: every one of them is DDIM.
    ddim = run("ddim")
    for solver in ("ipndm", "ipndm_v"):
        assert relative_difference(run(solver, max_order=1), ddim) < 1e-12
    # The Taylor forms integrate the interpolant of eps in lambda exactly: DEIS in lambda.
    assert relative_difference(run("dpm_solver_2m", variant="taylor", lower_order_final=False),
                               run("deis", variable="lambda", order=2, lower_order_final=False)) < 1e-12
    assert relative_difference(run("dpm_solver_3m", variant="taylor", lower_order_final=False),
                               run("deis", variable="lambda", order=3, lower_order_final=False)) < 1e-12
    # The variable-step iPNDM is rho-AB-DEIS (orders up to 3 there).
    assert relative_difference(run("ipndm_v", max_order=3),
                               run("deis", variable="rho", order=3, lower_order_final=False)) < 1e-12
    # On a grid uniform in rho = sigma/alpha the fixed weights are the variable-step ones.
    sched = model.schedule
    rho_start, rho_end = (math.exp(-sched.lambda_(t)) for t in (1.0, 1e-3))
    rho_grid = [sched.t_of_lambda(-math.log(r)) for r in np.linspace(rho_start, rho_end, 13)]
    rho_grid[0], rho_grid[-1] = 1.0, 1e-3
    a = fs.sample(model, x_T, solver="ipndm", timesteps=rho_grid).x
    b = fs.sample(model, x_T, solver="ipndm_v", timesteps=rho_grid).x
    assert relative_difference(a, b) < 1e-10
    # The authors' closed forms are the Adams-Bashforth weights on equal steps up to order 3; their
    # order-4 weights are not (leading weight 57/24 instead of 55/24, solvers/ipndm_v.h).
    for order, same in ((3, True), (4, False)):
        c = fs.sample(model, x_T, solver="ipndm_v", timesteps=rho_grid, weights="official", max_order=order).x
        d = fs.sample(model, x_T, solver="ipndm", timesteps=rho_grid, max_order=order).x
        assert (relative_difference(c, d) < 1e-10) == same, order
    # The authors' closed forms (weights="official") are the exact weights up to order 2 on any grid,
    # and not from order 3 on non-uniform steps (solvers/ipndm_v.h).
    for order, same in ((2, True), (3, False), (4, False)):
        official = run("ipndm_v", max_order=order, weights="official")
        exact = run("ipndm_v", max_order=order)
        assert (relative_difference(official, exact) < 1e-12) == same, order


# ------------------------------------------------------------------ convergence orders

def observed_order(problem, solver: str, options: dict, steps: list[int], spacing: str = "logsnr") -> float:
    """Least-squares slope of -log(median error) against log(steps)."""
    model, x_T, reference = problem
    errors = []
    for n in steps:
        x = fs.sample(model, x_T, solver=solver, steps=n, spacing=spacing, **options).x
        errors.append((x - reference).norm(dim=1).median().item())
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return -slope


@pytest.mark.parametrize("solver,options,order", [
    ("dpm_solver_2m", {"variant": "dpmsolver"}, 2),
    ("dpm_solver_2m", {"variant": "taylor"}, 2),
    ("dpm_solver_3m", {}, 3),
    ("dpm_solver_3m", {"d2_weight": "official"}, 2),
    ("ipndm_v", {"max_order": 2}, 2),
    ("ipndm_v", {"max_order": 3}, 3),
    ("ipndm_v", {}, 4),
    ("ipndm", {}, 2),
])
def test_convergence_order(problem, solver: str, options: dict, order: int) -> None:
    # Error falls by ~2^p per doubling of the steps once asymptotic (64..512 steps on this mixture).
    got = observed_order(problem, solver, {"lower_order_final": False, **options}
                         if solver.startswith("dpm") else options, [64, 128, 256, 512])
    assert abs(got - order) < 0.3, f"{solver} {options}: observed order {got:.2f}, expected {order}"


def test_options_are_checked() -> None:
    model = fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=2, seed=0), fs.VPLinear())
    x = torch.zeros(1, 2, dtype=torch.float64)
    for solver in ("ipndm", "ipndm_v"):
        with pytest.raises(ValueError, match="max_order must be 1, 2, 3 or 4, got 5"):
            fs.sample(model, x, solver=solver, steps=3, max_order=5)
    with pytest.raises(ValueError, match="weights must be 'exact' or 'official'"):
        fs.sample(model, x, solver="ipndm_v", steps=3, weights="fixed")
    with pytest.raises(ValueError, match="weights"):
        fs.sample(model, x, solver="ipndm", steps=3, weights="official")
    with pytest.raises(ValueError, match="d2_weight"):
        fs.sample(model, x, solver="dpm_solver_3m", steps=3, d2_weight="half")
    with pytest.raises(ValueError, match="variant"):
        fs.sample(model, x, solver="dpm_solver_2m", steps=3, variant="heun")
    info = {i["name"]: i for i in fs.solvers()}
    assert (info["dpm_solver_2m"]["order"], info["dpm_solver_3m"]["order"]) == (2, 3)
    assert (info["ipndm"]["order"], info["ipndm_v"]["order"]) == (2, 4)
    assert all(info[n]["multistep"] and info[n]["nfe_per_step"] == 1
               for n in ("dpm_solver_2m", "dpm_solver_3m", "ipndm", "ipndm_v"))
