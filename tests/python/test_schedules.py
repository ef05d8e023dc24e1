"""Schedules from Python: keyword construction, closed forms, vectorisation, bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fewstep as fs
from conftest import BETA_MAX, BETA_MIN, vp_linear_log_alpha

ALL_SCHEDULES = {
    "vp_linear": lambda: fs.VPLinear(beta_min=0.1, beta_max=20.0, t_min=1e-3, t_max=1.0),
    "vp_cosine": lambda: fs.VPCosine(s=0.008, t_min=1e-3, t_max=0.9946),
    "vp_discrete_betas": lambda: fs.VPDiscrete.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)),
    "vp_discrete_list": lambda: fs.VPDiscrete.from_betas([1e-4 + i * (0.02 - 1e-4) / 99 for i in range(100)]),
    "vp_discrete_alphas": lambda: fs.VPDiscrete.from_alphas_cumprod(
        torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)),
    "ddpm_linear": lambda: fs.VPDiscrete.ddpm_linear(num_train_steps=1000, beta_start=1e-4, beta_end=0.02),
    "scaled_linear": lambda: fs.VPDiscrete.scaled_linear(num_train_steps=1000, beta_start=0.00085, beta_end=0.012),
    "ve": lambda: fs.VE(sigma_min=0.002, sigma_max=80.0),
    "edm": lambda: fs.EDM(sigma_min=0.002, sigma_max=80.0),
    "flow": lambda: fs.FlowMatching(t_min=1e-3, t_max=0.999),
}


@pytest.fixture(params=sorted(ALL_SCHEDULES))
def schedule(request: pytest.FixtureRequest) -> fs.NoiseSchedule:
    return ALL_SCHEDULES[request.param]()


def interior_times(s: fs.NoiseSchedule, n: int = 17) -> torch.Tensor:
    return torch.linspace(s.t_min, s.t_max, n, dtype=torch.float64)


def test_properties(schedule: fs.NoiseSchedule) -> None:
    assert 0.0 < schedule.t_min < schedule.t_max
    assert schedule.family in {"vp", "ve", "flow"}
    assert isinstance(schedule.name, str) and schedule.name
    assert repr(schedule).startswith(type(schedule).__name__ + "(")
    assert isinstance(schedule, fs.NoiseSchedule)


def test_family_identities(schedule: fs.NoiseSchedule) -> None:
    t = interior_times(schedule)
    a, s = schedule.alpha(t), schedule.sigma(t)
    if schedule.family == "vp":
        torch.testing.assert_close(a**2 + s**2, torch.ones_like(t), rtol=0, atol=1e-12)
    elif schedule.family == "ve":
        torch.testing.assert_close(a, torch.ones_like(t), rtol=0, atol=0)
        torch.testing.assert_close(s, t, rtol=1e-14, atol=0)
    else:
        torch.testing.assert_close(a, 1.0 - t, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(s, t, rtol=1e-14, atol=0)
    # lambda = log alpha - log sigma, strictly decreasing; log_snr is an alias.
    lam = schedule.lambda_(t)
    torch.testing.assert_close(lam, torch.log(a) - torch.log(s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(schedule.log_snr(t), lam, rtol=0, atol=0)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(schedule.log_alpha(t), torch.log(a), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(schedule.log_sigma(t), torch.log(s), rtol=1e-12, atol=1e-12)


def test_t_lambda_round_trip(schedule: fs.NoiseSchedule) -> None:
    t = interior_times(schedule)
    back = schedule.t_of_lambda(schedule.lambda_(t))
    # t(lambda(t)) = t up to a few ulps of lambda amplified by |dt/dlambda|.
    torch.testing.assert_close(back, t, rtol=1e-9, atol=1e-12)


def test_vp_linear_closed_form() -> None:
    s = fs.VPLinear(beta_min=BETA_MIN, beta_max=BETA_MAX)
    for t in [1e-3, 0.1, 0.5, 1.0]:
        assert s.log_alpha(t) == pytest.approx(vp_linear_log_alpha(t), rel=1e-14, abs=1e-16)
        assert s.alpha(t) == pytest.approx(math.exp(vp_linear_log_alpha(t)), rel=1e-14)
    assert s.beta_min == 0.1 and s.beta_max == 20.0
    assert s.t_min == 1e-3 and s.t_max == 1.0


def test_ve_and_flow_closed_forms() -> None:
    ve = fs.VE(sigma_min=0.01, sigma_max=50.0)
    assert (ve.t_min, ve.t_max) == (0.01, 50.0)
    assert ve.alpha(3.0) == 1.0 and ve.sigma(3.0) == pytest.approx(3.0, rel=1e-15)
    assert ve.lambda_(3.0) == pytest.approx(-math.log(3.0), rel=1e-14)
    fm = fs.FlowMatching(t_min=0.01, t_max=0.99)
    assert fm.alpha(0.25) == pytest.approx(0.75, rel=1e-15)
    assert fm.lambda_(0.25) == pytest.approx(math.log(3.0), rel=1e-14)
    assert fm.t_of_lambda(math.log(3.0)) == pytest.approx(0.25, rel=1e-13)


def test_vp_cosine_closed_form() -> None:
    sched = fs.VPCosine(s=0.008)
    f = lambda t: math.cos(math.pi / 2 * (t + 0.008) / 1.008)  # noqa: E731
    for t in [0.01, 0.3, 0.9]:
        assert sched.alpha(t) == pytest.approx(f(t) / f(0.0), rel=1e-13)


def test_discrete_knots() -> None:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    s = fs.VPDiscrete.from_betas(betas)
    assert s.num_train_steps == 1000
    torch.testing.assert_close(s.alphas_cumprod, ac, rtol=1e-13, atol=0)
    # Step n sits at t = (n + 1)/N with alpha^2 = alphas_cumprod[n].
    for n in [0, 10, 500, 999]:
        assert s.alpha((n + 1) / 1000) ** 2 == pytest.approx(ac[n].item(), rel=1e-12)
    ddpm = fs.VPDiscrete.ddpm_linear(num_train_steps=1000, beta_start=1e-4, beta_end=0.02)
    torch.testing.assert_close(ddpm.alphas_cumprod, ac, rtol=1e-13, atol=0)
    sd = fs.VPDiscrete.scaled_linear(num_train_steps=1000, beta_start=0.00085, beta_end=0.012)
    sd_betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(sd.alphas_cumprod, torch.cumprod(1 - sd_betas, 0), rtol=1e-12, atol=0)


def test_vectorised_inputs_agree_with_scalars(vp: fs.VPLinear) -> None:
    times = [0.001, 0.2, 0.7, 1.0]
    scalars = torch.tensor([vp.sigma(t) for t in times], dtype=torch.float64)
    assert isinstance(vp.sigma(0.2), float)
    from_tensor = vp.sigma(torch.tensor(times, dtype=torch.float32))
    assert from_tensor.dtype == torch.float64
    # float32 input times are converted exactly; compare against the float32-rounded times.
    rounded = torch.tensor([vp.sigma(float(torch.tensor(t, dtype=torch.float32))) for t in times],
                           dtype=torch.float64)
    torch.testing.assert_close(from_tensor, rounded, rtol=0, atol=0)
    torch.testing.assert_close(vp.sigma(times), scalars, rtol=0, atol=0)
    torch.testing.assert_close(vp.sigma(np.array(times)), scalars, rtol=0, atol=0)
    grid = torch.tensor(times, dtype=torch.float64).reshape(2, 2)
    assert vp.alpha(grid).shape == (2, 2)
    assert vp.alpha(1) == pytest.approx(vp.alpha(1.0))


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: fs.VPLinear(beta_min=-0.1), "beta_min"),
        (lambda: fs.VPLinear(beta_min=1.0, beta_max=0.5), "beta_max"),
        (lambda: fs.VPLinear(t_min=0.0), "t_min"),
        (lambda: fs.VPLinear(t_min=0.5, t_max=0.2), "t_max"),
        (lambda: fs.VPCosine(s=-0.01), "s"),
        (lambda: fs.VPCosine(t_max=1.0), "t_max"),
        (lambda: fs.VE(sigma_min=0.0), "sigma_min"),
        (lambda: fs.VE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: fs.FlowMatching(t_min=-0.1), "t_min"),
        (lambda: fs.FlowMatching(t_max=1.5), "t_max"),
        (lambda: fs.VPDiscrete.from_betas([0.1]), "betas"),
        (lambda: fs.VPDiscrete.from_betas([0.1, 1.5]), "betas"),
        (lambda: fs.VPDiscrete.from_alphas_cumprod([0.9, 0.95]), "alphas_cumprod"),
        (lambda: fs.VPDiscrete.ddpm_linear(num_train_steps=1), "num_train_steps"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(make, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        make()


def test_bad_time_types() -> None:
    s = fs.VPLinear()
    with pytest.raises(TypeError):
        s.alpha("0.5")
    with pytest.raises(ValueError, match="t"):
        s.check_time(2.0)
