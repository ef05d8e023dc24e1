"""Time grids from Python."""

from __future__ import annotations

import pytest
import torch

import fewstep as fs

CONTINUOUS_SPACINGS = ["time", "logsnr", "quadratic", "karras"]


@pytest.mark.parametrize("spacing", CONTINUOUS_SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 7, 25])
def test_grid_shape_dtype_order(vp: fs.VPLinear, spacing: str, steps: int) -> None:
    ts = fs.timesteps(vp, steps=steps, spacing=spacing)
    assert isinstance(ts, torch.Tensor) and ts.dtype == torch.float64
    assert ts.shape == (steps + 1,)
    assert bool((ts[1:] < ts[:-1]).all())
    assert ts[0].item() == pytest.approx(vp.t_max, rel=1e-12)
    assert ts[-1].item() == pytest.approx(vp.t_min, rel=1e-12)


def test_logsnr_is_uniform_in_lambda(vp: fs.VPLinear) -> None:
    ts = fs.timesteps(vp, steps=12, spacing="logsnr")
    lam = vp.lambda_(ts)
    diffs = lam[1:] - lam[:-1]
    torch.testing.assert_close(diffs, torch.full_like(diffs, diffs.mean().item()), rtol=1e-9, atol=1e-12)


def test_time_is_uniform_and_respects_t_start_t_end(vp: fs.VPLinear) -> None:
    ts = fs.timesteps(vp, steps=4, spacing="time", t_start=0.8, t_end=0.2)
    torch.testing.assert_close(ts, torch.tensor([0.8, 0.65, 0.5, 0.35, 0.2], dtype=torch.float64),
                               rtol=1e-14, atol=1e-15)


def test_karras_rho(vp: fs.VPLinear) -> None:
    steps, rho = 6, 7.0
    ts = fs.timesteps(vp, steps=steps, spacing="karras", rho=rho)
    st = vp.sigma_tilde(ts)  # sigma/alpha, the VE noise level
    lo, hi = vp.sigma_tilde(vp.t_min), vp.sigma_tilde(vp.t_max)
    i = torch.arange(steps + 1, dtype=torch.float64)
    expected = (hi ** (1 / rho) + i / steps * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    torch.testing.assert_close(st, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_discrete_spacings(spacing: str) -> None:
    s = fs.VPDiscrete.ddpm_linear()
    ts = fs.timesteps(s, steps=10, spacing=spacing)
    assert ts.dtype == torch.float64 and ts.shape == (11,)
    assert bool((ts[1:] < ts[:-1]).all())
    # Interior points sit on the training knots t = (n + 1)/N.
    n = ts[:-1] * 1000 - 1
    torch.testing.assert_close(n, n.round(), rtol=0, atol=1e-9)


def test_leading_on_continuous_schedule_is_a_value_error(vp: fs.VPLinear) -> None:
    with pytest.raises(ValueError, match="leading"):
        fs.timesteps(vp, steps=10, spacing="leading")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(steps=0), "steps"),
        (dict(steps=5, spacing="cubic"), "spacing"),
        (dict(steps=5, t_start=0.2, t_end=0.5), "t_start"),
        (dict(steps=5, spacing="karras", rho=-1.0), "rho"),
    ],
)
def test_bad_grid_arguments(vp: fs.VPLinear, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        fs.timesteps(vp, **kwargs)


def test_validate_grid(vp: fs.VPLinear) -> None:
    good = fs.validate_grid(vp, [1.0, 0.5, 0.1])
    assert good.dtype == torch.float64 and good.tolist() == [1.0, 0.5, 0.1]
    with pytest.raises(ValueError, match="decreasing"):
        fs.validate_grid(vp, [1.0, 0.1, 0.5])
    with pytest.raises(ValueError, match=r"grid\[0\]"):
        fs.validate_grid(vp, torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match="at least 2"):
        fs.validate_grid(vp, [0.5])


def test_consistency_timesteps(vp: fs.VPLinear) -> None:
    # Starts where sigma/alpha = start_sigma (80 by default), re-noises at the intermediate levels.
    g = fs.consistency_timesteps(vp, intermediate_sigmas=[2.0])
    assert g.dtype == torch.float64 and len(g) == 3 and fs.CONSISTENCY_START_SIGMA == 80
    assert (-vp.lambda_(g[:2])).exp().tolist() == pytest.approx([80.0, 2.0], rel=1e-9)
    assert g[-1] == vp.t_min
    assert fs.consistency_timesteps(vp, None).tolist() == [vp.t_max, vp.t_min]
    assert fs.consistency_timesteps(vp, 1e4).tolist() == [vp.t_max, vp.t_min]  # above the top: t_max
    assert fs.consistency_timesteps(vp, 80, t_end=0.01)[-1] == 0.01
    with pytest.raises(ValueError, match="start_sigma"):
        fs.consistency_timesteps(vp, -1.0)
    with pytest.raises(ValueError, match=r"intermediate_sigmas\[0\]=100"):
        fs.consistency_timesteps(vp, 80, [100.0])
