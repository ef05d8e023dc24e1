"""Bring your own pretrained model: diffusers, k-diffusion/EDM and flow-matching models as fewstep Denoisers.

None of this needs diffusers or k-diffusion to import fewstep; a function that reads a diffusers
model or folder imports diffusers when it is called. docs/interop.md shows each path and the
table of diffusers/k-diffusion samplers with the fewstep call that reproduces each.

Example::

    import fewstep as fs
    m = fs.adapters.load_diffusers("path/to/pipeline")      # model_index.json: unet + scheduler
    out = m.sample(x_T, steps=10)                            # the scheduler's own sampler, in fewstep
    out = fs.sample(m.denoiser, x_T, solver="unipc", steps=10, spacing="logsnr")
"""

from __future__ import annotations

from ._diffusers import (
    DiffusersAdapter,
    DiffusersNetwork,
    SamplerSettings,
    alphas_cumprod_from_config,
    from_diffusers,
    load_diffusers,
    schedule_from_config,
)
from ._edm import (
    EDMPreconditioned,
    GuidedDiffusionEps,
    edm_denoiser,
    guided_diffusion_network,
    k_diffusion_denoiser,
    load_k_diffusion_sampling,
)

__all__ = [
    "DiffusersAdapter",
    "DiffusersNetwork",
    "EDMPreconditioned",
    "GuidedDiffusionEps",
    "SamplerSettings",
    "alphas_cumprod_from_config",
    "edm_denoiser",
    "from_diffusers",
    "guided_diffusion_network",
    "k_diffusion_denoiser",
    "load_k_diffusion_sampling",
    "load_diffusers",
    "schedule_from_config",
]


def __getattr__(name: str):
    # FewstepScheduler subclasses diffusers' SchedulerMixin/ConfigMixin: diffusers is imported when it is used.
    if name == "FewstepScheduler":
        from ._scheduler import FewstepScheduler

        return FewstepScheduler
    raise AttributeError(f"module 'fewstep.adapters' has no attribute {name!r}")
