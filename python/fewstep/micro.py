"""Micro-distillation from Python: dense teacher trajectories, the trainer and the distilled sampler.

The C++ side is ``include/fewstep/micro/`` and ``include/fewstep/train/micro_trainer.h``; the trainer
is ``fewstep.Trainer.micro`` (the one trainer shape, whose loop runs in C++ with the GIL released).
:func:`distill_micro` is the whole run in one call::

    import torch, fewstep as fs
    teacher = fs.Denoiser.exact(fs.GaussianMixture.random(4, 3, seed=0), fs.VPLinear())
    sampler = fs.distill_micro(teacher, teacher_id="exact gmm(4, 3, seed=0)", sample_shape=[4],
                               mode="residual", steps=300, trajectories=256, segments=16, substeps=4,
                               lr=1e-3, cache=True, out="micro.pt", progress=False)
    out = sampler.sample(teacher, torch.randn(8, 4), nfe=6)      # exactly 6 teacher evaluations
    out.x, out.nfe
    fs.sample(teacher, torch.randn(8, 4), solver="micro", steps=6, path="micro.pt")  # same sampler
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence, Union

import torch

from . import _fewstep

from .train import _distributed, data_parallel

__all__ = ["DenseTrajectories", "MicroSampler", "dense_trajectories", "distill_micro"]

DenseTrajectories = _fewstep.DenseTrajectories
MicroSampler = _fewstep.MicroSampler
dense_trajectories = _fewstep.dense_trajectories

PathArg = Union[str, "os.PathLike[str]"]


def distill_micro(
    teacher: _fewstep.Denoiser,
    *,
    teacher_id: str,
    mode: str,
    steps: int,
    sample_shape: Optional[Sequence[int]] = None,
    trajectories: Union[int, DenseTrajectories] = 1024,
    segments: int = 64,
    substeps: int = 8,
    trajectory_seed: int = 2_000_000,
    trajectory_dtype: torch.dtype = torch.float32,
    cache: Union[bool, PathArg, None] = None,
    init: Union[MicroSampler, PathArg, None] = None,
    checkpoint_path: Optional[PathArg] = None,
    checkpoint_every: int = 500,
    out: Optional[PathArg] = None,
    progress: bool = True,
    callback: Optional[Callable[[Any], None]] = None,
    distributed: Optional[bool] = None,
    **options: Any,
) -> MicroSampler:
    """Micro-distil ``teacher`` for ``steps`` optimisation steps and return the sampler (EMA heads).

    Like ``fewstep distill micro``: the dense trajectories are made (or loaded from the ``cache`` when
    it holds the same teacher content and settings), a ``fewstep.Trainer.micro`` resumes from ``checkpoint_path`` if that file
    exists and trains up to ``steps`` steps in all (checkpointing every ``checkpoint_every``), and the
    sampler is written to ``out`` if given.

    Args:
        teacher: the :class:`Denoiser` to distil.
        teacher_id: describes the teacher (the record in the sampler file).
        mode: ``"residual"``, ``"step_size"`` or ``"joint"`` (see :class:`MicroTrainer`).
        steps: total optimisation steps (also the learning-rate schedule's ``total_steps`` unless
            given in ``options``).
        sample_shape: one sample's shape ([D] or [C, H, W]); not needed when ``trajectories`` is a
            :class:`DenseTrajectories`.
        trajectories: how many trajectories to make, or ready ones (then ``segments``, ``substeps``,
            ``trajectory_seed``, ``trajectory_dtype`` and ``cache`` are unused).
        segments, substeps, trajectory_seed, trajectory_dtype, cache: see :func:`dense_trajectories`
            (the default seed keeps training x_T away from evaluation seeds 0, 1, ...).
        init: a :class:`MicroSampler` or its file whose heads start the run (e.g. a residual sampler
            before joint training, or a ``"coefficients"`` sampler before a ``"hybrid"`` run).
        checkpoint_path, checkpoint_every: training state for exact resume.
        out: where to save the sampler.
        progress: trajectory progress lines and the training progress bar.
        callback: called with a :class:`fewstep.TrainStep` after every step (``extra["budget"]``).
        distributed: split every batch across the processes of torch.distributed (default: when it is
            initialised with more than one process; :func:`fewstep.data_parallel`).
        **options: further ``fewstep.Trainer.micro`` options (``batch``, ``lr``, ``budget_min``, ...).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps should be a non-negative int, got {steps!r}")
    if isinstance(trajectories, DenseTrajectories):
        data = trajectories
    elif isinstance(trajectories, int) and not isinstance(trajectories, bool):
        if sample_shape is None:
            raise ValueError("sample_shape is required when trajectories is a number (the trajectories to make)")
        data = dense_trajectories(teacher, teacher_id, list(sample_shape), trajectories, seed=trajectory_seed,
                                  segments=segments, substeps=substeps, dtype=trajectory_dtype,
                                  cache=cache, progress=progress)
    else:
        raise TypeError(f"trajectories should be an int or a fewstep.DenseTrajectories, got "
                        f"{type(trajectories).__name__}")
    if init is not None and not isinstance(init, MicroSampler):
        init = MicroSampler.load(init)
    options.setdefault("total_steps", steps)
    trainer = _fewstep.Trainer.micro(teacher, teacher_id, data, init=init, mode=mode, **options)
    if _distributed(distributed):
        data_parallel(trainer)
    if checkpoint_path is not None:
        trainer.resume(checkpoint_path)
    remaining = steps - trainer.step_count
    if remaining < 0:
        raise ValueError(f"steps ({steps}) is below the {trainer.step_count} steps of checkpoint "
                         f"'{os.fspath(checkpoint_path)}'")
    trainer.train(remaining, checkpoint=checkpoint_path, checkpoint_every=checkpoint_every, progress=progress,
                  callback=callback)
    sampler = trainer.export()
    if out is not None:
        sampler.save(out)
    return sampler
