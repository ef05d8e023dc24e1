"""TorchScript out: a Python model (an adapter, a Denoiser that keeps its network, an nn.Module) as a model file.

:func:`export` traces (or keeps, if already scripted) the network and writes it with its sidecar through
the library's one model-file writer (``fs.save_model_file``, docs/model_files.md), so ``fewstep sample``,
``fewstep eval``, ``fewstep-bench`` and C++ programs (``fewstep::load_model_file``) run it without
Python. docs/interop.md shows the paths and the limits of a trace.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from . import _fewstep


class ExportableDenoiser(_fewstep.Denoiser):
    """A :class:`fewstep.Denoiser` that keeps its network and how it reads it, so :func:`export` can write it.

    The adapters (``fs.adapters.edm_denoiser``, ``k_diffusion_denoiser``, ``guided_diffusion_network``,
    ``from_diffusers(...).denoiser``) return these; it is a Denoiser in every other respect.
    """

    def __init__(self, net: torch.nn.Module, schedule: _fewstep.NoiseSchedule, prediction: str = "eps",
                 time_input: str = "t", time_scale: float = 1.0, *, conditioning: Optional[Sequence[str]] = None,
                 source: Optional[str] = None) -> None:
        super().__init__(net, schedule, prediction, time_input, time_scale)
        self.network = net
        self.prediction = prediction
        self.time_input = time_input
        self.time_scale = float(time_scale)
        #: keyword arguments fixed at construction (conditioning baked into a trace)
        self.conditioning = sorted(conditioning or [])
        self.source = source or type(net).__name__


def _default_sample_shape(net: Any) -> Optional[list]:
    """(in_channels, H, W) of a diffusers 2-D model from its config (sample_size), else None."""
    model = getattr(net, "model", net)
    config = getattr(model, "config", None)
    if config is None:
        return None
    channels = config.get("in_channels") if hasattr(config, "get") else None
    size = config.get("sample_size") if hasattr(config, "get") else None
    if channels is None or size is None:
        return None
    if isinstance(size, int):
        return [int(channels), size, size]
    return [int(channels)] + [int(s) for s in size]


def _resolve(model: Any, schedule: Any, prediction: Optional[str], time_input: Optional[str],
             time_scale: Optional[float]) -> dict:
    """What to export: the network, its schedule and how it is read, and where it came from."""
    from .adapters._diffusers import DiffusersAdapter  # noqa: PLC0415 - the adapters import this module

    if isinstance(model, DiffusersAdapter):
        if model.network.uncond is not None:
            raise ValueError("export: an adapter with classifier-free guidance (guidance_scale=) cannot be exported; "
                             "export the conditional model (from_diffusers(model, scheduler, cond=...)) and sample it "
                             "unguided, or bake the guidance into your own nn.Module and export that")
        model = model.denoiser
    if isinstance(model, ExportableDenoiser):
        given = {"schedule": schedule, "prediction": prediction, "time_input": time_input, "time_scale": time_scale}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ValueError(f"export: {', '.join(extra)} come from the model ({model.description}); do not pass them")
        return {"net": model.network, "schedule": model.schedule, "prediction": model.prediction,
                "time_input": model.time_input, "time_scale": model.time_scale, "conditioning": model.conditioning,
                "source": model.source}
    if isinstance(model, _fewstep.Denoiser):
        raise TypeError("export: this fewstep.Denoiser wraps a Python callable it cannot hand back; pass the "
                        "torch.nn.Module itself with schedule=, prediction= (and time_input=, time_scale=), or an "
                        "adapter from fewstep.adapters")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export: model should be a fewstep.adapters adapter or Denoiser, or a torch.nn.Module, got "
                        f"{type(model).__name__}")
    if schedule is None or prediction is None:
        raise ValueError("export: a torch.nn.Module needs schedule= and prediction= (how its output is read)")
    return {"net": model, "schedule": schedule, "prediction": prediction, "time_input": time_input or "t",
            "time_scale": 1.0 if time_scale is None else float(time_scale), "conditioning": [],
            "source": type(model).__name__}


def _trace(net: torch.nn.Module, shape: list, t_in: float, batch: int, dtype: torch.dtype) -> torch.jit.ScriptModule:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([batch] + shape, generator=gen, dtype=torch.float64).to(dtype)
    t = torch.full((batch,), t_in, dtype=dtype)
    with warnings.catch_warnings():
        # Python control flow on tensors (diffusers' shape checks) is frozen into the trace; export checks the
        # trace against the module itself on another batch size and time instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            return torch.jit.trace(net, (x, t), check_trace=False)


def _check_trace(net: Any, traced: Any, shape: list, times: Sequence[float], dtype: torch.dtype) -> float:
    """Largest |traced - eager| relative to max |eager| over two batch sizes and the given network times."""
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    with torch.no_grad():
        for batch, t_in in zip((1, 3), times):
            x = torch.randn([batch] + shape, generator=gen, dtype=torch.float64).to(dtype)
            t = torch.full((batch,), t_in, dtype=dtype)
            a, b = net(x, t), traced(x, t)
            if not isinstance(b, torch.Tensor) or b.shape != a.shape:
                raise ValueError(f"export: the trace returns {getattr(b, 'shape', type(b).__name__)} where the module "
                                 f"returns {tuple(a.shape)} (batch {batch}); the network's Python control flow depends "
                                 "on its input, script it with torch.jit.script instead")
            scale = max(float(a.abs().max()), 1e-30)
            worst = max(worst, float((a - b).abs().max()) / scale)
    return worst


def export(
    model: Any,
    path: Union[str, "os.PathLike[str]"],
    *,
    sample_shape: Optional[Sequence[int]] = None,
    schedule: Optional[_fewstep.NoiseSchedule] = None,
    prediction: Optional[str] = None,
    time_input: Optional[str] = None,
    time_scale: Optional[float] = None,
    name: Optional[str] = None,
    solver: Optional[str] = None,
    timesteps: Any = None,
    metadata: Optional[Mapping[str, Any]] = None,
    trace_batch: int = 2,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Write ``model`` as a TorchScript model file + sidecar that C++ runs without Python.

    Args:
        model: an adapter from :mod:`fewstep.adapters` (``from_diffusers``/``load_diffusers``'s adapter, or the
            Denoisers of ``edm_denoiser``, ``k_diffusion_denoiser``, ``guided_diffusion_network``), or a
            ``torch.nn.Module``/``ScriptModule`` ``forward(x, t) -> prediction`` with ``schedule=`` and
            ``prediction=`` (and ``time_input=``, ``time_scale=``; an adapter brings its own).
        path: the ``.pt`` to write; the sidecar goes beside it (``fs.model_sidecar_path``).
        sample_shape: one sample without the batch; default from a diffusers model's config
            (``in_channels``, ``sample_size``).
        name, solver, timesteps, metadata: as for :func:`fewstep.save_model_file` (a grid of the model's own).
        trace_batch: the batch of the example the network is traced with (a trace records the operations run
            on it; export then checks the trace against the module at batches 1 and 3 and two other times).
        dtype: the dtype of the example input (float32). A trace keeps the dtype casts it saw: load the file
            in this dtype.

    A module that is not a ``ScriptModule`` is traced with ``torch.jit.trace``: conditioning keyword
    arguments held by the adapter (``cond=``, ...) become constants of the file (recorded in the sidecar's
    ``export.conditioning``), Python branches on tensor values are frozen at the example's, and classifier-
    free guidance adapters are refused. ValueError when the trace disagrees with the module beyond float
    round-off; nothing is written then. Returns the sidecar as a dict.
    """
    from . import save_model_file  # noqa: PLC0415

    r = _resolve(model, schedule, prediction, time_input, time_scale)
    net, sched = r["net"], r["schedule"]
    shape = list(sample_shape) if sample_shape is not None else _default_sample_shape(net)
    if shape is None:
        raise ValueError("export: pass sample_shape= (one sample without the batch); it is not in the model's config")
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"export: sample_shape must be positive ints, got {shape}")
    if not isinstance(trace_batch, int) or trace_batch < 1:
        raise ValueError(f"export: trace_batch must be a positive int, got {trace_batch!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"export: dtype must be torch.float32 or torch.float64, got {dtype}")

    def net_time(t: float) -> float:
        return _fewstep.network_time(sched, t, r["time_input"], r["time_scale"])

    lo, hi = sched.t_min, sched.t_max
    traced_how = "scripted"
    if isinstance(net, torch.jit.ScriptModule):
        scripted = net
    else:
        was_training = net.training
        net.eval()
        try:
            scripted = _trace(net, shape, net_time(lo + 0.5 * (hi - lo)), trace_batch, dtype)
            # Float round-off only: the trace runs the module's own kernels in the same order.
            err = _check_trace(net, scripted, shape, (net_time(lo + 0.9 * (hi - lo)), net_time(lo + 0.1 * (hi - lo))),
                               dtype)
        finally:
            net.train(was_training)
        tol = 64 * torch.finfo(dtype).eps
        if not err <= tol:
            raise ValueError(f"export: the trace of {r['source']} differs from the module by {err:.3g} (relative; "
                             f"allowed {tol:.3g}): its Python control flow depends on the input; script it with "
                             "torch.jit.script and pass the ScriptModule")
        traced_how = "traced"
    meta = dict(metadata or {})
    if "export" in meta:
        raise ValueError("export: metadata must not contain 'export' (export writes that field)")
    meta["export"] = {"source": r["source"], "how": traced_how, "conditioning": r["conditioning"],
                      "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__}
    return save_model_file(os.fspath(path), scripted, schedule=sched, prediction=r["prediction"], sample_shape=shape,
                           time_input=r["time_input"], time_scale=r["time_scale"], name=name, solver=solver,
                           timesteps=timesteps, metadata=meta)


__all__ = ["ExportableDenoiser", "export"]
