"""The noise convention (docs/sampling.md, "Noise"): with per-sample seeds, x_T = fs.randn(shape, seeds) and
the step noise fs.sample(..., seeds=seeds) injects come from different streams of each seed.

The injected noise is read back from the samplers themselves: one step from x_T adds c·z to a deterministic
function d(x_T), with c a scalar. Two runs with generators whose draws z_1, z_2 we can reproduce give c
(and check that the step is of that form); a third run with the seeds then gives its own z.
"""

from __future__ import annotations

import math

import pytest
import torch

import fewstep as fs

N, DIM = 2000, 4
SEEDS = list(range(1000, 1000 + N))
ONE_STEP = dict(steps=1, t_start=1.0, t_end=0.5)


def mixture_model() -> fs.Denoiser:
    return fs.Denoiser.exact(fs.GaussianMixture.random(dim=DIM, components=3, seed=2), fs.VPLinear(0.1, 20.0))


def generator_noise(seed: int, like: torch.Tensor) -> torch.Tensor:
    """The draw of one step with generator=torch.Generator().manual_seed(seed) (core/noise.h)."""
    return torch.randn(like.shape, generator=torch.Generator().manual_seed(seed), dtype=like.dtype)


def injected_noise(model: fs.Denoiser, x_T: torch.Tensor, solver: str, **options) -> torch.Tensor:
    def run(**noise) -> torch.Tensor:
        return fs.sample(model, x_T, solver=solver, **ONE_STEP, **options, **noise).x

    x1, z1 = run(generator=torch.Generator().manual_seed(1)), generator_noise(1, x_T)
    x2, z2 = run(generator=torch.Generator().manual_seed(2)), generator_noise(2, x_T)
    dz = z2 - z1
    c = float((x2 - x1).mul(dz).sum() / dz.pow(2).sum())
    assert abs(c) > 1e-3, f"{solver}: the step injects no noise"
    # The step is d(x_T) + c·z: the difference of two runs is c times the difference of their draws.
    assert (x2 - x1 - c * dz).abs().max() < 1e-9 * max(1.0, abs(c)), solver
    return z1 + (run(seeds=SEEDS) - x1) / c


@pytest.mark.parametrize("solver, options", [("ddim", {"eta": 1.0}), ("euler_maruyama", {}), ("dpmpp_2m_sde", {})])
def test_step_noise_is_independent_of_x_T_under_the_documented_seeds_usage(solver: str, options: dict) -> None:
    torch.set_num_threads(1)
    x_T = fs.randn((N, DIM), seeds=SEEDS, dtype=torch.float64)
    z = injected_noise(mixture_model(), x_T, solver, **options)
    # z is standard normal (mean and variance within 4 standard errors) ...
    n = z.numel()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert abs(z.var().item() - 1.0) < 4 * math.sqrt(2 / n)
    # ... and uncorrelated with x_T: the sample correlation of independent normals has standard error 1/sqrt(n).
    r = torch.corrcoef(torch.stack([z.flatten(), x_T.flatten()]))[0, 1].item()
    assert abs(r) < 4 / math.sqrt(n), f"{solver}: correlation {r:.4f} between the step noise and x_T"
    # Per coordinate too (a shifted or permuted copy of x_T would pass the pooled test).
    for j in range(DIM):
        rj = torch.corrcoef(torch.stack([z[:, j], x_T[:, j]]))[0, 1].item()
        assert abs(rj) < 4 / math.sqrt(N), (solver, j, rj)
