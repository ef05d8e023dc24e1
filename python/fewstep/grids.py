"""Optimised time grids (docs/grids.md): :func:`optimize_timesteps` fits the NFE + 1 times a solver
samples a model on, in C++ (grids/optimize.h), and can store them in the model file's sidecar, where
:func:`fewstep.sample` and ``fewstep sample`` use them by default for that solver and NFE."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch

from . import _fewstep

__all__ = ["OptimizedGrid", "optimize_timesteps"]

OptimizedGrid = _fewstep.OptimizedGrid


def optimize_timesteps(
    model: Union[_fewstep.Denoiser, str, "os.PathLike[str]"],
    solver: str,
    nfe: int,
    method: str = "dp",
    *,
    sample_shape: Optional[Sequence[int]] = None,
    n: int = 64,
    seed: int = 0,
    heldout_n: int = 64,
    heldout_seed: int = 1000000,
    candidates: int = 100,
    substeps: int = 4,
    dp_history: bool = True,
    dp_propagate: bool = True,
    reference_solver: str = "unipc",
    iterations: int = 300,
    lr: float = 0.05,
    fd_step: float = 1e-4,
    dtype: torch.dtype = torch.float64,
    batch: int = 256,
    cache: Union[None, bool, str, "os.PathLike[str]"] = None,
    progress: bool = False,
    write_sidecar: bool = False,
    **solver_options: Union[bool, int, float, str],
) -> OptimizedGrid:
    """Fit the time grid of ``solver`` at ``nfe`` evaluations for ``model`` (docs/grids.md).

    Training samples start from ``fs.randn(shape, seeds=range(seed, seed + n))``; each is solved by the
    library's cached teacher solve on a fine log-SNR grid (``candidates * substeps`` steps of
    ``reference_solver``), whose end is the reference x_0. ``heldout_n`` samples from ``heldout_seed``
    score the result.

    Args:
        model: a :class:`Denoiser` (then pass ``sample_shape``) or a model file path.
        solver: a deterministic fixed-grid solver name; ``**solver_options`` are its options.
        nfe: model evaluations of the grid (>= 1).
        method: ``"dp"`` (dynamic programming over the candidate times with a one-step local cost,
            GITS, arXiv 2405.11326) or ``"gradient"`` (Adam on softmax increments of log-SNR, LD3,
            arXiv 2405.15506; ``iterations``, ``lr``, ``fd_step``).
        dp_history: with a multistep solver, cost each jump with the solver's history along the path (the
            step the run takes); False: GITS's one-step cost from a fresh state.
        dp_propagate: weigh each jump's error by the measured sensitivity of x_0 to the state where it
            lands and sum squares (docs/grids.md); False: GITS's plain sum of local errors.
        dtype: of x_T, the reference and the fitted solves (torch.float64 or torch.float32).
        cache: cache of the reference solves: None (none), True (:func:`cache_directory`) or a directory.
        write_sidecar: store the grid in the model file's sidecar (``model`` must be a path).

    Returns:
        An :class:`OptimizedGrid` with ``times``, ``train_error``, ``heldout_error`` (medians of the
        per-sample RMS error), ``best_fixed_spacing``/``best_fixed_error`` and ``fit``.
    """
    path = None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        file = _fewstep.load_model_file(path)
        model = file["denoiser"]
        if sample_shape is None:
            sample_shape = file["sample_shape"]
    elif write_sidecar:
        raise ValueError("write_sidecar=True needs model to be a model file path, got a "
                         f"{type(model).__name__}")
    if not isinstance(model, _fewstep.Denoiser):
        raise TypeError(f"model should be a fewstep.Denoiser or a model file path, got {type(model).__name__}")
    if sample_shape is None:
        raise ValueError("sample_shape is required when model is a Denoiser (the shape of one sample)")
    for name, value in (("nfe", nfe), ("n", n), ("heldout_n", heldout_n), ("candidates", candidates),
                        ("substeps", substeps), ("iterations", iterations), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} should be an int, got {type(value).__name__}")
    if not isinstance(method, str):
        raise TypeError(f"method should be a str, got {type(method).__name__}")
    grid = _fewstep._optimize_timesteps(
        model, solver, dict(solver_options), nfe, method, [int(d) for d in sample_shape], n, seed, heldout_n,
        heldout_seed, candidates, substeps, reference_solver, iterations, float(lr), float(fd_step), dtype, batch,
        cache, bool(progress), bool(dp_history), bool(dp_propagate))
    if write_sidecar:
        _fewstep._save_optimized_grid(path, grid)
    return grid
