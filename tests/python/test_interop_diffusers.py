"""fewstep reproduces stock diffusers schedulers on diffusers models (docs/interop.md).

Small randomly initialised diffusers models (no hub access) are run by diffusers' own scheduler
loop in float32 and by fewstep through ``fs.adapters`` in float64. The two must agree to
diffusers' float32 round-off: the tolerance is a multiple of the distance between diffusers' float32
run and the same diffusers run carried in float64 (same float32 network and float32 sigmas), i.e.
of the round-off diffusers' own float32 state accumulates. A wrong spacing, final step, order or
time map moves the result by orders of magnitude more (checked below by perturbing the setting).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import fewstep as fs
from conftest import tiny_unet2d

pytestmark = pytest.mark.usefixtures("one_thread")

diffusers = pytest.importorskip("diffusers")

N_TRAIN = 1000
# fewstep (float64 state) must lie within ROUNDOFF_FACTOR times diffusers' own float32 round-off
# (|float32 run - float64 run| of diffusers itself), plus a floor of a few float32 ulps of the output:
# the float64 run shares diffusers' float32 sigmas and network, so the remaining difference is the
# rounding of the float32 state, which fewstep's float64 state does not have.
ROUNDOFF_FACTOR = 4.0
ULP_FLOOR = 16 * 2.0**-24


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return tiny_unet2d(2)


@pytest.fixture(scope="module")
def x_T() -> torch.Tensor:
    return torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))


def run_diffusers(model, scheduler, steps, x_T, dtype=torch.float32, **model_kwargs):
    """diffusers' own sampling loop (what its pipelines do), with the state in `dtype`."""
    scheduler.set_timesteps(steps)
    x = (x_T * scheduler.init_noise_sigma).to(dtype)
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            out = model(inp.float(), t, **model_kwargs).sample.to(dtype)
            x = scheduler.step(out, t, x).prev_sample
    return x


def relative_max(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / scale.double().abs().max())


def assert_within_roundoff(x: torch.Tensor, ref32: torch.Tensor, ref64: torch.Tensor, what: str) -> None:
    """x within ROUNDOFF_FACTOR x diffusers' own float32 round-off |ref32 - ref64| (relative max), plus ULP_FLOOR."""
    roundoff = relative_max(ref32, ref64, ref32)
    err = relative_max(x, ref32, ref32)
    assert err <= ROUNDOFF_FACTOR * roundoff + ULP_FLOOR, (
        f"{what}: fewstep differs from diffusers by {err:.2e} (relative max), diffusers' own float32 round-off "
        f"{roundoff:.2e}")


def assert_reproduces(model, cls, config, steps, x_T, adapter_kwargs=None, model_kwargs=None):
    model_kwargs = model_kwargs or {}
    ref32 = run_diffusers(model, cls(**config), steps, x_T, **model_kwargs)
    ref64 = run_diffusers(model, cls(**config), steps, x_T.double(), torch.float64, **model_kwargs)
    adapter = fs.adapters.from_diffusers(model, cls(**config), **(adapter_kwargs or {}))
    out = adapter.sample(x_T.double(), steps)
    assert_within_roundoff(out.x, ref32, ref64, f"{cls.__name__}({config}) at {steps} steps")
    return adapter, out


# ---- schedules and grids (no network) ----------------------------------------------------------


@pytest.mark.parametrize("config", [
    {},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
    {"trained_betas": torch.linspace(2e-4, 0.03, 50).tolist(), "num_train_timesteps": 50},
])
def test_alphas_cumprod_match_diffusers(config) -> None:
    ref = diffusers.DPMSolverMultistepScheduler(**config).alphas_cumprod
    ours = fs.adapters.alphas_cumprod_from_config(config)
    assert torch.equal(ours.float(), ref)


def _indices(grid: torch.Tensor) -> list[int]:
    """Trained timesteps of a VPDiscrete grid (t = (n+1)/N), without the end point."""
    return [int(round(float(t) * N_TRAIN - 1)) for t in grid[:-1]]


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 7, 8, 10, 15, 20, 25, 50, 999])
def test_spacings_match_diffusers(steps) -> None:
    sched = fs.VPDiscrete.ddpm_linear()
    for offset in (0, 1):
        if steps == 999 and offset == 1:
            continue
        d = diffusers.DPMSolverMultistepScheduler(timestep_spacing="leading", steps_offset=offset)
        d.set_timesteps(steps)
        grid = fs.timesteps(sched, steps, "leading_multistep", steps_offset=offset, final_sigma="zero")
        assert _indices(grid) == d.timesteps.tolist()
        d = diffusers.DDIMScheduler(timestep_spacing="leading", steps_offset=offset)
        d.set_timesteps(steps)
        grid = fs.timesteps(sched, steps, "leading", steps_offset=offset, final_sigma="zero")
        assert _indices(grid) == d.timesteps.tolist()
    for spacing in ("linspace", "trailing"):
        d = diffusers.UniPCMultistepScheduler(timestep_spacing=spacing)
        d.set_timesteps(steps)
        grid = fs.timesteps(sched, steps, spacing, final_sigma="zero")
        assert _indices(grid) == d.timesteps.tolist()
        assert float(grid[-1]) == 0.0
    # EulerDiscrete's "linspace" is uniform and unrounded: fewstep's "time" spacing with the final step to zero
    # (at one step numpy's linspace(0, N - 1, 1) is [0]: diffusers evaluates once at the last timestep).
    if steps > 1:
        d = diffusers.EulerDiscreteScheduler()
        d.set_timesteps(steps)
        grid = fs.timesteps(sched, steps, "time", final_sigma="zero")
        assert torch.allclose(grid[:-1] * N_TRAIN - 1, d.timesteps.double(), atol=1e-3, rtol=0)


def test_final_sigma_min_ends_at_t_min() -> None:
    sched = fs.VPDiscrete.from_alphas_cumprod(fs.adapters.alphas_cumprod_from_config({}))  # diffusers' float32 values
    grid = fs.timesteps(sched, 10, "linspace", final_sigma="min")
    d = diffusers.DPMSolverMultistepScheduler(final_sigmas_type="sigma_min")
    d.set_timesteps(10)
    assert float(grid[-1]) == pytest.approx(1 / N_TRAIN)
    assert torch.allclose(sched.sigma_tilde(grid).float(), d.sigmas, rtol=1e-6, atol=0)


def test_sigma_face_matches_diffusers_karras() -> None:
    d = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True)
    d.set_timesteps(12)
    table = ((1 - d.alphas_cumprod) / d.alphas_cumprod).sqrt().double()
    ours = fs.sigmas("karras", 12, float(table[0]), float(table[-1]), final_sigma="zero")
    assert torch.allclose(ours.float(), d.sigmas, rtol=2e-6, atol=0)
    sched = fs.VPDiscrete.from_alphas_cumprod(d.alphas_cumprod.double(), "log_sigma")
    grid = fs.timesteps_from_sigmas(sched, ours)
    assert [round(float(t) * N_TRAIN - 1) for t in grid[:-1]] == d.timesteps.tolist()
    quantised = fs.timesteps_from_sigmas(sched, ours, quantize=True)
    idx = [float(t) * N_TRAIN - 1 for t in quantised[:-1]]
    assert all(abs(i - round(i)) < 1e-9 for i in idx)
    assert len(set(round(i) for i in idx)) == len(idx)


# ---- samplers: fewstep through the adapter against diffusers' own loop -----------------------

SOLVER_CASES = [
    ("DDIMScheduler", {"clip_sample": False}),
    ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    ("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}, 8),  # 1000 divisible by the steps
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "leading", "steps_offset": 1}),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True}),
    ("DPMSolverMultistepScheduler", {"use_exponential_sigmas": True}, 6),  # timesteps truncated, not rounded
    ("DPMSolverMultistepScheduler", {"lower_order_final": False}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "solver_type": "heun",
                                     "final_sigmas_type": "sigma_min"}),
    ("DPMSolverSinglestepScheduler", {"use_exponential_sigmas": True, "lower_order_final": True}, 7),
    ("DPMSolverSinglestepScheduler", {"use_exponential_sigmas": True, "lower_order_final": True}, 17),
    ("UniPCMultistepScheduler", {}),
    ("UniPCMultistepScheduler", {"solver_order": 3, "timestep_spacing": "trailing"}),
    ("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    ("UniPCMultistepScheduler", {"use_karras_sigmas": True}),
    ("DEISMultistepScheduler", {}),
    ("DEISMultistepScheduler", {"solver_order": 3, "timestep_spacing": "leading"}),
    ("EulerDiscreteScheduler", {}),
    ("EulerDiscreteScheduler", {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
    ("EulerDiscreteScheduler", {"timestep_spacing": "leading", "steps_offset": 1}),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("HeunDiscreteScheduler", {"beta_start": 1e-4, "beta_end": 0.02}),
    ("HeunDiscreteScheduler", {"beta_start": 1e-4, "beta_end": 0.02, "timestep_spacing": "trailing"}),
]


@pytest.mark.parametrize("index", range(len(SOLVER_CASES)), ids=[f"{c[0][:-9]}-{i}" for i, c in enumerate(SOLVER_CASES)])
def test_reproduces_diffusers(unet, x_T, index) -> None:
    """Each configuration at 6 or 16 steps (below and above diffusers' lower-order threshold of 15, alternately)."""
    name, config, *fixed = SOLVER_CASES[index]
    steps = fixed[0] if fixed else 6 if index % 2 == 0 else 16
    assert_reproduces(unet, getattr(diffusers, name), config, steps, x_T)


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_default_multistep_both_sides_of_the_threshold(unet, x_T, name) -> None:
    for steps in (14, 15):
        assert_reproduces(unet, getattr(diffusers, name), {}, steps, x_T)


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_prediction_types(unet, x_T, prediction) -> None:
    assert_reproduces(unet, diffusers.UniPCMultistepScheduler, {"prediction_type": prediction}, 8, x_T)


def test_zero_snr_schedule_and_thresholding(unet, x_T) -> None:
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    assert_reproduces(unet, diffusers.DPMSolverMultistepScheduler, config, 8, x_T)
    adapter = fs.adapters.from_diffusers(unet, diffusers.DPMSolverMultistepScheduler(thresholding=True))
    thresholded = fs.threshold_x0(adapter.denoiser, ratio=0.995, max_value=1.0)
    ref = run_diffusers(unet, diffusers.DPMSolverMultistepScheduler(thresholding=True), 8, x_T)
    s = adapter.settings(8)
    out = fs.sample(thresholded, x_T.double(), solver=s.solver, timesteps=s.timesteps, **s.options)
    assert relative_max(out.x, ref, ref) < 1e-4
    # Without the thresholding wrapper the result is visibly different: the test can fail.
    plain = adapter.sample(x_T.double(), 8)
    assert relative_max(plain.x, ref, ref) > 1e-2


def test_a_wrong_setting_is_far_from_diffusers(unet, x_T) -> None:
    """The tolerance separates: each convention fewstep defaulted to before misses by far more than round-off."""
    steps = 12
    ref32 = run_diffusers(unet, diffusers.DPMSolverMultistepScheduler(), steps, x_T)
    ref64 = run_diffusers(unet, diffusers.DPMSolverMultistepScheduler(), steps, x_T.double(), torch.float64)
    tol = ROUNDOFF_FACTOR * relative_max(ref32, ref64, ref32) + ULP_FLOOR
    model = fs.adapters.from_diffusers(unet, diffusers.DPMSolverMultistepScheduler()).denoiser
    right = {"spacing": "linspace", "final_sigma": "zero", "lower_order_final_steps": 15}
    assert relative_max(fs.sample(model, x_T.double(), solver="dpmpp_2m", steps=steps, **right).x, ref32, ref32) <= tol
    for wrong in ({"final_sigma": "min"}, {"spacing": "leading"}, {"spacing": "logsnr"}):
        out = fs.sample(model, x_T.double(), solver="dpmpp_2m", steps=steps, **dict(right, **wrong))
        assert relative_max(out.x, ref32, ref32) > 10 * tol, wrong


# ---- conditioning, guidance, learned variance, pipeline folders --------------------------------


@pytest.fixture(scope="module")
def cond_unet() -> torch.nn.Module:
    torch.manual_seed(2)
    model = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, attention_head_dim=4, norm_num_groups=4,
    )
    return model.eval()


def test_classifier_free_guidance(cond_unet, x_T) -> None:
    gen = torch.Generator().manual_seed(3)
    cond = torch.randn(1, 5, 12, generator=gen)
    uncond = torch.randn(1, 5, 12, generator=gen)
    w, steps = 3.0, 8
    scheduler = diffusers.DPMSolverMultistepScheduler()

    def guided_loop(dtype):
        s = diffusers.DPMSolverMultistepScheduler()
        s.set_timesteps(steps)
        x = x_T.to(dtype)
        b = x.shape[0]
        ctx = torch.cat([cond.expand(b, -1, -1), uncond.expand(b, -1, -1)])
        with torch.no_grad():
            for t in s.timesteps:
                out = cond_unet(torch.cat([x, x]).float(), t, encoder_hidden_states=ctx).sample.to(dtype)
                c, u = out.chunk(2)
                x = s.step(u + w * (c - u), t, x).prev_sample
        return x

    ref32, ref64 = guided_loop(torch.float32), guided_loop(torch.float64)
    adapter = fs.adapters.from_diffusers(cond_unet, scheduler, cond={"encoder_hidden_states": cond},
                                         uncond={"encoder_hidden_states": uncond}, guidance_scale=w)
    out = adapter.sample(x_T.double(), steps)
    assert out.nfe == steps  # one batched call on [x; x] per evaluation
    assert_within_roundoff(out.x, ref32, ref64, "classifier-free guidance")
    # Plain conditioning (no guidance) passes the keyword arguments through.
    plain = fs.adapters.from_diffusers(cond_unet, scheduler, cond={"encoder_hidden_states": cond})
    assert_reproduces(cond_unet, diffusers.DPMSolverMultistepScheduler, {}, 8, x_T,
                      adapter_kwargs={"cond": {"encoder_hidden_states": cond}},
                      model_kwargs={"encoder_hidden_states": cond.expand(x_T.shape[0], -1, -1)})
    assert "guidance" not in plain.denoiser.description


def test_learned_variance_takes_the_eps_half(x_T) -> None:
    torch.manual_seed(4)
    model = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).eval()
    x3 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    assert_reproduces(model, diffusers.DPMSolverMultistepScheduler, {"variance_type": "learned_range"}, 8, x3)


def test_pipeline_folder_loads_in_one_call(unet, x_T, tmp_path) -> None:
    scheduler = diffusers.UniPCMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["unet"][1] == "UNet2DModel"
    adapter = fs.adapters.load_diffusers(tmp_path)
    assert adapter.scheduler_class == "UniPCMultistepScheduler"
    ref = run_diffusers(unet, diffusers.UniPCMultistepScheduler.from_config(scheduler.config), 10, x_T)
    out = adapter.sample(x_T.double(), 10)
    assert relative_max(out.x, ref, ref) < 1e-4
    with pytest.raises(ValueError, match="model_index.json"):
        fs.adapters.load_diffusers(tmp_path / "unet")


def test_unsupported_configurations_are_named(unet) -> None:
    adapter = fs.adapters.from_diffusers(unet, diffusers.DDIMScheduler(timestep_spacing="linspace"))
    with pytest.raises(ValueError, match="DDIMScheduler with timestep_spacing='linspace'"):
        adapter.settings(10)
    adapter = fs.adapters.from_diffusers(unet, diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver",
                                                                                     final_sigmas_type="sigma_min"))
    with pytest.raises(ValueError, match="midpoint"):
        adapter.settings(10)
    adapter = fs.adapters.from_diffusers(unet, diffusers.DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver", solver_order=3, solver_type="heun", final_sigmas_type="sigma_min"))
    with pytest.raises(ValueError, match="solver_order=3"):
        adapter.settings(10)
    with pytest.raises(ValueError, match="prediction_type"):
        fs.adapters.from_diffusers(unet, {"prediction_type": "score"})


# ---- flow matching -----------------------------------------------------------------------------


def run_flow_diffusers(model, scheduler, steps, x_T, dtype=torch.float32, mu=None, **model_kwargs):
    scheduler.set_timesteps(steps, mu=mu)
    x = x_T.to(dtype)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = model(x.float(), timestep=t.expand(x.shape[0]), **model_kwargs).sample.to(dtype)
            x = scheduler.step(out, t, x).prev_sample
    return x


@pytest.mark.parametrize("config,mu", [({}, None), ({"shift": 3.0}, None),
                                       ({"use_dynamic_shifting": True}, 0.8),
                                       ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, 1.6)])
def test_flow_match_euler(unet, x_T, config, mu) -> None:
    """FlowMatchEulerDiscrete (from sigma = 1, pure noise) is fewstep's ddim on FlowMatching(1e-6, 1)."""
    steps = 7
    cls = diffusers.FlowMatchEulerDiscreteScheduler
    ref32 = run_flow_diffusers(unet, cls(**config), steps, x_T, mu=mu)
    ref64 = run_flow_diffusers(unet, cls(**config), steps, x_T.double(), torch.float64, mu=mu)
    adapter = fs.adapters.from_diffusers(unet, cls(**config))
    assert adapter.prediction == "flow" and adapter.schedule.t_max == 1.0
    out = adapter.sample(x_T.double(), steps, mu=mu)
    assert out.nfe == steps
    assert_within_roundoff(out.x, ref32, ref64, f"FlowMatchEulerDiscrete({config})")
    # Every other solver runs on the velocity model too, from the same grid.
    other = fs.sample(adapter.denoiser, x_T.double(), solver="dpmpp_2m", timesteps=adapter.timesteps(steps, mu))
    assert torch.isfinite(other.x).all()


def test_flow_transformer_with_conditioning(x_T) -> None:
    torch.manual_seed(6)
    model = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=2, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=6, out_channels=2,
        pos_embed_max_size=8,
    ).eval()
    gen = torch.Generator().manual_seed(7)
    cond = {"encoder_hidden_states": torch.randn(1, 3, 12, generator=gen), "pooled_projections": torch.randn(1, 6, generator=gen)}
    batch = {k: v.expand(x_T.shape[0], *v.shape[1:]) for k, v in cond.items()}
    cls = diffusers.FlowMatchEulerDiscreteScheduler
    ref32 = run_flow_diffusers(model, cls(shift=3.0), 5, x_T, **batch)
    ref64 = run_flow_diffusers(model, cls(shift=3.0), 5, x_T.double(), torch.float64, **batch)
    out = fs.adapters.from_diffusers(model, cls(shift=3.0), cond=cond).sample(x_T.double(), 5)
    assert_within_roundoff(out.x, ref32, ref64, "SD3 transformer")


# ---- the drop-in scheduler and the step-wise API -----------------------------------------------


def _pipeline_images(pipe, steps, seed=0):
    return torch.from_numpy(pipe(batch_size=3, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                                 output_type="np").images)


def test_fewstep_scheduler_in_a_stock_pipeline(unet) -> None:
    """pipe.scheduler = FewstepScheduler.from_config(pipe.scheduler.config, solver=...) in diffusers' DDPMPipeline."""
    FewstepScheduler = fs.adapters.FewstepScheduler
    stock = diffusers.UniPCMultistepScheduler()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    steps = 8
    x_T = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # what the pipeline draws

    def image(x):
        return (x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    # UniPC's configuration with fewstep's unipc: stock diffusers UniPC to its float32 round-off.
    pipe.scheduler = FewstepScheduler.from_config(stock.config, solver="unipc")
    assert pipe.scheduler.config.solver == "unipc"
    ours = _pipeline_images(pipe, steps)
    ref32 = run_diffusers(unet, diffusers.UniPCMultistepScheduler(), steps, x_T)
    ref64 = run_diffusers(unet, diffusers.UniPCMultistepScheduler(), steps, x_T.double(), torch.float64)
    assert (ours - image(ref32)).abs().max() <= ROUNDOFF_FACTOR * (image(ref32) - image(ref64)).abs().max() + 1e-6
    # Any one-evaluation solver and spacing: the pipeline's loop gives exactly fewstep's own sample.
    pipe.scheduler = FewstepScheduler.from_config(pipe.scheduler.config, solver="dpmpp_3m", spacing="logsnr",
                                                  final_sigma="zero")
    images = _pipeline_images(pipe, steps)
    adapter = fs.adapters.from_diffusers(unet, stock)
    grid = fs.timesteps(adapter.schedule, steps, "logsnr", final_sigma="zero")
    direct = fs.sample(adapter.denoiser, x_T, solver="dpmpp_3m", timesteps=grid).x
    assert torch.equal(images, image(direct))
    assert pipe.scheduler.init_noise_sigma == 1.0 and len(pipe.scheduler.timesteps) == steps
    with pytest.raises(ValueError, match="one model evaluation per step"):
        FewstepScheduler.from_config(stock.config, solver="heun")


def test_stepwise_api_equals_the_driver(unet, x_T) -> None:
    adapter = fs.adapters.from_diffusers(unet, diffusers.DPMSolverMultistepScheduler())
    grid = fs.timesteps(adapter.schedule, 7, "linspace", final_sigma="zero")
    stepper = fs.Stepper("dpmpp_2m", {"lower_order_final_steps": 15})
    x, state = x_T, stepper.init(x_T)
    for i in range(len(grid) - 1):
        x, x0, state = stepper.step(adapter.denoiser, x, float(grid[i]), float(grid[i + 1]), state, index=i,
                                    num_steps=len(grid) - 1)
    driver = fs.sample(adapter.denoiser, x_T, solver="dpmpp_2m", timesteps=grid, lower_order_final_steps=15)
    assert torch.equal(x, driver.x)
    # A state is a value: stepping twice from it gives the same result.
    s0 = stepper.init(x_T)
    a = stepper.step(adapter.denoiser, x_T, float(grid[0]), float(grid[1]), s0, index=0, num_steps=7)
    b = stepper.step(adapter.denoiser, x_T, float(grid[0]), float(grid[1]), s0, index=0, num_steps=7)
    assert torch.equal(a.x, b.x) and a.nfe == 1
