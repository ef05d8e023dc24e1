"""FewstepScheduler: a diffusers scheduler (SchedulerMixin, ConfigMixin) backed by a fewstep stepper.

``pipe.scheduler = FewstepScheduler.from_config(pipe.scheduler.config, solver="unipc")`` puts any fewstep
solver that evaluates the model once per step inside a stock diffusers pipeline: the pipeline keeps
calling its model at ``scheduler.timesteps``, and each ``step(model_output, t, sample)`` is one
``fewstep.Stepper.step`` with explicit state, fed that output. This module imports diffusers.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from .. import _fewstep
from .._sampling import timesteps as _timesteps
from ._diffusers import PREDICTIONS, _flow_grid, _grid, alphas_cumprod_from_config, schedule_from_config


class FewstepScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler running a fewstep solver (``solver``, ``solver_options``) step by step.

    The schedule, prediction type, spacing and final step come from the configuration, as in the
    scheduler it replaces (``timestep_spacing`` linspace/leading/trailing as the multistep schedulers
    define them, Karras/exponential/log-SNR sigmas, ``final_sigmas_type``, flow matching's shift);
    ``spacing`` overrides the spacing with any fewstep spacing (``"logsnr"``, ``"quadratic"``, ...)
    and ``final_sigma`` the final step. ``clip_sample`` and ``thresholding`` process x0 as in diffusers.
    The state is the VP state itself: ``init_noise_sigma`` is 1 and ``scale_model_input`` is the
    identity. Only solvers with one model evaluation per step fit a pipeline's loop (ValueError
    otherwise, at construction).
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Any] = None,
        prediction_type: str = "epsilon",
        rescale_betas_zero_snr: bool = False,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: str = "zero",
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
        solver: str = "unipc",
        solver_options: Optional[dict] = None,
        spacing: Optional[str] = None,
        final_sigma: Optional[str] = None,
    ) -> None:
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {sorted(PREDICTIONS)}, got {prediction_type!r}")
        self.stepper = _fewstep.Stepper(solver, dict(solver_options or {}))
        traits = self.stepper.traits
        if traits["nfe_per_step"] != 1:
            raise ValueError(f"FewstepScheduler runs solvers with one model evaluation per step (a pipeline calls its "
                             f"model once per step); solver {solver!r} makes {traits['nfe_per_step']}")
        self.schedule = schedule_from_config(self._schedule_config())
        self.init_noise_sigma = 1.0
        self.num_inference_steps: Optional[int] = None
        self.timesteps = torch.empty(0)
        self.grid = torch.empty(0, dtype=torch.float64)
        self.sigmas = torch.empty(0)
        self._state = None
        self._step_index: Optional[int] = None
        self._begin_index: Optional[int] = None

    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """As ConfigMixin.from_config; a FlowMatch* configuration (no prediction_type) predicts flow."""
        name = config.get("_class_name", "") if hasattr(config, "get") else ""
        if str(name).startswith("FlowMatch") and "prediction_type" not in config:
            kwargs.setdefault("prediction_type", "flow_prediction")
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def _schedule_config(self) -> dict:
        cfg = dict(self.config)
        if cfg["prediction_type"] == "flow_prediction":
            cfg["_class_name"] = "FlowMatchEulerDiscreteScheduler"
        return cfg

    @property
    def _flow(self) -> bool:
        return self.config.prediction_type == "flow_prediction"

    @property
    def step_index(self) -> Optional[int]:
        return self._step_index

    @property
    def begin_index(self) -> Optional[int]:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        mu: Optional[float] = None,
        timesteps: Optional[Any] = None,
        sigmas: Optional[Any] = None,
    ) -> None:
        """The grid of ``num_inference_steps`` evaluations and the timesteps the pipeline feeds its model."""
        if timesteps is not None or sigmas is not None:
            raise ValueError("FewstepScheduler.set_timesteps takes num_inference_steps (custom timesteps/sigmas: use "
                             "fewstep.sample with timesteps=)")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps should be a positive int, got {num_inference_steps!r}")
        n = num_inference_steps
        cfg = self._schedule_config()
        final = self.config.final_sigma or ("min" if self.config.final_sigmas_type == "sigma_min" else "zero")
        if self._flow:
            grid = _flow_grid(cfg, n, mu)
            if self.config.spacing is not None:
                grid = _timesteps(self.schedule, n, self.config.spacing, t_start=1.0, t_end=float(grid[-2]),
                                  final_sigma="zero")
        elif self.config.spacing is not None:
            grid = _timesteps(self.schedule, n, self.config.spacing, final_sigma=final)
        else:
            grid, _ = _grid(cfg, "UniPCMultistepScheduler", self.schedule, n, final)
        self.grid = grid
        evals = grid[:-1]
        n_train = int(self.config.num_train_timesteps)
        if self._flow:
            model_t = (evals * n_train).float()
        else:
            index = evals * n_train - 1
            rounded = torch.round(index)
            model_t = rounded.long() if torch.allclose(index, rounded, rtol=0, atol=1e-6) else index.float()
        self.timesteps = model_t.to(device) if device is not None else model_t
        tilde = torch.where(grid > 0, self.schedule.sigma_tilde(grid.clamp(min=self.schedule.t_min)),
                            torch.zeros_like(grid))
        self.sigmas = tilde.float()
        self.num_inference_steps = len(evals)
        self._state = None
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return sample

    def _init_step_index(self, timestep: Any) -> None:
        if self._begin_index is not None:
            self._step_index = self._begin_index
            return
        value = timestep.item() if isinstance(timestep, torch.Tensor) else timestep
        hits = (self.timesteps.double() - float(value)).abs() < 1e-4
        self._step_index = int(hits.nonzero()[0]) if hits.any() else 0

    def _model(self, model_output: torch.Tensor, sample: torch.Tensor) -> Any:
        """The denoiser of this step: the pipeline's model output at `sample`, converted by fewstep."""
        calls = []

        def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) > 1 or x.data_ptr() != sample.data_ptr():
                raise RuntimeError("FewstepScheduler: the solver evaluated the model somewhere else than at the "
                                   "step's sample; only solvers with one evaluation per step, at its start, fit")
            return model_output.to(x.dtype)

        time_input = "t"
        den = _fewstep.Denoiser(net, self.schedule, PREDICTIONS[self.config.prediction_type], time_input)
        if self.config.thresholding:
            den = _fewstep.threshold_x0(den, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)
        elif self.config.clip_sample:
            den = _fewstep.clip_x0(den, self.config.clip_sample_range)
        return den

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Union[SchedulerOutput, tuple]:
        """One fewstep step from the current grid time to the next, with ``model_output`` as the model at ``sample``."""
        if self.num_inference_steps is None:
            raise ValueError("FewstepScheduler: call set_timesteps before step")
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if i >= self.num_inference_steps:
            raise ValueError(f"FewstepScheduler: step {i} past the last of {self.num_inference_steps} steps")
        sample = sample.contiguous()
        if self._state is None:
            self._state = self.stepper.init(sample)
        s, t = float(self.grid[i]), float(self.grid[i + 1])
        result = self.stepper.step(self._model(model_output, sample), sample, s, t, self._state, index=i,
                                   num_steps=self.num_inference_steps, generator=generator)
        self._state = result.state
        self._step_index = i + 1
        prev = result.x.to(sample.dtype)
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t x_0 + sigma_t eps at the model timesteps given (img2img, inpainting)."""
        n_train = float(self.config.num_train_timesteps)
        t = timesteps.double().reshape(-1) / n_train if self._flow else (timesteps.double().reshape(-1) + 1) / n_train
        t = t.clamp(self.schedule.t_min, self.schedule.t_max)
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        alpha = self.schedule.alpha(t).to(original_samples.device, original_samples.dtype).reshape(shape)
        sigma = self.schedule.sigma(t).to(original_samples.device, original_samples.dtype).reshape(shape)
        return alpha * original_samples + sigma * noise

    def __len__(self) -> int:
        return int(self.config.num_train_timesteps)


__all__ = ["FewstepScheduler", "alphas_cumprod_from_config"]
