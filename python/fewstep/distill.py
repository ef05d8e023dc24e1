"""Distillation in Python: progressive, knowledge, guidance and consistency distillation.

Each method is a **loss object** (a :class:`fewstep.train.Objective`) over the C++ trainers'
arithmetic (``include/fewstep/train/``; ``docs/distillation.md`` for the maths):
:class:`ProgressiveDistillationLoss`, :class:`KnowledgeDistillationLoss`,
:class:`GuidanceDistillationLoss`, :class:`ConsistencyLoss`. The teacher's part runs in C++ without
autograd and with the GIL released (for progressive distillation the two teacher DDIM steps of
``fewstep::progressive_target``, for consistency distillation a registered ODE step), and the student
is called *in Python*: ``loss = pd(student, x0)`` works in any loop, DDP included.

The ready loops :func:`distill_progressive` (rounds that halve the steps), :func:`distill_knowledge`,
:func:`distill_guidance` and :func:`distill_consistency` are the one training loop of
:mod:`fewstep.train` (:func:`fewstep.train.loss_trainer`) with these losses: the C++ AdamW with a
linear (Salimans & Ho) or cosine learning-rate decay, clipping, the EMA of the student, a tqdm bar,
atomic checkpoints that resume bit-exactly with their options checked, and data parallelism.

:func:`export_student` writes a student as a model file (``fs.save_model_file``) whose sidecar names its
own grid, so ``fs.sample("student.pt", x_T)`` and ``fewstep sample --model student.pt`` run it directly.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch

from . import _fewstep
from .train import (
    DSMLoss,
    Objective,
    _average_gradients,
    TrainStep,
    _check_batch,
    _check_choice,
    _check_generator,
    _check_int,
    _check_output,
    _check_real,
    _check_schedule,
    _check_time_input,
    _column,
    _frozen_copy,
    _load_module,
    _network_times,
    _ready,
    _save_module,
    _time_range,
    _type_name,
)

__all__ = [
    "ConsistencyLoss",
    "DistillResult",
    "DistillStep",
    "DistributionMatchingLoss",
    "GuidanceDistillationLoss",
    "choose_grid_solver",
    "choose_student_solver",
    "KnowledgeDistillationLoss",
    "ProgressiveDistillationLoss",
    "consistency_denoiser",
    "distill_consistency",
    "distill_distribution_matching",
    "distill_guidance",
    "distill_knowledge",
    "distill_progressive",
    "export_student",
    "progressive_timesteps",
    "teacher_rollouts",
]

STUDENT_PREDICTIONS = ("x0", "v", "eps")
PD_WEIGHTINGS = ("truncated_snr", "snr_plus_one")

#: What a ready loop's callback receives after each update (``extra["N"]``: the student's steps).
DistillStep = TrainStep
consistency_denoiser = _fewstep.consistency_denoiser


def _x0_from_native(output: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                    prediction: str) -> torch.Tensor:
    """The data prediction implied by a native output (differentiable); alpha/sigma shaped like z's batch."""
    if prediction == "x0":
        return output
    if prediction == "eps":
        return (z - sigma * output) / alpha
    # v = alpha eps - sigma x0 and z = alpha x0 + sigma eps give x0 = (alpha z - sigma v) / (alpha^2 + sigma^2).
    return (alpha * z - sigma * output) / (alpha * alpha + sigma * sigma)


def _check_student(student: Any, takes: str) -> None:
    if not callable(student):
        raise TypeError(f"student should be a callable or torch.nn.Module taking {takes}, got {_type_name(student)}")


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


def _check_substeps(value: int, name: str) -> None:
    """Teacher DDIM calls per student step: even (the target's midpoint is a teacher state), 2..1024."""
    _check_int(value, name, 2)
    if value % 2 or value > 1024:
        raise ValueError(f"{name} should be an even number in [2, 1024], got {value}")


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


class ProgressiveDistillationLoss(Objective):
    """Progressive distillation (Salimans & Ho 2022, arXiv 2202.00512, Algorithm 2) for one round.

    ``loss = pd(student, x0)``. Per example: ``i ~ U{1..steps}``, ``t = tau(i)`` on the student grid
    (:func:`progressive_timesteps`), ``z_t = alpha_t x0 + sigma_t eps``; the teacher takes two DDIM steps
    ``t -> tau(i - 1/2) -> tau(i - 1)`` (``substeps`` of them on the uniform subdivision, if given) with
    the library's ``ddim`` stepper (in C++, no autograd), which gives the target ``x~`` (the teacher's
    own data prediction at the grid's last step). The student's
    native output ``student(z_t, t_input)`` is converted to its data prediction ``x0_hat`` and the loss is
    ``mean_b w_b mean_j (x0_hat - x~)^2`` with ``w = max(SNR, 1)`` or ``SNR + 1``.

    Args:
        teacher: a :class:`fewstep.Denoiser` (its schedule is the student's).
        steps: the student's steps N of this round (the teacher runs 2N).
        student_prediction: ``"v"`` or ``"x0"``; ``"eps"`` only for ``steps > 2`` (at 1-2 steps the student
            works near ``t_max`` where ``alpha ~ 0`` and ``x0 = (z - sigma eps)/alpha`` amplifies errors).
        weighting: ``"truncated_snr"`` (``max(SNR, 1)``) or ``"snr_plus_one"``.
        time_input, time_scale: what the student receives as time (as in :class:`fewstep.Denoiser`).
        t_min, t_max: the grid's range, default the schedule's.
        substeps: teacher DDIM calls per student step (even; 2 = the paper). More make the target closer
            to the teacher's ODE, for a first round that starts at few steps (docs/distillation.md).
    """

    kind = "progressive"

    def __init__(self, teacher: _fewstep.Denoiser, steps: int, student_prediction: str = "v",
                 weighting: str = "truncated_snr", time_input: str = "t", time_scale: float = 1.0,
                 t_min: Optional[float] = None, t_max: Optional[float] = None, substeps: int = 2) -> None:
        super().__init__()
        if not isinstance(teacher, _fewstep.Denoiser):
            raise TypeError(f"teacher should be a fewstep.Denoiser, got {_type_name(teacher)}")
        _check_int(steps, "steps", 1)
        _check_substeps(substeps, "substeps")
        _check_choice(student_prediction, "student_prediction", STUDENT_PREDICTIONS)
        if student_prediction == "eps" and steps <= 2:
            raise ValueError(f"student_prediction 'eps' cannot be distilled to steps = {steps} (<= 2): a 1-2 step "
                             f"student evaluates near t_max where alpha ~ 0, and x0 = (z - sigma eps)/alpha amplifies "
                             f"any error without bound; use 'v' or 'x0'")
        _check_choice(weighting, "weighting", PD_WEIGHTINGS)
        self.teacher, self.schedule = teacher, teacher.schedule
        self.time_scale = _check_time_input(self.schedule, time_input, time_scale)
        self.t_min, self.t_max = _time_range(self.schedule, t_min, t_max)
        self.steps, self.student_prediction, self.weighting = steps, student_prediction, weighting
        self.time_input, self.substeps = time_input, substeps

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, substeps={self.substeps}, student_prediction={self.student_prediction!r}, "
                f"weighting={self.weighting!r}, "
                f"time_input={self.time_input!r}, t_min={self.t_min:g}, t_max={self.t_max:g}")

    def options(self) -> dict:
        out = {"steps": self.steps, "student_prediction": self.student_prediction, "weighting": self.weighting,
               "time_input": self.time_input, "time_scale": self.time_scale, "t_min": self.t_min,
               "t_max": self.t_max, "teacher": self.teacher.description}
        if self.substeps != 2:  # only when set: checkpoints written before the option still resume
            out["substeps"] = self.substeps
        return out

    def timesteps(self) -> torch.Tensor:
        """The student's sampling grid (:func:`progressive_timesteps` of this round)."""
        return progressive_timesteps(self.schedule, self.steps, self.t_min, self.t_max)

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        """``(x0, index, eps)``: grid indices (first) and noise for every row, from ``generator``."""
        x0 = _check_batch(batch[0], "data batch")
        index = torch.randint(1, self.steps + 1, (x0.shape[0],), generator=generator)
        return x0, index, torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)

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
        alpha, sigma = _column(self.schedule.alpha(t), x0), _column(self.schedule.sigma(t), x0)
        with torch.no_grad():
            z_t = alpha * x0 + sigma * eps.to(device=x0.device, dtype=x0.dtype)
            target, _, _, _ = _fewstep._progressive_target(self.teacher, z_t, index, self.steps, self.t_min,
                                                           self.t_max, self.substeps)
        snr = (self.schedule.alpha(t) / self.schedule.sigma(t)) ** 2
        weight = snr.clamp(min=1.0) if self.weighting == "truncated_snr" else snr + 1.0
        t_input = _network_times(self.schedule, t, self.time_input, self.time_scale, x0)
        return ProgressiveInputs(z_t, t_input, target, weight.to(device=x0.device, dtype=x0.dtype), t, index,
                                 alpha, sigma)

    def loss(self, output: torch.Tensor, inputs: ProgressiveInputs) -> torch.Tensor:
        """``mean_b w_b mean_j (x0_hat(output) - x~)^2`` for the student's native ``output``."""
        _check_output(output, inputs.z_t.shape, "student(z_t, t)")
        x0_hat = _x0_from_native(output, inputs.z_t, inputs.alpha, inputs.sigma, self.student_prediction)
        return (inputs.weight * (x0_hat - inputs.target).pow(2).flatten(1).mean(1)).mean()

    def forward(self, student: Callable, x0: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                index: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The scalar loss of ``student`` on the clean batch ``x0`` (see :meth:`inputs` for the draws)."""
        _check_student(student, "(z_t, t)")
        inputs = self.inputs(x0, generator, index=index, eps=eps)
        return self.loss(student(inputs.z_t, inputs.t_input), inputs)

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        x0, index, eps = draws
        return self(student, x0, index=index, eps=eps), {"N": self.steps}


class _ProgressiveRounds(Objective):
    """All rounds of progressive distillation for the loop: round r trains N = initial_steps / 2^r steps for
    `iterations` updates; at a round's end the EMA student becomes the teacher and the next student, the
    optimiser restarts and the learning rate decays again."""

    kind = "progressive"

    def __init__(self, teacher: torch.nn.Module, schedule: _fewstep.NoiseSchedule, prediction: str,
                 initial_steps: int, final_steps: int, iterations: int, first_round_substeps: int = 2,
                 **loss: Any) -> None:
        super().__init__()
        _check_substeps(first_round_substeps, "first_round_substeps")
        self.first_round_substeps = first_round_substeps
        _check_int(initial_steps, "initial_steps", 1)
        _check_int(final_steps, "final_steps", 1)
        if final_steps > initial_steps:
            raise ValueError(f"final_steps must be in [1, initial_steps = {initial_steps}], got {final_steps}")
        ratio = initial_steps // final_steps
        if initial_steps % final_steps or ratio & (ratio - 1):
            raise ValueError(f"initial_steps / final_steps should be a power of two, got {initial_steps} / "
                             f"{final_steps}")
        _check_int(iterations, "iterations", 1)
        self.schedule, self.prediction = _check_schedule(schedule), prediction
        self.initial_steps, self.final_steps, self.iterations = initial_steps, final_steps, iterations
        self.rounds, self.loss_settings = ratio.bit_length(), loss
        self.teacher = _frozen_copy(teacher)  # the round's teacher; the given one is never modified
        self.students: dict = {}  # N -> the EMA student's state at the end of its round
        self._round = None
        self._round_loss(self.rounds - 1)  # the last round's settings are checked before any work

    def _round_loss(self, r: int) -> ProgressiveDistillationLoss:
        if self._round is None or self._round[0] != r:
            prediction = self.prediction if r == 0 else self.loss_settings["student_prediction"]
            teacher = _fewstep.Denoiser(self.teacher, schedule=self.schedule, prediction=prediction,
                                        time_input=self.loss_settings["time_input"],
                                        time_scale=self.loss_settings["time_scale"])
            # Later rounds' teacher is the previous student, trained for its own 2N-step grid: 2 calls.
            substeps = self.first_round_substeps if r == 0 else 2
            self._round = (r, ProgressiveDistillationLoss(teacher, self.initial_steps >> r, substeps=substeps,
                                                          **self.loss_settings))
        return self._round[1]

    def _loss_at(self, step: int) -> ProgressiveDistillationLoss:
        return self._round_loss(min(step // self.iterations, self.rounds - 1))

    def options(self) -> dict:
        last = self._round_loss(self.rounds - 1)
        out = dict(last.options(), steps=None, prediction=self.prediction, initial_steps=self.initial_steps,
                   final_steps=self.final_steps, iterations=self.iterations, schedule=repr(self.schedule),
                   teacher=None)
        if self.first_round_substeps != 2:  # only when set: older checkpoints still resume
            out["first_round_substeps"] = self.first_round_substeps
        return out

    def planned_steps(self, total_steps: int) -> int:
        return self.rounds * self.iterations

    def schedule_step(self, step: int) -> int:
        return step % self.iterations

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        return self._loss_at(step).draw(batch, generator, step)

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        return self._loss_at(step).step_loss(student, draws, step)

    def after_update(self, run: Any, step: int) -> None:
        if (step + 1) % self.iterations:
            return
        self.students[self._loss_at(step).steps] = copy.deepcopy(run.ema.state_dict())
        if step + 1 < self.rounds * self.iterations:
            # The next teacher is the EMA student itself: a given student may have another architecture
            # than the round-0 teacher (e.g. an exported student wrapping it).
            self.teacher = _frozen_copy(run.ema)
            run.student.load_state_dict(run.ema.state_dict())
            self._round = None
            run.reset_optimizer()
            run.reset_ema()

    def save(self, checkpoint: _fewstep.Checkpoint) -> None:
        _save_module(checkpoint, "teacher", self.teacher)
        for n, state in self.students.items():
            for key, value in state.items():
                checkpoint.set_tensor(f"students/{n}/{key}", value)

    def bind(self, student: torch.nn.Module) -> None:
        self._student = student

    def load(self, checkpoint: _fewstep.Checkpoint) -> None:
        saved = {key[len("teacher/"):] for key in checkpoint.tensor_keys("teacher/")}
        student = getattr(self, "_student", None)
        if saved != set(self.teacher.state_dict()) and student is not None and saved == set(student.state_dict()):
            self.teacher = _frozen_copy(student)  # a later round's teacher: the student's architecture
        _load_module(checkpoint, "teacher", self.teacher)
        self._round, self.students = None, {}
        for key in checkpoint.tensor_keys("students/"):
            n, name = key[len("students/"):].split("/", 1)
            self.students.setdefault(int(n), {})[name] = checkpoint.tensor(key)


# ----------------------------------------------------------------------------------------------
# Knowledge distillation.


def teacher_rollouts(teacher: _fewstep.Denoiser, sample_shape: Sequence[int], n: int, *, solver: str = "unipc",
                     steps: int = 25, spacing: str = "logsnr", seed: int = 0, batch: int = 250,
                     cache: Union[bool, str, os.PathLike, None] = None, progress: bool = False) -> tuple:
    """``(x_T, x_0)``: ``n`` teacher ODE solves, sample ``i`` from ``x_T = fs.randn`` with seed ``seed + i``.

    Solved with ``solver`` on the ``steps``-step ``spacing`` grid: one cached teacher solve
    (``fewstep::teacher_solve``). ``cache`` is None (no cache), True (the default cache directory,
    :func:`cache_directory`) or a cache directory; the pairs are then keyed by the teacher's content
    fingerprint (:attr:`Denoiser.fingerprint`) and every setting, stored with that key and verified
    on load, so another teacher never gets these pairs. Caching a teacher without a fingerprint (a
    plain Python function) is refused: give ``fs.Denoiser(..., fingerprint=...)``.
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
    out = _fewstep._teacher_solve(teacher, shape, n, seed=seed, solver=solver, solver_options={}, grid=grid.tolist(),
                                  batch=batch, cache=cache, progress=bool(progress), label="teacher rollouts")
    x = out["x"]
    return x[:, 0].contiguous(), x[:, -1].contiguous()


class KnowledgeDistillationLoss(Objective):
    """Knowledge distillation (Luhman & Luhman 2021, arXiv 2101.02388): ``loss = kd(student, x_T, x0_teacher)``.

    The student samples with deterministic DDIM on the fixed grid ``timesteps`` (``fs.ddim_update``, the
    library's ``ddim`` step, differentiable) from ``x_T``; the loss is ``mean_b mean_j (x_N - x0_teacher)^2``
    with backpropagation through every step, the computation of
    ``fs.sample(student, x_T, solver="ddim", timesteps=timesteps)``. Its data are the pairs ``(x_T, x0)``
    (:func:`teacher_rollouts`); it draws nothing.

    Args:
        schedule: the noise schedule.
        timesteps: the student's decreasing grid (``steps + 1`` times), e.g. ``fs.timesteps(sched, 1)``.
        student_prediction: what the student outputs (``"x0"``, ``"v"`` or ``"eps"``).
        time_input, time_scale: the student's time input.
    """

    kind = "kd"

    def __init__(self, schedule: _fewstep.NoiseSchedule, timesteps: Any, student_prediction: str = "x0",
                 time_input: str = "t", time_scale: float = 1.0) -> None:
        super().__init__()
        self.schedule = _check_schedule(schedule)
        self.grid = _fewstep.validate_grid(schedule, timesteps)
        _check_choice(student_prediction, "student_prediction", STUDENT_PREDICTIONS)
        self.time_scale = _check_time_input(schedule, time_input, time_scale)
        self.student_prediction, self.time_input = student_prediction, time_input

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    def options(self) -> dict:
        return {"timesteps": self.grid.tolist(), "student_prediction": self.student_prediction,
                "time_input": self.time_input, "time_scale": self.time_scale, "schedule": repr(self.schedule)}

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
        _check_student(student, "(x, t)")
        _check_batch(x_T, "x_T")
        if not isinstance(x0_teacher, torch.Tensor) or x0_teacher.shape != x_T.shape:
            raise ValueError(f"x0_teacher should be a tensor of x_T's shape {tuple(x_T.shape)}")
        return (self.rollout(student, x_T) - x0_teacher).pow(2).mean()

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        return batch[0], batch[1]

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        return self(student, *draws), {"N": self.steps}


# ----------------------------------------------------------------------------------------------
# Guidance distillation.


class GuidanceDistillationLoss(Objective):
    """Guidance distillation, stage one (Meng et al. 2023, arXiv 2210.03142): ``loss = gd(student, x0, labels)``.

    A class-conditional ``teacher(x, t, y)`` (``y = num_classes`` is the null class) is guided with scale
    ``s``: ``out_u + s (out_c - out_u)``, two calls (one batched call, no autograd). The student
    ``student(x, t, y, w)`` takes ``w = s`` as an input and regresses that target in the native output
    space: ``t ~ U[t_min, t_max]``, ``eps``, ``s ~ U[guidance_min, guidance_max]`` drawn in that order, loss
    ``mean (student - target)^2``. Stage two is progressive distillation of the student.
    """

    kind = "guidance"

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
        self.teacher, self.num_classes = teacher, num_classes
        self.guidance_min, self.guidance_max = lo_s, hi_s
        self.time_scale = _check_time_input(schedule, time_input, time_scale)
        self.time_input = time_input
        self.t_min, self.t_max = _time_range(schedule, t_min, t_max)

    def options(self) -> dict:
        return {"num_classes": self.num_classes, "guidance": [self.guidance_min, self.guidance_max],
                "time_input": self.time_input, "time_scale": self.time_scale, "t_min": self.t_min,
                "t_max": self.t_max, "schedule": repr(self.schedule)}

    def draw(self, batch: tuple, generator: Optional[torch.Generator], step: int = 0) -> tuple:
        """``(x0, labels, t, eps, w)``: times, noise and guidance scales for every row, from ``generator``."""
        x0, labels = _check_batch(batch[0], "x0"), batch[1]
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
        return x0, labels.to(x0.device, torch.int64), t, eps, w

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        _check_student(student, "(x, t, y, w)")
        x0, y, t, eps, w = draws
        n = x0.shape[0]
        z = _column(self.schedule.alpha(t), x0) * x0 + _column(self.schedule.sigma(t), x0) * eps
        t_input = _network_times(self.schedule, t, self.time_input, self.time_scale, x0)
        with torch.no_grad():
            both = self.teacher(torch.cat([z, z]), torch.cat([t_input, t_input]),
                                torch.cat([y, torch.full_like(y, self.num_classes)]))
            _check_output(both, torch.Size([2 * n, *x0.shape[1:]]), "teacher(x, t, y)")
            cond, uncond = both[:n], both[n:]
            target = uncond + w.view(-1, *([1] * (x0.dim() - 1))) * (cond - uncond)
        out = _check_output(student(z, t_input, y, w), x0.shape, "student(x, t, y, w)")
        return (out - target).pow(2).mean(), {}

    def forward(self, student: Callable, x0: torch.Tensor, labels: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.step_loss(student, self.draw((x0, labels), generator), 0)[0]


# ----------------------------------------------------------------------------------------------
# Consistency distillation and training.


# Consistency methods only the C++ trainer runs (sCM's forward-mode JVP).
_CPP_ONLY_CONSISTENCY = {"scd": "continuous-time consistency distillation, arXiv 2410.11081",
                         "sct": "continuous-time consistency training, arXiv 2410.11081"}


class ConsistencyLoss(Objective):
    """Consistency distillation (CD), consistency training (CT), improved consistency training (iCT)
    (Song et al. 2023, arXiv 2303.01469, Algorithms 2 and 3; Song & Dhariwal 2023, arXiv 2310.14189) and
    easy consistency tuning (ECT, Geng et al. 2024, arXiv 2406.14548).

    The consistency function is ``f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t))`` with the
    student ``F`` called in Python (models/consistency_function.h). Per example: a level index
    ``i`` (uniform for CD and CT; iCT's lognormal), ``z``, ``x_{i+1} = alpha x0 + sigma z`` at
    ``t_{i+1}``, and ``x^_i`` at ``t_i`` from the teacher's ODE step (CD, a registered stepper in C++)
    or the same ``z`` (CT, iCT); the loss is ``mean_b lambda_b d(f_theta(x_{i+1}), f_theta-(x^_i))``.
    The levels, the curricula ``N(k)`` and ``mu(k)``, the index draws, the weights and the distance are
    the C++ trainer's (train/consistency_trainer.h), so both compute the same numbers. ECT draws a
    continuous level ``sigma/alpha ~ lognormal(p_mean, p_std)`` per example instead of an index, pairs it
    with the mapping function's lower level ``r`` (its stage from ``ect_total_steps``; the target is ``x0``
    where ``r`` reaches the boundary) and targets the student itself without gradient; start its student
    from the diffusion model (docs/distillation.md, "Easy consistency tuning").

    Both passes of a step use one dropout seed (drawn from the run's generator); the target network
    ``theta-`` (CD, CT) is an EMA of the student made by :meth:`bind` and moved by :meth:`update_target`.
    In your own loop: ``cm.bind(student)``, ``loss = cm(student, x0, generator, step=k)``, the
    optimiser step, then ``cm.update_target(student, k)``.

    Args:
        schedule: the noise schedule; method: ``"cd"``, ``"ct"``, ``"ict"`` or ``"ect"``.
        teacher: CD's :class:`fewstep.Denoiser`; teacher_solver: its deterministic step (``"heun"``).
        **options: the C++ options (train/consistency_trainer.h): ``num_points`` (CD's N), ``target_ema``
            (CD's mu), ``ct_s0``, ``ct_s1``, ``ct_mu0``, ``ct_total_steps``, ``ict_s0``, ``ict_s1``,
            ``ict_total_steps``, ``ect_q``, ``ect_k``, ``ect_b``, ``ect_stages``, ``ect_total_steps``,
            ``p_mean``, ``p_std``, ``rho``, ``distance`` (default ``"pseudo_huber"`` for iCT and ECT, as their
            papers and the CLI train, ``"l2"`` otherwise; ``"l2"``, ``"l1"``,
            ``"pseudo_huber"``), ``huber_c``, ``sigma_data``, ``t_min`` (the boundary), ``time_input``,
            ``time_scale`` (the student's).
    """

    kind = "consistency"

    def __init__(self, schedule: _fewstep.NoiseSchedule, method: str = "cd",
                 teacher: Optional[_fewstep.Denoiser] = None, teacher_solver: str = "heun", **options: Any) -> None:
        super().__init__()
        self.schedule = _check_schedule(schedule)
        if method in _CPP_ONLY_CONSISTENCY:
            raise ValueError(f"method '{method}' ({_CPP_ONLY_CONSISTENCY[method]}) runs in the C++ trainer: "
                             f"fewstep.Trainer.consistency(student, schedule, data, method='{method}', ...)")
        if method == "cd" and not isinstance(teacher, _fewstep.Denoiser):
            raise TypeError(f"teacher should be a fewstep.Denoiser for method 'cd', got {_type_name(teacher)}")
        self.settings = _fewstep._consistency_options(dict(options, method=method, teacher_solver=teacher_solver))
        self.teacher = teacher if method == "cd" else None
        self.t_lo = self.settings["t_min"] or schedule.t_min
        self.target: Optional[torch.nn.Module] = None

    def options(self) -> dict:
        teacher = self.teacher.description if self.teacher is not None else None
        return dict(self.settings, t_min=self.t_lo, schedule=repr(self.schedule), teacher=teacher)

    def bind(self, student: torch.nn.Module) -> None:
        """Makes the target network theta- (a copy of the student) for CD and CT; iCT and ECT target the
        student itself without gradient."""
        self.target = _frozen_copy(student).train() if self.settings["method"] in ("cd", "ct") else None

    def points(self, step: int) -> tuple:
        """``(N(k), mu(k))``: the levels and the target EMA rate at step ``k``."""
        return _fewstep._consistency_schedule(self.settings, step)

    def levels(self, step: int) -> list:
        return _fewstep._consistency_levels(self.schedule, self.points(step)[0], self.t_lo, self.settings["rho"])

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        """``(x0, index, z, dropout_seed)`` for every row, from ``generator`` (ECT: ``index`` holds the
        lognormal's standard normals)."""
        x0 = _check_batch(batch[0], "data batch")
        if self.ect:
            index = torch.randn(x0.shape[0], generator=generator, dtype=torch.float64)
        else:
            index = _fewstep._consistency_draw_index(self.schedule, self.settings, self.levels(step), x0.shape[0],
                                                     generator)
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        seed = torch.randint(0, 2**62, (), generator=generator)
        return x0, index, z, seed

    @property
    def ect(self) -> bool:
        return self.settings["method"] == "ect"

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        x0, index, z, seed = draws
        to_data = None
        if self.ect:
            levels = []
            t_hi, t_lo, a_hi, s_hi, a_lo, s_lo, weight, to_data, stage = _fewstep._ect_pair_times(
                self.schedule, self.settings, step, self.t_lo, index)
            extra = {"stage": stage}
        else:
            levels = self.levels(step)
            t_hi, t_lo, a_hi, s_hi, a_lo, s_lo, weight = _fewstep._consistency_pair_times(
                self.schedule, self.settings, levels, index)
            n, mu = self.points(step)
            extra = {"N": n, "mu": mu}
        x_hi = _column(a_hi, x0) * x0 + _column(s_hi, x0) * z
        with torch.no_grad():
            if self.teacher is not None:
                x_lo = _fewstep._consistency_teacher_step(self.teacher, self.settings["teacher_solver"], x_hi, index,
                                                          levels)
            else:
                x_lo = _column(a_lo, x0) * x0 + _column(s_lo, x0) * z
        f = functools.partial(_fewstep._consistency_function, schedule=self.schedule, options=self.settings)
        online = _fewstep._with_dropout_seed(int(seed), lambda: f(student, x=x_hi, t=t_hi))
        with torch.no_grad():
            target_net = self.target if self.target is not None else student
            target = _fewstep._with_dropout_seed(int(seed), lambda: f(target_net, x=x_lo, t=t_lo))
            if to_data is not None:  # ECT's diffusion limit: r at the boundary, the target is the data
                target = torch.where(to_data.to(x0.device).view(-1, *([1] * (x0.dim() - 1))), x0, target)
        d = _fewstep._consistency_distance(online, target, self.settings["distance"], self.settings["huber_c"])
        return (d * weight.to(d)).mean(), extra

    def forward(self, student: Callable, x0: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                step: int = 0) -> torch.Tensor:
        _check_student(student, "(x, t)")
        return self.step_loss(student, self.draw((x0,), generator, step), step)[0]

    def update_target(self, student: torch.nn.Module, step: int) -> None:
        """theta- <- mu(k) theta- + (1 - mu(k)) theta (train/ema.h's update over the parameters)."""
        if self.target is not None:
            _fewstep.ema_update(list(self.target.parameters()), list(student.parameters()), [], [],
                                self.points(step)[1])

    def after_update(self, run: Any, step: int) -> None:
        self.update_target(run.student, step)

    def save(self, checkpoint: _fewstep.Checkpoint) -> None:
        if self.target is not None:
            _save_module(checkpoint, "target", self.target)

    def load(self, checkpoint: _fewstep.Checkpoint) -> None:
        if self.target is not None:
            _load_module(checkpoint, "target", self.target)


# ----------------------------------------------------------------------------------------------
# Distribution matching.


class DistributionMatchingLoss(Objective):
    """Distribution matching distillation of a one-step student (DMD, Yin et al. 2024, arXiv 2311.18828,
    eq. 7-8), with the two time-scale updates of DMD2 (Yin et al. 2024, arXiv 2405.14867, sec. 4.2).

    The student is a one-step map ``G(z)`` from prior noise ``z`` at the start time (the time of noise level
    ``start_sigma``): a consistency network F (``student="consistency"``, ``G(z) = f(z, t_start)`` with the
    ``consistency`` parameterisation) or a network predicting ``"x0"``, ``"v"`` or ``"eps"`` there. A
    *fake* denoiser, initialised as a copy of the teacher's network, learns the student's samples by
    denoising score matching (``fake_updates`` updates per step with its own AdamW at ``fake_lr``); the
    student moves its samples ``x = G(z)`` along ``x0_real(x_t) - x0_fake(x_t)`` at noised copies
    ``x_t = alpha_t x + sigma_t eps``, ``t ~ U[t_min, t_max]`` (default: the middle 96 % of the schedule's
    range, DMD's), per row normalised by ``mean |x - x0_real(x_t)|`` (DMD's weighting). The difference of
    the two data predictions is ``sigma_t^2 / alpha_t`` times the difference of the scores, the gradient
    of KL(p_student || p_teacher) at level t. This matches the student's *distribution* to the teacher's
    (class proportions included) rather than its pairs ``z -> x0``: docs/distillation.md,
    "Distribution matching".

    For the first ``warmup`` steps only the fake denoiser learns (the student's loss is zero): at step 0
    it equals the teacher, so the signal appears as it moves toward the student's samples. The loss
    reported is ``0.5 mean_b |g_b|^2`` of the normalised direction g; ``extra["fake_loss"]`` is the fake
    denoiser's last DSM loss. The fake denoiser and its optimiser are in the checkpoint, so a resumed
    run continues bit-identically; data parallelism averages the fake's gradients too. In your own loop:
    ``loss = dm(student, like, generator, step=k)``, the student's optimiser step, then
    ``dm.update_fake(student)``.

    Args:
        schedule: the noise schedule of teacher and student.
        teacher: the teacher's network ``teacher(x_t, t_input)`` predicting ``teacher_prediction`` (an
            ``nn.Module``, e.g. ``torch.jit.load`` of its model file; never modified).
        student: ``"consistency"`` or the student's prediction ``"x0"``, ``"v"``, ``"eps"``.
        consistency: for a consistency student, its options (``sigma_data``, ``t_min``; the defaults of
            :class:`ConsistencyLoss`).
        start_sigma: the student's start level sigma/alpha (default 80, clamped to the schedule's top).
        fake_lr, fake_updates, warmup: the fake denoiser's learning rate and updates per step, and the
            steps before the student moves.
        t_min, t_max: the range of the matching levels t.
        time_input, time_scale: the networks' time input (the teacher's; the student shares it).
    """

    kind = "distribution_matching"
    STUDENTS = ("consistency",) + STUDENT_PREDICTIONS

    def __init__(self, schedule: _fewstep.NoiseSchedule, teacher: torch.nn.Module, *,
                 teacher_prediction: str = "eps", student: str = "consistency", consistency: Optional[dict] = None,
                 start_sigma: Optional[float] = _fewstep.CONSISTENCY_START_SIGMA, fake_lr: float = 1e-4,
                 fake_updates: int = 2, warmup: int = 300, t_min: Optional[float] = None,
                 t_max: Optional[float] = None, time_input: str = "t", time_scale: float = 1.0) -> None:
        super().__init__()
        self.schedule = _check_schedule(schedule)
        if not isinstance(teacher, torch.nn.Module):
            raise TypeError(f"teacher should be a torch.nn.Module taking (x, t), got {_type_name(teacher)}")
        _check_choice(student, "student", self.STUDENTS)
        if consistency is not None and student != "consistency":
            raise ValueError(f"consistency options apply to student='consistency', got student={student!r}")
        _check_choice(teacher_prediction, "teacher_prediction", STUDENT_PREDICTIONS)  # what _x0_from_native reads
        self.fake_dsm = DSMLoss(schedule, teacher_prediction, "uniform", time_input=time_input,
                                time_scale=time_scale)  # checks the time input
        fake_lr = _check_real(fake_lr, "fake_lr")
        if not fake_lr > 0:
            raise ValueError(f"fake_lr should be > 0, got {fake_lr:g}")
        _check_int(fake_updates, "fake_updates", 1)
        _check_int(warmup, "warmup", 0)
        span = schedule.t_max - schedule.t_min
        default_lo, default_hi = schedule.t_min + 0.02 * span, schedule.t_min + 0.98 * span
        self.t_lo, self.t_hi = _time_range(schedule, default_lo if t_min is None else t_min,
                                           default_hi if t_max is None else t_max)
        self.t_start = float(_fewstep.consistency_timesteps(schedule, start_sigma)[0])
        self.student_kind, self.teacher_prediction = student, teacher_prediction
        self.time_input, self.time_scale = time_input, self.fake_dsm.time_scale
        self.consistency: Optional[dict] = None  # the consistency function's settings (all the C++ keys)
        if student == "consistency":
            unknown = sorted(set(consistency or {}) - {"sigma_data", "t_min"})
            if unknown:
                raise ValueError(f"consistency options are sigma_data and t_min, got {unknown[0]!r}")
            self.consistency = _fewstep._consistency_options(dict(consistency or {}, method="ect",
                                                                  time_input=time_input, time_scale=time_scale))
        self.fake_lr, self.fake_updates, self.warmup = fake_lr, fake_updates, warmup
        self.start_sigma = start_sigma
        self.teacher = _frozen_copy(teacher)
        self.fake = _frozen_copy(teacher).train()
        for p in self.fake.parameters():
            p.requires_grad_(True)
        self.fake_options = {"lr": fake_lr, "warmup": 0, "total_steps": 0, "min_lr": 0.0, "decay": "cosine",
                             "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 0.0}
        self.fake_optimizer = _fewstep.Optimizer(list(self.fake.parameters()), self.fake_options)
        self._fake_draws: Optional[tuple] = None
        self.fake_loss = float("nan")  # the fake denoiser's last DSM loss

    def options(self) -> dict:
        consistency = ({key: self.consistency[key] for key in ("sigma_data", "t_min")}
                       if self.consistency is not None else None)
        return {"student": self.student_kind, "teacher_prediction": self.teacher_prediction,
                "consistency": consistency, "start_sigma": self.start_sigma, "t_start": self.t_start,
                "fake_lr": self.fake_lr, "fake_updates": self.fake_updates, "warmup": self.warmup,
                "t_min": self.t_lo, "t_max": self.t_hi, "time_input": self.time_input,
                "time_scale": self.time_scale, "schedule": repr(self.schedule)}

    def generate(self, student: Callable, z: torch.Tensor) -> torch.Tensor:
        """``G(z)``: the student's sample from standard-normal ``z`` (scaled to the prior at the start time)."""
        x = z * _fewstep._prior_scale(self.schedule, self.t_start)
        t = torch.full((z.shape[0],), self.t_start, dtype=torch.float64)
        if self.consistency is not None:
            return _fewstep._consistency_function(student, self.schedule, self.consistency, x, t)
        out = student(x, _network_times(self.schedule, t, self.time_input, self.time_scale, x))
        return _x0_from_native(out, x, self.schedule.alpha(self.t_start), self.schedule.sigma(self.t_start),
                               self.student_kind)

    def _x0(self, net: Callable, x_t: torch.Tensor, t_input: torch.Tensor, alpha: torch.Tensor,
            sigma: torch.Tensor) -> torch.Tensor:
        return _x0_from_native(net(x_t, t_input), x_t, alpha, sigma, self.teacher_prediction)

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        """``(z, t, eps, z_fake, t_fake, eps_fake)``: the student's noise, level and re-noising per row, and
        per row ``fake_updates`` of each for the fake denoiser (second dimension)."""
        like = _check_batch(batch[0], "data batch")
        n, k = like.shape[0], self.fake_updates

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)

        z = normal(*like.shape)
        t = self.t_lo + (self.t_hi - self.t_lo) * torch.rand(n, generator=generator, dtype=torch.float64)
        eps = normal(*like.shape)
        z_fake = normal(n, k, *like.shape[1:])
        t_fake = torch.stack([self.fake_dsm.sample_times(n, generator) for _ in range(k)], dim=1)
        eps_fake = normal(n, k, *like.shape[1:])
        return z, t, eps, z_fake, t_fake, eps_fake

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        z, t, eps, *fake_draws = draws
        self._fake_draws = tuple(fake_draws)  # after_update trains the fake on them
        x = self.generate(student, z)
        if step < self.warmup:
            return x.sum() * 0.0, {"fake_loss": self.fake_loss}
        with torch.no_grad():
            alpha, sigma = _column(self.schedule.alpha(t), x), _column(self.schedule.sigma(t), x)
            x_t = alpha * x + sigma * eps
            t_input = _network_times(self.schedule, t, self.time_input, self.time_scale, x_t)  # both nets' input
            real = self._x0(self.teacher, x_t, t_input, alpha, sigma)
            fake = self._x0(self.fake, x_t, t_input, alpha, sigma)
            scale = (x - real).abs().flatten(1).mean(1).clamp_min(1e-6)
            g = (fake - real) / _column(scale.double(), x)
        loss = 0.5 * (x - (x - g).detach()).pow(2).flatten(1).sum(1).mean()
        return loss, {"fake_loss": self.fake_loss}

    def forward(self, student: Callable, like: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                step: int = 0) -> torch.Tensor:
        """The student's loss for a batch shaped like ``like`` (its values are not read); then call
        :meth:`update_fake` after the student's optimiser step."""
        _check_student(student, "(x, t)")
        return self.step_loss(student, self.draw((like,), generator, step), step)[0]

    def update_fake(self, student: Callable, average: Optional[Callable] = None) -> None:
        """The fake denoiser's ``fake_updates`` DSM updates on fresh samples of the (updated) student, from
        the draws of the last loss; ``average(grads)`` averages its gradients over processes in place."""
        if self._fake_draws is None:
            raise RuntimeError("update_fake: no draws; compute the student's loss of this step first")
        z_fake, t_fake, eps_fake = self._fake_draws
        params = list(self.fake.parameters())
        for j in range(self.fake_updates):
            with torch.no_grad():
                x = self.generate(student, z_fake[:, j])
            loss = self.fake_dsm(self.fake, x, t=t_fake[:, j], eps=eps_fake[:, j])
            self.fake_optimizer.zero_grad()
            loss.backward()
            if average is not None:
                _average_gradients(params, average)
            self.fake_optimizer.step(0)
            self.fake_loss = float(loss.detach())
        self._fake_draws = None

    def after_update(self, run: Any, step: int) -> None:
        self.update_fake(run.student, run.average if run.world > 1 else None)

    def save(self, checkpoint: _fewstep.Checkpoint) -> None:
        _save_module(checkpoint, "fake", self.fake)
        self.fake_optimizer.save(checkpoint, "fake_optimizer")

    def load(self, checkpoint: _fewstep.Checkpoint) -> None:
        _load_module(checkpoint, "fake", self.fake)
        self.fake_optimizer = _fewstep.Optimizer(list(self.fake.parameters()), self.fake_options)
        self.fake_optimizer.load(checkpoint, "fake_optimizer")


# ----------------------------------------------------------------------------------------------
# The ready loops: the one loop of fewstep.train with these losses.


class DistillResult(NamedTuple):
    """A ready loop's result."""

    student: torch.nn.Module  # the final EMA student (eval mode, no grad)
    losses: list  # the batch loss of every update, restored ones included
    students: dict  # steps N -> EMA student at the end of that round (progressive; otherwise {steps: student})
    timesteps: dict  # steps N -> that student's sampling grid (float64 tensor)


_LOOP_DOC = """
    ``**loop`` are the loop's options (:func:`fewstep.train.loss_trainer`, :func:`fewstep.train_denoiser`):
    ``batch_size`` (default 64), ``lr`` (2e-4), ``min_lr``, ``warmup``, ``decay`` (``"cosine"``; progressive:
    ``"linear"``, Salimans & Ho's), ``weight_decay``, ``ema`` (0.995; the EMA student is the result),
    ``grad_clip`` (1.0), ``seed``, ``checkpoint`` (a path: written atomically every ``checkpoint_every``
    = 500 updates and at the end, continued bit-identically with ``resume=True``), ``progress`` (False),
    ``callback`` (called with a :class:`fewstep.TrainStep` after every update) and ``distributed`` (split
    every batch across the processes of torch.distributed; default: when it is initialised).
"""


def _loop(objective: Objective, student: torch.nn.Module, data: Any, steps: int, total_steps: int,
          loop: dict) -> Any:
    if "total_steps" in loop:  # else Python's "got multiple values for keyword argument"
        raise TypeError(f"total_steps={loop['total_steps']!r}: the distill_* functions set the learning-rate "
                        f"schedule's length themselves ({total_steps}, from iterations); pass iterations instead")
    options = {"lr": 2e-4, "ema": 0.995, "checkpoint": None, "checkpoint_every": 500, "resume": True,
               "progress": False, "callback": None, "distributed": None, **loop}
    return _ready(objective, student, data, steps, total_steps=total_steps, **options)


def distill_progressive(teacher: torch.nn.Module, data: Any, schedule: _fewstep.NoiseSchedule, *,
                        prediction: str = "eps", initial_steps: int = 64, final_steps: int = 1,
                        iterations: int = 1000, student_prediction: str = "v", weighting: str = "truncated_snr",
                        time_input: str = "t", time_scale: float = 1.0, t_min: Optional[float] = None,
                        t_max: Optional[float] = None, student: Optional[torch.nn.Module] = None,
                        first_round_substeps: int = 2, init: str = "auto", **loop: Any) -> DistillResult:
    """Progressive distillation, all rounds: ``initial_steps`` -> ``initial_steps/2`` -> ... -> ``final_steps``.

    Round r trains a student with ``N = initial_steps / 2^r`` steps against a teacher running 2N DDIM
    steps (:class:`ProgressiveDistillationLoss`) for ``iterations`` updates. Where the student starts
    (``init``; docs/distillation.md, "Where a student starts"): ``"teacher"``, the teacher in function space
    (:func:`student_from_teacher`: a ``torch.jit.ScriptModule`` teacher behind the exact conversion of its
    prediction to ``student_prediction``); ``"weights"``, a copy of the teacher read as ``student_prediction``
    (well conditioned where an eps teacher's conversion is not); ``"auto"``, teacher for x0 and v
    ScriptModule teachers, weights otherwise; or ``student`` when given. After a round the student's EMA becomes the teacher (read with
    ``student_prediction``) and the next student, the optimiser is reset and the learning rate decays
    again. ``teacher`` (an ``nn.Module`` ``teacher(x, t_input)`` predicting ``prediction`` on ``schedule``)
    is never modified; ``data`` is clean data as for :func:`fewstep.train_denoiser`. ``first_round_substeps``
    (even, default 2) is how many teacher DDIM calls make round 0's target per student step: more bring
    the target closer to the teacher's ODE when the chain starts at few steps (later rounds use 2).
    """ + _LOOP_DOC + """
    Returns a :class:`DistillResult` with the final EMA student, the losses, and the EMA student and grid
    of every finished round.
    """
    if not isinstance(teacher, torch.nn.Module):
        raise TypeError(f"teacher should be a torch.nn.Module taking (x, t), got {_type_name(teacher)}")
    if not isinstance(init, str):
        raise TypeError(f"init should be 'auto', 'teacher' or 'weights', got {_type_name(init)}")
    scripted = isinstance(teacher, torch.jit.ScriptModule)
    start = _fewstep._resolve_student_start(init, prediction) if scripted or init != "auto" else "weights"
    if start == "teacher" and not scripted and student is None:
        raise ValueError("init='teacher' wraps a TorchScript teacher (fewstep.student_from_teacher); got a "
                         f"{_type_name(teacher)}: script it, or use init='weights'")
    first = student
    if student is None and start == "teacher":
        # The teacher in function space (models/student_init.h): round 0's teacher is the same function.
        first = _fewstep.student_from_teacher(teacher, schedule, prediction=prediction,
                                              student_prediction=student_prediction, time_input=time_input,
                                              time_scale=time_scale)
        teacher, prediction = first, student_prediction
    elif student is None and scripted:  # the C++ copy: a ScriptModule's deepcopy goes through autograd
        first = _fewstep.student_from_teacher(teacher, schedule, prediction=prediction, student_prediction=prediction,
                                              time_input=time_input, time_scale=time_scale)
    elif student is None:
        first = copy.deepcopy(teacher)
    rounds = _ProgressiveRounds(teacher, schedule, prediction, initial_steps, final_steps, iterations,
                                first_round_substeps=first_round_substeps, student_prediction=student_prediction,
                                weighting=weighting, time_input=time_input, time_scale=time_scale, t_min=t_min,
                                t_max=t_max)
    trainer = _loop(rounds, first, data, rounds.rounds * iterations, iterations, {"decay": "linear", **loop})
    students, grids = {}, {}
    for n, state in rounds.students.items():
        students[n] = _frozen_copy(first)
        students[n].load_state_dict(state)
        grids[n] = progressive_timesteps(schedule, n, t_min, t_max)
    return DistillResult(trainer.export(), list(trainer.impl.losses), students, grids)


def distill_knowledge(student: torch.nn.Module, x_T: torch.Tensor, x0_teacher: torch.Tensor,
                      schedule: _fewstep.NoiseSchedule, timesteps: Any, *, student_prediction: str = "x0",
                      time_input: str = "t", time_scale: float = 1.0, iterations: int = 1000,
                      **loop: Any) -> DistillResult:
    """Knowledge distillation: ``student`` (trained in place) regressed onto teacher pairs.

    ``x_T`` / ``x0_teacher`` come from :func:`teacher_rollouts`; the loss is
    :class:`KnowledgeDistillationLoss` on the grid ``timesteps``; batches are shuffled passes over the pairs.
    """ + _LOOP_DOC
    kd = KnowledgeDistillationLoss(schedule, timesteps, student_prediction, time_input, time_scale)
    trainer = _loop(kd, student, (x_T, x0_teacher), iterations, iterations, loop)
    result = trainer.export()
    return DistillResult(result, list(trainer.impl.losses), {kd.steps: result}, {kd.steps: kd.grid})


def distill_guidance(teacher: Callable, student: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     schedule: _fewstep.NoiseSchedule, num_classes: int, *, guidance_min: float = 1.0,
                     guidance_max: float = 4.0, time_input: str = "t", time_scale: float = 1.0,
                     iterations: int = 1000, **loop: Any) -> DistillResult:
    """Guidance distillation, stage one: ``student(x, t, y, w)`` (trained in place) learns the guided teacher.

    ``images`` / ``labels`` are the labelled training data; the loss is :class:`GuidanceDistillationLoss`.
    Stage two: :func:`distill_progressive` of the result.
    """ + _LOOP_DOC
    gd = GuidanceDistillationLoss(teacher, schedule, num_classes, guidance_min, guidance_max, time_input,
                                  time_scale)
    trainer = _loop(gd, student, (images, labels), iterations, iterations, loop)
    return DistillResult(trainer.export(), list(trainer.impl.losses), {}, {})


def distill_consistency(student: torch.nn.Module, data: Any, schedule: _fewstep.NoiseSchedule, *,
                        method: str = "cd", teacher: Optional[_fewstep.Denoiser] = None, iterations: int = 2000,
                        consistency: Optional[dict] = None,
                        start_sigma: Optional[float] = _fewstep.CONSISTENCY_START_SIGMA,
                        **loop: Any) -> DistillResult:
    """Consistency distillation (``method="cd"``, from ``teacher``), training (``"ct"``, ``"ict"``) or easy
    consistency tuning (``"ect"``, on the data) of ``student`` (the network F, trained in place; for CD and
    ECT normally a copy of the diffusion model's network: ECT tunes it, arXiv 2406.14548).

    The loss is :class:`ConsistencyLoss` with the options in ``consistency`` (the CT/iCT curricula and
    ECT's stages run over ``iterations`` unless ``ct_total_steps`` / ``ict_total_steps`` /
    ``ect_total_steps`` are given). The result's student
    samples in one step: ``fs.sample(fs.consistency_denoiser(result.student, schedule, sigma_data=...), x_T,
    solver="consistency", timesteps=result.timesteps[1])``, a grid from the noise level ``start_sigma``
    (sigma/alpha; default 80, clamped to the schedule's top; None: ``t_max``) to the consistency boundary
    (:func:`consistency_timesteps`).
    """ + _LOOP_DOC
    options = {"ct_total_steps": iterations, "ict_total_steps": iterations, "ect_total_steps": iterations,
               **(consistency or {})}
    cm = ConsistencyLoss(schedule, method, teacher, **options)
    trainer = _loop(cm, student, data, iterations, iterations, loop)
    result = trainer.export()
    grid = _fewstep.consistency_timesteps(schedule, start_sigma, t_end=cm.t_lo)
    return DistillResult(result, list(trainer.impl.losses), {1: result}, {1: grid})


def distill_distribution_matching(student: torch.nn.Module, teacher: torch.nn.Module, data: Any,
                                  schedule: _fewstep.NoiseSchedule, *, iterations: int = 2000,
                                  distribution_matching: Optional[dict] = None, **loop: Any) -> DistillResult:
    """Distribution matching distillation of the one-step ``student`` (trained in place; normally a
    finished one-step student, e.g. an ECT network, whose distribution is then pulled onto the teacher's).

    The loss is :class:`DistributionMatchingLoss` with the options in ``distribution_matching`` (``student``:
    ``"consistency"`` by default; ``teacher_prediction``, ``fake_lr``, ...). ``data`` only gives the batch
    shape (the teacher's data, or a callable ``data(batch_size, generator)``). The result samples in one
    step on ``timesteps[1]``: with ``solver="consistency"`` through :func:`consistency_denoiser` for a
    consistency student, else with ``ddim`` (:func:`export_student` writes either).
    """ + _LOOP_DOC
    dm = DistributionMatchingLoss(schedule, teacher, **(distribution_matching or {}))
    trainer = _loop(dm, student, data, iterations, iterations, loop)
    result = trainer.export()
    boundary = dm.consistency["t_min"] if dm.consistency is not None else 0.0
    t_end = boundary or schedule.t_min
    grid = _fewstep.consistency_timesteps(schedule, dm.start_sigma, t_end=t_end)
    return DistillResult(result, list(trainer.impl.losses), {1: result}, {1: grid})


# ----------------------------------------------------------------------------------------------
# Export.


def export_student(student: torch.nn.Module, path: Union[str, os.PathLike], *, teacher: Union[str, os.PathLike, dict],
                   prediction: str, timesteps: Any = None, solver: str = "ddim", method: str = "progressive",
                   example: Optional[tuple] = None, default_guidance: Optional[float] = None,
                   settings: Optional[dict] = None, network: Optional[dict] = None,
                   consistency: Optional[dict] = None) -> str:
    """Write ``student`` as the model file ``path`` (TorchScript + sidecar naming its own grid).

    Args:
        student: the network (an ``nn.Module``: scripted with ``torch.jit.script``, or traced with
            ``example`` inputs when scripting fails; a ``ScriptModule`` is saved as is).
        path: the ``.pt`` file to write (its directory must exist).
        teacher: the teacher's model file (its sidecar gives schedule, time input, sample shape,
            network and data) or such a sidecar as a dict.
        prediction: what the student outputs (``"x0"``, ``"v"``, ``"eps"``).
        timesteps: the student's sampling grid (e.g. ``DistillResult.timesteps[4]``); None for a
            model sampled on any grid (a guidance-distilled student).
        solver: the solver of that grid (``"ddim"`` for the progressive and KD students, ``"consistency"``
            for a consistency model).
        method: recorded in the sidecar's ``"distillation"``; settings: more entries for it.
        default_guidance: for a guidance-input student, the scale used when none is given.
        network: the student's ``{"kind", "config"}`` record (default: the teacher's).
        consistency: for a consistency model's network F, ``{"sigma_data", "t_min"}`` (the boundary): the
            model file then rebuilds ``f = c_skip x + c_out F`` as :func:`consistency_denoiser` does, e.g.
            ``fs.export_student(out.student, "ect-1step.pt", teacher=..., prediction="x0",
            solver="consistency", timesteps=out.timesteps[1], method="consistency",
            consistency={"sigma_data": 0.5, "t_min": schedule.t_min})`` after :func:`distill_consistency`.

    Written by :func:`save_model_file`: everything (the grid inside the schedule's range, one
    forward pass on a sample of the teacher's shape, ...) is validated before a byte is written, so
    a failing export leaves a previous student at ``path`` intact; then the ``.pt`` and the sidecar,
    which records the ``.pt``'s SHA-256, are replaced atomically. Returns the written path;
    ``fs.sample(path, x_T)`` then samples on the student's grid.
    """
    path = os.fspath(path)
    _check_choice(prediction, "prediction", STUDENT_PREDICTIONS)
    if isinstance(teacher, dict):
        info = _fewstep._parse_model_sidecar(teacher)
        teacher_name = info["name"]
    else:
        teacher_name = os.fspath(teacher)
        info = _fewstep.read_model_file_info(teacher_name)
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
    metadata = _fewstep._student_metadata(info["metadata"], dict(settings or {}, method=method, teacher=teacher_name))
    if default_guidance is not None:
        default_guidance = _check_real(default_guidance, "default_guidance")
    _fewstep.save_model_file(
        path, scripted, schedule=info["schedule"], prediction=prediction, sample_shape=info["sample_shape"],
        time_input=info["time_input"], time_scale=info["time_scale"],
        name=os.path.splitext(os.path.basename(path))[0],
        network=network if network is not None else info["network"],
        solver=solver if timesteps is not None else None, timesteps=timesteps, default_guidance=default_guidance,
        consistency=consistency, metadata=metadata)
    return path


def choose_grid_solver(model: _fewstep.Denoiser, x_T: torch.Tensor, timesteps: Any, reference: torch.Tensor, *,
                       candidates: Optional[Sequence[str]] = None, tolerance: float = 0.01) -> dict:
    """Which solver samples ``model`` from ``x_T`` on ``timesteps`` closest to ``reference`` (a solve from the same x_T).

    Each candidate (default :func:`grid_solver_candidates`; deterministic, one evaluation per step) samples
    on the grid; the least median coupled error wins, and a candidate within a factor ``1 + tolerance`` of
    it loses only to an earlier one. Returns ``{"solver", "trials": [{"solver", "error": CoupledError}]}``
    (metrics/solver_choice.h; docs/distillation.md, "Which solver samples a student").
    """
    grid = timesteps.tolist() if isinstance(timesteps, torch.Tensor) else list(timesteps)
    return _fewstep._choose_grid_solver(model, x_T, [float(t) for t in grid], reference,
                                        None if candidates is None else [str(c) for c in candidates],
                                        _check_real(tolerance, "tolerance"))


def choose_student_solver(student: Union[str, os.PathLike], teacher: Union[str, os.PathLike, Any], *,
                          n: int = 128, seed: int = 7000000, reference_steps: int = 200,
                          candidates: Optional[Sequence[str]] = None, tolerance: float = 0.01,
                          write: bool = True) -> dict:
    """Measure which solver samples the student file ``student`` on its own grid closest to its teacher,
    and (``write``) record it as the file's sampler, so ``fs.sample(student, x_T)`` and ``fewstep sample``
    use it (`fewstep distill progressive --student-solver auto` does this for every student it exports).

    ``n`` samples from x_T seeds ``seed + i`` are solved by the teacher (a model file path or a
    :class:`Denoiser`; UniPC with ``reference_steps`` steps on a log-SNR grid over the student's span)
    and sampled by the student on its grid with each candidate (default :func:`grid_solver_candidates`:
    ``ddim``, ``dpmpp_2m``, ``dpmpp_3m``, ``unipc``, ``deis``); the least median coupled error wins, a
    candidate within a factor ``1 + tolerance`` of it losing only to an earlier one. Returns
    ``{"solver", "trials": [{"solver", "error": CoupledError}]}``. docs/distillation.md, "Which solver
    samples a student", has why a multistep solver can beat the DDIM a student was trained with.
    ValueError, naming the file, for a student without a grid of its own, one whose own sampler is not a
    grid solver (a consistency student's ``consistency``; its file is left as it is), or a teacher that
    fails on the student's sample shape.
    """
    if isinstance(teacher, (str, os.PathLike)):
        teacher = _fewstep.load_model_file(os.fspath(teacher))["denoiser"]
    elif not isinstance(teacher, _fewstep.Denoiser):
        raise TypeError(f"teacher should be a model file path or a fewstep.Denoiser, got {_type_name(teacher)}")
    return _fewstep._choose_student_solver(
        student, teacher, _check_int(n, "n", 1), _check_int(seed, "seed", 0),
        _check_int(reference_steps, "reference_steps", 1),
        None if candidates is None else [str(c) for c in candidates], _check_real(tolerance, "tolerance"),
        bool(write))
