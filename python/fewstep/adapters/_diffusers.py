"""diffusers models and scheduler configurations as fewstep Denoisers and sampler settings.

A diffusers checkpoint is a network (a ``ModelMixin``: UNet2DModel, UNet2DConditionModel, a
transformer) plus a scheduler configuration that fixes the noise schedule (betas), what the network
predicts (``prediction_type``), the time it is fed (a discrete timestep, or ``sigma * 1000`` for
flow models) and how a sampler spaces its steps. :func:`from_diffusers` reads all of it and
returns a :class:`DiffusersAdapter` holding a ready :class:`fewstep.Denoiser`; its
:meth:`DiffusersAdapter.settings` names the fewstep solver, options and grid that reproduce the
scheduler (docs/interop.md has the table). diffusers itself is imported only by the functions
that read a diffusers object or folder.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .. import _fewstep
from .._export import ExportableDenoiser
from .._sampling import sample as _sample
from .._sampling import sigmas as _sigmas
from .._sampling import timesteps as _timesteps
from .._sampling import timesteps_from_sigmas as _timesteps_from_sigmas

#: diffusers' prediction_type -> fewstep's prediction.
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}

_MULTISTEP = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler")
_SIGMA_SCHEDULERS = ("EulerDiscreteScheduler", "HeunDiscreteScheduler")


# ---- configuration ----------------------------------------------------------------------------


def _config(scheduler: Any) -> tuple[dict, str]:
    """(config dict, scheduler class name) of a scheduler object, a config mapping or a config file."""
    if isinstance(scheduler, (str, os.PathLike)):
        path = os.fspath(scheduler)
        if os.path.isdir(path):
            path = os.path.join(path, "scheduler_config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    elif hasattr(scheduler, "config") and not isinstance(scheduler, Mapping):
        config = dict(scheduler.config)
        config.setdefault("_class_name", type(scheduler).__name__)
    elif isinstance(scheduler, Mapping):
        config = dict(scheduler)
    else:
        raise TypeError(f"scheduler should be a diffusers scheduler, its config (a mapping) or a scheduler_config.json "
                        f"path, got {type(scheduler).__name__}")
    name = config.get("_class_name", "")
    if isinstance(name, (list, tuple)):  # model_index.json's ["diffusers", "DDIMScheduler"]
        name = name[-1]
    return config, str(name)


def _betas(config: Mapping[str, Any]) -> torch.Tensor:
    """Float32 betas of a diffusers configuration, computed in float32 as diffusers computes them."""
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32)
    kind = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32)
    if kind == "scaled_linear":  # Stable Diffusion's: linear in sqrt(beta)
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021 (arXiv 2102.09672, eq. 17): alpha_bar(t) = cos^2((t/T + s)/(1 + s) pi/2),
        # s = 0.008, beta_i = min(1 - alpha_bar((i+1)/N)/alpha_bar(i/N), 0.999).
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                            dtype=torch.float32)
    raise ValueError(f"beta_schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2' (or trained_betas "
                     f"given), got beta_schedule={kind!r}")


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023 (arXiv 2305.08891, Algorithm 1): shift and scale sqrt(alpha_bar) to end at 0."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def alphas_cumprod_from_config(config: Any) -> torch.Tensor:
    """alpha_bar_n of a diffusers scheduler configuration (float64 tensor holding diffusers' float32 values).

    Reads ``num_train_timesteps``, ``beta_schedule`` (linear, scaled_linear, squaredcos_cap_v2),
    ``beta_start``/``beta_end``, ``trained_betas`` and ``rescale_betas_zero_snr`` (whose last value is
    2**-24 rather than 0, as diffusers sets it, so that sigma stays finite).
    """
    cfg, _ = _config(config)
    betas = _betas(cfg)
    if cfg.get("rescale_betas_zero_snr", False):
        betas = _rescale_zero_terminal_snr(betas)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if cfg.get("rescale_betas_zero_snr", False):
        alphas_cumprod[-1] = 2.0**-24
    return alphas_cumprod.double()


def _is_flow(config: Mapping[str, Any], name: str) -> bool:
    return name.startswith("FlowMatch") or config.get("prediction_type") == "flow_prediction" or bool(
        config.get("use_flow_sigmas", False))


def _interpolation(config: Mapping[str, Any], name: str) -> str:
    """How the discrete schedule must continue between timesteps to reproduce this scheduler exactly."""
    if _uses_sigma_formula(config):
        return "log_sigma"  # sigmas converted to timesteps by log-linear interpolation (_sigma_to_t)
    if name in _SIGMA_SCHEDULERS:
        return "sigma"  # np.interp of sigma/alpha at fractional timesteps
    return "log_alpha"  # every time is a trained timestep: any continuation agrees


def _uses_sigma_formula(config: Mapping[str, Any]) -> bool:
    return any(bool(config.get(k, False)) for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_lu_lambdas"))


#: The flow-matching range: from pure noise (t = sigma = 1, where FlowMatchEulerDiscrete starts) down to
#: well below any shifted grid's last sigma.
FLOW_T_MIN = 1e-6


def schedule_from_config(config: Any, interpolation: Optional[str] = None) -> _fewstep.NoiseSchedule:
    """The fewstep schedule of a diffusers scheduler configuration.

    VP configurations give ``VPDiscrete`` from :func:`alphas_cumprod_from_config` (timestep n at
    t = (n+1)/N), continued between timesteps as the scheduler does (``interpolation``, default
    chosen from the configuration; see ``fewstep.VPDiscrete``). Flow-matching configurations give
    ``FlowMatching(t_min=1e-6, t_max=1)``: fewstep's t is diffusers' sigma, the model is fed
    ``sigma * num_train_timesteps``.
    """
    cfg, name = _config(config)
    if _is_flow(cfg, name):
        return _fewstep.FlowMatching(FLOW_T_MIN, 1.0)
    interp = interpolation if interpolation is not None else _interpolation(cfg, name)
    return _fewstep.VPDiscrete.from_alphas_cumprod(alphas_cumprod_from_config(cfg), interp)


# ---- the network ------------------------------------------------------------------------------


class DiffusersNetwork(torch.nn.Module):
    """A diffusers model as a fewstep network ``(x, t) -> native prediction``.

    It casts ``x`` to the model's dtype, feeds the time fewstep gives it (the discrete timestep, as
    a float; with ``timestep_rounding`` "round" or "floor" made an integer the way diffusers' multistep
    schedulers do when they convert sigmas back to timesteps: ``.round()`` then an int64 cast, or the
    cast alone, which truncates), unwraps the output (``.sample`` or the
    first element of a tuple), and keeps the first ``in_channels`` channels of a learned-variance
    output (guided-diffusion style models predict [eps, variance]). ``cond`` holds conditioning
    keyword arguments (``encoder_hidden_states``, ``class_labels``, ``added_cond_kwargs``, ...) with a
    batch of 1 (broadcast) or of x; with classifier-free guidance the third argument ``c`` indexes
    the rows of [cond; uncond] (see :func:`from_diffusers`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cond: Optional[Mapping[str, Any]] = None,
        uncond: Optional[Mapping[str, Any]] = None,
        timestep_rounding: Optional[str] = None,
        learned_variance: Optional[bool] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cond = dict(cond or {})
        self.uncond = dict(uncond or {}) if uncond is not None else None
        if timestep_rounding not in (None, "round", "floor"):
            raise ValueError(f"timestep_rounding must be None, 'round' or 'floor', got {timestep_rounding!r}")
        self.timestep_rounding = timestep_rounding
        self.learned_variance = learned_variance
        try:
            params = list(inspect.signature(model.forward).parameters)
        except (TypeError, ValueError):
            params = []
        self._timestep_keyword = len(params) >= 2 and params[1] != "timestep" and "timestep" in params

    def _dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            return p.dtype
        return torch.float32

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.timestep_rounding == "round":
            t = torch.round(t)
        elif self.timestep_rounding == "floor":
            t = torch.floor(t)
        kwargs = self.cond if c is None else _gather(self.cond, self.uncond, c)
        kwargs = _batched(kwargs, x.shape[0])
        if self._timestep_keyword:  # transformers: (hidden_states, encoder_hidden_states, ..., timestep)
            out = self.model(x.to(self._dtype()), timestep=t, **kwargs)
        else:  # UNets: (sample, timestep, ...)
            out = self.model(x.to(self._dtype()), t, **kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the diffusers model returned {type(out).__name__}, expected a tensor or an output with .sample")
        split = self.learned_variance
        if split is None:
            split = out.dim() >= 2 and x.dim() >= 2 and out.shape[1] == 2 * x.shape[1]
        if split:
            out = out[:, : x.shape[1]]  # the eps half of [eps, variance]
        return out.to(x.dtype)


def _map_tensors(value: Any, fn: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _batched(kwargs: Mapping[str, Any], batch: int) -> dict:
    """Conditioning tensors of batch 1 repeated to `batch` (others passed unchanged)."""

    def expand(t: torch.Tensor) -> torch.Tensor:
        if t.dim() >= 1 and t.shape[0] == 1 and batch != 1:
            return t.expand(batch, *t.shape[1:])
        return t

    return {k: _map_tensors(v, expand) for k, v in kwargs.items()}


def _gather(cond: Mapping[str, Any], uncond: Optional[Mapping[str, Any]], index: torch.Tensor) -> dict:
    """Rows `index` of [cond; uncond] (classifier-free guidance passes row indices as its condition)."""
    if uncond is None:
        raise ValueError("classifier-free guidance needs uncond conditioning")
    rows = index.long().reshape(-1)

    def pick(a: Any, b: Any) -> Any:
        if isinstance(a, torch.Tensor):
            stacked = torch.cat([a, b.to(a.device, a.dtype)], dim=0)
            return stacked.index_select(0, rows.to(stacked.device))
        if isinstance(a, Mapping):
            return {k: pick(a[k], b[k]) for k in a}
        return a

    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond must give the same keys, got {sorted(cond)} and {sorted(uncond)}")
    return {k: pick(cond[k], uncond[k]) for k in cond}


def _rows(kwargs: Mapping[str, Any]) -> int:
    """Batch size of the conditioning (1 if it holds no tensor)."""
    sizes = set()

    def visit(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            sizes.add(int(v.shape[0]))
        return v

    _map_tensors(dict(kwargs), visit)
    if len(sizes) > 1:
        raise ValueError(f"conditioning tensors must share one batch size, got {sorted(sizes)}")
    return sizes.pop() if sizes else 1


# ---- sampler settings -------------------------------------------------------------------------


@dataclass
class SamplerSettings:
    """A fewstep solver, its options and grid, and the model view they run on.

    ``view`` is ``"vp"`` (the adapter's ``denoiser``) or ``"ve"`` (``fewstep.ve_view`` of it: Euler
    and Heun stepping in sigma/alpha, as diffusers' EulerDiscrete/HeunDiscrete do); a VE run starts
    from ``x_T * x_T_scale``.
    """

    solver: str
    options: dict = field(default_factory=dict)
    timesteps: Optional[torch.Tensor] = None
    view: str = "vp"
    x_T_scale: float = 1.0
    notes: str = ""


class DiffusersAdapter:
    """A diffusers model with its scheduler configuration, ready for fewstep.

    Attributes:
        denoiser: the :class:`fewstep.Denoiser` (VP view; time = fewstep's t, t = (n+1)/N at timestep n).
        schedule: its schedule (``VPDiscrete``).
        prediction: fewstep's name of the model's ``prediction_type``.
        config: the scheduler configuration (a dict); ``scheduler_class`` its class name.
        network: the :class:`DiffusersNetwork` the denoiser calls.
    """

    def __init__(self, network: DiffusersNetwork, config: dict, scheduler_class: str, schedule: Any,
                 denoiser: _fewstep.Denoiser, prediction: str) -> None:
        self.network = network
        self.config = config
        self.scheduler_class = scheduler_class
        self.schedule = schedule
        self.denoiser = denoiser
        self.prediction = prediction

    def __repr__(self) -> str:
        return f"DiffusersAdapter({self.scheduler_class or 'scheduler config'}, {self.denoiser.description})"

    @property
    def ve_denoiser(self) -> _fewstep.Denoiser:
        """The VE view of :attr:`denoiser` (time sigma/alpha, state x/alpha)."""
        return _fewstep.ve_view(self.denoiser)

    def settings(self, steps: int, mu: Optional[float] = None) -> SamplerSettings:
        """The fewstep solver, options and grid that reproduce the scheduler at ``steps`` inference steps.

        ``mu`` is the dynamic-shift exponent of flow-matching schedulers with ``use_dynamic_shifting``.
        ValueError for configurations fewstep does not reproduce (the message says which and why).
        """
        return scheduler_settings(self.config, self.scheduler_class, self.schedule, steps, mu)

    def timesteps(self, steps: int, mu: Optional[float] = None) -> torch.Tensor:
        """The scheduler's grid at ``steps`` inference steps, in fewstep times (see :meth:`settings`)."""
        return self.settings(steps, mu).timesteps

    def sample(self, x_T: torch.Tensor, steps: int, solver: Optional[str] = None, mu: Optional[float] = None,
               **kwargs: Any) -> Any:
        """Sample like the scheduler would, in fewstep (or with another ``solver`` on the scheduler's grid).

        ``x_T`` is standard normal noise (the VP state at the first time); extra keyword arguments go
        to :func:`fewstep.sample`. Returns its ``Solution``; a VE-view run is converted back, so
        ``.x`` is the sample either way.
        """
        s = self.settings(steps, mu)
        model = self.denoiser if s.view == "vp" else self.ve_denoiser
        options = dict(s.options) if solver is None else {}
        options.update(kwargs)
        return _sample(model, x_T * s.x_T_scale, solver=solver or s.solver, timesteps=s.timesteps, **options)


def _final_sigma(config: Mapping[str, Any], name: str) -> str:
    if name == "DDIMScheduler":
        return "zero" if config.get("set_alpha_to_one", True) else "min"
    if name == "DEISMultistepScheduler":
        return "min"
    if name == "HeunDiscreteScheduler":
        return "zero"
    value = config.get("final_sigmas_type", "zero")
    return "min" if value == "sigma_min" else "zero"


def _unsupported(what: str) -> ValueError:
    return ValueError(f"fewstep does not reproduce {what} (docs/interop.md lists what it does)")


def _grid(config: Mapping[str, Any], name: str, schedule: Any, steps: int, final: str) -> tuple[torch.Tensor, bool]:
    """The scheduler's evaluation grid in fewstep times, and whether it feeds rounded timesteps to the model."""
    spacing = config.get("timestep_spacing", "leading" if name == "DDIMScheduler" else "linspace")
    offset = int(config.get("steps_offset", 0))
    if float(config.get("lambda_min_clipped", -math.inf)) > -math.inf:
        raise _unsupported("lambda_min_clipped (it moves the last trained timestep the spacing reaches)")
    if config.get("use_beta_sigmas", False):
        raise _unsupported("use_beta_sigmas")
    n_train = int(config.get("num_train_timesteps", 1000))
    sigma_table = schedule.sigma_tilde(torch.arange(1, n_train + 1, dtype=torch.float64) / n_train)

    if name in _SIGMA_SCHEDULERS:
        if config.get("interpolation_type", "linear") != "linear":
            raise _unsupported("EulerDiscreteScheduler(interpolation_type='log_linear')")
        if config.get("timestep_type", "discrete") != "discrete":
            raise _unsupported("EulerDiscreteScheduler(timestep_type='continuous')")
        # Their "linspace" is unrounded: `steps` times uniform over [0, N-1], the last at timestep 0.
        if spacing == "linspace":
            if final == "min":
                raise _unsupported(f"{name} with timestep_spacing='linspace' and final_sigmas_type='sigma_min' "
                                   "(its last step goes from sigma_min to sigma_min, a wasted evaluation)")
            grid = _timesteps(schedule, steps, "time", final_sigma="zero")
        elif spacing in ("leading", "trailing"):
            kw = {"steps_offset": offset} if spacing == "leading" else {}
            grid = _timesteps(schedule, steps, spacing, final_sigma=final, **kw)
        else:
            raise _unsupported(f"timestep_spacing={spacing!r}")
        if _uses_sigma_formula(config):
            if final == "min":
                raise _unsupported(f"{name} with Karras/exponential sigmas and final_sigmas_type='sigma_min'")
            evals = grid[:-1]
            s_lo = float(config.get("sigma_min") or schedule.sigma_tilde(float(evals[-1])))
            s_hi = float(config.get("sigma_max") or schedule.sigma_tilde(float(evals[0])))
            kind = "karras" if config.get("use_karras_sigmas", False) else "exponential"
            grid = _timesteps_from_sigmas(schedule, _sigmas(kind, steps, s_lo, s_hi, final_sigma="zero"))
        return grid, False

    if name == "DDIMScheduler":
        if spacing == "leading":
            return _timesteps(schedule, steps, "leading", steps_offset=offset, final_sigma=final), False
        if spacing == "trailing" and n_train % steps == 0:
            return _timesteps(schedule, steps, "trailing", final_sigma=final), False
        raise _unsupported(f"DDIMScheduler with timestep_spacing={spacing!r} and {steps} steps: it steps from each "
                           f"timestep to timestep - {n_train // steps} but evaluates the next step at the next listed "
                           "timestep, which no grid does")

    if name in _MULTISTEP or name == "DPMSolverSinglestepScheduler":
        if name == "DPMSolverSinglestepScheduler":
            spacing = "linspace"
        if _uses_sigma_formula(config):
            if final == "min" and name != "DPMSolverMultistepScheduler" and name != "UniPCMultistepScheduler":
                raise _unsupported(f"{name} with Karras/exponential sigmas (its last step has zero length)")
            if final == "min":
                raise _unsupported(f"{name} with Karras/exponential sigmas and final_sigmas_type='sigma_min' "
                                   "(its last step goes from sigma_min to sigma_min)")
            s_lo, s_hi = float(sigma_table[0]), float(sigma_table[-1])
            if config.get("use_karras_sigmas", False):
                kind = "karras"
            else:  # use_exponential_sigmas, use_lu_lambdas: both uniform in log sigma
                kind = "exponential"
            grid = _timesteps_from_sigmas(schedule, _sigmas(kind, steps, s_lo, s_hi, final_sigma="zero"))
            return grid, _timestep_rounding(config, name) is not None
        names = {"linspace": "linspace", "leading": "leading_multistep", "trailing": "trailing"}
        if spacing not in names:
            raise _unsupported(f"timestep_spacing={spacing!r}")
        kw = {"steps_offset": offset} if spacing == "leading" else {}
        return _timesteps(schedule, steps, names[spacing], final_sigma=final, **kw), False

    raise _unsupported(f"scheduler {name or '(no _class_name)'}")


def _flow_grid(config: Mapping[str, Any], steps: int, mu: Optional[float]) -> torch.Tensor:
    """FlowMatchEulerDiscreteScheduler's sigmas (fewstep's flow times) for `steps`, ending at the sigma = 0 marker.

    Its end points come from the training table shifted once (float32), the `steps` values are uniform between
    them and then shifted (again): ``shift s / (1 + (shift - 1) s)``, or with dynamic shifting the
    resolution-dependent ``e^mu / (e^mu + 1/s - 1)`` (Esser et al. 2024, arXiv 2403.03206, sec. 5.3.2).
    """
    for key in ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                "stochastic_sampling"):
        if config.get(key):
            raise _unsupported(f"FlowMatchEulerDiscreteScheduler({key}=...)")
    n = int(config.get("num_train_timesteps", 1000))
    shift = float(config.get("shift", 1.0))
    dynamic = bool(config.get("use_dynamic_shifting", False))
    table = torch.linspace(1, n, n, dtype=torch.float32).flip(0) / n
    if not dynamic:
        table = shift * table / (1 + (shift - 1) * table)
    s_max, s_min = float(table[0]), float(table[-1])
    import numpy as np  # noqa: PLC0415 - numpy's linspace is diffusers' and its rounding is reproduced here

    sig = np.linspace(s_max * n, s_min * n, steps) / n
    if dynamic:
        if mu is None:
            raise ValueError("use_dynamic_shifting needs mu= (the pipeline computes it from the image size)")
        if config.get("time_shift_type", "exponential") == "exponential":
            sig = math.exp(mu) / (math.exp(mu) + (1 / sig - 1))
        else:
            sig = mu / (mu + (1 / sig - 1))
    else:
        sig = shift * sig / (1 + (shift - 1) * sig)
    grid = torch.from_numpy(np.asarray(sig)).float().double()
    return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])


def scheduler_settings(config: Any, name: Optional[str], schedule: Any, steps: int,
                       mu: Optional[float] = None) -> SamplerSettings:
    """The fewstep solver, options, grid and view reproducing diffusers scheduler `name` with `config`."""
    cfg, cls = _config(config)
    name = name or cls
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps should be a positive int, got {steps!r}")
    if name == "FlowMatchEulerDiscreteScheduler":
        # Euler in t on flow matching is DDIM (x_t = (t/s) x_s + (1 - t/s) x0_hat): fewstep's `ddim` takes the
        # same steps and, unlike the probability-flow form of `euler`, starts at t = 1 (alpha = 0).
        return SamplerSettings("ddim", {}, _flow_grid(cfg, steps, mu))
    if _is_flow(cfg, name):
        raise _unsupported(f"{name} on a flow-matching configuration (use_flow_sigmas)")
    final = _final_sigma(cfg, name)
    grid, _ = _grid(cfg, name, schedule, steps, final)
    order = int(cfg.get("solver_order", 2))
    lof = bool(cfg.get("lower_order_final", True))
    # diffusers lowers the final orders below 15 steps; fewstep's default threshold is DPM-Solver's 10.
    lower = {"lower_order_final": lof, "lower_order_final_steps": 15} if lof else {"lower_order_final": False}

    if name == "DDIMScheduler":
        return SamplerSettings("ddim", {}, grid)
    if name == "DPMSolverMultistepScheduler":
        algorithm = cfg.get("algorithm_type", "dpmsolver++")
        if cfg.get("euler_at_final", False):
            lower = {"lower_order_final": True, "lower_order_final_steps": 1 << 30}
        if algorithm == "dpmsolver++":
            if order == 1:
                return SamplerSettings("ddim", {}, grid)
            if cfg.get("solver_type", "midpoint") != "midpoint":
                raise _unsupported("DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_type='heun')")
            if order == 2:
                return SamplerSettings("dpmpp_2m", lower, grid)
            return SamplerSettings("dpmpp_3m", dict(lower, variant="official"), grid)
        if algorithm == "dpmsolver":
            if order == 1:
                return SamplerSettings("ddim", {}, grid)
            if order == 2 and cfg.get("solver_type", "midpoint") == "heun":
                # Exact integration of the linear interpolant of eps in lambda: DEIS in log rho = -lambda.
                return SamplerSettings("deis", dict(lower, order=2, variable="logrho"), grid)
            raise _unsupported(f"DPMSolverMultistepScheduler(algorithm_type='dpmsolver', solver_order={order}, "
                               f"solver_type={cfg.get('solver_type', 'midpoint')!r}) (the noise-prediction multistep "
                               "DPM-Solver; only its order-2 'heun' form is a fewstep solver: deis(variable='logrho'))")
        raise _unsupported(f"DPMSolverMultistepScheduler(algorithm_type={algorithm!r}) (stochastic)")
    if name == "DEISMultistepScheduler":
        return SamplerSettings("deis", dict(lower, order=order, variable="logrho"), grid)
    if name == "UniPCMultistepScheduler":
        if cfg.get("disable_corrector"):
            raise _unsupported("UniPCMultistepScheduler(disable_corrector=[...])")
        options = {"order": order, "variant": cfg.get("solver_type", "bh2"),
                   "predict_x0": bool(cfg.get("predict_x0", True)), "lower_order_final": lof}
        return SamplerSettings("unipc", options, grid)
    if name == "DPMSolverSinglestepScheduler":
        # Orders [1, 2] * K + [1] with lower_order_final and 2K + 1 steps: K steps of DPM-Solver++(2S) whose
        # intermediate evaluation is the grid's odd entry, then the step to sigma = 0. Uniform in log-SNR
        # (exponential sigmas) the odd entries sit at r1 = 1/2.
        if (cfg.get("algorithm_type", "dpmsolver++") != "dpmsolver++" or order != 2 or not lof or final != "zero"
                or not cfg.get("use_exponential_sigmas", False) or steps % 2 == 0):
            raise _unsupported("DPMSolverSinglestepScheduler except dpmsolver++ order 2 with use_exponential_sigmas, "
                               "lower_order_final=True, final_sigmas_type='zero' and an odd step count (its "
                               "intermediate evaluations are the grid's odd entries, which is r1 = 1/2 only on a grid "
                               "uniform in log-SNR)")
        return SamplerSettings("dpmpp_2s", {"r1": 0.5}, torch.cat([grid[:-1:2], grid[-1:]]).contiguous())
    if name in _SIGMA_SCHEDULERS:
        ve_grid = torch.where(grid > 0, schedule.sigma_tilde(grid), torch.zeros_like(grid))
        # diffusers starts them from noise * sigma_max with "linspace"/"trailing" (k-diffusion's convention,
        # a VP state scaled by sigma_max/sqrt(1 + sigma_max^2)) and from noise * sqrt(1 + sigma_max^2) otherwise.
        s_max = float(ve_grid[0])
        spacing = cfg.get("timestep_spacing", "linspace")
        x_T_scale = s_max if spacing in ("linspace", "trailing") else math.sqrt(1.0 + s_max**2)
        solver = "euler" if name == "EulerDiscreteScheduler" else "heun"
        return SamplerSettings(solver, {}, ve_grid, view="ve", x_T_scale=x_T_scale)
    raise _unsupported(f"scheduler {name}")


# ---- entry points -----------------------------------------------------------------------------


def _timestep_rounding(config: Mapping[str, Any], name: str) -> Optional[str]:
    """How the scheduler makes integers of the timesteps it computes from sigmas (None: it feeds them as floats).

    The multistep schedulers round Karras and log-SNR timesteps (except for squaredcos_cap_v2) and then cast
    every timestep to int64, which truncates the ones not rounded; EulerDiscrete/HeunDiscrete keep floats.
    """
    if name in _SIGMA_SCHEDULERS or not _uses_sigma_formula(config):
        return None
    rounded = (config.get("use_karras_sigmas", False) or config.get("use_lu_lambdas", False)) and config.get(
        "beta_schedule") != "squaredcos_cap_v2"
    return "round" if rounded else "floor"


def from_diffusers(
    model: torch.nn.Module,
    scheduler: Any,
    cond: Optional[Mapping[str, Any]] = None,
    uncond: Optional[Mapping[str, Any]] = None,
    guidance_scale: Optional[float] = None,
    learned_variance: Optional[bool] = None,
    timestep_rounding: Optional[str] = "auto",
) -> DiffusersAdapter:
    """A diffusers model and its scheduler (object, config mapping or ``scheduler_config.json``) as a fewstep model.

    Args:
        model: any diffusers ``ModelMixin`` called as ``model(x, timestep, **cond)`` (UNet2DModel,
            UNet2DConditionModel, transformers with that signature).
        scheduler: the scheduler whose configuration fixes the schedule, the prediction type and the
            sampler :meth:`DiffusersAdapter.settings` reproduces.
        cond: conditioning keyword arguments passed through to the model (``encoder_hidden_states``,
            ``class_labels``, ``added_cond_kwargs``...), batch 1 or the batch of x.
        uncond, guidance_scale: classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598) through
            fewstep's batched guidance wrapper: one model call on [x; x] with [cond; uncond] per evaluation.
        learned_variance: keep the first half of the output channels (default: when the output has twice
            the input's channels, or the config's ``variance_type`` says learned).
        timestep_rounding: None, "round" or "floor": how the model's timesteps are made integers (default: as
            the scheduler does; see :class:`DiffusersNetwork`).
    """
    cfg, name = _config(scheduler)
    prediction_type = cfg.get("prediction_type", "flow_prediction" if name.startswith("FlowMatch") else "epsilon")
    if prediction_type not in PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {sorted(PREDICTIONS)}, got {prediction_type!r}")
    schedule = schedule_from_config(cfg)
    prediction = PREDICTIONS[prediction_type]
    if learned_variance is None and cfg.get("variance_type") in ("learned", "learned_range"):
        learned_variance = True
    rounding = _timestep_rounding(cfg, name) if timestep_rounding == "auto" else timestep_rounding
    guided = guidance_scale is not None
    if guided and uncond is None:
        raise ValueError("guidance_scale needs uncond= (the unconditional conditioning, e.g. empty-prompt embeddings)")
    if not guided and uncond is not None:
        raise ValueError("uncond= is only used with guidance_scale=")
    network = DiffusersNetwork(model, cond, uncond if guided else None, rounding, learned_variance)
    # Discrete VP models are fed their timestep; flow models sigma * num_train_timesteps (sigma = fewstep's t).
    flow = _is_flow(cfg, name)
    time_input, time_scale = ("t", float(cfg.get("num_train_timesteps", 1000))) if flow else ("index", 1.0)
    if guided:
        n_cond = _rows(cond or {})
        n_uncond = _rows(uncond)
        c = torch.arange(n_cond)
        u = n_cond + torch.arange(n_uncond)
        denoiser = _fewstep.Denoiser.guided(network, schedule=schedule, cond=c, uncond=u,
                                            guidance_scale=float(guidance_scale), prediction=prediction,
                                            time_input=time_input, time_scale=time_scale)
    else:
        denoiser = ExportableDenoiser(network, schedule, prediction, time_input, time_scale,
                                      conditioning=list(cond or {}), source=f"diffusers {type(model).__name__}")
    return DiffusersAdapter(network, cfg, name, schedule, denoiser, prediction)


def load_diffusers(
    path: Union[str, os.PathLike],
    cond: Optional[Mapping[str, Any]] = None,
    uncond: Optional[Mapping[str, Any]] = None,
    guidance_scale: Optional[float] = None,
    torch_dtype: Optional[torch.dtype] = None,
) -> DiffusersAdapter:
    """A diffusers pipeline folder (``model_index.json``) or model folder + scheduler, in one call.

    Reads ``model_index.json``, loads its ``unet`` (or ``transformer``) with diffusers'
    ``from_pretrained`` and its ``scheduler`` configuration, and returns :func:`from_diffusers` of them.
    Text encoders are not run: pass prompt embeddings as ``cond``/``uncond``.
    """
    import diffusers  # noqa: PLC0415 - optional dependency

    root = os.fspath(path)
    index_path = os.path.join(root, "model_index.json")
    if not os.path.isfile(index_path):
        raise ValueError(f"load_diffusers: {root!r} has no model_index.json (a diffusers pipeline folder)")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    component = next((c for c in ("unet", "transformer") if c in index and index[c] and index[c][1]), None)
    if component is None:
        raise ValueError(f"load_diffusers: {index_path} names neither a 'unet' nor a 'transformer'")
    library, class_name = index[component]
    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ValueError(f"load_diffusers: diffusers has no class {class_name!r} (from {library}, {index_path})")
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    model = cls.from_pretrained(os.path.join(root, component), **kwargs).eval()
    scheduler_dir = os.path.join(root, "scheduler")
    config, _ = _config(scheduler_dir)
    if "scheduler" in index and index["scheduler"]:
        config["_class_name"] = index["scheduler"][1]
    return from_diffusers(model, config, cond=cond, uncond=uncond, guidance_scale=guidance_scale)
