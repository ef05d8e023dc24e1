"""Shared fixtures and closed-form helpers for the fewstep Python tests."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Callable, Union

import pytest
import torch

import fewstep as fs

# A single Gaussian with diagonal covariance: the probability-flow ODE has a closed-form
# solution, x_t = a_t mu + sqrt(a_t^2 s^2 + s_t^2) / sqrt(a_T^2 s^2 + s_T^2) (x_T - a_T mu).
MU = (0.5, -1.0, 2.0)
STD = (0.3, 1.0, 0.1)
BETA_MIN, BETA_MAX = 0.1, 20.0


def vp_linear_log_alpha(t: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    """log alpha_t of the VP linear-beta schedule, written independently of fewstep."""
    return -0.25 * (BETA_MAX - BETA_MIN) * t * t - 0.5 * BETA_MIN * t


def vp_linear_alpha_sigma(t: float) -> tuple[float, float]:
    log_a = vp_linear_log_alpha(t)
    return math.exp(log_a), math.sqrt(-math.expm1(2.0 * log_a))


def gaussian_ode_solution(x_T: torch.Tensor, t_start: float, t_end: float) -> torch.Tensor:
    """Exact probability-flow ODE solution of the single Gaussian N(MU, diag(STD^2)), VP linear."""
    mu = torch.tensor(MU, dtype=torch.float64)
    var = torch.tensor(STD, dtype=torch.float64) ** 2
    a_T, s_T = vp_linear_alpha_sigma(t_start)
    a_t, s_t = vp_linear_alpha_sigma(t_end)
    scale = torch.sqrt(a_t**2 * var + s_t**2) / torch.sqrt(a_T**2 * var + s_T**2)
    return a_t * mu + scale * (x_T.double() - a_T * mu)


class GaussianEps(torch.nn.Module):
    """Exact noise prediction of N(MU, diag(STD^2)) under VP linear, in plain torch.

    eps(x, t) = sigma_t (x - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(MU, dtype=torch.float64))
        self.register_buffer("var", torch.tensor(STD, dtype=torch.float64) ** 2)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        log_a = vp_linear_log_alpha(t.double())[:, None]
        alpha = torch.exp(log_a)
        sigma = torch.sqrt(-torch.expm1(2.0 * log_a))
        eps = sigma * (x.double() - alpha * self.mu) / (alpha**2 * self.var + sigma**2)
        return eps.to(x.dtype)


@pytest.fixture
def vp() -> fs.VPLinear:
    return fs.VPLinear(beta_min=BETA_MIN, beta_max=BETA_MAX)


@pytest.fixture
def gaussian() -> fs.GaussianMixture:
    mu = torch.tensor(MU, dtype=torch.float64)
    var = torch.tensor(STD, dtype=torch.float64) ** 2
    return fs.GaussianMixture(weights=torch.ones(1, dtype=torch.float64), means=mu[None], covariances=var[None])


@pytest.fixture
def exact_gaussian(gaussian: fs.GaussianMixture, vp: fs.VPLinear) -> fs.Denoiser:
    return fs.Denoiser.exact(gaussian, vp)


@pytest.fixture
def x_T() -> torch.Tensor:
    return torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1234))


# ----------------------------------------------------------------------------------------------
# DistributedDataParallel over gloo: two processes training one network in a user's own loop.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, make_net: Callable, train: Callable) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        net = make_net()
        train(torch.nn.parallel.DistributedDataParallel(net), rank, world)
        torch.save(net.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def ddp_trained_states(tmp_path: Path, make_net: Callable, train: Callable, world: int = 2) -> list:
    """Each rank's final state dict after `train(DDP(make_net()), rank, world)` in `world` processes
    (make_net and train must be module-level functions, so the spawned processes can import them)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(world, free_port(), str(tmp_path), make_net, train), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]


#: Skip marker for torch builds without gloo.
needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available in this torch build")


def _process_worker(rank: int, world: int, port: int, out_dir: str, fn: Callable) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(fn(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_in_processes(tmp_path: Path, fn: Callable, world: int = 2) -> list:
    """fn()'s result (tensors, dicts and lists of them) in each of `world` gloo processes, rank order
    (fn must be a module-level function, so the spawned processes can import it)."""
    import torch.multiprocessing as mp

    mp.spawn(_process_worker, args=(world, free_port(), str(tmp_path), fn), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests (fastest for them; restores the count after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet2d(channels: int) -> torch.nn.Module:
    """A small randomly initialised diffusers UNet2DModel (8×8, seeded; no hub access), in eval mode, for the
    interop and export tests. diffusers is imported here, so only the tests that use it need it."""
    import diffusers  # noqa: PLC0415

    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return model.eval()
