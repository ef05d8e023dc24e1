"""The sampling driver from Python: accuracy, NFE, grids, options, callbacks, progress, errors."""

from __future__ import annotations

import math

import pytest
import torch

import fewstep as fs
from conftest import gaussian_ode_solution


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def test_solvers_listing() -> None:
    infos = fs.solvers()
    names = [i["name"] for i in infos]
    assert {"euler", "heun", "ddim", "dpmpp_2m"} <= set(names)
    keys = {"name", "order", "nfe_per_step", "stochastic", "has_error_estimate", "multistep", "revises_start",
            "adaptive_by_default", "needs", "summary", "options"}
    for info in infos:
        assert set(info) == keys
        assert fs.solver_info(info["name"]) == info
    assert fs.solver_info("dpmpp_2m")["order"] == 2
    assert "lower_order_final" in fs.solver_info("dpmpp_2m")["options"]
    assert fs.solver_info("heun")["nfe_per_step"] == 2
    assert fs.solver_info("unipc")["revises_start"] and not fs.solver_info("dpmpp_2m")["revises_start"]
    assert fs.solver_info("dpm_adaptive")["adaptive_by_default"]
    # What a step reads from the denoiser: noise-prediction solvers ε, data-prediction ones x̂₀.
    assert fs.solver_info("dpm_solver_2m")["needs"] == "eps" and fs.solver_info("dpmpp_2m")["needs"] == "x0"
    assert {i["needs"] for i in infos} <= {"eps", "x0", "both"}


def test_dpmpp_2m_matches_closed_form_and_converges_at_second_order(exact_gaussian: fs.Denoiser,
                                                                      x_T: torch.Tensor) -> None:
    exact = gaussian_ode_solution(x_T, 1.0, 1e-3)
    errors = []
    for steps in [20, 40, 80, 160]:
        out = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=steps, spacing="logsnr",
                        lower_order_final=False)
        assert out.nfe == steps and out.steps == steps
        errors.append(rmse(out.x, exact))
    # Second-order global error: e(N)/e(2N) -> 4, i.e. log2 ratio -> 2 (O(h) correction).
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert all(1.75 < s < 2.25 for s in slopes), (errors, slopes)
    assert errors[-1] < 1e-3


@pytest.mark.parametrize("solver, order", [("ddim", 1), ("euler", 1), ("heun", 2)])
def test_other_solvers_converge_at_declared_order(exact_gaussian: fs.Denoiser, x_T: torch.Tensor, solver: str,
                                                  order: int) -> None:
    exact = gaussian_ode_solution(x_T, 1.0, 1e-3)
    e1 = rmse(fs.sample(exact_gaussian, x_T, solver=solver, steps=40).x, exact)
    e2 = rmse(fs.sample(exact_gaussian, x_T, solver=solver, steps=80).x, exact)
    assert abs(math.log2(e1 / e2) - order) < 0.25, (e1, e2)


def test_reference_solve_matches_closed_form(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    ref = fs.reference_solve(exact_gaussian, x_T, t_start=1.0, t_end=1e-3, rtol=1e-10, atol=1e-10)
    assert ref.x.dtype == torch.float64 and ref.nfe > 0
    # Tolerance 1e-10 on y = x/sigma with sigma <= 1: a few hundred tolerances of slack.
    torch.testing.assert_close(ref.x, gaussian_ode_solution(x_T, 1.0, 1e-3), rtol=0, atol=1e-7)


def test_explicit_timesteps_equal_generated_grid(exact_gaussian: fs.Denoiser, vp: fs.VPLinear,
                                                 x_T: torch.Tensor) -> None:
    ts = fs.timesteps(vp, steps=8, spacing="time")
    a = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=8, spacing="time")
    b = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", timesteps=ts)
    c = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", timesteps=ts.tolist())
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    torch.testing.assert_close(a.x, c.x, rtol=0, atol=0)
    assert b.timesteps.dtype == torch.float64
    torch.testing.assert_close(b.timesteps, ts, rtol=0, atol=0)


def test_t_start_t_end_partial_solve(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    out = fs.sample(exact_gaussian, x_T, solver="heun", steps=200, t_start=0.6, t_end=0.05)
    assert out.timesteps[0].item() == pytest.approx(0.6) and out.timesteps[-1].item() == pytest.approx(0.05)
    assert rmse(out.x, gaussian_ode_solution(x_T, 0.6, 0.05)) < 1e-4


def test_trajectory_stats_and_denoise_to_zero(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    out = fs.sample(exact_gaussian, x_T, solver="heun", steps=5, keep_trajectory=True)
    assert len(out.trajectory) == 6
    torch.testing.assert_close(out.trajectory[0], x_T, rtol=0, atol=0)
    torch.testing.assert_close(out.trajectory[-1], out.x, rtol=0, atol=0)
    assert [s["index"] for s in out.stats] == list(range(5))
    assert sum(s["nfe"] for s in out.stats) == out.nfe == 10
    assert fs.sample(exact_gaussian, x_T, solver="heun", steps=5).trajectory == []
    z = fs.sample(exact_gaussian, x_T, solver="ddim", steps=5, denoise_to_zero=True)
    assert z.nfe == 6
    plain = fs.sample(exact_gaussian, x_T, solver="ddim", steps=5)
    x0, _ = exact_gaussian(plain.x, plain.timesteps[-1].item())
    torch.testing.assert_close(z.x, x0, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", ["euler", "heun", "ddim", "dpmpp_2m"])
def test_dtype_is_kept(exact_gaussian: fs.Denoiser, x_T: torch.Tensor, dtype: torch.dtype, solver: str) -> None:
    x = x_T.to(dtype)
    out = fs.sample(exact_gaussian, x, solver=solver, steps=6, keep_trajectory=True)
    assert out.x.dtype == dtype and out.x.shape == x.shape
    assert all(t.dtype == dtype for t in out.trajectory)
    # float32 agrees with float64 to float32 precision (the map is contracting here).
    ref = fs.sample(exact_gaussian, x_T, solver=solver, steps=6).x
    torch.testing.assert_close(out.x.double(), ref, rtol=0, atol=1e-4 if dtype == torch.float32 else 0)


def test_callback(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    seen = []
    out = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=7, callback=seen.append)
    assert len(seen) == 7
    assert [s.index for s in seen] == list(range(7))
    assert all(s.num_steps == 7 for s in seen)
    ts = [s.t for s in seen]
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert all(s.t_next < s.t for s in seen)
    assert seen[-1].t_next == pytest.approx(out.timesteps[-1].item())
    assert [s.nfe for s in seen] == list(range(1, 8))
    assert seen[-1].x.shape == x_T.shape and seen[-1].x0.shape == x_T.shape
    torch.testing.assert_close(seen[-1].x, out.x, rtol=0, atol=0)
    # Dict-style access too.
    assert seen[0]["t"] == seen[0].t and set(dict(seen[0])) == {"index", "num_steps", "t", "t_next", "x", "x0",
                                                                 "nfe"}


def test_callback_exception_propagates(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    def stop(info: fs.StepInfo) -> None:
        if info.index == 2:
            raise KeyboardInterrupt("stopped by callback")

    with pytest.raises(KeyboardInterrupt, match="stopped by callback"):
        fs.sample(exact_gaussian, x_T, steps=5, callback=stop)


def test_progress_bar(exact_gaussian: fs.Denoiser, x_T: torch.Tensor, capsys: pytest.CaptureFixture,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWSTEP_PROGRESS_INTERVAL", "0")  # captured stderr is a log: a line per update
    out = fs.sample(exact_gaussian, x_T, solver="ddim", steps=4, progress=True)
    err = capsys.readouterr().err
    assert out.nfe == 4
    assert "4/4" in err and "nfe=4" in err and "t=" in err
    fs.sample(exact_gaussian, x_T, solver="ddim", steps=4)
    assert capsys.readouterr().err == ""


def test_generator_is_accepted(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    a = fs.sample(exact_gaussian, x_T, steps=4, generator=torch.Generator().manual_seed(0))
    b = fs.sample(exact_gaussian, x_T, steps=4)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)  # deterministic solver: no effect


def test_lower_order_final_is_passed(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    on = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=5, lower_order_final=True)
    off = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=5, lower_order_final=False)
    assert not torch.equal(on.x, off.x)
    also_on = fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=5, lower_order_final_steps=10)
    torch.testing.assert_close(on.x, also_on.x, rtol=0, atol=0)


def test_check_finite_names_step(vp: fs.VPLinear, x_T: torch.Tensor) -> None:
    model = fs.Denoiser(lambda x, t: torch.full_like(x, float("nan")), schedule=vp)
    with pytest.raises(RuntimeError, match="step 0"):
        fs.sample(model, x_T, solver="ddim", steps=3, check_finite=True)


# ---- bad inputs ----

def test_unknown_solver_lists_registered_names(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="no_such_solver") as info:
        fs.sample(exact_gaussian, x_T, solver="no_such_solver", steps=5)
    for name in ["euler", "heun", "ddim", "dpmpp_2m"]:
        assert name in str(info.value)


def test_unknown_solver_option(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="eta"):
        fs.sample(exact_gaussian, x_T, solver="euler", steps=5, eta=0.5)
    with pytest.raises(ValueError, match="lower_order_final"):
        fs.sample(exact_gaussian, x_T, solver="euler", steps=5, lower_order_final=True)


def test_bad_option_type_names_key(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="lower_order_final_steps"):
        fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=5, lower_order_final_steps=[3])
    with pytest.raises(TypeError, match="lower_order_final"):
        fs.sample(exact_gaussian, x_T, solver="dpmpp_2m", steps=5, lower_order_final="yes")


def test_steps_and_timesteps(exact_gaussian: fs.Denoiser, vp: fs.VPLinear, x_T: torch.Tensor) -> None:
    ts = fs.timesteps(vp, steps=5)
    with pytest.raises(ValueError, match="steps.*timesteps"):
        fs.sample(exact_gaussian, x_T, steps=5, timesteps=ts)
    with pytest.raises(ValueError, match="steps"):
        fs.sample(exact_gaussian, x_T)
    with pytest.raises(ValueError, match="t_start"):
        fs.sample(exact_gaussian, x_T, timesteps=ts, t_start=0.5)
    with pytest.raises(ValueError, match="decreasing"):
        fs.sample(exact_gaussian, x_T, timesteps=[0.1, 0.5])


def test_type_errors(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="x_T"):
        fs.sample(exact_gaussian, x_T.numpy(), steps=5)
    with pytest.raises(TypeError, match="model"):
        fs.sample(lambda x, t: x, x_T, steps=5)
    with pytest.raises(TypeError, match="steps"):
        fs.sample(exact_gaussian, x_T, steps=5.0)
    with pytest.raises(TypeError, match="callback"):
        fs.sample(exact_gaussian, x_T, steps=5, callback=3)
    with pytest.raises(TypeError):
        fs.sample(exact_gaussian, x_T.long(), steps=5)
