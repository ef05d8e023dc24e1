"""Python layer over the C++ sampling driver: grids, progress bars and callbacks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch

from . import _fewstep

TimeGrid = Union[torch.Tensor, Sequence[float]]


@dataclass(frozen=True)
class StepInfo:
    """What the per-step callback receives after step ``index`` moved ``x`` from ``t`` to ``t_next``.

    Fields are readable as attributes (``info.t``) or as keys (``info["t"]``). ``x`` and ``x0``
    are the driver's tensors (no copies): clone them if you keep them beyond the callback.
    """

    index: int
    num_steps: int
    t: float
    t_next: float
    x: torch.Tensor
    x0: torch.Tensor
    nfe: int

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        """Field names, so that ``dict(info)`` works."""
        return list(self.__dataclass_fields__)


def timesteps(
    schedule: _fewstep.NoiseSchedule,
    steps: int,
    spacing: str = "logsnr",
    t_start: Optional[float] = None,
    t_end: Optional[float] = None,
    rho: float = 7.0,
) -> torch.Tensor:
    """Return a grid of ``steps + 1`` strictly decreasing times (float64 tensor).

    Args:
        schedule: the noise schedule whose range and log-SNR define the grid.
        steps: number of solver steps (> 0).
        spacing: ``"time"`` (uniform t), ``"logsnr"`` (uniform lambda), ``"quadratic"``,
            ``"karras"`` (rho-spacing of sigma/alpha), or, for discrete schedules,
            ``"leading"`` / ``"trailing"`` (diffusers' definitions).
        t_start: first time (default ``schedule.t_max``).
        t_end: last time (default ``schedule.t_min``).
        rho: exponent of the ``"karras"`` spacing.
    """
    return _fewstep.timesteps(schedule, steps, spacing, t_start, t_end, rho)


def validate_grid(schedule: _fewstep.NoiseSchedule, timesteps: TimeGrid) -> torch.Tensor:
    """Check an explicit grid (>= 2 finite, strictly decreasing times in the schedule's range).

    Returns it as a float64 tensor; raises ValueError naming the first offending entry.
    """
    return _fewstep.validate_grid(schedule, timesteps)


def _check_type(value: Any, expected: type, name: str, what: str) -> None:
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise TypeError(f"{name} should be {what}, got {type(value).__name__}")


def _progress_bar(total: int, solver: str) -> Any:
    from ._progress import progress_bar

    return progress_bar(total, f"fewstep {solver}")


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds should be a sequence of ints, got {type(seeds).__name__}")
    out = []
    for i, seed in enumerate(seeds):
        if isinstance(seed, torch.Tensor) and seed.dim() == 0 and not seed.is_floating_point():
            seed = int(seed)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seeds[{i}] should be an int, got {type(seed).__name__}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seeds[{i}] should be in [0, 2**64), got {seed}")
        out.append(seed)
    if not out:
        raise ValueError("seeds should not be empty")
    return out


def randn(
    shape: Union[int, Sequence[int], torch.Size],
    seeds: Sequence[int],
    dtype: Optional[torch.dtype] = None,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """Standard normal noise whose row ``i`` depends only on ``seeds[i]`` (per-sample initial noise).

    ``shape`` is the full shape, batch first, like :func:`torch.randn`; ``shape[0]`` must equal
    ``len(seeds)``. Rows are drawn in float64 on the CPU from one generator per seed, then cast to
    ``dtype`` (default ``torch.get_default_dtype()``) and moved to ``device``, so a sample's noise is the
    same whatever batch it is in, and on every device. Use with ``fewstep.sample(..., seeds=seeds)``.
    """
    seed_list = _check_seeds(seeds)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(f"shape should be a non-empty sequence of non-negative ints, got {shape!r}")
    if dims[0] != len(seed_list):
        raise ValueError(f"shape[0] should equal len(seeds): got shape {dims} and {len(seed_list)} seeds")
    out = _fewstep._randn_per_sample(list(dims[1:]), seed_list)
    return out.to(dtype=dtype if dtype is not None else torch.get_default_dtype(), device=device)


def _step_hook(bar: Any, callback: Optional[Callable[["StepInfo"], None]]) -> Optional[Callable[[dict], None]]:
    """The per-step function handed to C++: advances the progress bar and calls the user's callback."""
    if bar is None and callback is None:
        return None

    def on_step(raw: dict) -> None:
        info = StepInfo(**raw)
        if bar is not None:
            bar.set_postfix(t=f"{info.t_next:.4g}", nfe=info.nfe, refresh=False)
            bar.update(1)
        if callback is not None:
            callback(info)

    return on_step


def sample(
    model: Union[_fewstep.Denoiser, str, "os.PathLike[str]"],
    x_T: torch.Tensor,
    solver: Optional[str] = None,
    steps: Optional[int] = None,
    spacing: str = "logsnr",
    timesteps: Optional[TimeGrid] = None,
    t_start: Optional[float] = None,
    t_end: Optional[float] = None,
    lower_order_final: Optional[bool] = None,
    denoise_to_zero: bool = False,
    check_finite: bool = False,
    keep_trajectory: bool = False,
    progress: bool = False,
    callback: Optional[Callable[[StepInfo], None]] = None,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[Sequence[int]] = None,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    controller: Optional[_fewstep.StepController] = None,
    label: Union[int, torch.Tensor, None] = None,
    guidance: Optional[float] = None,
    **solver_options: Union[bool, int, float, str],
) -> _fewstep.Solution:
    """Sample from ``model`` starting at ``x_T``, with a registered solver, in C++.

    ``model`` may also be a model file (``.pt`` with its ``.json`` sidecar, as ``fewstep train`` and
    ``fewstep distill`` write them): a distilled student then samples on its own grid with its own
    solver unless ``solver``, ``steps`` or ``timesteps`` say otherwise (``fs.sample("student-4step.pt",
    x_T)`` makes 4 network calls). ``label`` and ``guidance`` condition a class-conditional model file.

    Give either ``steps`` (with ``spacing``, ``t_start``, ``t_end``; see :func:`timesteps`) or
    an explicit ``timesteps`` grid. The loop runs in C++ with the GIL released; Python networks
    and the callback retake it per call, and exceptions they raise reach the caller unchanged.

    Args:
        model: a :class:`Denoiser`, or the path of a model file.
        x_T: the starting state at ``t_start``; its dtype and device are kept throughout.
        solver: a name from :func:`solvers` (ValueError listing them otherwise); default ``"dpmpp_2m"``, or a
            student model file's own solver.
        steps: number of steps of a generated grid.
        spacing: grid spacing for ``steps`` (``"logsnr"``, ``"time"``, ``"karras"``, ...).
        timesteps: explicit decreasing grid (tensor or sequence of floats).
        t_start: start time for ``steps`` (default ``schedule.t_max``).
        t_end: end time for ``steps`` (default ``schedule.t_min``).
        lower_order_final: solver option of multistep solvers (passed only if not None).
        denoise_to_zero: after the last step, return the model's x0 prediction (one more call).
        check_finite: raise at the first step producing NaN/Inf (costs a sync per step).
        keep_trajectory: keep ``x`` at every grid point in ``Solution.trajectory``.
        progress: show a tqdm progress bar (postfix: current ``t`` and ``nfe``).
        callback: called after every step with a :class:`StepInfo`.
        generator: random generator for stochastic solvers (on ``x_T``'s device).
        seeds: one integer seed per sample (``len(seeds) == x_T.shape[0]``), instead of ``generator``:
            sample ``i`` draws its noise from its own generator seeded with ``seeds[i]``, so it does not
            depend on the batch it is in or its position (pair with :func:`randn` for ``x_T``).
        rtol, atol: adaptive step size instead of a grid, for solvers with an error estimate
            (``dpm_adaptive``, ``dpm_solver_12``, ``dpm_solver_23``, ``heun_euler``): a
            :class:`PIDController` with these tolerances. Either defaults to DPM-Solver's value
            (rtol 0.05, atol 0.0078) when only the other is given, and both do for
            ``solver="dpm_adaptive"`` without steps/timesteps.
        controller: a :class:`StepController` (e.g. ``PIDController(rtol=..., atol=..., pcoeff=0.4,
            icoeff=0.3)``) for adaptive step size, instead of rtol/atol.
        label: class label (int, or a ``[batch]`` integer tensor) for a class-conditional model file.
        guidance: guidance scale for a class-conditional model file (classifier-free guidance, or the
            guidance input of a guidance-distilled student).
        **solver_options: further solver options (bool, int, float or str).

    Returns:
        A ``Solution`` with ``.x``, ``.nfe`` (exact number of model calls, rejected attempts
        included), ``.steps``, ``.accepted``/``.rejected`` (adaptive),
        ``.timesteps`` (float64 tensor), ``.trajectory`` (if kept) and ``.stats``.
    """
    if isinstance(model, (str, os.PathLike)):
        file = _fewstep.load_model_file(os.fspath(model), label, guidance)
        model = file["denoiser"]
        if (file["timesteps"] is not None and solver is None and steps is None and timesteps is None
                and rtol is None and atol is None and controller is None):
            solver, timesteps = file["solver"], file["timesteps"]
    elif label is not None or guidance is not None:
        raise ValueError("label/guidance apply to a model file path; for a Denoiser, build it with them "
                         "(fs.Denoiser.guided or fs.load_model_file(path, label, guidance))")
    _check_type(model, _fewstep.Denoiser, "model", "a fewstep.Denoiser or a model file path")
    _check_type(x_T, torch.Tensor, "x_T", "a torch.Tensor")
    if solver is None:
        solver = "dpmpp_2m"
    _check_type(solver, str, "solver", "a str")
    if steps is not None and timesteps is not None:
        raise ValueError("pass either steps= or timesteps=, not both")
    adaptive = _adaptive_controller(solver, steps, timesteps, rtol, atol, controller)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback should be callable, got {type(callback).__name__}")
    if generator is not None:
        _check_type(generator, torch.Generator, "generator", "a torch.Generator")
    seed_list = _check_seeds(seeds) if seeds is not None else []
    if seeds is not None:
        if generator is not None:
            raise ValueError("pass either generator= or seeds=, not both")
        if x_T.dim() < 1 or len(seed_list) != x_T.shape[0]:
            raise ValueError(f"seeds should give one seed per sample: got {len(seed_list)} seeds for x_T of shape "
                             f"{tuple(x_T.shape)}")

    if adaptive is not None:
        return _sample_adaptive(model, x_T, solver, adaptive, t_start, t_end, lower_order_final, solver_options,
                                denoise_to_zero, check_finite, keep_trajectory, progress, callback, generator,
                                seed_list)

    if steps is not None:
        _check_type(steps, int, "steps", "an int")
        grid = _fewstep.timesteps(model.schedule, steps, spacing, t_start, t_end, 7.0)
    else:
        if t_start is not None or t_end is not None:
            raise ValueError("t_start/t_end apply to steps=; an explicit timesteps= grid already fixes them")
        grid = timesteps

    options = dict(solver_options)
    if lower_order_final is not None:
        options["lower_order_final"] = lower_order_final
    if steps is not None:
        # A solver may plan its own grid for `steps` (dpm_solver_fast: steps is the evaluation budget).
        planned = _fewstep._plan(model, solver, options, steps, spacing, t_start, t_end)
        if planned is not None:
            grid, options = planned

    bar = _progress_bar(len(grid) - 1, solver) if progress else None

    hook = _step_hook(bar, callback)
    try:
        return _fewstep._sample(
            model, x_T, solver, grid, options, bool(denoise_to_zero), bool(check_finite),
            bool(keep_trajectory), hook, generator, seeds=seed_list,
        )
    finally:
        if bar is not None:
            bar.close()


# DPM-Solver's adaptive defaults (Lu et al. 2022, official code): atol 0.0078 ~ 1/128 for data in [-1, 1].
DPM_SOLVER_RTOL = 0.05
DPM_SOLVER_ATOL = 0.0078


def _adaptive_controller(
    solver: str,
    steps: Optional[int],
    timesteps: Optional[TimeGrid],
    rtol: Optional[float],
    atol: Optional[float],
    controller: Optional[_fewstep.StepController],
) -> Optional[_fewstep.StepController]:
    """The controller of an adaptive run, or None for a fixed grid (ValueError if neither is asked for)."""
    tolerances = rtol is not None or atol is not None
    gridded = steps is not None or timesteps is not None
    if controller is not None and tolerances:
        raise ValueError("pass either rtol=/atol= or controller=, not both (set the tolerances on the controller)")
    if gridded and (controller is not None or tolerances):
        raise ValueError("steps=/timesteps= fix the grid while rtol=/atol=/controller= choose the steps adaptively; "
                         "pass one or the other")
    if gridded:
        return None
    if controller is not None:
        _check_type(controller, _fewstep.StepController, "controller", "a fewstep.StepController (e.g. PIDController)")
        return controller
    if not tolerances and solver != "dpm_adaptive":
        hint = ""
        if solver in _fewstep.solver_names() and _fewstep.solver_info(solver)["has_error_estimate"]:
            hint = f"; solver '{solver}' gives an error estimate, so rtol=/atol= or controller= also work"
        raise ValueError("pass steps= (with spacing=) or an explicit timesteps= grid" + hint)
    return _fewstep.PIDController(rtol=DPM_SOLVER_RTOL if rtol is None else float(rtol),
                                  atol=DPM_SOLVER_ATOL if atol is None else float(atol))


def _sample_adaptive(
    model: _fewstep.Denoiser,
    x_T: torch.Tensor,
    solver: str,
    controller: _fewstep.StepController,
    t_start: Optional[float],
    t_end: Optional[float],
    lower_order_final: Optional[bool],
    solver_options: dict,
    denoise_to_zero: bool,
    check_finite: bool,
    keep_trajectory: bool,
    progress: bool,
    callback: Optional[Callable[[StepInfo], None]],
    generator: Optional[torch.Generator],
    seed_list: list[int],
) -> _fewstep.Solution:
    options = dict(solver_options)
    if lower_order_final is not None:
        options["lower_order_final"] = lower_order_final
    bar = _progress_bar(None, solver) if progress else None  # the number of steps is not known in advance

    hook = _step_hook(bar, callback)
    try:
        return _fewstep._sample_adaptive(
            model, x_T, solver, controller, options, t_start, t_end, bool(denoise_to_zero), bool(check_finite),
            bool(keep_trajectory), hook, generator, seeds=seed_list,
        )
    finally:
        if bar is not None:
            bar.close()


def reference_solve(
    model: _fewstep.Denoiser,
    x_T: torch.Tensor,
    t_start: Optional[float] = None,
    t_end: Optional[float] = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 100000,
    first_step: float = 0.0,
) -> _fewstep.ReferenceResult:
    """Float64 adaptive Dormand-Prince 5(4) solve of the probability-flow ODE.

    Integrates in log-SNR from ``t_start`` (default ``schedule.t_max``) to ``t_end`` (default
    ``schedule.t_min``). Returns a ``ReferenceResult`` with ``.x`` (float64), ``.nfe``,
    ``.accepted`` and ``.rejected``.
    """
    _check_type(model, _fewstep.Denoiser, "model", "a fewstep.Denoiser")
    _check_type(x_T, torch.Tensor, "x_T", "a torch.Tensor")
    schedule = model.schedule
    t0 = schedule.t_max if t_start is None else t_start
    t1 = schedule.t_min if t_end is None else t_end
    return _fewstep.reference_solve(
        model, x_T, t0, t1, rtol=rtol, atol=atol, max_steps=max_steps, first_step=first_step
    )
