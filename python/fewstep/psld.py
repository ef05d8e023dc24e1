"""Phase-space Langevin diffusion (PSLD) from Python: the process, score models and samplers.

The C++ side is ``include/fewstep/psld/`` (maths and measured accuracy in ``docs/psld.md``)::

    import fewstep as fs
    process = fs.PsldProcess()                                   # the paper's CIFAR-10 settings
    model = fs.PsldModel.exact(fs.GaussianMixture.random(dim=2, components=3, seed=0), process)
    z_T = process.prior_sample(1000, [2])                        # [1000, 4] augmented states
    out = fs.psld_sample(model, z_T, "psld_roba", steps=49, seeds=range(1000))
    out["x"], out["nfe"]                                         # data-space samples, score evaluations
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from . import _fewstep

__all__ = ["PsldModel", "PsldProcess", "psld_grid", "psld_sample", "psld_sampler_names"]

PsldProcess = _fewstep.PsldProcess
PsldModel = _fewstep.PsldModel
psld_grid = _fewstep.psld_grid
psld_sampler_names = _fewstep.psld_sampler_names


def psld_sample(model: PsldModel, z_T: torch.Tensor, sampler: str = "psld_roba", steps: Optional[int] = None,
                timesteps: Union[torch.Tensor, Sequence[float], None] = None, spacing: str = "time",
                generator: Optional[torch.Generator] = None, seeds: Optional[Sequence[int]] = None,
                denoise: bool = True, **options: Any) -> dict:
    """Run a PSLD sampler (``psld_sampler_names()``) from the augmented state ``z_T``, in C++.

    Give ``steps`` (a grid from :func:`psld_grid` with ``spacing`` "time" or "quadratic") or an
    explicit decreasing ``timesteps``.
    Noise comes from ``generator`` or, with ``seeds``, one generator per sample. ``denoise`` ends with
    the Tweedie mean (one more score evaluation). ``options`` go to the sampler (e.g. ``lambda_s``,
    ``reuse``, ``score_x``, ``score_m`` for the splitting integrators). Returns ``{"x", "z", "nfe", "steps"}``.
    """
    if not isinstance(model, PsldModel):
        raise TypeError(f"model should be a fewstep.PsldModel, got {type(model).__name__}")
    if not isinstance(z_T, torch.Tensor):
        raise TypeError(f"z_T should be a torch.Tensor, got {type(z_T).__name__}")
    if (steps is None) == (timesteps is None):
        raise ValueError("pass exactly one of steps= or timesteps=")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps should be a positive int, got {steps!r}")
        grid = psld_grid(model.process, steps, spacing).tolist()
    else:
        grid = [float(t) for t in torch.as_tensor(timesteps, dtype=torch.float64).tolist()]
    if generator is not None and seeds is not None:
        raise ValueError("pass either generator= or seeds=, not both")
    seed_list = [int(s) for s in seeds] if seeds is not None else []
    if seeds is not None and len(seed_list) != z_T.shape[0]:
        raise ValueError(f"seeds should give one seed per sample: got {len(seed_list)} for z_T of shape "
                         f"{tuple(z_T.shape)}")
    return _fewstep.psld_sample(model, z_T, sampler, grid, generator, seed_list, bool(denoise), dict(options))
