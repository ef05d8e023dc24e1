"""Stochastic samplers from Python: generator and per-sample seeds, fs.randn, batch independence, options."""

from __future__ import annotations

import math

import pytest
import torch

import fewstep as fs

STOCHASTIC = ["ddpm", "euler_maruyama", "dpmpp_2m_sde", "euler_churn", "heun_churn"]


def test_stochastic_solvers_are_listed() -> None:
    for name in STOCHASTIC:
        assert fs.solver_info(name)["stochastic"], name
    # The registry lists defaults: ddim is deterministic unless eta > 0.
    assert not fs.solver_info("ddim")["stochastic"]
    assert fs.solver_info("ddim")["options"] == ["eta"]
    assert set(fs.solver_info("heun_churn")["options"]) == {"s_churn", "s_tmin", "s_tmax", "s_noise"}
    assert "variant" in fs.solver_info("dpmpp_2m_sde")["options"]


def test_randn_rows_depend_only_on_their_seed() -> None:
    a = fs.randn((4, 3, 2), seeds=[10, 11, 12, 13], dtype=torch.float64)
    assert a.shape == (4, 3, 2) and a.dtype == torch.float64
    b = fs.randn((2, 3, 2), seeds=[12, 10], dtype=torch.float64)
    torch.testing.assert_close(b[0], a[2], rtol=0, atol=0)
    torch.testing.assert_close(b[1], a[0], rtol=0, atol=0)
    f = fs.randn([4, 3, 2], seeds=range(10, 14))
    assert f.dtype == torch.get_default_dtype()
    torch.testing.assert_close(f, a.to(f.dtype), rtol=0, atol=0)
    assert not torch.equal(a[0], a[1])


def test_randn_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"shape\[0\]"):
        fs.randn((3, 2), seeds=[1, 2])
    # Seeds passed as the shape: a short message that names the mistake, not a thousand numbers.
    with pytest.raises(ValueError, match=r"of 1000 entries, starting \(0, 1, 2, 3\).*swapped") as error:
        fs.randn(list(range(1000)), (1, 28, 28))
    assert len(str(error.value)) < 300
    with pytest.raises(TypeError, match="seeds"):
        fs.randn((1, 2), seeds=[1.5])
    with pytest.raises(ValueError, match="seeds"):
        fs.randn((1, 2), seeds=[-1])
    with pytest.raises(ValueError, match="empty"):
        fs.randn((0, 2), seeds=[])


@pytest.mark.parametrize("solver", STOCHASTIC + ["ddim"])
def test_generator_reproducible_and_seeds_batch_independent(exact_gaussian: fs.Denoiser, solver: str) -> None:
    options = {"eta": 0.7} if solver == "ddim" else {}
    seeds = [5, 17, 3, 99, 1234, 8, 41, 2]
    x_T = fs.randn((8, 3), seeds=seeds, dtype=torch.float64)

    def run(x: torch.Tensor, **kw):
        return fs.sample(exact_gaussian, x, solver=solver, steps=12, **options, **kw).x

    g1 = run(x_T, generator=torch.Generator().manual_seed(7))
    g2 = run(x_T, generator=torch.Generator().manual_seed(7))
    g3 = run(x_T, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    assert (g1 - g3).norm(dim=1).min() > 1e-6

    batch = run(x_T, seeds=seeds)
    torch.testing.assert_close(run(x_T, seeds=seeds), batch, rtol=0, atol=0)
    for i in (0, 3, 7):
        alone = run(fs.randn((1, 3), seeds=[seeds[i]], dtype=torch.float64), seeds=[seeds[i]])
        torch.testing.assert_close(alone[0], batch[i], rtol=1e-12, atol=1e-12)
    perm = [6, 1, 4, 0, 7, 2, 5, 3]
    permuted = run(x_T[perm], seeds=[seeds[p] for p in perm])
    torch.testing.assert_close(permuted, batch[perm], rtol=1e-12, atol=1e-12)
    other = run(x_T, seeds=[s + 1000 for s in seeds])
    assert (other - batch).norm(dim=1).min() > 1e-6


def test_seed_argument_errors(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="one seed per sample"):
        fs.sample(exact_gaussian, x_T, solver="ddpm", steps=3, seeds=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        fs.sample(exact_gaussian, x_T, solver="ddpm", steps=3, seeds=list(range(len(x_T))),
                  generator=torch.Generator())
    with pytest.raises(TypeError, match="seeds"):
        fs.sample(exact_gaussian, x_T, solver="ddpm", steps=3, seeds="abc")


def test_ddim_eta_zero_unchanged_and_eta_checked(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    plain = fs.sample(exact_gaussian, x_T, solver="ddim", steps=7).x
    zero = fs.sample(exact_gaussian, x_T, solver="ddim", steps=7, eta=0.0).x
    torch.testing.assert_close(zero, plain, rtol=0, atol=0)
    with pytest.raises(ValueError, match="eta"):
        fs.sample(exact_gaussian, x_T, solver="ddim", steps=7, eta=1.5)
    g = torch.Generator().manual_seed(3)
    a = fs.sample(exact_gaussian, x_T, solver="ddim", steps=7, eta=1.0, generator=g).x
    g = torch.Generator().manual_seed(3)
    b = fs.sample(exact_gaussian, x_T, solver="ddpm", steps=7, generator=g).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_churn_zero_is_euler_and_heun(exact_gaussian: fs.Denoiser, x_T: torch.Tensor) -> None:
    for plain, churn in [("euler", "euler_churn"), ("heun", "heun_churn")]:
        a = fs.sample(exact_gaussian, x_T, solver=plain, steps=9).x
        b = fs.sample(exact_gaussian, x_T, solver=churn, steps=9, s_churn=0.0).x
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("solver, steps", [("ddpm", 1000), ("euler_maruyama", 400), ("dpmpp_2m_sde", 80)])
def test_samples_have_the_exact_marginal(exact_gaussian: fs.Denoiser, vp: fs.VPLinear, solver: str,
                                         steps: int) -> None:
    # Single Gaussian N(MU, diag(STD^2)): from exact p(t_max) the samples at t_min follow
    # N(a MU, a^2 STD^2 + s^2). Bounds: 4 standard errors of the mean, sqrt(v/n), and of the variance,
    # v sqrt(2/n), at n = 4000. Discretisation bias at these step counts, measured with n = 4e5: at most
    # 0.63 (ddpm), 0.5 (euler_maruyama, 1.0 at 200 steps) and 0.17 (dpmpp_2m_sde, 0.8 at 40 steps) of
    # those standard errors; DDPM's is large because its posterior variance ignores Var(x0 | x_s)
    # (about -10% on the variance at 100 steps).
    from conftest import MU, STD, vp_linear_alpha_sigma

    n = 4000
    g = torch.Generator().manual_seed(11)
    mu = torch.tensor(MU, dtype=torch.float64)
    std = torch.tensor(STD, dtype=torch.float64)
    a_T, s_T = vp_linear_alpha_sigma(vp.t_max)
    x0 = mu + std * torch.randn(n, 3, generator=g, dtype=torch.float64)
    x_T = a_T * x0 + s_T * torch.randn(n, 3, generator=g, dtype=torch.float64)
    out = fs.sample(exact_gaussian, x_T, solver=solver, steps=steps, generator=torch.Generator().manual_seed(12)).x
    a, s = vp_linear_alpha_sigma(vp.t_min)
    var = a**2 * std**2 + s**2
    z_mean = (out.mean(0) - a * mu) / torch.sqrt(var / n)
    z_var = (out.var(0) - var) / (var * math.sqrt(2.0 / n))
    assert z_mean.abs().max() < 4 and z_var.abs().max() < 4, (z_mean, z_var)
