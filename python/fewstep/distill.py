"""Distillation in Python: progressive, knowledge and guidance distillation.

Each method comes two ways, over the same arithmetic as the C++ trainers
(``include/fewstep/train/``; see ``docs/distillation.md`` for the maths):

* a **loss object** for your own loop — :class:`ProgressiveDistillationLoss`,
  :class:`KnowledgeDistillationLoss`, :class:`GuidanceDistillationLoss`. ``loss = pd(student, x0)``
  computes the teacher's part in C++ without autograd (for progressive distillation the two
  teacher DDIM steps of ``fewstep::progressive_target``, taken with the library's ``ddim``
  stepper), then calls ``student(...)`` *in Python*: autograd, AMP and
  :class:`torch.nn.parallel.DistributedDataParallel` work unchanged (wrap the student in DDP and
  pass the wrapper);
* a **ready loop** — :func:`distill_progressive` (rounds that halve the steps),
  :func:`distill_knowledge`, :func:`distill_guidance`: AdamW with the learning rate decaying
  linearly (Salimans & Ho) or by a cosine within each round, gradient clipping, an EMA of the
  student, a tqdm bar, and atomic checkpoints that resume bit-exactly.

:func:`export_student` writes a student as TorchScript with a sidecar naming its own grid, so
``fs.sample("student.pt", x_T)`` and ``fewstep sample --model student.pt`` run it directly.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch

from . import _fewstep
from .train import (
    _atomic_save,
    _check_choice,
    _check_generator,
    _check_optimisation,
    _check_run,
    _check_int,
    _check_real,
    _data_source,
    _TensorData,
    _ema_update,
    _global_rng_state,
    _parameters,
    _set_global_rng_state,
    _type_name,
    lr_at,
)

__all__ = [
    "DistillResult",
    "DistillStep",
    "GuidanceDistillationLoss",
    "KnowledgeDistillationLoss",
    "ProgressiveDistillationLoss",
    "distill_guidance",
    "distill_knowledge",
    "distill_progressive",
    "export_student",
    "progressive_timesteps",
    "teacher_rollouts",
]

STUDENT_PREDICTIONS = ("x0", "v", "eps")
PD_WEIGHTINGS = ("truncated_snr", "snr_plus_one")
TIME_INPUTS = ("t", "index", "sigma", "lambda")
CHECKPOINT_FORMAT = "fewstep.python.distill.v1"


# ----------------------------------------------------------------------------------------------
# Shared arithmetic.


def _check_schedule(schedule: Any, name: str = "schedule") -> _fewstep.NoiseSchedule:
    if not isinstance(schedule, _fewstep.NoiseSchedule):
        raise TypeError(f"{name} should be a fewstep schedule (e.g. fewstep.VPLinear()), got {_type_name(schedule)}")
    return schedule


def _time_range(schedule: _fewstep.NoiseSchedule, t_min: Optional[float], t_max: Optional[float]) -> tuple:
    lo = schedule.t_min if t_min is None else _check_real(t_min, "t_min")
    hi = schedule.t_max if t_max is None else _check_real(t_max, "t_max")
    for name, value in (("t_min", lo), ("t_max", hi)):
        if not schedule.t_min <= value <= schedule.t_max:
            raise ValueError(f"{name} should be within the schedule's range [{schedule.t_min:g}, "
                             f"{schedule.t_max:g}], got {value:g}")
    if not lo < hi:
        raise ValueError(f"t_min should be less than t_max, got t_min = {lo:g}, t_max = {hi:g}")
    return lo, hi


def _check_time_input(schedule: _fewstep.NoiseSchedule, time_input: str, time_scale: Any) -> float:
    _check_choice(time_input, "time_input", TIME_INPUTS)
    time_scale = _check_real(time_scale, "time_scale")
    if time_scale == 0:
        raise ValueError(f"time_scale should be non-zero, got {time_scale}")
    _fewstep.network_time(schedule, schedule.t_max, time_input, time_scale)  # "index" needs a discrete schedule
    return time_scale


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] host float64 -> [B, 1, ...] in like's dtype and device."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _network_times(schedule: _fewstep.NoiseSchedule, t: torch.Tensor, time_input: str, time_scale: float,
                   like: torch.Tensor) -> torch.Tensor:
    values = [_fewstep.network_time(schedule, float(v), time_input, time_scale) for v in t.tolist()]
    return torch.tensor(values, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


def _x0_from_native(output: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                    prediction: str) -> torch.Tensor:
    """The data prediction implied by a native output (differentiable); alpha/sigma shaped like z's batch."""
    if prediction == "x0":
        return output
    if prediction == "eps":
        return (z - sigma * output) / alpha
    # v = alpha eps - sigma x0 and z = alpha x0 + sigma eps give x0 = (alpha z - sigma v) / (alpha^2 + sigma^2).
    return (alpha * z - sigma * output) / (alpha * alpha + sigma * sigma)


def _check_batch(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor, got {_type_name(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} should be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} should be a batch [B, ...] with at least 2 dimensions and B >= 1, got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_output(output: Any, expected: torch.Size, who: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"{who} should return a torch.Tensor, got {_type_name(output)}")
    if output.shape != expected:
        raise ValueError(f"{who} returned shape {tuple(output.shape)}, expected {tuple(expected)}")
    return output


def progressive_timesteps(schedule: _fewstep.NoiseSchedule, steps: int, t_min: Optional[float] = None,
                          t_max: Optional[float] = None) -> torch.Tensor:
    """The ``steps``-step student grid of progressive distillation, decreasing (``steps + 1`` times).

    ``tau(i) = t_min + (i / steps)(t_max - t_min)`` for ``i = steps, ..., 0`` (uniform in t, the
    paper's ``t = i/N``), the grid a progressive student samples on with ``ddim``.
    """
    _check_schedule(schedule)
    _check_int(steps, "steps", 1)
    lo, hi = _time_range(schedule, t_min, t_max)
    return torch.tensor([_fewstep.progressive_grid_time(float(i), steps, lo, hi) for i in range(steps, -1, -1)],
                        dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# Progressive distillation.


class ProgressiveInputs(NamedTuple):
    """One progressive-distillation draw: the student sees ``(z_t, t_input)`` and should predict ``target``."""

    z_t: torch.Tensor  # x0's shape, dtype and device
    t_input: torch.Tensor  # [B] network time input
    target: torch.Tensor  # x~: the data prediction that makes one student DDIM step land on two teacher steps
    weight: torch.Tensor  # [B]: max(SNR, 1) or SNR + 1
    t: torch.Tensor  # [B] float64 CPU times tau(i)
    index: torch.Tensor  # [B] int64 grid indices i in 1..steps
    alpha: torch.Tensor  # [B, 1, ...] alpha_t in x0's dtype
    sigma: torch.Tensor  # [B, 1, ...] sigma_t


class ProgressiveDistillationLoss(torch.nn.Module):
    """Progressive distillation (Salimans & Ho 2022, Algorithm 2) for one round: ``loss = pd(student, x0)``.

    Per example: ``i ~ U{1..steps}``, ``t = tau(i)`` on the student grid (:func:`progressive_timesteps`),
    ``z_t = alpha_t x0 + sigma_t eps``; the teacher takes two DDIM steps ``t -> tau(i - 1/2) -> tau(i - 1)``
    with the library's ``ddim`` stepper (in C++, no autograd), which gives the closed-form target
    ``x~ = (z'' - (sigma''/sigma) z_t) / (alpha'' - (sigma''/sigma) alpha_t)`` (the teacher's own data
    prediction at the grid's last step). The student's native output ``student(z_t, t_input)`` is
    converted to its data prediction ``x0_hat`` and the loss is
    ``mean_b w_b mean_j (x0_hat - x~)^2`` with ``w = max(SNR, 1)`` or ``SNR + 1``.

    Args:
        teacher: a :class:`fewstep.Denoiser` (its schedule is the student's); e.g. the teacher file's
            ``fs.load_model_file(path)["denoiser"]`` or ``fs.Denoiser(net, schedule=..., prediction=...)``.
        steps: the student's steps N of this round (the teacher runs 2N).
        student_prediction: ``"v"`` or ``"x0"``; ``"eps"`` only for ``steps > 2`` (at 1-2 steps the student
            works near ``t_max`` where ``alpha ~ 0`` and ``x0 = (z - sigma eps)/alpha`` amplifies errors).
        weighting: ``"truncated_snr"`` (``max(SNR, 1)``) or ``"snr_plus_one"``.
        time_input, time_scale: what the student receives as time (as in :class:`fewstep.Denoiser`).
        t_min, t_max: the grid's range, default the schedule's.
    """

    def __init__(self, teacher: _fewstep.Denoiser, steps: int, student_prediction: str = "v",
                 weighting: str = "truncated_snr", time_input: str = "t", time_scale: float = 1.0,
                 t_min: Optional[float] = None, t_max: Optional[float] = None) -> None:
        super().__init__()
        if not isinstance(teacher, _fewstep.Denoiser):
            raise TypeError(f"teacher should be a fewstep.Denoiser, got {_type_name(teacher)}")
        _check_int(steps, "steps", 1)
        _check_choice(student_prediction, "student_prediction", STUDENT_PREDICTIONS)
        if student_prediction == "eps" and steps <= 2:
            raise ValueError(f"student_prediction 'eps' cannot be distilled to steps = {steps} (<= 2): a 1-2 step "
                             f"student evaluates near t_max where alpha ~ 0, and x0 = (z - sigma eps)/alpha amplifies "
                             f"any error without bound; use 'v' or 'x0'")
        _check_choice(weighting, "weighting", PD_WEIGHTINGS)
        self.teacher = teacher
        self.schedule = teacher.schedule
        self.time_scale = _check_time_input(self.schedule, time_input, time_scale)
        self.t_min, self.t_max = _time_range(self.schedule, t_min, t_max)
        self.steps = steps
        self.student_prediction = student_prediction
        self.weighting = weighting
        self.time_input = time_input

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, student_prediction={self.student_prediction!r}, weighting={self.weighting!r}, "
                f"time_input={self.time_input!r}, t_min={self.t_min:g}, t_max={self.t_max:g}")

    def timesteps(self) -> torch.Tensor:
        """The student's sampling grid (:func:`progressive_timesteps` of this round)."""
        return progressive_timesteps(self.schedule, self.steps, self.t_min, self.t_max)

    def inputs(self, x0: torch.Tensor, generator: Optional[torch.Generator] = None, *,
               index: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None) -> ProgressiveInputs:
        """Draw (unless given) the grid indices (first) and the noise from ``generator`` and build the target."""
        _check_batch(x0, "x0")
        _check_generator(generator)
        n = x0.shape[0]
        if index is None:
            index = torch.randint(1, self.steps + 1, (n,), generator=generator)
        else:
            index = torch.as_tensor(index)
            if index.shape != (n,) or index.is_floating_point():
                raise ValueError(f"index should be a ({n},) integer tensor of grid indices, got {index.dtype} "
                                 f"{tuple(index.shape)}")
            bad = (index < 1) | (index > self.steps)
            if bool(bad.any()):
                raise ValueError(f"index should be in 1..{self.steps}, got {int(index[bad][0])}")
            index = index.to("cpu", torch.int64)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        elif not isinstance(eps, torch.Tensor) or eps.shape != x0.shape:
            raise ValueError(f"eps should be a tensor of x0's shape {tuple(x0.shape)}")
        t = torch.tensor([_fewstep.progressive_grid_time(float(i), self.steps, self.t_min, self.t_max)
                          for i in index.tolist()], dtype=torch.float64)
        alpha = _per_row(self.schedule.alpha(t), x0)
        sigma = _per_row(self.schedule.sigma(t), x0)
        with torch.no_grad():
            z_t = alpha * x0 + sigma * eps.to(device=x0.device, dtype=x0.dtype)
            target, _, _, _ = _fewstep._progressive_target(self.teacher, z_t, index, self.steps, self.t_min,
                                                           self.t_max)
        snr = (self.schedule.alpha(t) / self.schedule.sigma(t)) ** 2
        weight = snr.clamp(min=1.0) if self.weighting == "truncated_snr" else snr + 1.0
        t_input = _network_times(self.schedule, t, self.time_input, self.time_scale, x0)
        return ProgressiveInputs(z_t, t_input, target, weight.to(device=x0.device, dtype=x0.dtype), t, index,
                                 alpha, sigma)

    def loss(self, output: torch.Tensor, inputs: ProgressiveInputs) -> torch.Tensor:
        """``mean_b w_b mean_j (x0_hat(output) - x~)^2`` for the student's native ``output``."""
        _check_output(output, inputs.z_t.shape, "student(z_t, t)")
        x0_hat = _x0_from_native(output, inputs.z_t, inputs.alpha, inputs.sigma, self.student_prediction)
        per_sample = (x0_hat - inputs.target).pow(2).flatten(1).mean(1)
        return (inputs.weight * per_sample).mean()

    def forward(self, student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                generator: Optional[torch.Generator] = None, *, index: Optional[torch.Tensor] = None,
                eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The scalar loss of ``student`` on the clean batch ``x0`` (see :meth:`inputs` for the draws)."""
        if not callable(student):
            raise TypeError(f"student should be a callable or torch.nn.Module taking (z_t, t), got "
                            f"{_type_name(student)}")
        inputs = self.inputs(x0, generator, index=index, eps=eps)
        return self.loss(student(inputs.z_t, inputs.t_input), inputs)


# ----------------------------------------------------------------------------------------------
# Knowledge distillation.


def teacher_rollouts(teacher: _fewstep.Denoiser, sample_shape: Sequence[int], n: int, *, solver: str = "unipc",
                     steps: int = 25, spacing: str = "logsnr", seed: int = 0, batch: int = 250,
                     cache: Union[str, os.PathLike, None] = None, progress: bool = False) -> tuple:
    """``(x_T, x_0)``: ``n`` teacher ODE solves, sample ``i`` from ``x_T`` drawn with seed ``seed + i``.

    Solved with ``solver`` on the ``steps``-step ``spacing`` grid. With ``cache`` (a file path) the
    pairs are stored with the settings that made them and a later call with the same settings loads
    them (``fewstep::teacher_rollouts``, written atomically); other settings regenerate the file.
    """
    if not isinstance(teacher, _fewstep.Denoiser):
        raise TypeError(f"teacher should be a fewstep.Denoiser, got {_type_name(teacher)}")
    shape = list(sample_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"sample_shape should be a non-empty sequence of positive ints, got {sample_shape!r}")
    _check_int(n, "n", 1)
    _check_int(steps, "steps", 1)
    _check_int(seed, "seed", 0)
    _check_int(batch, "batch", 1)
    grid = _fewstep.timesteps(teacher.schedule, steps, spacing, None, None, 7.0)
    settings = json.dumps({"teacher": teacher.description, "solver": solver, "steps": steps, "spacing": spacing,
                           "n": n, "seed": seed, "shape": shape}, sort_keys=True)
    path = os.fspath(cache) if cache is not None else ""
    x_T, x_0, _ = _fewstep._teacher_rollouts(teacher, solver, grid.tolist(), shape, n, seed, batch, settings, path,
                                             bool(progress))
    return x_T, x_0


class KnowledgeDistillationLoss(torch.nn.Module):
    """Knowledge distillation (Luhman & Luhman 2021): ``loss = kd(student, x_T, x0_teacher)``.

    The student samples with deterministic DDIM on the fixed grid ``timesteps`` (``fs.ddim_update``,
    the library's ``ddim`` step, differentiable) from ``x_T``; the loss is
    ``mean_b mean_j (x_N - x0_teacher)^2`` with backpropagation through every step — the same
    computation as ``fs.sample(student, x_T, solver="ddim", timesteps=timesteps)``.

    Args:
        schedule: the noise schedule.
        timesteps: the student's decreasing grid (``steps + 1`` times), e.g. ``fs.timesteps(sched, 1)``.
        student_prediction: what the student outputs (``"x0"``, ``"v"`` or ``"eps"``).
        time_input, time_scale: the student's time input.
    """

    def __init__(self, schedule: _fewstep.NoiseSchedule, timesteps: Any, student_prediction: str = "x0",
                 time_input: str = "t", time_scale: float = 1.0) -> None:
        super().__init__()
        self.schedule = _check_schedule(schedule)
        self.grid = _fewstep.validate_grid(schedule, timesteps)
        _check_choice(student_prediction, "student_prediction", STUDENT_PREDICTIONS)
        self.time_scale = _check_time_input(schedule, time_input, time_scale)
        self.student_prediction = student_prediction
        self.time_input = time_input

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    def rollout(self, student: Callable, x_T: torch.Tensor) -> torch.Tensor:
        """The student's DDIM sample from ``x_T`` on the grid, with autograd through every step."""
        x = x_T
        times = self.grid.tolist()
        for s, t in zip(times[:-1], times[1:]):
            t_in = torch.full((x.shape[0],), _fewstep.network_time(self.schedule, s, self.time_input,
                                                                   self.time_scale), dtype=x.dtype, device=x.device)
            out = _check_output(student(x, t_in), x.shape, "student(x, t)")
            alpha = torch.tensor(self.schedule.alpha(s), dtype=x.dtype, device=x.device)
            sigma = torch.tensor(self.schedule.sigma(s), dtype=x.dtype, device=x.device)
            x = _fewstep.ddim_update(self.schedule, x, _x0_from_native(out, x, alpha, sigma,
                                                                        self.student_prediction), s, t)
        return x

    def forward(self, student: Callable, x_T: torch.Tensor, x0_teacher: torch.Tensor) -> torch.Tensor:
        """The scalar loss of ``student`` on the pairs ``(x_T, x0_teacher)``."""
        if not callable(student):
            raise TypeError(f"student should be a callable or torch.nn.Module taking (x, t), got {_type_name(student)}")
        _check_batch(x_T, "x_T")
        if not isinstance(x0_teacher, torch.Tensor) or x0_teacher.shape != x_T.shape:
            raise ValueError(f"x0_teacher should be a tensor of x_T's shape {tuple(x_T.shape)}")
        return (self.rollout(student, x_T) - x0_teacher).pow(2).mean()


# ----------------------------------------------------------------------------------------------
# Guidance distillation.


class GuidanceDistillationLoss(torch.nn.Module):
    """Guidance distillation, stage one (Meng et al. 2023): ``loss = gd(student, x0, labels)``.

    A class-conditional ``teacher(x, t, y)`` (``y = num_classes`` is the null class) is guided with
    scale ``s``: ``out_u + s (out_c - out_u)``, two calls. The student ``student(x, t, y, w)`` takes
    ``w = s`` as an input and regresses that target in the native output space (both networks have
    the same ``prediction``): ``t ~ U[t_min, t_max]``, ``eps``, ``s ~ U[guidance_min, guidance_max]``
    drawn from the generator in that order, loss ``mean (student - target)^2``.
    Stage two is progressive distillation of the student at fixed or drawn ``w``.
    """

    def __init__(self, teacher: Callable, schedule: _fewstep.NoiseSchedule, num_classes: int,
                 guidance_min: float = 1.0, guidance_max: float = 4.0, time_input: str = "t",
                 time_scale: float = 1.0, t_min: Optional[float] = None, t_max: Optional[float] = None) -> None:
        super().__init__()
        if not callable(teacher):
            raise TypeError(f"teacher should be a callable taking (x, t, y), got {_type_name(teacher)}")
        self.schedule = _check_schedule(schedule)
        _check_int(num_classes, "num_classes", 1)
        lo_s, hi_s = _check_real(guidance_min, "guidance_min"), _check_real(guidance_max, "guidance_max")
        if not lo_s <= hi_s:
            raise ValueError(f"guidance_min should be <= guidance_max, got {lo_s:g} > {hi_s:g}")
        self.teacher = teacher
        self.num_classes = num_classes
        self.guidance_min, self.guidance_max = lo_s, hi_s
        self.time_scale = _check_time_input(schedule, time_input, time_scale)
        self.time_input = time_input
        self.t_min, self.t_max = _time_range(schedule, t_min, t_max)

    def forward(self, student: Callable, x0: torch.Tensor, labels: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if not callable(student):
            raise TypeError(f"student should be a callable taking (x, t, y, w), got {_type_name(student)}")
        _check_batch(x0, "x0")
        _check_generator(generator)
        n = x0.shape[0]
        if not isinstance(labels, torch.Tensor) or labels.shape != (n,) or labels.is_floating_point():
            raise ValueError(f"labels should be a ({n},) integer tensor, got {getattr(labels, 'shape', labels)!r}")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"labels should be in [0, {self.num_classes}), got {labels.min().item()}.."
                             f"{labels.max().item()}")
        t = self.t_min + (self.t_max - self.t_min) * torch.rand(n, generator=generator, dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        w = (self.guidance_min + (self.guidance_max - self.guidance_min) *
             torch.rand(n, generator=generator, dtype=torch.float64)).to(device=x0.device, dtype=x0.dtype)
        z = _per_row(self.schedule.alpha(t), x0) * x0 + _per_row(self.schedule.sigma(t), x0) * eps
        t_input = _network_times(self.schedule, t, self.time_input, self.time_scale, x0)
        y = labels.to(x0.device, torch.int64)
        with torch.no_grad():
            both = self.teacher(torch.cat([z, z]), torch.cat([t_input, t_input]),
                                torch.cat([y, torch.full_like(y, self.num_classes)]))
            _check_output(both, torch.Size([2 * n, *x0.shape[1:]]), "teacher(x, t, y)")
            cond, uncond = both[:n], both[n:]
            target = uncond + w.view(-1, *([1] * (x0.dim() - 1))) * (cond - uncond)
        out = _check_output(student(z, t_input, y, w), x0.shape, "student(x, t, y, w)")
        return (out - target).pow(2).mean()


# ----------------------------------------------------------------------------------------------
# The ready loops: one optimisation loop with AdamW, LR decay, clipping, EMA, tqdm and checkpoints.


@dataclass(frozen=True)
class DistillStep:
    """What a ready loop's callback receives after each update."""

    step: int  # updates done so far
    loss: float
    lr: float
    grad_norm: float  # before clipping (nan when grad_clip is 0)
    steps: int  # the student's sampling steps this update trained (the round's N; KD: the grid's)


class DistillResult(NamedTuple):
    """A ready loop's result."""

    student: torch.nn.Module  # the final EMA student (eval mode, no grad)
    losses: list  # the batch loss of every update, restored ones included
    students: dict  # steps N -> EMA student at the end of that round (progressive; otherwise {steps: student})
    timesteps: dict  # steps N -> that student's sampling grid (float64 tensor)


def _lr_linear(step: int, lr: float, warmup: int, total: int, min_lr: float) -> float:
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr + (min_lr - lr) * progress


def _frozen_copy(net: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(net)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


class _Loop:
    """The state every ready loop keeps and checkpoints: student, EMA, AdamW, RNGs, data, losses."""

    def __init__(self, student: torch.nn.Module, *, lr: float, min_lr: float, warmup: int, weight_decay: float,
                 ema: float, grad_clip: float, decay: str, seed: int, checkpoint: Any, checkpoint_every: int,
                 progress: bool, callback: Optional[Callable], config: dict) -> None:
        if not isinstance(student, (torch.nn.Module, torch.jit.ScriptModule)):
            raise TypeError(f"student should be a torch.nn.Module, got {_type_name(student)}")
        lr, min_lr, weight_decay, ema, grad_clip = _check_optimisation(lr, min_lr, warmup, weight_decay, ema,
                                                                       grad_clip)
        _check_choice(decay, "decay", ("linear", "cosine"))
        _check_run(seed, checkpoint, checkpoint_every, callback)
        self.student = student
        self.lr, self.min_lr, self.warmup, self.weight_decay = lr, min_lr, warmup, weight_decay
        self.ema_decay, self.grad_clip, self.decay = ema, grad_clip, decay
        self.path = os.fspath(checkpoint) if checkpoint is not None else None
        self.checkpoint_every, self.progress, self.callback = checkpoint_every, progress, callback
        self.config = dict(config, seed=seed, decay=decay)
        self.noise = torch.Generator().manual_seed(seed)
        self.step = 0
        self.losses: list[float] = []
        self.extra: dict = {}
        self.reset_optimizer()
        self.ema = _frozen_copy(student)

    def reset_optimizer(self) -> None:
        params = _parameters(self.student)
        if not params:
            raise ValueError("student has no parameters that require grad; nothing to train")
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, eps=1e-8, weight_decay=self.weight_decay)

    def rate(self, step_in_phase: int, phase_length: int) -> float:
        if self.decay == "linear":
            return _lr_linear(step_in_phase, self.lr, self.warmup, phase_length, self.min_lr)
        return lr_at(step_in_phase, self.lr, self.warmup, phase_length, self.min_lr)

    def update(self, loss: torch.Tensor, rate: float) -> tuple:
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"distillation: the loss is {value} at update {self.step + 1}; lower lr or check the "
                               f"data and networks")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float("nan")
        if self.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.optimizer.step()
        _ema_update(self.ema, self.student, self.ema_decay)
        self.step += 1
        self.losses.append(value)
        return value, grad_norm

    def save(self, data: Any, extra_nets: dict) -> None:
        if self.path is None:
            return
        _atomic_save({
            "format": CHECKPOINT_FORMAT, "step": self.step, "config": self.config,
            "student": self.student.state_dict(), "ema": self.ema.state_dict(),
            "nets": {k: v.state_dict() for k, v in extra_nets.items()}, "optimizer": self.optimizer.state_dict(),
            "rng": {"noise": self.noise.get_state(), "global": _global_rng_state()},
            "data": data.state() if data is not None else None, "losses": list(self.losses), "extra": self.extra,
        }, self.path)

    def load(self, data: Any) -> Optional[dict]:
        """Restores a checkpoint if there is one; returns its "nets" for the caller to rebuild."""
        if self.path is None or not os.path.exists(self.path):
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - re-raised with the path named
            raise ValueError(f"checkpoint '{self.path}' could not be read: {e}") from e
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint '{self.path}' is not a fewstep distillation checkpoint (expected format "
                             f"{CHECKPOINT_FORMAT!r}); pass resume=False to overwrite it")
        for key, value in self.config.items():
            if state["config"].get(key) != value:
                raise ValueError(f"checkpoint '{self.path}' was written with {key}={state['config'].get(key)!r}, this "
                                 f"run has {key}={value!r}; use the same arguments to resume, or resume=False")
        try:
            self.student.load_state_dict(state["student"])
            self.ema.load_state_dict(state["ema"])
        except RuntimeError as e:
            raise ValueError(f"checkpoint '{self.path}' holds another network: {e}") from e
        self.step, self.losses, self.extra = int(state["step"]), list(state["losses"]), dict(state["extra"])
        self._pending = state
        return state["nets"]

    def finish_load(self, data: Any) -> None:
        """After the caller rebuilt round-dependent parts (optimiser): restore optimiser, RNGs and data."""
        state = getattr(self, "_pending", None)
        if state is None:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise.set_state(state["rng"]["noise"])
        if data is not None:
            data.load(state["data"])
        _set_global_rng_state(state["rng"]["global"])
        self._pending = None

    def bar(self, total: int, desc: str) -> Any:
        if not self.progress or self.step >= total:
            return None
        from ._progress import progress_bar

        return progress_bar(total, desc, initial=self.step)

    def report(self, bar: Any, value: float, rate: float, grad_norm: float, steps: int) -> None:
        if bar is not None:
            window = self.losses[-100:]
            bar.set_postfix(loss=f"{sum(window) / len(window):.4g}", lr=f"{rate:.3g}", N=steps, refresh=False)
            bar.update(1)
        if self.callback is not None:
            self.callback(DistillStep(step=self.step, loss=value, lr=rate, grad_norm=grad_norm, steps=steps))


_LOOP_DOC = """
        lr, min_lr, warmup: peak learning rate, final learning rate and warmup updates (per round).
        decay: ``"linear"`` (Salimans & Ho) or ``"cosine"`` decay from lr to min_lr.
        weight_decay: AdamW's decoupled weight decay.
        ema: EMA decay of the student in [0, 1]; the EMA is the result.
        grad_clip: maximum global gradient norm (0: off).
        seed: seeds the noise draws and the data order.
        checkpoint: path of an atomic checkpoint (student, EMA, teacher, AdamW, RNGs, data position,
            losses) written every ``checkpoint_every`` updates and at the end; with ``resume`` an
            existing one is continued, bit-identically to a run that never stopped.
        progress: a tqdm bar with the loss, learning rate and N; callback: called with a
            :class:`DistillStep` after every update.
"""


def distill_progressive(teacher: torch.nn.Module, data: Any, schedule: _fewstep.NoiseSchedule, *,
                        prediction: str = "eps", initial_steps: int = 64, final_steps: int = 1,
                        iterations: int = 1000, student_prediction: str = "v", weighting: str = "truncated_snr",
                        time_input: str = "t", time_scale: float = 1.0, t_min: Optional[float] = None,
                        t_max: Optional[float] = None, student: Optional[torch.nn.Module] = None,
                        batch_size: Optional[int] = None, lr: float = 2e-4, min_lr: float = 0.0, warmup: int = 0,
                        decay: str = "linear", weight_decay: float = 0.0, ema: float = 0.995,
                        grad_clip: float = 1.0, seed: int = 0, checkpoint: Union[str, os.PathLike, None] = None,
                        checkpoint_every: int = 500, resume: bool = True, progress: bool = False,
                        callback: Optional[Callable[[DistillStep], None]] = None) -> DistillResult:
    """Progressive distillation, all rounds: ``initial_steps`` -> ``initial_steps/2`` -> ... -> ``final_steps``.

    Round r trains a student with ``N = initial_steps / 2^r`` steps against a teacher running 2N DDIM
    steps (:class:`ProgressiveDistillationLoss`) for ``iterations`` updates. The student starts as a
    copy of ``teacher`` (or as ``student``); after a round the student's EMA becomes the teacher (read
    with ``student_prediction``) and the next student, the optimiser is reset and the learning rate
    decays again. ``teacher`` is never modified.

    Args:
        teacher: the teacher network ``teacher(x, t_input) -> native prediction`` (an ``nn.Module``).
        data: clean data: a tensor ``[N, ...]``, a callable ``(batch_size, generator) -> tensor``, or a
            re-iterable of batches (as :func:`fewstep.train_denoiser`).
        schedule: the teacher's noise schedule; prediction: the teacher's output (eps, x0, v, ...).
        initial_steps, final_steps: student steps of the first and last round (ratio a power of two).
        iterations: updates per round.
        student_prediction, weighting, time_input, time_scale, t_min, t_max: see
            :class:`ProgressiveDistillationLoss`.
        student: the first student (default: a deep copy of ``teacher``).
        batch_size: for tensor or callable data (default 64).
    """ + _LOOP_DOC + """
    Returns:
        :class:`DistillResult` with the final EMA student, the losses, and the EMA student and grid of
        every finished round.
    """
    if not isinstance(teacher, (torch.nn.Module, torch.jit.ScriptModule)):
        raise TypeError(f"teacher should be a torch.nn.Module taking (x, t), got {_type_name(teacher)}")
    _check_schedule(schedule)
    _check_int(initial_steps, "initial_steps", 1)
    _check_int(final_steps, "final_steps", 1)
    ratio = initial_steps // final_steps
    if initial_steps % final_steps or ratio & (ratio - 1):
        raise ValueError(f"initial_steps / final_steps should be a power of two, got {initial_steps} / {final_steps}")
    _check_int(iterations, "iterations", 1)
    rounds = ratio.bit_length()
    # Validate the loss settings of the last round before any work (e.g. an eps student at 1-2 steps).
    ProgressiveDistillationLoss(_fewstep.Denoiser(teacher, schedule=schedule, prediction=prediction,
                                                  time_input=time_input, time_scale=time_scale),
                                final_steps, student_prediction, weighting, time_input, time_scale, t_min, t_max)
    first = copy.deepcopy(teacher) if student is None else student
    config = {"method": "progressive", "initial_steps": initial_steps, "final_steps": final_steps,
              "iterations": iterations, "student_prediction": student_prediction, "weighting": weighting,
              "prediction": prediction, "time_input": time_input, "time_scale": float(time_scale),
              "t_min": t_min, "t_max": t_max, "schedule": repr(schedule)}
    loop = _Loop(first, lr=lr, min_lr=min_lr, warmup=warmup, weight_decay=weight_decay, ema=ema,
                 grad_clip=grad_clip, decay=decay, seed=seed, checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every, progress=progress, callback=callback, config=config)
    source = _data_source(data, batch_size, seed)
    loop.config["batch_size"] = getattr(source, "batch_size", None)
    round_teacher = _frozen_copy(teacher)
    teacher_prediction = prediction
    if resume:
        nets = loop.load(source)
        if nets is not None:
            if loop.step >= iterations:  # past round 0: the teacher is an earlier student
                teacher_prediction = student_prediction
            round_teacher.load_state_dict(nets["teacher"])
    elif loop.path is not None and os.path.exists(loop.path):
        os.remove(loop.path)
    loop.finish_load(source)
    students: dict = {}
    grids: dict = {}
    for key, state in loop.extra.get("students", {}).items():
        students[int(key)] = _frozen_copy(loop.student)
        students[int(key)].load_state_dict(state)
        grids[int(key)] = progressive_timesteps(schedule, int(key), t_min, t_max)

    total = rounds * iterations
    bar = loop.bar(total, "fewstep distill progressive")
    loop.student.train()
    try:
        while loop.step < total:
            r, in_round = divmod(loop.step, iterations)
            n_steps = initial_steps >> r
            pd = ProgressiveDistillationLoss(
                _fewstep.Denoiser(round_teacher, schedule=schedule, prediction=teacher_prediction,
                                  time_input=time_input, time_scale=time_scale),
                n_steps, student_prediction, weighting, time_input, time_scale, t_min, t_max)
            x0 = source.next()
            params = loop.params[0]
            loss = pd(loop.student, x0.to(device=params.device, dtype=params.dtype), loop.noise)
            rate = loop.rate(in_round, iterations)
            value, grad_norm = loop.update(loss, rate)
            if loop.step % iterations == 0:  # end of a round
                students[n_steps] = _frozen_copy(loop.ema)
                grids[n_steps] = pd.timesteps()
                loop.extra.setdefault("students", {})[str(n_steps)] = loop.ema.state_dict()
                if loop.step < total:
                    round_teacher.load_state_dict(loop.ema.state_dict())
                    teacher_prediction = student_prediction
                    loop.student.load_state_dict(loop.ema.state_dict())
                    loop.reset_optimizer()
            if loop.path is not None and loop.checkpoint_every and loop.step % loop.checkpoint_every == 0 \
                    and loop.step < total:
                loop.save(source, {"teacher": round_teacher})
            loop.report(bar, value, rate, grad_norm, n_steps)
        loop.save(source, {"teacher": round_teacher})
    finally:
        if bar is not None:
            bar.close()
    return DistillResult(_frozen_copy(loop.ema), loop.losses, students, grids)


class _PairData(_TensorData):
    """Shuffled passes over paired rows (x_T, x_0) or (images, labels); an epoch's leftover is dropped."""

    kind = "pairs"

    def __init__(self, first: torch.Tensor, second: torch.Tensor, batch_size: int, seed: int) -> None:
        super().__init__(first, batch_size, (seed + 0x9E3779B97F4A7C15) % 2**64)
        self.second = second

    def next(self) -> tuple:
        index = self.next_index()
        return self.data[index.to(self.data.device)], self.second[index.to(self.second.device)]


def _paired(a: Any, b: Any, names: tuple, batch_size: int, seed: int) -> _PairData:
    for value, name in zip((a, b), names):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} should be a torch.Tensor, got {_type_name(value)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} should have the same number of rows, got {a.shape[0]} and "
                         f"{b.shape[0]}")
    _check_int(batch_size, "batch_size", 1)
    if batch_size > a.shape[0]:
        raise ValueError(f"batch_size should be at most the number of rows ({a.shape[0]}), got {batch_size}")
    return _PairData(a, b, batch_size, seed)


def distill_knowledge(student: torch.nn.Module, x_T: torch.Tensor, x0_teacher: torch.Tensor,
                      schedule: _fewstep.NoiseSchedule, timesteps: Any, *, student_prediction: str = "x0",
                      time_input: str = "t", time_scale: float = 1.0, iterations: int = 1000,
                      batch_size: int = 64, lr: float = 2e-4, min_lr: float = 0.0, warmup: int = 0,
                      decay: str = "cosine", weight_decay: float = 0.0, ema: float = 0.995, grad_clip: float = 1.0,
                      seed: int = 0, checkpoint: Union[str, os.PathLike, None] = None, checkpoint_every: int = 500,
                      resume: bool = True, progress: bool = False,
                      callback: Optional[Callable[[DistillStep], None]] = None) -> DistillResult:
    """Knowledge distillation: ``student`` (trained in place) regressed onto teacher pairs.

    ``x_T`` / ``x0_teacher`` come from :func:`teacher_rollouts`; the loss is
    :class:`KnowledgeDistillationLoss` on the grid ``timesteps``; batches are shuffled passes over
    the pairs.
    """ + _LOOP_DOC
    kd = KnowledgeDistillationLoss(schedule, timesteps, student_prediction, time_input, time_scale)
    _check_int(iterations, "iterations", 1)
    source = _paired(x_T, x0_teacher, ("x_T", "x0_teacher"), batch_size, seed)
    config = {"method": "kd", "timesteps": kd.grid.tolist(), "student_prediction": student_prediction,
              "time_input": time_input, "time_scale": float(time_scale), "schedule": repr(schedule),
              "batch_size": batch_size, "pairs": int(x_T.shape[0])}
    loop = _Loop(student, lr=lr, min_lr=min_lr, warmup=warmup, weight_decay=weight_decay, ema=ema,
                 grad_clip=grad_clip, decay=decay, seed=seed, checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every, progress=progress, callback=callback, config=config)
    return _run_single(loop, source, iterations, resume, "fewstep distill kd", kd.steps, kd.grid,
                       lambda batch: kd(loop.student, *_to_student(loop, batch)))


def distill_guidance(teacher: Callable, student: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     schedule: _fewstep.NoiseSchedule, num_classes: int, *, guidance_min: float = 1.0,
                     guidance_max: float = 4.0, time_input: str = "t", time_scale: float = 1.0,
                     iterations: int = 1000, batch_size: int = 64, lr: float = 2e-4, min_lr: float = 0.0,
                     warmup: int = 0, decay: str = "cosine", weight_decay: float = 0.0, ema: float = 0.995,
                     grad_clip: float = 1.0, seed: int = 0, checkpoint: Union[str, os.PathLike, None] = None,
                     checkpoint_every: int = 500, resume: bool = True, progress: bool = False,
                     callback: Optional[Callable[[DistillStep], None]] = None) -> DistillResult:
    """Guidance distillation, stage one: ``student(x, t, y, w)`` (trained in place) learns the guided teacher.

    ``images`` / ``labels`` are the labelled training data; the loss is
    :class:`GuidanceDistillationLoss`. Stage two: :func:`distill_progressive` of the result.
    """ + _LOOP_DOC
    gd = GuidanceDistillationLoss(teacher, schedule, num_classes, guidance_min, guidance_max, time_input,
                                  time_scale)
    _check_int(iterations, "iterations", 1)
    source = _paired(images, labels, ("images", "labels"), batch_size, seed)
    config = {"method": "guidance", "num_classes": num_classes, "guidance": [gd.guidance_min, gd.guidance_max],
              "time_input": time_input, "time_scale": float(time_scale), "schedule": repr(schedule),
              "batch_size": batch_size}
    loop = _Loop(student, lr=lr, min_lr=min_lr, warmup=warmup, weight_decay=weight_decay, ema=ema,
                 grad_clip=grad_clip, decay=decay, seed=seed, checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every, progress=progress, callback=callback, config=config)

    def step_loss(batch: tuple) -> torch.Tensor:
        p = loop.params[0]
        return gd(loop.student, batch[0].to(device=p.device, dtype=p.dtype), batch[1].to(p.device), loop.noise)

    return _run_single(loop, source, iterations, resume, "fewstep distill guidance", 0, None, step_loss)


def _to_student(loop: _Loop, batch: tuple) -> tuple:
    p = loop.params[0]
    return tuple(b.to(device=p.device, dtype=p.dtype) for b in batch)


def _run_single(loop: _Loop, source: Any, iterations: int, resume: bool, desc: str, steps: int,
                grid: Optional[torch.Tensor], step_loss: Callable[[Any], torch.Tensor]) -> DistillResult:
    if resume:
        loop.load(source)
    elif loop.path is not None and os.path.exists(loop.path):
        os.remove(loop.path)
    loop.finish_load(source)
    bar = loop.bar(iterations, desc)
    loop.student.train()
    try:
        while loop.step < iterations:
            rate = loop.rate(loop.step, iterations)
            value, grad_norm = loop.update(step_loss(source.next()), rate)
            if loop.path is not None and loop.checkpoint_every and loop.step % loop.checkpoint_every == 0 \
                    and loop.step < iterations:
                loop.save(source, {})
            loop.report(bar, value, rate, grad_norm, steps)
        loop.save(source, {})
    finally:
        if bar is not None:
            bar.close()
    result = _frozen_copy(loop.ema)
    return DistillResult(result, loop.losses, {steps: result}, {steps: grid} if grid is not None else {})


# ----------------------------------------------------------------------------------------------
# Export.


def export_student(student: torch.nn.Module, path: Union[str, os.PathLike], *, teacher: Union[str, os.PathLike, dict],
                   prediction: str, timesteps: Any = None, solver: str = "ddim", method: str = "progressive",
                   example: Optional[tuple] = None, default_guidance: Optional[float] = None,
                   settings: Optional[dict] = None) -> str:
    """Write ``student`` as ``path`` (TorchScript) plus its sidecar ``.json`` naming its own grid.

    Args:
        student: the network (an ``nn.Module``: scripted with ``torch.jit.script``, or traced with
            ``example`` inputs when scripting fails; a ``ScriptModule`` is saved as is).
        path: the ``.pt`` file to write (its directory must exist).
        teacher: the teacher's model file (its sidecar gives schedule, time input, sample shape and
            network) or such a sidecar as a dict.
        prediction: what the student outputs (``"x0"``, ``"v"``, ``"eps"``).
        timesteps: the student's sampling grid (e.g. ``DistillResult.timesteps[4]``); None for a
            model sampled on any grid (a guidance-distilled student).
        solver: the solver of that grid (``"ddim"`` for every student here).
        method: recorded in the sidecar's ``"distillation"``; settings: more entries for it.
        default_guidance: for a guidance-input student, the scale used when none is given.

    Returns the written path. ``fs.sample(path, x_T)`` then samples on the student's grid.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path '{path}': directory '{directory}' does not exist")
    if isinstance(teacher, dict):
        side = dict(teacher)
        teacher_name = side.get("name", "teacher")
    else:
        teacher_name = os.fspath(teacher)
        sidecar = os.path.splitext(teacher_name)[0] + ".json"
        if not os.path.exists(sidecar):
            raise ValueError(f"teacher '{teacher_name}' has no sidecar '{sidecar}'")
        with open(sidecar) as f:
            side = json.load(f)
    for key in ("schedule", "sample_shape"):
        if key not in side:
            raise ValueError(f"teacher's sidecar has no {key!r}")
    _check_choice(prediction, "prediction", STUDENT_PREDICTIONS)
    if isinstance(student, torch.jit.ScriptModule):
        scripted = student
    elif isinstance(student, torch.nn.Module):
        try:
            scripted = torch.jit.script(copy.deepcopy(student).eval())
        except Exception as e:  # noqa: BLE001 - tracing is the documented fallback
            if example is None:
                raise ValueError(f"student could not be scripted ({e}); pass example=(x, t) inputs to trace it") from e
            scripted = torch.jit.trace(copy.deepcopy(student).eval(), example)
    else:
        raise TypeError(f"student should be a torch.nn.Module, got {_type_name(student)}")
    name = os.path.splitext(os.path.basename(path))[0]
    for key in ("training", "default_guidance", "sampler"):
        side.pop(key, None)
    side.update({"format": side.get("format", "fewstep.model.v1"), "name": name, "model": os.path.basename(path),
                 "prediction": prediction, "parameters": sum(p.numel() for p in scripted.parameters()),
                 "distillation": dict(settings or {}, method=method, teacher=teacher_name),
                 "fewstep_version": _fewstep.version(), "torch_version": _fewstep.torch_version()})
    if timesteps is not None:
        grid = torch.as_tensor(timesteps, dtype=torch.float64)
        side["sampler"] = {"solver": solver, "timesteps": grid.tolist()}
    if default_guidance is not None:
        side["default_guidance"] = _check_real(default_guidance, "default_guidance")
    tmp = path + ".tmp"
    scripted.save(tmp)
    os.replace(tmp, path)
    side_path = os.path.splitext(path)[0] + ".json"
    with open(side_path + ".tmp", "w") as f:
        f.write(json.dumps(side, indent=2) + "\n")
    os.replace(side_path + ".tmp", side_path)
    _fewstep.load_model_file(path)  # fails now, naming the file, if the sidecar or grid is invalid
    return path
