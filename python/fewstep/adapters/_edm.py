"""k-diffusion / EDM denoisers D(x, sigma) and guided-diffusion learned-variance networks as fewstep models."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from typing import Any, Mapping, Optional

import torch

from .. import _fewstep
from .._export import ExportableDenoiser


class EDMPreconditioned(torch.nn.Module):
    """EDM's preconditioned denoiser (Karras et al. 2022, arXiv 2206.00364, Table 1 and eq. 7):

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), c_skip = sd^2/(sigma^2 + sd^2),
    c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1/sqrt(sigma^2 + sd^2), c_noise = ln(sigma)/4,
    sd = sigma_data. ``raw(x, c_noise, **cond)`` is the network F.
    """

    def __init__(self, raw: torch.nn.Module, sigma_data: float = 0.5, cond: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be finite and > 0, got sigma_data={sigma_data}")
        self.raw = raw
        self.sigma_data = float(sigma_data)
        self.cond = dict(cond or {})

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        s = sigma.to(x.dtype).reshape(shape)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s * s + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s * s + sd2)
        c_in = 1.0 / torch.sqrt(s * s + sd2)
        c_noise = torch.log(sigma.to(x.dtype)) / 4
        f = self.raw(x * c_in, c_noise, **self.cond)
        return c_skip * x + c_out * f.to(x.dtype)


class _CallWithCond(torch.nn.Module):
    def __init__(self, model: Any, cond: Optional[Mapping[str, Any]]) -> None:
        super().__init__()
        self.model = model
        self.cond = dict(cond or {})

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(x, sigma, **self.cond)


def k_diffusion_denoiser(
    model: Any,
    sigma_min: float,
    sigma_max: float,
    cond: Optional[Mapping[str, Any]] = None,
) -> _fewstep.Denoiser:
    """A k-diffusion style denoiser ``model(x, sigma, **cond) -> D(x; sigma)`` on ``VE(sigma_min, sigma_max)``.

    k-diffusion's samplers run on the ODE dx/dsigma = (x - D)/sigma; fewstep's ``euler`` and ``heun`` on
    this VE model take the same steps, and the exponential integrators (``dpmpp_2m``, ``unipc``, ...)
    their usual ones. Grids: ``fs.timesteps_from_sigmas(model.schedule, fs.sigmas("karras", n, ...))``.
    """
    return ExportableDenoiser(_CallWithCond(model, cond), _fewstep.VE(sigma_min, sigma_max), "x0", "t",
                              conditioning=list(cond or {}), source=f"k-diffusion denoiser {type(model).__name__}")


def edm_denoiser(
    raw: torch.nn.Module,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    sigma_data: float = 0.5,
    cond: Optional[Mapping[str, Any]] = None,
) -> _fewstep.Denoiser:
    """An EDM network F (``raw(x_in, c_noise, **cond)``) with EDM's preconditioning, on ``VE(sigma_min, sigma_max)``.

    See :class:`EDMPreconditioned` for the formulas; ``sigma_data`` is the data's standard deviation the
    network was trained with (0.5 for EDM's image models).
    """
    return ExportableDenoiser(EDMPreconditioned(raw, sigma_data, cond), _fewstep.VE(sigma_min, sigma_max), "x0", "t",
                              conditioning=list(cond or {}), source=f"EDM-preconditioned {type(raw).__name__}")


class GuidedDiffusionEps(torch.nn.Module):
    """An OpenAI guided-diffusion style network whose output is [eps, variance] along the channels: keeps eps.

    ``net(x, t, **cond)`` is called with the discrete timestep (``t * 1000 / N`` with
    ``rescale_timesteps``, as guided-diffusion's option of that name does).
    """

    def __init__(self, net: torch.nn.Module, cond: Optional[Mapping[str, Any]] = None, rescale_timesteps: bool = False,
                 num_train_steps: int = 1000) -> None:
        super().__init__()
        self.net = net
        self.cond = dict(cond or {})
        self.scale = 1000.0 / num_train_steps if rescale_timesteps else 1.0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t * self.scale, **self.cond)
        channels = x.shape[1]
        if out.shape[1] != 2 * channels:
            raise ValueError(f"a learned-variance network outputs 2 x {channels} channels, got {out.shape[1]}")
        return out[:, :channels]


def guided_diffusion_network(
    net: torch.nn.Module,
    schedule: Any,
    cond: Optional[Mapping[str, Any]] = None,
    rescale_timesteps: bool = False,
) -> _fewstep.Denoiser:
    """An OpenAI guided-diffusion style eps model with learned variance channels on a discrete schedule.

    ``schedule`` is its ``fewstep.VPDiscrete`` (e.g. ``VPDiscrete.ddpm_linear()``, or
    ``fs.adapters.schedule_from_config({"beta_schedule": "squaredcos_cap_v2"})`` for the cosine models);
    the variance half of the output is dropped, since the probability-flow ODE only needs eps.
    """
    n = schedule.num_train_steps
    if n is None:
        raise ValueError(f"guided_diffusion_network needs a discrete schedule (VPDiscrete), got {schedule!r}")
    return ExportableDenoiser(GuidedDiffusionEps(net, cond, rescale_timesteps, n), schedule, "eps", "index",
                              conditioning=list(cond or {}), source=f"guided-diffusion {type(net).__name__}")


def load_k_diffusion_sampling() -> types.ModuleType:
    """k-diffusion's ``sampling`` module, without the training stack its package ``__init__`` imports.

    ``pip install --no-deps k-diffusion scipy torchdiffeq torchsde trampoline`` (requirements-interop.txt)
    is enough for it: ``k_diffusion/__init__.py`` imports wandb, clean-fid, CLIP, kornia and torchvision for
    training and evaluation, while ``k_diffusion.sampling`` needs only ``utils.append_dims`` from the package,
    which this loader provides when ``k_diffusion`` itself is not importable. ImportError if k-diffusion or a
    dependency of its sampling module is missing.
    """
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed (pip install --no-deps -r requirements-interop.txt)")
    try:
        import k_diffusion.sampling as sampling  # noqa: PLC0415 - the full package, when its extras are installed

        return sampling
    except ImportError:
        for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
            del sys.modules[name]
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]  # x with n - x.ndim trailing singleton axes
    package.utils = utils
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = package, utils
    import k_diffusion.sampling as sampling  # noqa: PLC0415

    return sampling
