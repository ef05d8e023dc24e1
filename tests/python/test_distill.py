"""Python distillation: loss objects against the library's own DDIM steps, the ready loops (rounds, loss
decrease, exact resume), DDP over gloo, and students exported as model files that fs.sample runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

import fewstep as fs
from conftest import (BETA_MAX, BETA_MIN, GaussianEps, ddp_trained_states, gaussian_ode_solution, needs_gloo,
                      vp_linear_log_alpha)

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyMLP(torch.nn.Module):
    """net(x, t) for low-dimensional points."""

    def __init__(self, dim: int = 2, hidden: int = 32, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, hidden, dtype=dtype), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden, dtype=dtype), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim, dtype=dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None].to(x.dtype)
        return self.body(torch.cat([x, t, torch.cos(0.5 * math.pi * t)], dim=1))


class AffineX0(torch.nn.Module):
    """x0 = A x + b: represents the exact one-step flow map of a single Gaussian."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim, dtype=torch.float64)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def mixture_teacher(vp: fs.VPLinear) -> fs.Denoiser:
    return fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=3, seed=4), vp)


# ----------------------------------------------------------------------------------------------
# Progressive distillation: the target is the teacher's two DDIM steps.


def test_pd_target_makes_one_student_step_land_on_two_teacher_steps(vp: fs.VPLinear) -> None:
    teacher = mixture_teacher(vp)
    steps = 4
    pd = fs.ProgressiveDistillationLoss(teacher, steps, student_prediction="v")
    x0 = fs.GaussianMixture.random(dim=2, components=3, seed=4).sample(8, torch.Generator().manual_seed(0))
    index = torch.tensor([1, 2, 3, 4, 4, 3, 2, 1])
    inp = pd.inputs(x0.double(), torch.Generator().manual_seed(1), index=index)
    grid = pd.timesteps()
    assert grid.tolist() == pytest.approx([vp.t_max - k * (vp.t_max - vp.t_min) / steps for k in range(steps + 1)],
                                          abs=1e-15)
    for b, i in enumerate(index.tolist()):
        t, t_mid, t_end = (fs.progressive_grid_time(i - k / 2, steps, vp.t_min, vp.t_max) for k in range(3))
        assert inp.t[b].item() == t
        z = inp.z_t[b:b + 1]
        teacher_two = fs.sample(teacher, z, solver="ddim", timesteps=[t, t_mid, t_end])
        if i == 1:  # last step of the grid: the target is the teacher's x0 prediction at t_mid
            z_mid = fs.sample(teacher, z, solver="ddim", timesteps=[t, t_mid]).x
            torch.testing.assert_close(inp.target[b:b + 1], teacher(z_mid, t_mid)[0], rtol=0, atol=1e-14)
        else:  # one student DDIM step with x0 = target lands on the teacher's two-step result
            student_step = fs.ddim_update(vp, z, inp.target[b:b + 1], t, t_end)
            torch.testing.assert_close(student_step, teacher_two.x, rtol=0, atol=1e-12)
    snr = (vp.alpha(inp.t) / vp.sigma(inp.t)) ** 2
    torch.testing.assert_close(inp.weight, snr.clamp(min=1.0))


def test_pd_target_with_substeps_lands_on_k_teacher_steps(vp: fs.VPLinear) -> None:
    teacher = mixture_teacher(vp)
    steps, k = 2, 6
    pd = fs.ProgressiveDistillationLoss(teacher, steps, substeps=k)
    assert pd.options()["substeps"] == k and "substeps" not in fs.ProgressiveDistillationLoss(teacher, 2).options()
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    inp = pd.inputs(x0, torch.Generator().manual_seed(6), index=torch.tensor([2, 2, 2, 2]))
    t = fs.progressive_grid_time(2, steps, vp.t_min, vp.t_max)
    grid = [fs.progressive_grid_time(2 - j / k, steps, vp.t_min, vp.t_max) for j in range(k + 1)]
    teacher_k = fs.sample(teacher, inp.z_t, solver="ddim", timesteps=grid).x
    torch.testing.assert_close(fs.ddim_update(vp, inp.z_t, inp.target, t, grid[-1]), teacher_k, rtol=0, atol=1e-12)
    for bad in (3, 0):
        with pytest.raises(ValueError, match="substeps"):
            fs.ProgressiveDistillationLoss(teacher, steps, substeps=bad)


@pytest.mark.parametrize("prediction", ["v", "x0", "eps"])
def test_pd_loss_is_zero_for_the_student_that_predicts_the_target(vp: fs.VPLinear, prediction: str) -> None:
    teacher = mixture_teacher(vp)
    pd = fs.ProgressiveDistillationLoss(teacher, 8, student_prediction=prediction, weighting="snr_plus_one")
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inp = pd.inputs(x0, torch.Generator().manual_seed(3))
    eps_of_target = (inp.z_t - inp.alpha * inp.target) / inp.sigma
    native = {"x0": inp.target, "eps": eps_of_target,
              "v": inp.alpha * eps_of_target - inp.sigma * inp.target}[prediction]
    assert pd.loss(native, inp).item() < 1e-20
    off = native + 0.1
    x0_hat = fs.convert_prediction  # the library's conversion, row by row, as an independent check
    expected = torch.stack([
        (1 + (vp.alpha(float(t)) / vp.sigma(float(t))) ** 2)
        * (x0_hat(inp.z_t[b:b + 1], off[b:b + 1], prediction, vp, float(t))[0] - inp.target[b:b + 1]).pow(2).mean()
        for b, t in enumerate(inp.t)]).mean()
    torch.testing.assert_close(pd.loss(off, inp), expected, rtol=1e-12, atol=0)


def test_pd_refuses_bad_settings(vp: fs.VPLinear) -> None:
    teacher = mixture_teacher(vp)
    with pytest.raises(ValueError, match="student_prediction 'eps' cannot be distilled to steps = 2"):
        fs.ProgressiveDistillationLoss(teacher, 2, student_prediction="eps")
    with pytest.raises(ValueError, match="weighting should be one of"):
        fs.ProgressiveDistillationLoss(teacher, 2, weighting="snr")
    pd = fs.ProgressiveDistillationLoss(teacher, 2)
    with pytest.raises(ValueError, match="index should be in 1..2, got 3"):
        pd.inputs(torch.zeros(2, 2, dtype=torch.float64), index=torch.tensor([1, 3]))
    with pytest.raises(TypeError, match="teacher should be a fewstep.Denoiser"):
        fs.ProgressiveDistillationLoss(TinyMLP(), 2)
    with pytest.raises(ValueError, match="initial_steps / final_steps should be a power of two, got 6 / 1"):
        fs.distill_progressive(TinyMLP(), torch.zeros(8, 2, dtype=torch.float64), vp, initial_steps=6)
    with pytest.raises(ValueError, match=r"final_steps must be in \[1, initial_steps = 4\], got 8"):
        fs.distill_progressive(TinyMLP(), torch.zeros(8, 2, dtype=torch.float64), vp, initial_steps=4, final_steps=8)
    # A misspelt loop option is named with the nearest known one, not as an internal class's keyword.
    with pytest.raises(TypeError, match=r"unknown training-loop option 'batch' \(did you mean 'batch_size'\?\); "
                                        r"the loop takes batch_size, lr, "):
        fs.distill_progressive(TinyMLP(), torch.zeros(8, 2, dtype=torch.float64), vp, initial_steps=2, batch=4)
    # The schedule's length is the function's own: named, not Python's "multiple values" error.
    with pytest.raises(TypeError, match=r"total_steps=50: the distill_\* functions set .* pass iterations instead"):
        fs.distill_progressive(TinyMLP(), torch.zeros(8, 2, dtype=torch.float64), vp, initial_steps=2, total_steps=50)


# ----------------------------------------------------------------------------------------------
# The progressive ready loop: rounds, loss decrease, exact resume.


def gmm_data(n: int, g: torch.Generator) -> torch.Tensor:
    return fs.GaussianMixture.random(dim=2, components=3, seed=4).sample(n, g).double()


def pd_run(tmp: Optional[Path], callback=None, resume: bool = True, **kw) -> fs.DistillResult:
    torch.manual_seed(0)
    teacher = TinyMLP()
    args = dict(initial_steps=4, final_steps=1, iterations=4, batch_size=16, lr=1e-3, ema=0.9, seed=7,
                checkpoint=None if tmp is None else tmp / "pd.ckpt", checkpoint_every=4, callback=callback,
                resume=resume)
    args.update(kw)
    return fs.distill_progressive(teacher, gmm_data, fs.VPLinear(), **args)


def test_pd_first_round_substeps_change_round_zero_only(vp: fs.VPLinear) -> None:
    two = pd_run(None, initial_steps=2, final_steps=1, iterations=2)
    eight = pd_run(None, initial_steps=2, final_steps=1, iterations=2, first_round_substeps=8)
    assert abs(two.losses[0] - eight.losses[0]) > 1e-9 * abs(two.losses[0])  # same draws, other target
    assert sorted(eight.students) == [1, 2]
    with pytest.raises(ValueError, match="first_round_substeps should be an even number in \\[2, 1024\\], got 5"):
        pd_run(None, first_round_substeps=5)


def test_pd_rounds_halve_the_steps_and_keep_the_teacher(vp: fs.VPLinear) -> None:
    torch.manual_seed(0)
    teacher = TinyMLP()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = []
    out = fs.distill_progressive(teacher, gmm_data, vp, initial_steps=8, final_steps=2, iterations=3,
                                 batch_size=8, callback=seen.append)
    assert [s.extra["N"] for s in seen] == [8] * 3 + [4] * 3 + [2] * 3
    assert [s.step for s in seen] == list(range(1, 10))
    assert sorted(out.students) == [2, 4, 8] and len(out.losses) == 9
    for n, grid in out.timesteps.items():
        assert len(grid) == n + 1 and grid[0] == vp.t_max and grid[-1] == vp.t_min
    # The learning rate decays linearly within each round and restarts with the next.
    assert [round(s.lr / 2e-4, 12) for s in seen[:3]] == [1.0, round(2 / 3, 12), round(1 / 3, 12)]
    assert seen[3].lr == seen[0].lr
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # the given teacher is never modified
    for p in out.student.parameters():
        assert not p.requires_grad


def test_pd_init_picks_where_the_student_starts(vp: fs.VPLinear) -> None:
    """init='auto' copies an eps TorchScript teacher's weights (its exact wrapper is ill conditioned at high
    noise: docs/distillation.md, "Where a student starts"); init='teacher' wraps it exactly."""
    torch.manual_seed(0)
    teacher = torch.jit.script(TinyMLP())
    names = set(dict(teacher.named_parameters()))
    args = dict(initial_steps=2, final_steps=2, iterations=1, batch_size=8, lr=1e-12, ema=0.0, seed=3)
    auto = fs.distill_progressive(teacher, gmm_data, vp, **args)
    assert set(dict(auto.student.named_parameters())) == names  # the teacher's own network
    wrapped = fs.distill_progressive(teacher, gmm_data, vp, init="teacher", **args)
    assert set(dict(wrapped.student.named_parameters())) == {"net." + n for n in names}
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    eps = fs.Denoiser(teacher, schedule=vp, prediction="eps")(x, 0.5)[0]
    assert torch.allclose(fs.Denoiser(wrapped.student, schedule=vp, prediction="v")(x, 0.5)[0], eps, atol=1e-8)
    # One step at lr 1e-12: still the teacher's network output, now read as v.
    assert torch.allclose(auto.student(x, t), teacher(x, t), atol=1e-8)
    with pytest.raises(ValueError, match="init='teacher' wraps a TorchScript teacher"):
        fs.distill_progressive(TinyMLP(), gmm_data, vp, init="teacher", **args)
    with pytest.raises(ValueError, match="auto, teacher, weights, got 'exact'"):
        fs.distill_progressive(teacher, gmm_data, vp, init="exact", **args)


class ExactMixtureEps(torch.nn.Module):
    """The exact eps of gmm_data's mixture as an nn.Module teacher (no parameters)."""

    def __init__(self, vp: fs.VPLinear) -> None:
        super().__init__()
        self.vp = vp
        self.exact = fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=3, seed=4), vp)

    def __deepcopy__(self, memo: dict) -> "ExactMixtureEps":  # the C++ Denoiser is immutable: rebuild it
        return ExactMixtureEps(self.vp)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for value in t.unique().tolist():
            rows = t == value
            out[rows] = self.exact(x[rows], value)[1].to(x.dtype)
        return out


def test_pd_loss_decreases(vp: fs.VPLinear) -> None:
    teacher = ExactMixtureEps(vp)
    pd = fs.ProgressiveDistillationLoss(fs.Denoiser(teacher, schedule=vp, prediction="eps"), 2,
                                        student_prediction="x0")
    held_out = gmm_data(512, torch.Generator().manual_seed(99))

    def held_out_loss(student: torch.nn.Module) -> float:
        with torch.no_grad():
            return pd(student, held_out, torch.Generator().manual_seed(5)).item()

    torch.manual_seed(1)
    start = held_out_loss(TinyMLP(hidden=64))
    torch.manual_seed(1)
    out = fs.distill_progressive(teacher, gmm_data, vp, initial_steps=2, final_steps=2, iterations=300,
                                 batch_size=64, lr=3e-3, ema=0.0, student=TinyMLP(hidden=64),
                                 student_prediction="x0")
    assert held_out_loss(out.student) < 0.1 * start


class Stop(Exception):
    pass


def stop_at(step: int) -> Callable:
    """A callback that interrupts a run (with Stop) after `step`, leaving its last checkpoint behind."""

    def callback(info: fs.DistillStep) -> None:
        if info.step == step:
            raise Stop

    return callback


def test_pd_resume_is_bit_exact(tmp_path: Path) -> None:
    full = pd_run(tmp_path / "a")

    with pytest.raises(Stop):
        pd_run(tmp_path / "b", callback=stop_at(6))
    resumed = pd_run(tmp_path / "b")  # continues from the checkpoint of step 4, just after a round change
    assert resumed.losses == full.losses and len(full.losses) == 12
    for (k, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), k
    assert sorted(resumed.students) == [1, 2, 4]

    with pytest.raises(ValueError, match="iterations is 5 here, 4 in the checkpoint"):
        pd_run(tmp_path / "b", iterations=5)
    with pytest.raises(ValueError, match="t_min is 0.01 here, 0.001 in the checkpoint"):
        pd_run(tmp_path / "b", t_min=0.01)
    fresh = pd_run(tmp_path / "b", resume=False)
    assert fresh.losses == full.losses


class WrappedMLP(torch.nn.Module):
    """A student whose parameter names differ from the teacher's (as an exported student's do)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyMLP(dtype=torch.float64)
        with torch.no_grad():
            for k, p in enumerate(self.inner.parameters()):
                p.copy_(torch.linspace(-0.3, 0.3, p.numel(), dtype=p.dtype).reshape(p.shape) * (1 + k % 3))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner(x, t)


def test_pd_student_of_another_architecture_crosses_rounds_and_resumes(tmp_path: Path) -> None:
    full = pd_run(tmp_path / "a", student=WrappedMLP())
    assert sorted(full.students) == [1, 2, 4] and all(k.startswith("inner.") for k in full.students[1].state_dict())

    with pytest.raises(Stop):
        pd_run(tmp_path / "b", callback=stop_at(6), student=WrappedMLP())
    resumed = pd_run(tmp_path / "b", student=WrappedMLP())  # from step 4: round 1, the teacher is a student
    assert resumed.losses == full.losses
    for (k, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), k


# ----------------------------------------------------------------------------------------------
# Knowledge distillation.


def test_kd_rollout_is_the_library_ddim_sampler(vp: fs.VPLinear) -> None:
    torch.manual_seed(0)
    student = TinyMLP()
    grid = fs.timesteps(vp, 3, "logsnr")
    kd = fs.KnowledgeDistillationLoss(vp, grid, student_prediction="v")
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ours = kd.rollout(student, x_T)
    lib = fs.sample(fs.Denoiser(student, schedule=vp, prediction="v"), x_T, solver="ddim", timesteps=grid)
    torch.testing.assert_close(ours, lib.x, rtol=0, atol=1e-13)
    x_T.requires_grad_(False)
    loss = kd(student, x_T, torch.zeros_like(x_T))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_teacher_rollouts_are_cached_with_their_settings(vp: fs.VPLinear, tmp_path: Path) -> None:
    net = GaussianEps()
    teacher = fs.Denoiser(net, schedule=vp, prediction="eps")
    cache = tmp_path / "cache"
    x_T, x_0 = fs.teacher_rollouts(teacher, [3], 40, solver="dpmpp_3m", steps=40, seed=3, batch=16, cache=cache)
    calls = net.calls
    assert calls == 3 * 40 and len(list((cache / "teacher-solves").iterdir())) == 1
    # Sample i starts from fs.randn's x_T for seed + i, whatever the batching.
    assert torch.equal(x_T[5:6], fs.randn((1, 3), [8]))
    # The pairs solve the teacher's ODE (closed form for a single Gaussian, 40 dpmpp_3m steps ~1e-4).
    exact = gaussian_ode_solution(x_T, vp.t_max, vp.t_min)
    assert (x_0.double() - exact).abs().max() < 2e-3
    again_T, again_0 = fs.teacher_rollouts(teacher, [3], 40, solver="dpmpp_3m", steps=40, seed=3, batch=16,
                                           cache=cache)
    assert net.calls == calls and torch.equal(again_0, x_0) and torch.equal(again_T, x_T)
    fs.teacher_rollouts(teacher, [3], 40, solver="dpmpp_3m", steps=20, seed=3, batch=16, cache=cache)
    assert net.calls == calls + 3 * 20  # other settings: solved again


def test_kd_one_step_student_learns_the_gaussian_flow_map(vp: fs.VPLinear, tmp_path: Path) -> None:
    # For N(mu, diag(s^2)) the flow map x_T -> x_0 is affine; a one-step x0-student x0 = A x + b holds it exactly.
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(512, 3, generator=g, dtype=torch.float64)
    grid = fs.timesteps(vp, 1)
    x_0 = gaussian_ode_solution(x_T, vp.t_max, vp.t_min)
    torch.manual_seed(0)
    student = AffineX0()
    kd = fs.KnowledgeDistillationLoss(vp, grid)
    start = kd(student, x_T, x_0).item()
    out = fs.distill_knowledge(student, x_T, x_0, vp, grid, iterations=400, batch_size=64, lr=2e-2, ema=0.0,
                               checkpoint=tmp_path / "kd.ckpt")
    end = kd(out.student, x_T, x_0).item()
    # The data scale is ~1; the affine optimum has zero loss, so the fit must come close to it.
    assert end < 1e-3 * start and end < 1e-3
    # The one-step DDIM from t_max to t_min with x0 = A x + b reproduces the exact map's mean.
    mean = kd.rollout(out.student, torch.zeros(1, 3, dtype=torch.float64)).squeeze(0)
    torch.testing.assert_close(mean, gaussian_ode_solution(torch.zeros(1, 3), vp.t_max, vp.t_min).squeeze(0),
                               rtol=0, atol=0.05)
    assert out.timesteps[1].tolist() == grid.tolist()


# ----------------------------------------------------------------------------------------------
# Guidance distillation.


class ClassLinearEps(torch.nn.Module):
    """A conditional eps-net: class y (num_classes = null) shifts a linear map."""

    def __init__(self, num_classes: int = 3, dim: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.shift = torch.nn.Parameter(torch.randn(num_classes + 1, dim, generator=g, dtype=torch.float64))
        self.scale = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * self.scale + t[:, None] * self.shift[y]


class GuidedStudent(torch.nn.Module):
    """student(x, t, y, w) = (1 - w) * net(x, t, null) + w * net(x, t, y): exactly the guided teacher."""

    def __init__(self, net: ClassLinearEps, use_w: bool = True) -> None:
        super().__init__()
        self.net, self.use_w = net, use_w

    def forward(self, x, t, y, w):
        w = w[:, None] if self.use_w else torch.ones_like(w)[:, None]
        null = torch.full_like(y, self.net.shift.shape[0] - 1)
        return (1 - w) * self.net(x, t, null) + w * self.net(x, t, y)


def test_guidance_loss_is_zero_for_the_guided_teacher(vp: fs.VPLinear) -> None:
    teacher = ClassLinearEps()
    gd = fs.GuidanceDistillationLoss(teacher, vp, num_classes=3, guidance_min=1.0, guidance_max=5.0)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.arange(32) % 3
    exact = gd(GuidedStudent(teacher), x0, labels, torch.Generator().manual_seed(1)).item()
    assert exact < 1e-25
    assert gd(GuidedStudent(teacher, use_w=False), x0, labels, torch.Generator().manual_seed(1)).item() > 1e-3
    with pytest.raises(ValueError, match=r"labels should be in \[0, 3\)"):
        gd(GuidedStudent(teacher), x0, labels + 1)
    # The ready loop fits a w-ignoring start towards the guided teacher.
    student = GuidedStudent(ClassLinearEps())
    with torch.no_grad():
        student.net.shift.add_(0.5)
    start = gd(student, x0, labels, torch.Generator().manual_seed(1)).item()
    out = fs.distill_guidance(teacher, student, x0, labels, vp, 3, guidance_max=5.0, iterations=300, batch_size=16,
                              lr=2e-2, ema=0.0)
    assert gd(out.student, x0, labels, torch.Generator().manual_seed(1)).item() < 0.1 * start


# ----------------------------------------------------------------------------------------------
# Consistency distillation and training (new in Python): the loss against independent closed forms,
# and the ready loop's exact resume.

SIGMA_D = 0.5


def vp_sigma_tilde(t: torch.Tensor) -> torch.Tensor:
    """sigma/alpha of VP linear, written without fewstep (conftest's log alpha)."""
    return torch.sqrt(torch.expm1(-2.0 * vp_linear_log_alpha(t)))


def vp_time_of_sigma_tilde(st: torch.Tensor) -> torch.Tensor:
    """Inverse of vp_sigma_tilde: log alpha = -log(1 + st^2)/2 is quadratic in t."""
    a, b, c = 0.25 * (BETA_MAX - BETA_MIN), 0.5 * BETA_MIN, -0.5 * torch.log1p(st**2)
    return (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)


def karras_levels(n: int, rho: float = 7.0) -> torch.Tensor:
    """The n increasing levels: uniform in sigma_tilde^(1/rho) from t_min to t_max (Karras et al. 2022, eq. 5)."""
    lo, hi = vp_sigma_tilde(torch.tensor(1e-3, dtype=torch.float64)), vp_sigma_tilde(torch.tensor(1.0, dtype=torch.float64))
    st = (lo ** (1 / rho) + torch.arange(n, dtype=torch.float64) / (n - 1) * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho
    t = vp_time_of_sigma_tilde(st)
    t[0] = 1e-3
    return t


def zero_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


@pytest.mark.parametrize("method", ["cd", "ct", "ict"])
def test_consistency_loss_matches_closed_forms(vp: fs.VPLinear, exact_gaussian: fs.Denoiser, method: str) -> None:
    # With F = 0 the consistency function is f(x, t) = c_skip(t) x, c_skip = s_d^2 / ((st - st_min)^2 + s_d^2)
    # (Song et al. 2023, arXiv 2303.01469, Appendix C, at the VE-equivalent level st = sigma/alpha): the loss
    # is then known in closed form from the draws alone.
    options = {"ct_s0": 6, "ct_s1": 10, "ict_s0": 5, "ict_s1": 10, "num_points": 7, "distance": "l2"}
    if method == "ict":
        options.update(distance="pseudo_huber", huber_c=0.03)
    cm = fs.ConsistencyLoss(vp, method, exact_gaussian if method == "cd" else None, **options)
    n = {"cd": 7, "ct": 6, "ict": 6}[method]  # N(0): num_points; CT: s0; iCT: s0 + 1
    assert cm.points(0)[0] == n
    levels = karras_levels(n)
    torch.testing.assert_close(torch.tensor(cm.levels(0), dtype=torch.float64), levels, rtol=1e-12, atol=0)
    x0 = torch.randn(12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    draws = cm.draw((x0,), torch.Generator().manual_seed(2), 0)
    _, index, z, _ = draws
    assert index.min() >= 0 and index.max() <= n - 2
    t_hi, t_lo = levels[index + 1], levels[index]
    alpha = lambda t: torch.exp(vp_linear_log_alpha(t))[:, None]  # noqa: E731
    sigma = lambda t: torch.sqrt(-torch.expm1(2 * vp_linear_log_alpha(t)))[:, None]  # noqa: E731
    skip = lambda t: (SIGMA_D**2 / ((vp_sigma_tilde(t) - vp_sigma_tilde(torch.tensor(1e-3, dtype=torch.float64)))**2
                                    + SIGMA_D**2))[:, None]  # noqa: E731
    x_hi = alpha(t_hi) * x0 + sigma(t_hi) * z
    if method == "cd":  # one Heun step of the teacher, row by row, through the library's sampler
        x_lo = torch.cat([fs.sample(exact_gaussian, x_hi[b:b + 1], solver="heun",
                                    timesteps=[float(t_hi[b]), float(t_lo[b])]).x for b in range(12)])
    else:  # the same z at the lower level
        x_lo = alpha(t_lo) * x0 + sigma(t_lo) * z
    diff = skip(t_hi) * x_hi - skip(t_lo) * x_lo
    if method == "ict":
        d = torch.sqrt(diff.pow(2).sum(1) + 0.03**2) - 0.03
        expected = (d / (vp_sigma_tilde(t_hi) - vp_sigma_tilde(t_lo))).mean()
    else:
        expected = diff.pow(2).mean(1).mean()
    loss, extra = cm.step_loss(zero_net, draws, 0)
    assert extra["N"] == n
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=0)


def test_ect_loss_matches_its_closed_form(vp: fs.VPLinear) -> None:
    # ECT (arXiv 2406.14548) with F = 0, f(x, t) = c_skip(t) x: the level st = exp(P_mean + P_std n) clamped to
    # the schedule's range, r = max(0, st (1 - (1 + k sigmoid(-b st)) / q^(stage + 1))), the target x0 where r
    # reaches the boundary, weight 1 / (st - r), the pseudo-Huber distance: all from the draws alone.
    q, k, b, c = 2.0, 8.0, 1.0, 0.03
    cm = fs.ConsistencyLoss(vp, "ect", ect_q=q, ect_k=k, ect_b=b, ect_stages=4, ect_total_steps=8,
                            distance="pseudo_huber", huber_c=c)
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t_min, t_max = torch.tensor(1e-3, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    lo, hi = vp_sigma_tilde(t_min), vp_sigma_tilde(t_max)
    skip = lambda st: (SIGMA_D**2 / ((st - lo)**2 + SIGMA_D**2))[:, None]  # noqa: E731
    alpha = lambda st: (1 / torch.sqrt(1 + st**2))[:, None]  # noqa: E731  (VP: alpha^2 + sigma^2 = 1)
    sigma = lambda st: (st / torch.sqrt(1 + st**2))[:, None]  # noqa: E731
    for step, stage in ((0, 0), (5, 2)):
        draws = cm.draw((x0,), torch.Generator().manual_seed(2), step)
        _, normals, z, _ = draws
        st = torch.exp(-1.1 + 2.0 * normals).clamp(lo, hi)
        r = (st * (1 - (1 + k * torch.sigmoid(-b * st)) / q ** (stage + 1))).clamp_min(0)
        to_data = r <= lo
        r_level = torch.where(to_data, lo, r)
        x_t = alpha(st) * x0 + sigma(st) * z
        x_r = alpha(r_level) * x0 + sigma(r_level) * z
        target = torch.where(to_data[:, None], x0, skip(r_level) * x_r)
        d = torch.sqrt((skip(st) * x_t - target).pow(2).sum(1) + c**2) - c
        loss, extra = cm.step_loss(zero_net, draws, step)
        assert extra["stage"] == stage and 0 < int(to_data.sum()) < 64
        torch.testing.assert_close(loss, (d / (st - r)).mean(), rtol=1e-9, atol=0)


def consistency_run(tmp: Path, method: str, callback=None, iterations: int = 8, **kw) -> fs.DistillResult:
    vp = fs.VPLinear()
    teacher = fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=3, seed=4), vp)
    torch.manual_seed(0)
    return fs.distill_consistency(TinyMLP(hidden=16), gmm_data, vp, method=method, teacher=teacher,
                                  iterations=iterations, batch_size=16, lr=1e-3, ema=0.9, seed=5,
                                  checkpoint=tmp / f"{method}.ckpt", checkpoint_every=4, callback=callback,
                                  consistency={"num_points": 6, "ict_s0": 4, "ict_s1": 8}, **kw)


@pytest.mark.parametrize("method", ["cd", "ct", "ict", "ect"])
def test_consistency_resume_is_bit_exact(tmp_path: Path, method: str) -> None:
    full = consistency_run(tmp_path / "a", method)

    with pytest.raises(Stop):
        consistency_run(tmp_path / "b", method, callback=stop_at(6))
    resumed = consistency_run(tmp_path / "b", method)  # continues from the checkpoint of step 4
    assert resumed.losses == full.losses and len(full.losses) == 8
    for (k, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), k
    a, b = fs.Checkpoint.load(tmp_path / "a" / f"{method}.ckpt"), fs.Checkpoint.load(tmp_path / "b" / f"{method}.ckpt")
    assert a.tensor_keys() == b.tensor_keys() and ("target/body.0.weight" in a.tensor_keys()) == (method in ("cd", "ct"))
    for key in a.tensor_keys():  # target network, EMA, AdamW, generators, data position
        assert torch.equal(a.tensor(key), b.tensor(key)), key
    with pytest.raises(ValueError, match="num_points is 7 here, 6 in the checkpoint"):
        fs.distill_consistency(TinyMLP(hidden=16), gmm_data, fs.VPLinear(), method=method,
                               teacher=fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=3, seed=4),
                                                         fs.VPLinear()),
                               iterations=8, batch_size=16, lr=1e-3, ema=0.9, seed=5,
                               checkpoint=tmp_path / "b" / f"{method}.ckpt",
                               consistency={"num_points": 7, "ict_s0": 4, "ict_s1": 8})
    # The one-step student samples through the library's consistency sampler.
    model = fs.consistency_denoiser(full.student, fs.VPLinear(), sigma_data=0.5)
    out = fs.sample(model, torch.randn(4, 2, dtype=torch.float64), solver="consistency", timesteps=full.timesteps[1])
    assert out.nfe == 1 and torch.isfinite(out.x).all()


def test_consistency_distance_defaults_to_the_methods_own(vp: fs.VPLinear, exact_gaussian: fs.Denoiser) -> None:
    # As the CLI: pseudo-Huber for iCT and ECT (their papers), L2 for CD and CT, unless one is named.
    assert fs.ConsistencyLoss(vp, "ect").options()["distance"] == "pseudo_huber"
    assert fs.ConsistencyLoss(vp, "ict").options()["distance"] == "pseudo_huber"
    assert fs.ConsistencyLoss(vp, "ct").options()["distance"] == "l2"
    assert fs.ConsistencyLoss(vp, "cd", exact_gaussian).options()["distance"] == "l2"
    assert fs.ConsistencyLoss(vp, "ect", distance="l1").options()["distance"] == "l1"


def test_consistency_bad_options_name_the_option(vp: fs.VPLinear, exact_gaussian: fs.Denoiser) -> None:
    with pytest.raises(ValueError, match="consistency method must be one of cd, ct, ict, ect, scd, sct, got 'cm'"):
        fs.ConsistencyLoss(vp, "cm")
    for method in ("scd", "sct"):  # the C++ trainer's only (a forward-mode JVP)
        with pytest.raises(ValueError, match=f"method '{method}' .* runs in the C\\+\\+ trainer"):
            fs.ConsistencyLoss(vp, method)
    with pytest.raises(TypeError, match="teacher should be a fewstep.Denoiser for method 'cd'"):
        fs.ConsistencyLoss(vp, "cd")
    with pytest.raises(ValueError, match="unknown option 'points'"):
        fs.ConsistencyLoss(vp, "ct", points=3)
    with pytest.raises(ValueError, match="num_points must be >= 2, got 1"):
        fs.ConsistencyLoss(vp, "cd", exact_gaussian, num_points=1)
    with pytest.raises(ValueError, match="teacher_solver must be deterministic"):
        cm = fs.ConsistencyLoss(vp, "cd", exact_gaussian, teacher_solver="euler_maruyama")
        cm(zero_net, torch.zeros(4, 3, dtype=torch.float64), torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------
# Exported students and model files.


def test_exported_student_samples_on_its_own_grid(vp: fs.VPLinear, tmp_path: Path) -> None:
    teacher_file = MODELS / "gmm2d-mlp-eps.pt"
    torch.manual_seed(0)
    student = TinyMLP(dtype=torch.float32)
    grid = fs.progressive_timesteps(vp, 2)
    path = fs.export_student(student, tmp_path / "student-2step.pt", teacher=teacher_file, prediction="v",
                             timesteps=grid, settings={"steps": 2})
    side = json.loads((tmp_path / "student-2step.json").read_text())
    assert side["sampler"] == {"solver": "ddim", "timesteps": grid.tolist()}
    assert side["prediction"] == "v" and side["distillation"]["method"] == "progressive"
    info = fs.load_model_file(path)
    assert info["solver"] == "ddim" and info["timesteps"].tolist() == grid.tolist()
    assert info["num_classes"] == 0 and info["guidance_input"] is False
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    out = fs.sample(path, x_T)
    assert out.nfe == 2 and out.timesteps.tolist() == grid.tolist()
    ref = fs.sample(fs.Denoiser(student, schedule=info["schedule"], prediction="v"), x_T, solver="ddim",
                    timesteps=grid)
    torch.testing.assert_close(out.x, ref.x, rtol=1e-5, atol=1e-6)
    # The teacher's own evaluation record is not copied into a student's sidecar.
    teacher_side = json.loads(teacher_file.with_suffix(".json").read_text())
    teacher_side["evaluation"] = {"fd_fmnist": 1.0}
    fs.export_student(student, tmp_path / "e-2step.pt", teacher=teacher_side, prediction="v", timesteps=grid)
    assert "evaluation" not in json.loads((tmp_path / "e-2step.json").read_text())
    # Flags win over the sidecar's grid; a solver named alone samples that grid.
    assert fs.sample(path, x_T, solver="euler", steps=3).nfe == 3
    named = fs.sample(path, x_T, solver="dpmpp_2m")
    assert named.nfe == 2 and named.timesteps.tolist() == grid.tolist()
    with pytest.raises(ValueError, match="label/guidance apply to a model file path"):
        fs.sample(info["denoiser"], x_T, steps=2, label=1)
    with pytest.raises(ValueError, match="has no sidecar"):
        fs.export_student(student, tmp_path / "s.pt", teacher=tmp_path / "nope.pt", prediction="v")


def test_choose_student_solver_records_the_measured_winner(vp: fs.VPLinear, tmp_path: Path) -> None:
    # An exported student on a coarse grid of its own: the library measures each candidate against the
    # teacher and records the winner; fs.sample(path) then reproduces the winning trial.
    teacher_file = MODELS / "gmm2d-mlp-eps.pt"
    teacher = fs.load_model_file(teacher_file)
    torch.manual_seed(0)
    grid = fs.progressive_timesteps(vp, 4)
    path = fs.export_student(TinyMLP(dtype=torch.float32), tmp_path / "student-4step.pt", teacher=teacher_file,
                             prediction="v", timesteps=grid)
    pt = (tmp_path / "student-4step.pt").read_bytes()
    choice = fs.choose_student_solver(path, teacher_file, n=32, reference_steps=50)
    assert [t["solver"] for t in choice["trials"]] == fs.grid_solver_candidates()
    info = fs.load_model_file(path)  # still sealed, .pt untouched
    assert info["solver"] == choice["solver"] and (tmp_path / "student-4step.pt").read_bytes() == pt
    # The same measurement by hand: the teacher's reference from seeds 7000000 + i, the trials' errors.
    x_T = fs.randn([32, 2], [7000000 + i for i in range(32)])
    ref = fs.sample(teacher["denoiser"], x_T, solver="unipc", steps=50, t_start=float(grid[0]),
                    t_end=float(grid[-1])).x
    again = fs.choose_grid_solver(info["denoiser"], x_T, grid, ref)
    assert again["solver"] == choice["solver"]
    for mine, theirs in zip(again["trials"], choice["trials"]):
        assert mine["error"].median == pytest.approx(theirs["error"].median, rel=1e-6)
    won = next(t for t in again["trials"] if t["solver"] == choice["solver"])
    assert fs.coupled_error(fs.sample(path, x_T).x, ref).median == pytest.approx(won["error"].median, rel=1e-6)
    # Errors name the argument.
    with pytest.raises(TypeError, match="teacher should be a model file path or a fewstep.Denoiser"):
        fs.choose_student_solver(path, 3)
    with pytest.raises(ValueError, match="has no grid of its own"):
        fs.choose_student_solver(teacher_file, teacher_file)
    with pytest.raises(ValueError, match="candidate: 'heun' makes 2 evaluations per step"):
        fs.choose_grid_solver(info["denoiser"], x_T, grid, ref, candidates=["ddim", "heun"])
    with pytest.raises(ValueError, match="n should be >= 1, got 0"):
        fs.choose_student_solver(path, teacher_file, n=0)
    with pytest.raises(ValueError, match=r"the teacher failed on the student's samples of shape \[2\]"):
        fs.choose_student_solver(path, MODELS / "gmm16d-mlp-eps.pt", n=4)
    # A consistency student's re-noising sampler is not a grid solver: refused, its sidecar untouched.
    cm = MODELS / "distilled" / "gmm16d-cd-2step.pt"
    with pytest.raises(ValueError, match="the student's own solver: 'consistency' is stochastic"):
        fs.choose_student_solver(cm, MODELS / "gmm16d-mlp-eps.pt", n=4)


def test_exported_consistency_student_rebuilds_its_consistency_function(vp: fs.VPLinear, tmp_path: Path) -> None:
    # A network F from fs.distill_consistency ships with its {"sigma_data", "t_min"}: the model file then
    # samples as fs.consistency_denoiser(F, ...) does, on its own grid from sigma/alpha = 80.
    torch.manual_seed(0)
    student = TinyMLP(dtype=torch.float32)
    grid = fs.consistency_timesteps(vp, intermediate_sigmas=[0.8])
    path = fs.export_student(student, tmp_path / "cm-2step.pt", teacher=MODELS / "gmm2d-mlp-eps.pt", prediction="x0",
                             solver="consistency", timesteps=grid, method="consistency",
                             consistency={"sigma_data": 0.5, "t_min": vp.t_min})
    info = fs.read_model_file_info(path)
    assert info["consistency"] == {"sigma_data": 0.5, "t_min": vp.t_min} and info["solver"] == "consistency"
    x_T, seeds = torch.randn(6, 2, generator=torch.Generator().manual_seed(3)), list(range(6))
    out = fs.sample(path, x_T, seeds=seeds)
    ref = fs.sample(fs.consistency_denoiser(student, vp, sigma_data=0.5), x_T, solver="consistency", timesteps=grid,
                    seeds=seeds)
    assert out.nfe == 2
    torch.testing.assert_close(out.x, ref.x, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not (MODELS / "distilled" / "fmnist-pd-2step.pt").exists(), reason="shipped students absent")
def test_shipped_students_load_with_their_conditioning() -> None:
    pd = fs.load_model_file(str(MODELS / "distilled" / "fmnist-pd-2step.pt"))
    assert pd["solver"] == "ddim" and len(pd["timesteps"]) == 3 and pd["prediction"] == "v"
    out = fs.sample(str(MODELS / "distilled" / "fmnist-pd-2step.pt"), torch.randn(2, 1, 28, 28))
    assert out.nfe == 2 and torch.isfinite(out.x).all()
    guided = fs.load_model_file(str(MODELS / "distilled" / "fmnist-guided.pt"), label=3, guidance=2.0)
    assert guided["num_classes"] == 10 and guided["guidance_input"] is True
    with pytest.raises(ValueError, match="label"):
        fs.load_model_file(str(MODELS / "distilled" / "fmnist-guided.pt"), label=10)
    with pytest.raises(ValueError, match="label|class"):
        fs.load_model_file(str(MODELS / "distilled" / "fmnist-pd-2step.pt"), label=1)


# ----------------------------------------------------------------------------------------------
# Distribution matching: the student's distribution moves onto the teacher's.


class LearnableGaussianEps(torch.nn.Module):
    """The exact eps of N(mu, diag(std^2)) under VP linear, with mu and log std as parameters: a teacher
    whose trainable copy (the fake denoiser) can represent a Gaussian student's distribution exactly."""

    def __init__(self, mu: list, std: list) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.log_std = torch.nn.Parameter(torch.tensor(std, dtype=torch.float64).log())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_a = vp_linear_log_alpha(t.double())[:, None]
        alpha, sigma = log_a.exp(), (-torch.expm1(2.0 * log_a)).sqrt()
        return sigma * (x - alpha * self.mu) / (alpha**2 * (2.0 * self.log_std).exp() + sigma**2)


class AffineSample(torch.nn.Module):
    """A one-step x0 student x0 = a * x + b (per dimension): its samples are N(b, diag(a^2))."""

    def __init__(self, b: list, a: list) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float64))
        self.log_a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64).log())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.log_a.exp() * x + self.b


def zeros_2d(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.zeros(n, 2, dtype=torch.float64)  # distribution matching only reads the batch's shape


def test_distribution_matching_moves_a_gaussian_student_onto_the_teacher(vp: fs.VPLinear) -> None:
    mu, std = [0.5, -0.3], [0.8, 0.6]
    student = AffineSample([1.5, 0.7], [0.3, 1.2])
    def errors() -> tuple:  # distance of the student's mean and per-dimension scale from the teacher's
        return (student.b - torch.tensor(mu)).norm().item(), (student.log_a.exp() - torch.tensor(std)).norm().item()

    start_mean, start_scale = errors()
    warmup = 20
    out = fs.distill_distribution_matching(
        student, LearnableGaussianEps(mu, std), zeros_2d, vp, iterations=400, batch_size=64, lr=2e-2, ema=0.0,
        seed=1, grad_clip=0.0, distribution_matching={"student": "x0", "fake_lr": 5e-2, "warmup": warmup})
    # Only the fake denoiser learns in the warm-up; then the matching direction is non-zero.
    assert out.losses[:warmup] == [0.0] * warmup and out.losses[warmup] > 0
    mean_error, scale_error = errors()
    # The direction vanishes only where the two distributions agree (KL's minimum): both the mean and the
    # per-dimension scale reach the teacher's, far inside their starting errors (SGD noise is what remains).
    assert mean_error < 0.05 * start_mean, (mean_error, start_mean)
    assert scale_error < 0.05 * start_scale, (scale_error, start_scale)


def test_distribution_matching_direction_is_zero_while_the_fake_is_the_teacher(vp: fs.VPLinear) -> None:
    torch.manual_seed(0)
    teacher = TinyMLP(hidden=16)
    dm = fs.DistributionMatchingLoss(vp, teacher, student="x0", warmup=0)
    draws = dm.draw((torch.zeros(32, 2, dtype=torch.float64),), torch.Generator().manual_seed(3), 0)
    loss, _ = dm.step_loss(TinyMLP(hidden=16), draws, 0)
    assert loss.item() == 0.0  # at step 0 the fake denoiser is an exact copy of the teacher


def test_distribution_matching_trains_what_the_consistency_sampler_samples(vp: fs.VPLinear) -> None:
    torch.manual_seed(0)
    student = TinyMLP(hidden=16)
    dm = fs.DistributionMatchingLoss(vp, TinyMLP(hidden=16), consistency={"sigma_data": 0.5})
    z = torch.randn(8, 2, dtype=torch.float64)
    grid = fs.consistency_timesteps(vp, fs.CONSISTENCY_START_SIGMA)
    sampled = fs.sample(fs.consistency_denoiser(student, vp, sigma_data=0.5), z, solver="consistency",
                        timesteps=grid).x
    torch.testing.assert_close(dm.generate(student, z), sampled, rtol=1e-12, atol=1e-12)
    assert dm.t_start == grid[0].item()
    # On VE the student starts from the prior at t_start, sigma(t_start) z, as a sampler's x_T does there.
    ve = fs.VE()
    dm = fs.DistributionMatchingLoss(ve, TinyMLP(hidden=16), consistency={"sigma_data": 0.5})
    grid = fs.consistency_timesteps(ve, fs.CONSISTENCY_START_SIGMA)
    sampled = fs.sample(fs.consistency_denoiser(student, ve, sigma_data=0.5), z * ve.sigma(grid[0].item()),
                        solver="consistency", timesteps=grid).x
    torch.testing.assert_close(dm.generate(student, z), sampled, rtol=1e-12, atol=1e-12)


def dm_run(tmp: Path, callback=None, **kw) -> fs.DistillResult:
    torch.manual_seed(0)
    teacher, student = TinyMLP(hidden=16), TinyMLP(hidden=16)
    options = {"fake_lr": 1e-3, "fake_updates": 2, "warmup": 2, **kw.pop("distribution_matching", {})}
    return fs.distill_distribution_matching(student, teacher, zeros_2d, fs.VPLinear(), iterations=8, batch_size=16,
                                            lr=1e-3, ema=0.9, seed=5, checkpoint=tmp / "dm.ckpt", checkpoint_every=4,
                                            callback=callback, distribution_matching=options, **kw)


def test_distribution_matching_resume_is_bit_exact(tmp_path: Path) -> None:
    full = dm_run(tmp_path / "a")
    with pytest.raises(Stop):
        dm_run(tmp_path / "b", callback=stop_at(6))
    resumed = dm_run(tmp_path / "b")  # continues from the checkpoint of step 4
    assert resumed.losses == full.losses and len(full.losses) == 8
    for (k, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), k
    a, b = fs.Checkpoint.load(tmp_path / "a" / "dm.ckpt"), fs.Checkpoint.load(tmp_path / "b" / "dm.ckpt")
    assert a.tensor_keys() == b.tensor_keys()
    assert "fake/body.0.weight" in a.tensor_keys() and any(k.startswith("fake_optimizer/") for k in a.tensor_keys())
    for key in a.tensor_keys():  # the fake denoiser and its AdamW too
        assert torch.equal(a.tensor(key), b.tensor(key)), key
    with pytest.raises(ValueError, match="fake_lr is 0.002 here, 0.001 in the checkpoint"):
        dm_run(tmp_path / "b", distribution_matching={"fake_lr": 2e-3})
    assert full.timesteps[1].tolist() == fs.consistency_timesteps(fs.VPLinear(), fs.CONSISTENCY_START_SIGMA).tolist()


def test_distribution_matching_bad_options_name_the_option(vp: fs.VPLinear) -> None:
    teacher = TinyMLP(hidden=8)
    cases = [({"student": "score"}, ValueError, "student"),
             ({"fake_lr": 0.0}, ValueError, "fake_lr should be > 0, got 0"),
             ({"fake_updates": 0}, ValueError, "fake_updates"),
             ({"warmup": -1}, ValueError, "warmup"),
             ({"t_min": 2.0}, ValueError, "t_min should be within the schedule's range"),
             ({"teacher_prediction": "noise"}, ValueError, "noise"),
             ({"teacher_prediction": "score"}, ValueError, "teacher_prediction"),
             ({"consistency": {"sigma": 1.0}}, ValueError, "consistency options are sigma_data and t_min, got 'sigma'"),
             ({"student": "x0", "consistency": {"sigma_data": 0.5}}, ValueError, "student='consistency'")]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            fs.DistributionMatchingLoss(vp, teacher, **options)
    with pytest.raises(TypeError, match="teacher should be a torch.nn.Module"):
        fs.DistributionMatchingLoss(vp, lambda x, t: x)
    with pytest.raises(RuntimeError, match="update_fake: no draws"):
        fs.DistributionMatchingLoss(vp, teacher).update_fake(TinyMLP(hidden=8))


# ----------------------------------------------------------------------------------------------
# DistributedDataParallel over gloo: the progressive loss in an ordinary DDP loop.

DDP_STEPS, DDP_BATCH = 3, 16


def ddp_batches() -> list:
    g = torch.Generator().manual_seed(21)
    return [(torch.randn(DDP_BATCH, 2, generator=g, dtype=torch.float64),
             torch.randint(1, 5, (DDP_BATCH,), generator=g),
             torch.randn(DDP_BATCH, 2, generator=g, dtype=torch.float64)) for _ in range(DDP_STEPS)]


def ddp_train(net: torch.nn.Module, rank: Optional[int], world: int) -> None:
    vp = fs.VPLinear()
    pd = fs.ProgressiveDistillationLoss(mixture_teacher(vp), 4, student_prediction="v")
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for x0, index, eps in ddp_batches():
        if rank is not None:
            shard = slice(rank * DDP_BATCH // world, (rank + 1) * DDP_BATCH // world)
            x0, index, eps = x0[shard], index[shard], eps[shard]
        loss = pd(net, x0, index=index, eps=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()


def ddp_net() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP(hidden=16)


@needs_gloo
def test_pd_loss_under_ddp_matches_one_process(tmp_path: Path) -> None:
    world = 2
    states = ddp_trained_states(tmp_path, ddp_net, ddp_train, world)
    single = ddp_net()
    ddp_train(single, None, world)
    initial = ddp_net().state_dict()
    for key, ref in single.state_dict().items():
        assert torch.equal(states[0][key], states[1][key]), key
        # DDP averages two half-batch means of per-sample weighted errors; one process averages the whole
        # batch: equal up to float64 summation order (~1e-16 relative), carried through 3 SGD steps.
        torch.testing.assert_close(states[0][key], ref, rtol=0, atol=1e-12)
        assert not torch.equal(ref, initial[key])
