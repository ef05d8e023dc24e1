"""Python networks as models: callables, nn.Modules, TorchScript, CFG, exceptions, no copies."""

from __future__ import annotations

import pytest
import torch

import fewstep as fs
from conftest import GaussianEps


@pytest.mark.parametrize("solver", ["euler", "heun", "ddim", "dpmpp_2m"])
def test_nn_module_and_callable_match_exact_model(exact_gaussian: fs.Denoiser, vp: fs.VPLinear,
                                                  x_T: torch.Tensor, solver: str) -> None:
    module = GaussianEps()
    calls = []

    def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return module(x, t)

    ref = fs.sample(exact_gaussian, x_T, solver=solver, steps=10)
    for net in (module, plain):
        module.calls = 0
        calls.clear()
        out = fs.sample(fs.Denoiser(net, schedule=vp, prediction="eps"), x_T, solver=solver, steps=10)
        # Same maths in float64 by a different route: agreement to round-off, amplified at most
        # by 1/alpha_T ~ 150 in x0 = (x - sigma eps)/alpha.
        torch.testing.assert_close(out.x, ref.x, rtol=0, atol=1e-10)
        # NFE is the exact number of network calls.
        assert out.nfe == module.calls
        assert out.nfe == 10 * fs.solver_info(solver)["nfe_per_step"]
    # The time input is a [batch] tensor of x's dtype holding the continuous t.
    assert all(t.shape == (x_T.shape[0],) and t.dtype == x_T.dtype for t in calls)
    assert calls[0][0].item() == pytest.approx(1.0)


def test_call_returns_x0_and_eps(vp: fs.VPLinear, x_T: torch.Tensor) -> None:
    model = fs.Denoiser(GaussianEps(), schedule=vp, prediction="eps")
    t = 0.3
    x0, eps = model(x_T, t)
    alpha, sigma = vp.alpha(t), vp.sigma(t)
    torch.testing.assert_close(eps, GaussianEps()(x_T, torch.full((32,), t, dtype=torch.float64)))
    torch.testing.assert_close(x0, (x_T - sigma * eps) / alpha, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_other_predictions_convert(exact_gaussian: fs.Denoiser, vp: fs.VPLinear, x_T: torch.Tensor,
                                   prediction: str) -> None:
    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0, eps = exact_gaussian(x, t[0].item())
        a, s = vp.alpha(t[0].item()), vp.sigma(t[0].item())
        return x0 if prediction == "x0" else a * eps - s * x0

    ref = fs.sample(exact_gaussian, x_T, steps=6)
    out = fs.sample(fs.Denoiser(net, schedule=vp, prediction=prediction), x_T, steps=6)
    torch.testing.assert_close(out.x, ref.x, rtol=0, atol=1e-10)


class ModelFailure(Exception):
    pass


def test_python_exception_propagates_with_type_and_message(vp: fs.VPLinear, x_T: torch.Tensor) -> None:
    count = {"n": 0}

    def failing(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        count["n"] += 1
        if count["n"] == 3:
            raise ModelFailure("network exploded at call 3")
        return torch.zeros_like(x)

    model = fs.Denoiser(failing, schedule=vp)
    with pytest.raises(ModelFailure, match="network exploded at call 3"):
        fs.sample(model, x_T, solver="dpmpp_2m", steps=5)
    with pytest.raises(ZeroDivisionError):
        fs.sample(fs.Denoiser(lambda x, t: 1 / 0, schedule=vp), x_T, steps=3)
    # The interpreter is in a sane state afterwards (GIL, error indicator).
    assert fs.sample(fs.Denoiser(lambda x, t: torch.zeros_like(x), schedule=vp), x_T, steps=3).nfe == 3


def test_network_returning_non_tensor_is_type_error(vp: fs.VPLinear, x_T: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        fs.sample(fs.Denoiser(lambda x, t: 0.0, schedule=vp), x_T, steps=3)


def test_bad_denoiser_arguments(vp: fs.VPLinear) -> None:
    with pytest.raises(TypeError, match="net"):
        fs.Denoiser(5, schedule=vp)
    with pytest.raises(ValueError, match="prediction"):
        fs.Denoiser(lambda x, t: x, schedule=vp, prediction="noise")
    with pytest.raises(ValueError, match="time_input"):
        fs.Denoiser(lambda x, t: x, schedule=vp, time_input="seconds")
    with pytest.raises(TypeError):
        fs.Denoiser(lambda x, t: x, schedule="vp")
    with pytest.raises(TypeError, match="schedule"):
        fs.Denoiser(lambda x, t: x, schedule=None)


@pytest.mark.parametrize("solver", ["ddim", "euler"])
def test_network_receives_x_T_without_copy(vp: fs.VPLinear, x_T: torch.Tensor, solver: str) -> None:
    seen = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.data_ptr())
        return torch.zeros_like(x)

    fs.sample(fs.Denoiser(net, schedule=vp), x_T, solver=solver, steps=3)
    assert seen[0] == x_T.data_ptr()
    # Output tensors come back without a copy too: the callback's x is the solution's x.
    ptrs = []
    out = fs.sample(fs.Denoiser(net, schedule=vp), x_T, solver=solver, steps=3,
                    callback=lambda info: ptrs.append(info.x.data_ptr()))
    assert ptrs[-1] == out.x.data_ptr()


class Affine(torch.nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + t[:, None]


def test_torchscript_model(tmp_path, vp: fs.VPLinear, x_T: torch.Tensor) -> None:
    path = tmp_path / "affine.pt"
    torch.jit.script(Affine()).save(str(path))
    scripted = fs.Denoiser.torchscript(str(path), schedule=vp, prediction="eps")
    python = fs.Denoiser(Affine(), schedule=vp, prediction="eps")
    for t in [1.0, 0.37, 1e-3]:
        for a, b in zip(scripted(x_T, t), python(x_T, t)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    eps = scripted(x_T, 0.37)[1]
    torch.testing.assert_close(eps, 0.5 * x_T + 0.37, rtol=0, atol=1e-15)
    a = fs.sample(scripted, x_T, solver="dpmpp_2m", steps=6)
    b = fs.sample(python, x_T, solver="dpmpp_2m", steps=6)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert a.nfe == 6


def test_torchscript_missing_file(tmp_path, vp: fs.VPLinear) -> None:
    missing = str(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing.pt"):
        fs.Denoiser.torchscript(missing, schedule=vp)


def test_classifier_free_guidance_against_hand_computation(vp: fs.VPLinear) -> None:
    batch, w, t = 4, 3.0, 0.42
    x = torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    cond = torch.tensor([[2.0, 1.0]], dtype=torch.float64)    # broadcast over the batch
    uncond = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    shapes = []

    def net(x: torch.Tensor, tt: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shapes.append((x.shape[0], tt.shape[0], c.shape[0]))
        return x * c[:, :1] + c[:, 1:2] * tt[:, None]

    guided = fs.Denoiser.guided(net, schedule=vp, prediction="eps", cond=cond, uncond=uncond, guidance_scale=w)
    x0, eps = guided(x, t)
    eps_c = 2.0 * x + 1.0 * t
    eps_u = 0.5 * x - 1.0 * t
    expected_eps = eps_u + w * (eps_c - eps_u)
    torch.testing.assert_close(eps, expected_eps, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(x0, (x - vp.sigma(t) * expected_eps) / vp.alpha(t), rtol=1e-13, atol=1e-13)
    # One batched call on [x; x] with [cond; uncond].
    assert shapes == [(2 * batch, 2 * batch, 2 * batch)]
    out = fs.sample(guided, x, solver="ddim", steps=4)
    assert out.nfe == 4 and len(shapes) == 5


def test_guided_scale_one_is_conditional_model(vp: fs.VPLinear) -> None:
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    cond = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    net = lambda x, t, c: x * c  # noqa: E731
    guided = fs.Denoiser.guided(net, schedule=vp, cond=cond, uncond=torch.zeros(1, 2, dtype=torch.float64),
                                guidance_scale=1.0)
    plain = fs.Denoiser(lambda x, t: x * cond, schedule=vp)
    for a, b in zip(guided(x, 0.5), plain(x, 0.5)):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_python_model_keeps_dtype(vp: fs.VPLinear, x_T: torch.Tensor, dtype: torch.dtype) -> None:
    dtypes = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtypes.append((x.dtype, t.dtype))
        return GaussianEps()(x, t)

    out = fs.sample(fs.Denoiser(net, schedule=vp), x_T.to(dtype), steps=5)
    assert out.x.dtype == dtype
    assert set(dtypes) == {(dtype, dtype)}


def test_denoiser_repr_and_schedule(vp: fs.VPLinear) -> None:
    model = fs.Denoiser(lambda x, t: x, schedule=vp, prediction="v")
    assert "v" in repr(model)
    assert isinstance(model.schedule, fs.VPLinear)
    assert model.schedule.t_max == vp.t_max
