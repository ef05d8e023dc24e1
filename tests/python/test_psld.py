"""PSLD from Python: the bound process, models and samplers agree with the C++ library's contracts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fewstep as fs

MODEL = Path(__file__).resolve().parents[2] / "models" / "gmm16d-psld-mlp.pt"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def exact_2d() -> tuple:
    process = fs.PsldProcess()
    gmm = fs.GaussianMixture.random(dim=2, components=3, seed=0)
    return process, gmm, fs.PsldModel.exact(gmm, process)


def test_process_defaults_are_critically_damped() -> None:
    process = fs.PsldProcess()
    assert process.mass_inverse == pytest.approx((0.01 - 4.01) ** 2 / 4)  # (Gamma - nu)^2 / 4
    z = process.prior_sample(5, [3], torch.Generator().manual_seed(0))
    assert z.shape == (5, 6)
    assert "psld_robab" in fs.psld_sampler_names() and "psld_em" in fs.psld_sampler_names()
    with pytest.raises(ValueError, match="nu"):
        fs.PsldProcess(nu=-1.0)


def test_sampling_counts_calls_and_reaches_the_data() -> None:
    process, gmm, model = exact_2d()
    n = 4000
    z_T = process.prior_sample(n, [2], torch.Generator().manual_seed(1))
    em = fs.psld_sample(model, z_T, "psld_em", steps=99, seeds=range(n))
    assert em["nfe"] == 100 and em["steps"] == 99  # one score per step + the last-step denoising
    assert fs.psld_sample(model, z_T[:4], "psld_em", steps=10, seeds=range(4), denoise=False)["nfe"] == 10
    # 99 Euler-Maruyama steps: the C++ benchmark's mean error at 100 NFE is ~0.08 in 16-D; with
    # 4000 samples the standard error of each coordinate's mean is ~0.02.
    torch.testing.assert_close(em["x"].double().mean(0), gmm.mean(), rtol=0, atol=0.15)
    # Per-sample seeds: a sample does not depend on the batch it is in.
    part = fs.psld_sample(model, z_T[10:20], "psld_em", steps=99, seeds=range(10, 20))
    torch.testing.assert_close(part["x"], em["x"][10:20], rtol=0, atol=1e-6)


def test_reduced_without_its_modifications_is_the_naive_integrator() -> None:
    process, _, model = exact_2d()
    z_T = process.prior_sample(64, [2], torch.Generator().manual_seed(2))
    naive = fs.psld_sample(model, z_T, "psld_noba", steps=30, seeds=range(64))
    plain = fs.psld_sample(model, z_T, "psld_roba", steps=30, seeds=range(64), reuse=False, lambda_s=1.0)
    torch.testing.assert_close(plain["x"], naive["x"], rtol=0, atol=1e-10)
    reduced = fs.psld_sample(model, z_T, "psld_roba", steps=30, seeds=range(64))
    assert reduced["nfe"] < naive["nfe"]  # score reuse: one evaluation per step
    assert not torch.allclose(reduced["x"], naive["x"])


def test_score_placement_and_grid_spacing_options() -> None:
    process, _, model = exact_2d()
    z_T = process.prior_sample(32, [2], torch.Generator().manual_seed(4))
    # Naive OBA evaluates for A and O by default (docs/psld.md); with both scores in O, once per step.
    assert fs.psld_sample(model, z_T, "psld_noba", steps=10, seeds=range(32), denoise=False)["nfe"] == 20
    both_in_o = fs.psld_sample(model, z_T, "psld_noba", steps=10, seeds=range(32), denoise=False, score_x="O")
    assert both_in_o["nfe"] == 10
    # The momentum score in B (the earlier split) is a different integrator; reduced OBAB then
    # carries its last evaluation (one more call at the start).
    in_b = fs.psld_sample(model, z_T, "psld_robab", steps=10, seeds=range(32), denoise=False, score_m="B")
    assert in_b["nfe"] == 11
    default = fs.psld_sample(model, z_T, "psld_robab", steps=10, seeds=range(32), denoise=False)
    assert default["nfe"] == 10 and not torch.allclose(default["z"], in_b["z"])
    # Quadratic spacing: uniform in sqrt(t), the same end points, smaller steps near the data.
    uniform, quadratic = fs.psld_grid(process, 8), fs.psld_grid(process, 8, spacing="quadratic")
    torch.testing.assert_close(quadratic, (torch.linspace(1.0, 1e-3 ** 0.5, 9, dtype=torch.float64)) ** 2)
    assert quadratic[-2] - quadratic[-1] < uniform[-2] - uniform[-1]
    out = fs.psld_sample(model, z_T, "psld_roba", steps=8, spacing="quadratic", seeds=range(32))
    ref = fs.psld_sample(model, z_T, "psld_roba", timesteps=quadratic, seeds=range(32))
    torch.testing.assert_close(out["x"], ref["x"], rtol=0, atol=0)


@pytest.mark.skipif(not MODEL.exists(), reason="shipped PSLD model absent")
def test_learned_model_samples() -> None:
    process = fs.PsldProcess()
    model = fs.PsldModel.torchscript(str(MODEL), process)
    z_T = process.prior_sample(16, [16], torch.Generator().manual_seed(3))
    out = fs.psld_sample(model, z_T, "psld_roba", timesteps=fs.psld_grid(process, 20), generator=torch.Generator())
    assert out["x"].shape == (16, 16) and torch.isfinite(out["x"]).all()


def test_bad_arguments_name_the_argument() -> None:
    process, _, model = exact_2d()
    z_T = process.prior_sample(4, [2])
    with pytest.raises(ValueError, match="psld_robab"):
        fs.psld_sample(model, z_T, "psld_nope", steps=5)
    with pytest.raises(ValueError, match="exactly one of steps= or timesteps="):
        fs.psld_sample(model, z_T)
    with pytest.raises(ValueError, match="one seed per sample"):
        fs.psld_sample(model, z_T, steps=5, seeds=[1, 2])
    with pytest.raises(ValueError, match="has no option 'end_time'"):
        fs.psld_sample(model, z_T, "psld_roba", steps=5, end_time=True)
    with pytest.raises(ValueError, match="score_m"):
        fs.psld_sample(model, z_T, "psld_noba", steps=5, score_m="A")
    with pytest.raises(ValueError, match="end_time"):  # the default split's final B holds no score
        fs.psld_sample(model, z_T, "psld_robab", steps=5, end_time=False)
    with pytest.raises(ValueError, match="spacing"):
        fs.psld_grid(process, 5, spacing="logsnr")
    with pytest.raises(TypeError, match="fewstep.PsldModel"):
        fs.psld_sample("model", z_T, steps=5)
