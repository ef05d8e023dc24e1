"""fewstep reproduces k-diffusion's samplers on an EDM-style denoiser D(x, sigma) (docs/interop.md).

k-diffusion is a test-only dependency installed without its heavy extras (requirements-interop.txt);
``fs.adapters.load_k_diffusion_sampling`` loads its sampling module alone.
"""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch

import fewstep as fs

pytestmark = pytest.mark.usefixtures("one_thread")

ROUNDOFF_FACTOR = 4.0
ULP_FLOOR = 16 * 2.0**-24


@pytest.fixture(scope="module")
def kd() -> types.ModuleType:
    for dep in ("k_diffusion", "scipy", "torchdiffeq", "torchsde"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"{dep} is not installed (pip install --no-deps -r requirements-interop.txt)")
    return fs.adapters.load_k_diffusion_sampling()


class TinyEDMNet(torch.nn.Module):
    """A small random F(x_in, c_noise) in the shape of EDM's networks."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Conv2d(channels, 16, 3, padding=1)
        self.emb = torch.nn.Linear(1, 16)
        self.out = torch.nn.Conv2d(16, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.float()) + self.emb(c_noise.float().reshape(-1, 1))[:, :, None, None]
        return self.out(torch.nn.functional.silu(h))


@pytest.fixture(scope="module")
def edm() -> torch.nn.Module:
    return fs.adapters.EDMPreconditioned(TinyEDMNet(), sigma_data=0.5).eval()


def _k_run(kd, fn, edm, x_T, sigmas, dtype):
    with torch.no_grad():
        return fn(lambda x, s: edm(x, s), (x_T * sigmas[0]).to(dtype), sigmas.to(dtype), disable=True)


@pytest.mark.parametrize("sampler,solver", [("sample_euler", "euler"), ("sample_heun", "heun"),
                                            ("sample_dpmpp_2m", "dpmpp_2m")])
@pytest.mark.parametrize("n", [6, 12])
def test_reproduces_k_diffusion(kd, edm, sampler, solver, n) -> None:
    x_T = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = kd.get_sigmas_karras(n, 0.002, 80.0)  # float32, with k-diffusion's appended 0
    fn = getattr(kd, sampler)
    ref32 = _k_run(kd, fn, edm, x_T, sigmas, torch.float32)
    ref64 = _k_run(kd, fn, edm, x_T, sigmas, torch.float64)
    model = fs.adapters.edm_denoiser(edm.raw, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
    grid = fs.timesteps_from_sigmas(model.schedule, sigmas.double())
    out = fs.sample(model, x_T.double() * float(sigmas[0]), solver=solver, timesteps=grid)
    scale = ref32.double().abs().max()
    roundoff = float((ref32.double() - ref64).abs().max() / scale)
    err = float((out.x - ref32.double()).abs().max() / scale)
    assert err <= ROUNDOFF_FACTOR * roundoff + ULP_FLOOR, (sampler, n, err, roundoff)
    # k-diffusion counts one evaluation per step and two for Heun, except its Euler step to sigma = 0.
    assert out.nfe == (2 * n - 1 if solver == "heun" else n)


def test_sigma_schedules_match_k_diffusion(kd) -> None:
    for n in (1, 5, 12):
        ours = fs.sigmas("karras", n, 0.03, 14.6, rho=7.0, final_sigma="zero")
        assert torch.allclose(ours.float(), kd.get_sigmas_karras(n, 0.03, 14.6, rho=7.0), rtol=2e-6, atol=0)
        ours = fs.sigmas("exponential", n, 0.03, 14.6, final_sigma="zero")
        assert torch.allclose(ours.float(), kd.get_sigmas_exponential(n, 0.03, 14.6), rtol=2e-6, atol=0)
        ours = fs.sigmas("polyexponential", n, 0.03, 14.6, rho=2.0, final_sigma="zero")
        assert torch.allclose(ours.float(), kd.get_sigmas_polyexponential(n, 0.03, 14.6, rho=2.0), rtol=2e-6, atol=0)


def test_k_diffusion_denoiser_wraps_any_d_of_x_sigma(edm) -> None:
    model = fs.adapters.k_diffusion_denoiser(edm, sigma_min=0.002, sigma_max=80.0)
    x = torch.randn(2, 2, 8, 8)
    x0, eps = model(x, 3.0)
    assert torch.allclose(x0, edm(x, torch.full((2,), 3.0)))
    assert torch.allclose(eps, (x - x0) / 3.0, atol=1e-6)
