"""Python layer over the C++ sampling request (sample/request.h): argument types, progress bars, callbacks."""

from __future__ import annotations

import logging
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
    steps_offset: Optional[int] = None,
    final_sigma: str = "min",
) -> torch.Tensor:
    """Return a grid of ``steps + 1`` strictly decreasing times (float64 tensor).

    Args:
        schedule: the noise schedule whose range and log-SNR define the grid.
        steps: number of solver steps (> 0).
        spacing: ``"time"`` (uniform t), ``"logsnr"`` (uniform lambda), ``"quadratic"``,
            ``"karras"`` (rho-spacing of sigma/alpha), or, for discrete schedules, diffusers'
            ``"leading"`` (DDIM, Euler), ``"leading_multistep"`` (DPMSolverMultistep, UniPC, DEIS),
            ``"linspace"`` (the multistep schedulers' default) and ``"trailing"``.
        t_start: first time (default ``schedule.t_max``).
        t_end: last time (default ``schedule.t_min``).
        rho: exponent of the ``"karras"`` spacing.
        steps_offset: diffusers' ``steps_offset`` of the leading spacings (default 1).
        final_sigma: ``"min"`` ends at ``t_end``; ``"zero"`` ends with the marker 0.0, a last step to
            sigma = 0 that returns the previous evaluation's x0 (diffusers' ``final_sigmas_type="zero"``);
            the grid still costs ``steps`` evaluations (docs/interop.md).
    """
    return _fewstep.timesteps(schedule, steps, spacing, t_start, t_end, rho, steps_offset, final_sigma)


def sigmas(
    kind: str,
    steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    final_sigma: str = "min",
) -> torch.Tensor:
    """Noise levels sigma/alpha as k-diffusion users know them (float64, decreasing).

    ``kind`` is ``"karras"``, ``"exponential"``, ``"polyexponential"`` or an Align Your Steps table
    (``"ays_sd15"``, ``"ays_sdxl"``, ``"ays_svd"``, arXiv 2404.14507, log-linearly resampled to
    ``steps``). ``steps + 1`` values from ``sigma_max`` to ``sigma_min``; with ``final_sigma="zero"``,
    ``steps`` values then 0, as ``k_diffusion.sampling.get_sigmas_karras(steps, ...)`` returns them.
    Turn them into a grid of any schedule with :func:`timesteps_from_sigmas`.
    """
    return _fewstep.sigmas(kind, steps, sigma_min, sigma_max, rho, final_sigma)


def timesteps_from_sigmas(schedule: _fewstep.NoiseSchedule, sigmas: TimeGrid, quantize: bool = False) -> torch.Tensor:
    """The grid of ``schedule`` at the noise levels ``sigmas`` (sigma/alpha; a final 0 stays the sigma = 0 marker).

    With ``quantize`` (discrete schedules) each time moves to the trained timestep nearest in
    log-SNR, a repeated one moving one timestep up (from the small-sigma end, where sigma schedules are
    densest), so the grid keeps its length without duplicates.
    """
    return _fewstep.timesteps_from_sigmas(schedule, sigmas, quantize)


CONSISTENCY_START_SIGMA: float = _fewstep.CONSISTENCY_START_SIGMA


def consistency_timesteps(
    schedule: _fewstep.NoiseSchedule,
    start_sigma: Optional[float] = CONSISTENCY_START_SIGMA,
    intermediate_sigmas: TimeGrid = (),
    t_end: Optional[float] = None,
) -> torch.Tensor:
    """A consistency model's sampling grid for the ``consistency`` solver (float64, decreasing).

    It starts at the time whose sigma/alpha is ``start_sigma`` (default 80, EDM's sigma_max: ECT and sCM
    draw their training levels from a lognormal with 0.3% of its mass above it; a start above the
    schedule's top is ``t_max``; None: ``t_max``), re-noises at the ``intermediate_sigmas`` (one per
    extra step, decreasing, below the start) and ends at ``t_end`` (default ``t_min``, the consistency
    boundary). ``fewstep distill consistency --start-sigma`` writes its students' grids with it
    (docs/distillation.md, "Where a consistency sampler starts"). ValueError names a bad level.
    """
    return _fewstep.consistency_timesteps(schedule, start_sigma, intermediate_sigmas, t_end)


def validate_grid(schedule: _fewstep.NoiseSchedule, timesteps: TimeGrid, allow_final_zero: bool = False) -> torch.Tensor:
    """Check an explicit grid (>= 2 finite, strictly decreasing times in the schedule's range).

    With ``allow_final_zero`` the last time may be the sigma = 0 marker 0.0 (``final_sigma="zero"``).
    Returns it as a float64 tensor; raises ValueError naming the first offending entry.
    """
    return _fewstep.validate_grid(schedule, timesteps, allow_final_zero)


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
    same whatever batch it is in, and on every device. Use with ``fewstep.sample(..., seeds=seeds)``, whose
    step noise comes from other streams of the same seeds (:func:`step_noise_seed`, docs/sampling.md).
    """
    seed_list = _check_seeds(seeds)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(f"shape should be a non-empty sequence of non-negative ints, got {shape!r}")
    if dims[0] != len(seed_list):
        shown = dims if len(dims) <= 8 else f"of {len(dims)} entries, starting {dims[:4]}"
        hint = (f"; the arguments look swapped: call randn(shape, seeds), here perhaps "
                f"randn(({', '.join(map(str, (len(dims), *seed_list)))}), seeds)"
                if len(dims) > 8 and len(seed_list) <= 8 else "")
        raise ValueError(f"shape[0] should equal len(seeds): got shape {shown} and {len(seed_list)} seeds{hint}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype should be a real floating-point torch.dtype (torch.float32, torch.float64, ...), "
                        f"got {dtype!r}")
    out = _fewstep._randn_per_sample(list(dims[1:]), seed_list)
    return out.to(dtype=dtype if dtype is not None else torch.get_default_dtype(), device=device)


def _step_hook(progress: bool, solver: str,
               callback: Optional[Callable[["StepInfo"], None]]) -> tuple[Optional[Callable[[dict], None]], list]:
    """The per-step function handed to C++ (advances a progress bar, calls the user's callback) and a
    one-element list that receives the bar, made at the first step once the number of steps is known."""
    bars: list = []
    if not progress and callback is None:
        return None, bars

    def on_step(raw: dict) -> None:
        info = StepInfo(**raw)
        if progress:
            if not bars:  # num_steps is -1 when a controller chooses the steps
                bars.append(_progress_bar(info.num_steps if info.num_steps >= 0 else None, solver))
            bars[0].set_postfix(t=f"{info.t_next:.4g}", nfe=info.nfe, refresh=False)
            bars[0].update(1)
        if callback is not None:
            callback(info)

    return on_step, bars


def sample(
    model: Union[_fewstep.Denoiser, str, "os.PathLike[str]"],
    x_T: torch.Tensor,
    solver: Optional[str] = None,
    steps: Optional[int] = None,
    spacing: Optional[str] = None,
    timesteps: Optional[TimeGrid] = None,
    t_start: Optional[float] = None,
    t_end: Optional[float] = None,
    lower_order_final: Optional[bool] = None,
    final_sigma: str = "min",
    steps_offset: Optional[int] = None,
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
    nfe: Optional[int] = None,
    grid: str = "tuned",
    **solver_options: Union[bool, int, float, str],
) -> _fewstep.Solution:
    """Sample from ``model`` starting at ``x_T``, with a registered solver, in C++.

    The arguments make one sampling request (docs/sampling.md), interpreted in C++ exactly as
    ``fewstep sample`` and the C++ ``SampleRequest`` interpret theirs: the same request spends the same
    NFE and gives the same bits through every door.

    ``model`` may also be a model file (``.pt`` with its ``.json`` sidecar, as ``fewstep train`` and
    ``fewstep distill`` write them): a distilled student then samples on its own grid unless ``steps``,
    ``nfe``, ``timesteps`` or a tolerance say otherwise, and with its own solver (``ddim``,
    ``consistency``) unless ``solver`` does (``fs.sample("student-4step.pt", x_T)`` makes 4 network
    calls; ``steps=3`` makes 3 with the student's solver). ``label`` and ``guidance`` condition a
    class-conditional model file.

    Say how to step with one of ``steps`` (with ``spacing``, ``t_start``, ``t_end``; see :func:`timesteps`),
    ``nfe``, an explicit ``timesteps`` grid, or adaptive step control (``rtol``/``atol`` or
    ``controller``). The loop runs in C++ with the GIL released; Python networks and the callback retake
    it per call, and exceptions they raise reach the caller unchanged.

    Args:
        model: a :class:`Denoiser`, or the path of a model file (loaded on ``x_T``'s device, in its dtype).
        x_T: the starting state at ``t_start``; its dtype and device are kept throughout.
        solver: a name from :func:`solvers` (ValueError listing them otherwise); default ``"dpmpp_2m"``, or a
            student model file's own solver.
        steps: steps of a generated grid, as the solver reads them (its plan): grid steps for most solvers,
            the evaluation budget for ``dpm_solver_fast``, the budget of a ``micro`` sampler file (whose
            step-size head then places the steps).
        spacing: grid spacing for ``steps`` (``"logsnr"``, the default, ``"time"``, ``"karras"``, ...). Passing
            it also overrides a model file's tuned grid.
        timesteps: explicit decreasing grid (tensor or sequence of floats).
        t_start: start time for ``steps`` / adaptive runs (default ``schedule.t_max``).
        t_end: end time for ``steps`` / adaptive runs (default ``schedule.t_min``).
        lower_order_final: solver option of multistep solvers (passed only if not None).
        final_sigma: ``"min"`` (default) or ``"zero"``: with ``steps``, how the grid ends (see :func:`timesteps`).
        steps_offset: with ``steps`` and a leading spacing, diffusers' ``steps_offset`` (default 1).
        denoise_to_zero: after the last step, return the model's x0 prediction (one more call).
        check_finite: raise at the first step producing NaN/Inf (costs a sync per step).
        keep_trajectory: keep ``x`` at every grid point in ``Solution.trajectory`` (UniPC: the corrected
            values).
        progress: show a tqdm progress bar (postfix: current ``t`` and ``nfe``).
        callback: called after every step with a :class:`StepInfo` (UniPC: once the next step has
            corrected ``x``, with the corrected value).
        generator: random generator for stochastic solvers (on ``x_T``'s device).
        seeds: the per-sample seeds of ``x_T`` (``len(seeds) == x_T.shape[0]``; pair with :func:`randn`),
            instead of ``generator``: sample ``i`` draws its step noise from its own stream, derived from
            ``seeds[i]`` (:func:`step_noise_seed`) and never equal to its ``x_T`` draw, so it does not
            depend on the batch it is in or its position.
        rtol, atol: adaptive step size instead of a grid, for solvers with an error estimate
            (``dpm_adaptive``, ``dpm_solver_12``, ``dpm_solver_23``, ``heun_euler``): a
            :class:`PIDController` with these tolerances. Either defaults to DPM-Solver's value
            (rtol 0.05, atol 0.0078) when only the other is given, and both do for
            ``solver="dpm_adaptive"`` without steps/nfe/timesteps.
        controller: a :class:`StepController` (e.g. ``PIDController(rtol=..., atol=..., pcoeff=0.4,
            icoeff=0.3)``) for adaptive step size, instead of rtol/atol.
        label: class label (int, or a ``[batch]`` integer tensor) for a class-conditional model file.
        guidance: guidance scale for a class-conditional model file (classifier-free guidance, or the
            guidance input of a guidance-distilled student).
        nfe: an evaluation budget instead of ``steps``: the step count that spends exactly ``nfe`` model
            evaluations (ValueError if the solver cannot).
        grid: ``"tuned"`` (default): with ``steps``/``nfe`` and a model file path, sample on the file's tuned grid
            for this solver, options and NFE when it has one (:func:`optimize_timesteps`, docs/grids.md;
            ``Solution.tuned_grid`` says so and the ``fewstep`` logger logs it); ``"default"``: the grid
            ``spacing`` makes.
        **solver_options: further solver options (bool, int, float or str).

    Returns:
        A ``Solution`` with ``.x``, ``.nfe`` (exact number of model calls, rejected attempts
        included), ``.steps``, ``.accepted``/``.rejected`` (adaptive),
        ``.timesteps`` (float64 tensor), ``.trajectory`` (if kept) and ``.stats``.
    """
    model_solver, model_timesteps, model_tuned_grids, model_sample_shape = "", None, None, []
    if grid not in ("tuned", "default"):
        raise ValueError(f"grid should be 'tuned' or 'default', got {grid!r}")
    if isinstance(model, (str, os.PathLike)):
        _check_type(x_T, torch.Tensor, "x_T", "a torch.Tensor")
        # The network goes where x_T is, in its dtype (docs/gpu.md).
        file = _fewstep.load_model_file(os.fspath(model), label, guidance, device=x_T.device, dtype=x_T.dtype)
        model = file["denoiser"]
        model_tuned_grids = file["tuned_grids"]
        model_sample_shape = file["sample_shape"]
        if file["timesteps"] is not None:
            model_solver, model_timesteps = file["solver"] or "", file["timesteps"]
    elif label is not None or guidance is not None:
        raise ValueError("label/guidance apply to a model file path; for a Denoiser, build it with them "
                         "(fs.Denoiser.guided or fs.load_model_file(path, label, guidance))")
    _check_type(model, _fewstep.Denoiser, "model", "a fewstep.Denoiser or a model file path")
    _check_type(x_T, torch.Tensor, "x_T", "a torch.Tensor")
    if solver is not None:
        _check_type(solver, str, "solver", "a str")
    if steps is not None:
        _check_type(steps, int, "steps", "an int")
    if nfe is not None:
        _check_type(nfe, int, "nfe", "an int")
    if controller is not None:
        _check_type(controller, _fewstep.StepController, "controller", "a fewstep.StepController (e.g. PIDController)")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback should be callable, got {type(callback).__name__}")
    if generator is not None:
        _check_type(generator, torch.Generator, "generator", "a torch.Generator")
    seed_list = _check_seeds(seeds) if seeds is not None else []
    options = dict(solver_options)
    if lower_order_final is not None:
        options["lower_order_final"] = lower_order_final

    hook, bars = _step_hook(progress, solver or model_solver or "sample", callback)
    try:
        solution = _fewstep._sample(
            model, x_T, solver=solver or "", solver_options=options, steps=steps, nfe=nfe, timesteps=timesteps,
            spacing="logsnr" if spacing is None else spacing, t_start=t_start, t_end=t_end, steps_offset=steps_offset, final_sigma=final_sigma,
            rtol=None if rtol is None else float(rtol), atol=None if atol is None else float(atol),
            controller=controller, model_solver=model_solver, model_timesteps=model_timesteps,
            model_tuned_grids=model_tuned_grids, model_sample_shape=model_sample_shape,
            use_tuned_grid=grid == "tuned" and spacing is None,
            denoise_to_zero=bool(denoise_to_zero), check_finite=bool(check_finite),
            keep_trajectory=bool(keep_trajectory), callback=hook, generator=generator, seeds=seed_list,
        )
    finally:
        for bar in bars:
            bar.close()
    if solution.tuned_grid:
        logging.getLogger("fewstep").info("fs.sample: using the model file's tuned grid for %s at NFE %d "
                                          "(grid='default' or spacing= for a generated one)",
                                          solver or model_solver or "dpmpp_2m", solution.nfe)
    return solution


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
