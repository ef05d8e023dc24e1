"""fewstep: few-step diffusion sampling over LibTorch.

The heavy lifting is done by the C++ extension ``fewstep._fewstep``; this package adds
the Python niceties (keyword arguments, progress bars, callback objects) on top of it.

Example::

    import torch, fewstep as fs
    sched = fs.VPLinear(beta_min=0.1, beta_max=20.0)
    model = fs.Denoiser(net, schedule=sched, prediction="eps")   # net(x, t) -> tensor
    out = fs.sample(model, torch.randn(64, 16), solver="dpmpp_2m", steps=10)
    out.x, out.nfe
"""

from __future__ import annotations

import warnings

# torch must be imported first: it loads the LibTorch libraries the extension links against
# and registers the Python types (torch.Tensor, torch.Generator) its casters use.
import torch

from . import _fewstep
from ._fewstep import (
    BatchSource,
    CoupledError,
    Denoiser,
    FmnistEvaluator,
    FmnistReport,
    GaussianMixture,
    GaussianStats,
    MixtureData,
    NoiseSchedule,
    PIDController,
    ReferenceResult,
    ScheduleFamily,
    ShuffledBatches,
    Solution,
    SolverState,
    StepController,
    Stepper,
    StepResult,
    VE,
    VPCosine,
    VPDiscrete,
    VPLinear,
    FlowMatching,
    class_histogram,
    class_histogram_kl,
    grid_solver_candidates,
    clip_x0,
    threshold_x0,
    ve_view,
    convert_prediction,
    coupled_error,
    ddim_update,
    frechet_distance,
    gaussian_stats,
    format_duration,
    image_grid,
    load_images,
    load_fashion_mnist,
    native_from_x0_eps,
    cache_directory,
    load_model_file,
    model_sidecar_path,
    network_time,
    read_model_file_info,
    save_model_file,
    upgrade_model_file,
    progressive_grid_time,
    save_image_grid,
    scaled_error_norm,
    solver_info,
    solver_names,
    solvers,
    spacings,
    step_noise_seed,
    student_from_teacher,
)
from ._resources import model_path, models_dir, shipped_models
from ._sampling import (
    CONSISTENCY_START_SIGMA,
    StepInfo,
    consistency_timesteps,
    randn,
    reference_solve,
    sample,
    sigmas,
    timesteps,
    timesteps_from_sigmas,
    validate_grid,
)
from . import train
from . import distill
from . import psld
from . import micro
from . import adapters
from .grids import OptimizedGrid, optimize_timesteps
from ._export import ExportableDenoiser, export
from .micro import DenseTrajectories, MicroSampler, dense_trajectories, distill_micro
from .psld import PsldModel, PsldProcess, psld_grid, psld_sample, psld_sampler_names
from .distill import (
    ConsistencyLoss,
    DistillResult,
    DistillStep,
    DistributionMatchingLoss,
    GuidanceDistillationLoss,
    KnowledgeDistillationLoss,
    ProgressiveDistillationLoss,
    choose_grid_solver,
    choose_student_solver,
    consistency_denoiser,
    distill_consistency,
    distill_distribution_matching,
    distill_guidance,
    distill_knowledge,
    distill_progressive,
    export_student,
    progressive_timesteps,
    teacher_rollouts,
)
from .train import (
    Checkpoint,
    DSMInputs,
    DSMLoss,
    Objective,
    Trainer,
    TrainResult,
    TrainStep,
    data_parallel,
    loss_trainer,
    native_error_scale,
    train_denoiser,
    x0_loss_weight,
)

#: EDM (Karras et al. 2022) is the VE schedule: alpha = 1, sigma = t.
EDM = VE

__version__: str = _fewstep.version()


def torch_version() -> str:
    """Return the LibTorch version fewstep was compiled against.

    At import, fewstep warns if it differs from the ``torch`` imported at run time (the
    extension's ABI is only guaranteed for the version it was built with).
    """
    return _fewstep.torch_version()


def _release(version: str) -> str:
    """``"2.8.0+cu128"`` -> ``"2.8.0"``."""
    return version.split("+", 1)[0]


def _check_torch_version() -> None:
    built = torch_version()
    if _release(built) != _release(torch.__version__):
        warnings.warn(
            f"fewstep was compiled against torch {built} but torch {torch.__version__} is imported; "
            "rebuild fewstep against this torch (pip install --no-build-isolation .) if anything fails.",
            RuntimeWarning,
            stacklevel=3,
        )


_check_torch_version()

__all__ = [
    "student_from_teacher",
    "BatchSource",
    "Checkpoint",
    "ConsistencyLoss",
    "DistributionMatchingLoss",
    "CoupledError",
    "DSMInputs",
    "DSMLoss",
    "Denoiser",
    "DenseTrajectories",
    "DistillResult",
    "DistillStep",
    "EDM",
    "ExportableDenoiser",
    "FlowMatching",
    "FmnistEvaluator",
    "FmnistReport",
    "GaussianMixture",
    "GaussianStats",
    "GuidanceDistillationLoss",
    "OptimizedGrid",
    "KnowledgeDistillationLoss",
    "MicroSampler",
    "MixtureData",
    "NoiseSchedule",
    "Objective",
    "PIDController",
    "ProgressiveDistillationLoss",
    "PsldModel",
    "PsldProcess",
    "ReferenceResult",
    "ScheduleFamily",
    "ShuffledBatches",
    "Solution",
    "SolverState",
    "StepController",
    "StepInfo",
    "StepResult",
    "Stepper",
    "TrainResult",
    "TrainStep",
    "Trainer",
    "VE",
    "VPCosine",
    "VPDiscrete",
    "VPLinear",
    "__version__",
    "adapters",
    "optimize_timesteps",
    "class_histogram",
    "class_histogram_kl",
    "clip_x0",
    "threshold_x0",
    "ve_view",
    "convert_prediction",
    "consistency_denoiser",
    "coupled_error",
    "data_parallel",
    "ddim_update",
    "dense_trajectories",
    "distill",
    "distill_consistency",
    "distill_distribution_matching",
    "distill_guidance",
    "distill_knowledge",
    "distill_micro",
    "distill_progressive",
    "export",
    "export_student",
    "choose_student_solver",
    "choose_grid_solver",
    "grid_solver_candidates",
    "frechet_distance",
    "gaussian_stats",
    "cache_directory",
    "format_duration",
    "image_grid",
    "load_images",
    "load_fashion_mnist",
    "load_model_file",
    "loss_trainer",
    "micro",
    "model_sidecar_path",
    "model_path",
    "models_dir",
    "native_error_scale",
    "native_from_x0_eps",
    "network_time",
    "progressive_grid_time",
    "progressive_timesteps",
    "psld",
    "psld_grid",
    "psld_sample",
    "psld_sampler_names",
    "randn",
    "read_model_file_info",
    "reference_solve",
    "sample",
    "save_image_grid",
    "save_model_file",
    "scaled_error_norm",
    "shipped_models",
    "sigmas",
    "solver_info",
    "solver_names",
    "solvers",
    "spacings",
    "step_noise_seed",
    "teacher_rollouts",
    "timesteps",
    "timesteps_from_sigmas",
    "consistency_timesteps",
    "CONSISTENCY_START_SIGMA",
    "torch_version",
    "train",
    "train_denoiser",
    "upgrade_model_file",
    "validate_grid",
    "x0_loss_weight",
]
