"""Adaptive step size from Python: dpm_adaptive by tolerances, PIDController with any error-estimating solver."""

from __future__ import annotations

import math

import pytest
import torch

import fewstep as fs
from conftest import gaussian_ode_solution


def scaled(x: torch.Tensor, ref: torch.Tensor, rtol: float, atol: float) -> float:
    """The controller's own error units applied to the global error: 1 = at the tolerance."""
    return fs.scaled_error_norm(x - ref, ref, ref, rtol=rtol, atol=atol)


def test_dpm_adaptive_by_tolerances_reports_nfe_accepted_rejected(exact_gaussian: fs.Denoiser,
                                                                   x_T: torch.Tensor) -> None:
    exact = gaussian_ode_solution(x_T, 1.0, 1e-3)
    results = {}
    for tol in (1e-2, 1e-3, 1e-4):
        out = fs.sample(exact_gaussian, x_T, solver="dpm_adaptive", rtol=tol, atol=tol)
        assert out.nfe == 3 * (out.accepted + out.rejected)  # DPM-Solver-23: 3 evaluations per attempt
        assert out.steps == out.accepted == len(out.stats) == len(out.timesteps) - 1
        assert sum(s["nfe"] for s in out.stats) == out.nfe
        assert sum(s["rejected"] for s in out.stats) == out.rejected
        assert out.timesteps[0].item() == 1.0 and out.timesteps[-1].item() == pytest.approx(1e-3, abs=0)
        assert scaled(out.x, exact, tol, tol) < 3.0
        results[tol] = out
    assert results[1e-2].nfe < results[1e-3].nfe < results[1e-4].nfe
    order2 = fs.sample(exact_gaussian, x_T, solver="dpm_adaptive", order=2, rtol=1e-3, atol=1e-3)
    assert order2.nfe == 2 * (order2.accepted + order2.rejected)


def test_dpm_adaptive_defaults_to_the_papers_tolerances(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    out = fs.sample(exact_gaussian, x_T, solver="dpm_adaptive")
    same = fs.sample(exact_gaussian, x_T, solver="dpm_adaptive",
                     controller=fs.PIDController(rtol=0.05, atol=0.0078))
    assert torch.equal(out.x, same.x) and out.nfe == same.nfe
    # The same name on a fixed grid is the DPM-Solver-3 step.
    fixed = fs.sample(exact_gaussian, x_T, solver="dpm_adaptive", steps=4)
    assert fixed.nfe == 12 and fixed.accepted == 4 and fixed.rejected == 0


def test_controller_object_with_heun_euler(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    exact = gaussian_ode_solution(x_T, 1.0, 1e-3)
    c = fs.PIDController(rtol=1e-3, atol=1e-3, pcoeff=0.4, icoeff=0.3, factor_max=5.0)
    assert (c.rtol, c.atol, c.pcoeff, c.icoeff, c.dcoeff, c.safety) == (1e-3, 1e-3, 0.4, 0.3, 0.0, 0.9)
    assert c.step_variable == "logsnr" and c.max_steps == 4096 and c.requires_error_estimate
    assert "PIDController(rtol=0.001" in repr(c)
    seen = []
    out = fs.sample(exact_gaussian, x_T, solver="heun_euler", controller=c, callback=seen.append)
    assert out.nfe == 2 * (out.accepted + out.rejected)
    assert len(seen) == out.accepted and seen[-1].num_steps == -1 and seen[-1].nfe == out.nfe
    assert scaled(out.x, exact, 1e-3, 1e-3) < 3.0
    # Controllers hold no state: reusing one gives the same run.
    again = fs.sample(exact_gaussian, x_T, solver="heun_euler", controller=c)
    assert torch.equal(out.x, again.x) and again.nfe == out.nfe


def test_rejections_are_counted(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    c = fs.PIDController(rtol=1e-4, atol=1e-4, first_step=8.0)  # far too large a first step in log-SNR
    out = fs.sample(exact_gaussian, x_T, solver="dpm_solver_12", controller=c, t_start=1.0, t_end=1e-3)
    assert out.rejected > 0 and out.stats[0]["rejected"] > 0
    assert out.nfe == 2 * (out.accepted + out.rejected)


def test_errors(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="'ddim' gives no error estimate"):
        fs.sample(exact_gaussian, x_T, solver="ddim", rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="rtol=/atol= or controller= also work"):
        fs.sample(exact_gaussian, x_T, solver="heun_euler")
    with pytest.raises(ValueError, match="pass steps="):
        fs.sample(exact_gaussian, x_T, solver="ddim")
    with pytest.raises(ValueError, match="one or the other"):
        fs.sample(exact_gaussian, x_T, solver="dpm_adaptive", steps=10, rtol=1e-3)
    with pytest.raises(ValueError, match="not both"):
        fs.sample(exact_gaussian, x_T, solver="dpm_adaptive", rtol=1e-3,
                  controller=fs.PIDController(rtol=1e-3, atol=1e-3))
    with pytest.raises(TypeError, match="controller should be"):
        fs.sample(exact_gaussian, x_T, solver="dpm_adaptive", controller="pid")
    with pytest.raises(TypeError):
        fs.PIDController(rtol=1e-3)  # atol is required
    with pytest.raises(ValueError, match="atol must be > 0"):
        fs.PIDController(rtol=1e-3, atol=0.0)
    with pytest.raises(ValueError, match="step_variable"):
        fs.PIDController(rtol=1e-3, atol=1e-3, step_variable="sigma")
    with pytest.raises(RuntimeError, match=r"max_steps = 3 .*raise max_steps or loosen rtol/atol"):
        fs.sample(exact_gaussian, x_T, solver="dpm_adaptive",
                  controller=fs.PIDController(rtol=1e-6, atol=1e-6, max_steps=3))


def test_solvers_listing_has_the_pairs() -> None:
    for name, order, nfe in [("heun_euler", 2, 2), ("dpm_solver_12", 2, 2), ("dpm_solver_23", 3, 3),
                             ("dpm_adaptive", 3, 3)]:
        info = fs.solver_info(name)
        assert info["has_error_estimate"] and info["order"] == order and info["nfe_per_step"] == nfe
    assert "order" in fs.solver_info("dpm_adaptive")["options"]


def test_pairs_converge_at_declared_order_on_a_grid(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    exact = gaussian_ode_solution(x_T, 1.0, 1e-3)
    for name, order in [("dpm_solver_12", 2), ("dpm_solver_23", 3), ("heun_euler", 2)]:
        e1 = (fs.sample(exact_gaussian, x_T, solver=name, steps=20).x - exact).pow(2).mean().sqrt().item()
        e2 = (fs.sample(exact_gaussian, x_T, solver=name, steps=40).x - exact).pow(2).mean().sqrt().item()
        assert abs(math.log2(e1 / e2) - order) < 0.3, (name, e1, e2)
