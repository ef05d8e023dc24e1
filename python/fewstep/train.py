"""Training in Python: losses whose network call stays in Python, and the one training loop.

Every training method is a **loss object** (an :class:`Objective`: :class:`DSMLoss` here,
``ProgressiveDistillationLoss``, ``KnowledgeDistillationLoss``, ``GuidanceDistillationLoss`` and
``ConsistencyLoss`` in ``fewstep.distill``) over the C++ library's arithmetic
(``include/fewstep/train/``): the teacher runs in C++ without the GIL and the student is called in
Python, so ``loss = dsm(net, x0)`` works in any loop, ``DistributedDataParallel`` included.
:func:`loss_trainer` puts a loss, an ``nn.Module`` and data into a :class:`fewstep.Trainer`, the one
trainer shape of fewstep (the C++ trainers, ``fewstep.Trainer.micro`` among them, share it): the
library's loop, its AdamW with learning-rate schedule and clipping, its EMA update and its checkpoint
file, bound; exact resume with the options checked; :func:`data_parallel` for ``torchrun``.
:func:`train_denoiser` and the ``distill_*`` functions are that loop with a given loss.
See ``docs/python_training.md``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import json
import math
import os
from typing import Any, Callable, Iterable, NamedTuple, Optional, Union

import torch

from . import _fewstep

__all__ = [
    "Checkpoint",
    "DSMInputs",
    "DSMLoss",
    "Objective",
    "TrainResult",
    "TrainStep",
    "Trainer",
    "data_parallel",
    "loss_trainer",
    "lr_at",
    "native_error_scale",
    "train_denoiser",
    "x0_loss_weight",
]

Trainer = _fewstep.Trainer
TrainStep = _fewstep.TrainStep
Checkpoint = _fewstep.Checkpoint

PathArg = Union[str, "os.PathLike[str]", None]


def native_error_scale(prediction: str, schedule: _fewstep.NoiseSchedule, t: float) -> float:
    """``c_t = |native output error|^2 / |x0 error|^2`` at time ``t`` for a network predicting ``prediction``."""
    return _fewstep.native_error_scale(prediction, schedule, t)


def x0_loss_weight(weighting: str, prediction: str, schedule: _fewstep.NoiseSchedule, t: float,
                   min_snr_gamma: float = 5.0) -> float:
    """``w_t``: the weight of the per-sample x0 mean squared error that ``weighting`` gives at time ``t``."""
    return _fewstep.x0_loss_weight(weighting, prediction, schedule, t, min_snr_gamma)


def lr_at(step: int, lr: float, warmup: int = 0, total: int = 0, min_lr: float = 0.0, decay: str = "cosine") -> float:
    """Learning rate of the update with 0-based index ``step``: the C++ ``LrSchedule`` (train/lr_schedule.h).

    Linear warmup ``lr (step + 1) / warmup`` for ``step < warmup``, then cosine (or linear) decay from
    ``lr`` to ``min_lr`` at ``step = total`` (constant ``lr`` if ``total <= warmup``).
    """
    return _fewstep.lr_at(step, {"lr": lr, "warmup": warmup, "total_steps": total, "min_lr": min_lr, "decay": decay})


# ----------------------------------------------------------------------------------------------
# Argument checks shared by the loss objects: messages name the argument, the value and what was expected.


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_choice(value: Any, name: str, choices: tuple) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} should be a str, one of {', '.join(repr(c) for c in choices)}; "
                        f"got {_type_name(value)}")
    if value not in choices:
        raise ValueError(f"{name} should be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} should be a float, got {_type_name(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} should be finite, got {value}")
    return value


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be an int, got {_type_name(value)}")
    if value < minimum:
        raise ValueError(f"{name} should be >= {minimum}, got {value}")
    return value


def _check_generator(generator: Optional[torch.Generator]) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator should be a torch.Generator, got {_type_name(generator)}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator should be a CPU torch.Generator (draws are made on the host and moved to the "
                         f"data's device, so runs do not depend on the device), got one on {generator.device}")


def _check_schedule(schedule: Any, name: str = "schedule") -> _fewstep.NoiseSchedule:
    if not isinstance(schedule, _fewstep.NoiseSchedule):
        raise TypeError(f"{name} should be a fewstep schedule (e.g. fewstep.VPLinear()), got {_type_name(schedule)}")
    return schedule


def _check_batch(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor, got {_type_name(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} should be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} should be a batch [B, ...] with at least 2 dimensions and B >= 1, got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_output(output: Any, expected: torch.Size, who: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"{who} should return a torch.Tensor, got {_type_name(output)}")
    if output.shape != expected:
        raise ValueError(f"{who} returned shape {tuple(output.shape)}, expected {tuple(expected)}")
    return output


def _time_range(schedule: _fewstep.NoiseSchedule, t_min: Optional[float], t_max: Optional[float]) -> tuple:
    lo = schedule.t_min if t_min is None else _check_real(t_min, "t_min")
    hi = schedule.t_max if t_max is None else _check_real(t_max, "t_max")
    for name, value in (("t_min", lo), ("t_max", hi)):
        if not schedule.t_min <= value <= schedule.t_max:
            raise ValueError(f"{name} should be within the schedule's range [{schedule.t_min:g}, "
                             f"{schedule.t_max:g}], got {value:g}")
    if not lo < hi:
        raise ValueError(f"t_min should be less than t_max, got t_min = {lo:g}, t_max = {hi:g}")
    return lo, hi


def _check_time_input(schedule: _fewstep.NoiseSchedule, time_input: str, time_scale: Any) -> float:
    time_scale = _check_real(time_scale, "time_scale")
    if time_scale == 0:
        raise ValueError(f"time_scale should be non-zero, got {time_scale}")
    _fewstep.network_time(schedule, schedule.t_max, time_input, time_scale)  # the name; "index" needs discrete
    return time_scale


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] host float64 -> [B, 1, ...] in like's dtype and device."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _network_times(schedule: _fewstep.NoiseSchedule, t: torch.Tensor, time_input: str, time_scale: float,
                   like: torch.Tensor) -> torch.Tensor:
    values = [_fewstep.network_time(schedule, float(v), time_input, time_scale) for v in t.tolist()]
    return torch.tensor(values, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------------------------
# The loss objects' protocol.


class Objective(torch.nn.Module):
    """A training method for :func:`loss_trainer`: what a step draws, and the loss of the student on it.

    ``draw(batch, generator, step)`` makes every random draw of a step for the **whole** batch (a
    tuple whose per-row tensors have the batch as first dimension; ``batch`` is the data source's
    tuple, e.g. ``(x0, labels)``, on the student's device); the loop then keeps this process's rows
    (data parallelism) and calls ``step_loss(student, draws, step) -> (loss, extras)``, the mean loss
    over those rows (the teacher's part runs here, on the rows only). ``options()`` are the settings
    stored in checkpoints and compared on resume. The other hooks have defaults: ``bind(student)``
    (make target networks), ``schedule_step(step)`` (the learning-rate schedule's step),
    ``after_update(run, step)`` (target EMA, round changes), ``save(checkpoint)`` /
    ``load(checkpoint)`` (their state) and ``planned_steps(total_steps)``.
    """

    kind = "objective"

    def options(self) -> dict:
        raise NotImplementedError

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        raise NotImplementedError

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        raise NotImplementedError

    def bind(self, student: torch.nn.Module) -> None:
        pass

    def schedule_step(self, step: int) -> int:
        return step

    def planned_steps(self, total_steps: int) -> int:
        return total_steps

    def after_update(self, run: "_LossRun", step: int) -> None:
        pass

    def save(self, checkpoint: _fewstep.Checkpoint) -> None:
        pass

    def load(self, checkpoint: _fewstep.Checkpoint) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# Denoising score matching.


class DSMInputs(NamedTuple):
    """What one DSM evaluation feeds the network and compares it with.

    ``x_t`` and ``target`` have x0's shape, dtype and device; ``t_input`` and ``weight`` are ``[batch]``
    tensors of x0's dtype and device; ``t`` is the ``[batch]`` float64 CPU tensor of times and ``eps``
    the noise.
    """

    x_t: torch.Tensor
    t_input: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor


class DSMLoss(Objective):
    """Denoising score matching loss of a network ``net(x_t, t_input) -> native prediction``.

    ``loss = dsm(net, x0)`` is a differentiable scalar; ``net`` is any callable: an ``nn.Module``, a
    TorchScript module or a :class:`torch.nn.parallel.DistributedDataParallel` wrapper.

    Args:
        schedule: the noise schedule (``fewstep.VPLinear()``, ``fewstep.VE()``, ...).
        prediction: what the network outputs: ``"eps"``, ``"x0"``, ``"v"``, ``"score"`` or ``"flow"``.
        weighting: ``"uniform"``, ``"truncated_snr"`` or ``"min_snr"`` (the module docstring).
        min_snr_gamma: gamma of ``"min_snr"`` (> 0).
        time_input: what the network receives as time: ``"t"``, ``"index"``, ``"sigma"`` or ``"lambda"``.
        time_scale: multiplies the time input (e.g. 1000 for networks trained on ``1000 t``).
        t_min, t_max: training time range, default the schedule's ``[t_min, t_max]``.

    Sample the network with the same conventions: ``fewstep.Denoiser(net, schedule=schedule,
    prediction=..., time_input=..., time_scale=...)``.
    """

    kind = "dsm"

    def __init__(self, schedule: _fewstep.NoiseSchedule, prediction: str = "eps", weighting: str = "uniform",
                 min_snr_gamma: float = 5.0, time_input: str = "t", time_scale: float = 1.0,
                 t_min: Optional[float] = None, t_max: Optional[float] = None) -> None:
        super().__init__()
        self.schedule = _check_schedule(schedule)
        self.time_scale = _check_time_input(schedule, time_input, time_scale)
        self.t_min, self.t_max = _time_range(schedule, t_min, t_max)
        # The C++ options check every setting and their combination (dsm_loss.h), naming the bad one.
        _fewstep._dsm_options(prediction, time_input, self.time_scale, weighting, _check_real(min_snr_gamma,
                                                                                             "min_snr_gamma"))
        self.prediction, self.weighting, self.min_snr_gamma = prediction, weighting, float(min_snr_gamma)
        self.time_input = time_input

    def extra_repr(self) -> str:
        return (f"schedule={self.schedule!r}, prediction={self.prediction!r}, weighting={self.weighting!r}, "
                f"time_input={self.time_input!r}, t_min={self.t_min:g}, t_max={self.t_max:g}")

    def options(self) -> dict:
        return {"prediction": self.prediction, "weighting": self.weighting, "min_snr_gamma": self.min_snr_gamma,
                "time_input": self.time_input, "time_scale": self.time_scale, "t_min": self.t_min,
                "t_max": self.t_max, "schedule": repr(self.schedule)}

    def sample_times(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` times ``t ~ U[t_min, t_max]`` as a float64 CPU tensor (drawn from ``generator``)."""
        _check_int(n, "n", 1)
        _check_generator(generator)
        return self.t_min + (self.t_max - self.t_min) * torch.rand(n, generator=generator, dtype=torch.float64)

    def inputs(self, x0: torch.Tensor, *, t: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> DSMInputs:
        """Draw (unless given) ``t`` then ``eps`` from ``generator`` on the host (the C++ trainer's order) and
        build ``x_t``, the time input, the target and the weight (``fewstep::dsm_inputs``)."""
        _check_batch(x0, "x0")
        _check_generator(generator)
        n = x0.shape[0]
        if t is None:
            t = self.sample_times(n, generator)
        else:
            t = torch.as_tensor(t, dtype=torch.float64)
            if t.shape != (n,):
                raise ValueError(f"t should have shape ({n},), got {tuple(t.shape)}")
            t = t.detach().to("cpu", torch.float64)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        else:
            if not isinstance(eps, torch.Tensor):
                raise TypeError(f"eps should be a torch.Tensor, got {_type_name(eps)}")
            if eps.shape != x0.shape:
                raise ValueError(f"eps should have x0's shape {tuple(x0.shape)}, got {tuple(eps.shape)}")
            eps = eps.to(device=x0.device, dtype=x0.dtype)
        x_t, t_input, target, weight = _fewstep._dsm_inputs(
            x0, eps, t, self.schedule, self.prediction, self.time_input, self.time_scale, self.weighting,
            self.min_snr_gamma)
        return DSMInputs(x_t, t_input, target, weight, t, eps)

    @staticmethod
    def loss(output: torch.Tensor, inputs: DSMInputs) -> torch.Tensor:
        """``mean_b weight_b * mean_j (output - target)^2_{b,j}``: the differentiable scalar loss."""
        _check_output(output, inputs.target.shape, "net(x_t, t)")
        return _fewstep._dsm_loss(output, inputs.target, inputs.weight)

    def forward(self, net: Callable, x0: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                t: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The scalar DSM loss of ``net`` on the clean batch ``x0`` (see :meth:`inputs` for the draws)."""
        if not callable(net):
            raise TypeError(f"net should be a callable or torch.nn.Module taking (x_t, t), got {_type_name(net)}")
        inputs = self.inputs(x0, t=t, eps=eps, generator=generator)
        return self.loss(net(inputs.x_t, inputs.t_input), inputs)

    def draw(self, batch: tuple, generator: torch.Generator, step: int) -> tuple:
        x0 = _check_batch(batch[0], "data batch")
        return x0, self.sample_times(x0.shape[0], generator), torch.randn(x0.shape, generator=generator,
                                                                          dtype=x0.dtype).to(x0.device)

    def step_loss(self, student: Callable, draws: tuple, step: int) -> tuple:
        x0, t, eps = draws
        return self(student, x0, t=t, eps=eps), {}


# ----------------------------------------------------------------------------------------------
# Data sources of the loop: a tuple of tensors per batch, a checkpointable position.


def _index_order(n: int, batch_size: int, seed: int) -> _fewstep.ShuffledBatches:
    """Batches of row indices of a shuffled pass (the C++ ShuffledBatches: data/shuffled_batches.h)."""
    return _fewstep.ShuffledBatches(torch.zeros(n, 1), torch.arange(n), batch_size, seed)


class _Rows:
    """Rows of equally long tensors (x0; (x_T, x0); (images, labels)) in shuffled passes; an epoch's leftover
    smaller than a batch is dropped."""

    def __init__(self, tensors: tuple, batch_size: int, seed: int, kind: str) -> None:
        self.tensors, self.batch_size, self.kind = tensors, batch_size, kind
        self.order = _index_order(tensors[0].shape[0], batch_size, seed)

    def next(self) -> tuple:
        index = self.order.next()[1]
        return tuple(t[index.to(t.device)] for t in self.tensors)

    def state(self) -> dict:
        return self.order.state()

    def load_state(self, state: dict) -> None:
        self.order.load_state(state)

    def describe(self) -> str:
        return f"{self.kind}(n={self.tensors[0].shape[0]}, batch={self.batch_size})"


class _CallableData:
    """``data(batch_size, generator)`` draws a fresh batch (e.g. ``fewstep.GaussianMixture.sample``)."""

    def __init__(self, fn: Callable, batch_size: int, seed: int) -> None:
        self.fn, self.batch_size = fn, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple:
        out = self.fn(self.batch_size, self.generator)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"data(batch_size, generator) should return a torch.Tensor, got {_type_name(out)}")
        return (out,)

    def state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def describe(self) -> str:
        return f"callable(batch={self.batch_size})"


class _IterableData:
    """Batches of a re-iterable, started again when exhausted; resume skips the batches already used."""

    def __init__(self, data: Iterable) -> None:
        self.data, self.iterator, self.consumed = data, None, 0

    def next(self) -> tuple:
        for _ in range(2):
            if self.iterator is None:
                self.iterator = iter(self.data)
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.iterator = None
                continue
            self.consumed += 1
            batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            if not batch or not isinstance(batch[0], torch.Tensor):
                raise TypeError(f"data should yield tensors (or tuples whose first item is the tensor), got "
                                f"{_type_name(batch[0] if batch else batch)}")
            return batch
        raise ValueError("data is an empty iterable: a new pass over it yielded no batch")

    def state(self) -> dict:
        return {"consumed": torch.tensor(self.consumed)}

    def load_state(self, state: dict) -> None:
        target = int(state["consumed"])
        self.iterator, self.consumed = None, 0
        while self.consumed < target:
            self.next()

    def describe(self) -> str:
        return f"iterable({_type_name(self.data)})"


def _data_source(data: Any, batch_size: Optional[int], seed: int) -> Any:
    data_seed = (seed + 0x9E3779B97F4A7C15) % 2**64  # a stream of its own, away from the noise seed
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        tensors = data
    elif isinstance(data, torch.Tensor):
        tensors = (data,)
    elif callable(data) and not hasattr(data, "__iter__"):
        batch_size = 64 if batch_size is None else batch_size
        _check_int(batch_size, "batch_size", 1)
        return _CallableData(data, batch_size, data_seed)
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"data should be a tensor [N, ...], a tuple of such tensors, a callable (batch_size, "
                        f"generator) -> tensor or an iterable of batches, got {_type_name(data)}")
    elif hasattr(data, "__next__"):
        raise TypeError("data should be re-iterable (a DataLoader, a list, ...), not a one-shot iterator: "
                        "exact resume starts a new pass and skips the batches already used")
    else:
        if batch_size is not None:
            raise ValueError(f"batch_size applies to tensor or callable data; an iterable (here "
                             f"{_type_name(data)}) gives its own batches, got batch_size={batch_size}")
        return _IterableData(data)
    first = tensors[0]
    if not first.is_floating_point():
        raise TypeError(f"data should be a floating-point tensor [N, ...], got {first.dtype}")
    if first.dim() < 2:
        raise ValueError(f"data should be a tensor [N, ...] with at least 2 dimensions, got shape {tuple(first.shape)}")
    for t in tensors[1:]:
        if t.shape[0] != first.shape[0]:
            raise ValueError(f"data's tensors should have the same number of rows, got {first.shape[0]} and "
                             f"{t.shape[0]}")
    batch_size = 64 if batch_size is None else batch_size
    _check_int(batch_size, "batch_size", 1)
    if batch_size > first.shape[0]:
        raise ValueError(f"batch_size should be at most the number of samples in data ({first.shape[0]}), got "
                         f"{batch_size}")
    return _Rows(tensors, batch_size, data_seed, "tensor" if len(tensors) == 1 else f"tensors{len(tensors)}")


# ----------------------------------------------------------------------------------------------
# The trainer of a loss written in Python.


def _frozen_copy(net: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # a ScriptModule's deepcopy clones its parameters through autograd otherwise
        out = copy.deepcopy(net)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


def _save_module(checkpoint: _fewstep.Checkpoint, prefix: str, net: torch.nn.Module) -> None:
    for key, value in net.state_dict().items():
        checkpoint.set_tensor(f"{prefix}/{key}", value)


def _load_module(checkpoint: _fewstep.Checkpoint, prefix: str, net: torch.nn.Module) -> None:
    state = {key[len(prefix) + 1:]: checkpoint.tensor(key) for key in checkpoint.tensor_keys(prefix + "/")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"checkpoint '{checkpoint.source}' holds another network under '{prefix}': {e}") from e


def _average_gradients(params: list, average: Callable) -> None:
    """Each parameter's gradient (zero where it has none) replaced by ``average``'s in-place mean over the
    processes: what the loop does before every update under data parallelism."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    average(grads)
    for p, g in zip(params, grads):
        p.grad = g


def _rows(draws: tuple, rank: int, world: int) -> tuple:
    """This process's rows of every per-row tensor of a whole batch's draws (first dimension = the batch)."""
    n = next(d.shape[0] for d in draws if isinstance(d, torch.Tensor) and d.dim() > 0)
    if n % world:
        raise ValueError(f"a batch of {n} rows does not split into {world} equal shards; choose a batch size "
                         f"divisible by the number of processes")
    part = slice(rank * n // world, (rank + 1) * n // world)
    picked = [d[part] if isinstance(d, torch.Tensor) and d.dim() > 0 and d.shape[0] == n else d for d in draws]
    return type(draws)(*picked) if hasattr(draws, "_fields") else tuple(picked)


def _all_reduce_mean(tensors: list, group: Any = None) -> None:
    """Replaces every tensor by its mean over the processes of `group`: one all-reduce of a flat buffer."""
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


class _LossRun:
    """The state and step of a trainer whose loss is written in Python: what ``fewstep.Trainer(run)``
    drives (the C++ binding calls ``step``, ``state``, ``load_state``, ``options_json``, ``export``,
    ``set_data_parallel`` and reads ``kind``, ``step_count``, ``planned_steps``, ``resumable_options``).

    A step: the data source's batch (moved to the student's device, floats to its dtype), the
    objective's draws for the whole batch, this process's rows, the loss (student forward in
    Python), backward, gradients averaged over the processes, the C++ AdamW update with the
    learning-rate schedule and clipping, the C++ EMA update, the objective's ``after_update``.
    """

    resumable_options = ["total_steps"]

    def __init__(self, objective: Objective, student: torch.nn.Module, data: Any, *,
                 batch_size: Optional[int] = None, lr: float = 2e-4, min_lr: float = 0.0, warmup: int = 0,
                 decay: str = "cosine", total_steps: int = 0, weight_decay: float = 0.0,
                 betas: tuple = (0.9, 0.999), ema: float = 0.999, grad_clip: float = 1.0, seed: int = 0) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(f"objective should be a fewstep.train.Objective (DSMLoss, ...), got "
                            f"{_type_name(objective)}")
        if not isinstance(student, torch.nn.Module):
            raise TypeError(f"student should be a torch.nn.Module, got {_type_name(student)}")
        self.params = [p for p in student.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the network has no parameters that require grad; nothing to train (a network "
                             "loaded from a model file is frozen: set requires_grad on its parameters to tune it, "
                             "for p in net.parameters(): p.requires_grad_(True))")
        _check_int(seed, "seed", 0)
        if seed >= 2**64:
            raise ValueError(f"seed should be < 2**64, got {seed}")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"betas should be a pair of floats, got {betas!r}")
        ema = _check_real(ema, "ema")
        if not 0 <= ema <= 1:
            raise ValueError(f"ema should be a decay in [0, 1], got {ema:g}")
        self.kind = f"{objective.kind}_loss"
        self.objective, self.student, self.ema_decay, self.seed = objective, student, ema, seed
        self.data = _data_source(data, batch_size, seed)
        self.optimizer_options = {"lr": lr, "warmup": warmup, "total_steps": total_steps, "min_lr": min_lr,
                                  "decay": decay, "beta1": betas[0], "beta2": betas[1], "eps": 1e-8,
                                  "weight_decay": weight_decay, "grad_clip": grad_clip}
        self.optimizer = _fewstep.Optimizer(self.params, self.optimizer_options)  # checks every option
        objective.bind(student)
        self.ema = _frozen_copy(student)
        first = self.params[0]
        self.device, self.dtype = first.device, first.dtype
        self.noise = torch.Generator().manual_seed(seed)
        self.step_count = 0
        self.losses: list = []
        self.rank, self.world, self.average = 0, 1, None

    @property
    def planned_steps(self) -> int:
        return self.objective.planned_steps(self.optimizer_options["total_steps"])

    def options_json(self) -> str:
        options = dict(self.objective.options(), **self.optimizer_options, ema_decay=self.ema_decay, seed=self.seed,
                       data=self.data.describe())
        return json.dumps(options, sort_keys=True)

    def set_data_parallel(self, rank: int, world: int, average: Optional[Callable]) -> None:
        self.rank, self.world, self.average = rank, world, average

    def reset_optimizer(self) -> None:
        """A fresh AdamW (state dropped), as at the start of a progressive-distillation round."""
        self.optimizer = _fewstep.Optimizer(self.params, self.optimizer_options)

    def reset_ema(self) -> None:
        """The EMA restarts from the student's weights."""
        self.ema.load_state_dict(self.student.state_dict())

    def _batch(self) -> tuple:
        return tuple(t.to(device=self.device, dtype=self.dtype) if t.is_floating_point() else t.to(self.device)
                     for t in self.data.next())

    def step(self) -> tuple:
        k = self.step_count
        self.student.train()
        draws = self.objective.draw(self._batch(), self.noise, k)
        if self.world > 1:
            draws = _rows(draws, self.rank, self.world)
        loss, extra = self.objective.step_loss(self.student, draws, k)
        value = torch.tensor([float(loss.detach())], dtype=torch.float64)
        if self.world > 1:
            self.average([value])
        value = float(value)
        if not math.isfinite(value):
            raise RuntimeError(f"the loss is {value} at update {k + 1}; lower lr or check the data and networks")
        self.optimizer.zero_grad()
        loss.backward()
        if self.world > 1:
            _average_gradients(self.params, self.average)
        lr, grad_norm = self.optimizer.step(self.objective.schedule_step(k))
        _fewstep.ema_update(list(self.ema.parameters()), list(self.student.parameters()), list(self.ema.buffers()),
                            list(self.student.buffers()), self.ema_decay)
        self.step_count += 1
        self.losses.append(value)
        self.objective.after_update(self, k)
        return self.step_count, value, lr, grad_norm, {key: float(v) for key, v in extra.items()}

    def state(self, checkpoint: _fewstep.Checkpoint) -> None:
        checkpoint.set_int("step", self.step_count)
        _save_module(checkpoint, "student", self.student)
        _save_module(checkpoint, "ema", self.ema)
        self.optimizer.save(checkpoint, "optimizer")
        checkpoint.set_tensor("rng/noise", self.noise.get_state())
        checkpoint.set_tensor("rng/global", torch.get_rng_state())  # dropout and other global draws
        for key, value in self.data.state().items():
            checkpoint.set_tensor(f"data/{key}", value)
        checkpoint.set_tensor("losses", torch.tensor(self.losses, dtype=torch.float64))
        self.objective.save(checkpoint)

    def load_state(self, checkpoint: _fewstep.Checkpoint) -> None:
        _load_module(checkpoint, "student", self.student)
        _load_module(checkpoint, "ema", self.ema)
        self.step_count = checkpoint.integer("step")
        self.losses = checkpoint.tensor("losses").tolist()
        self.objective.load(checkpoint)
        self.reset_optimizer()  # the optimiser of the checkpoint's phase, then its state
        self.optimizer.load(checkpoint, "optimizer")
        self.noise.set_state(checkpoint.tensor("rng/noise"))
        self.data.load_state({key[5:]: checkpoint.tensor(key) for key in checkpoint.tensor_keys("data/")})
        # Last: skipping an iterable's used batches may draw from the global generator.
        torch.set_rng_state(checkpoint.tensor("rng/global"))

    def export(self) -> torch.nn.Module:
        return _frozen_copy(self.ema)


def loss_trainer(objective: Objective, student: torch.nn.Module, data: Any, **options: Any) -> Trainer:
    """A :class:`fewstep.Trainer` that trains ``student`` (in place) on ``objective``'s loss.

    Args:
        objective: the loss object (:class:`DSMLoss`, :class:`fewstep.ProgressiveDistillationLoss`, ...).
        student: the ``nn.Module`` to train; the EMA of its weights is what ``export()`` returns.
        data: a floating tensor ``[N, ...]`` or a tuple of equally long tensors (shuffled passes with
            ``batch_size`` rows, an epoch's leftover dropped), a callable ``data(batch_size, generator)
            -> tensor``, or a re-iterable of batches (a ``DataLoader``;
            ``batch_size`` must then be None).
        **options: ``batch_size`` (default 64), ``lr``, ``min_lr``, ``warmup``, ``decay`` (``"cosine"``
            or ``"linear"``), ``total_steps`` (the schedule's length; 0 = constant after warmup),
            ``weight_decay``, ``betas``, ``ema`` (EMA decay), ``grad_clip`` (0 = off), ``seed``. Another
            name is a TypeError naming it and the nearest known one.
    """
    _check_loop_options(options)
    run = _LossRun(objective, student, data, **options)
    return Trainer(run)


# The ready loops' (train_denoiser, the distill_* functions) own keywords, beside _LossRun's.
_READY_OPTIONS = ("checkpoint", "checkpoint_every", "resume", "progress", "callback", "distributed")


def _check_loop_options(options: dict) -> None:
    """A TypeError naming an unknown loop option and the known ones (with the nearest as a hint)."""
    known = [name for name in inspect.signature(_LossRun.__init__).parameters
             if name not in ("self", "objective", "student", "data")]
    unknown = [name for name in options if name not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known + list(_READY_OPTIONS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(f"unknown training-loop option {unknown[0]!r}{hint}; the loop takes "
                        f"{', '.join(known)}, and the ready loops also {', '.join(_READY_OPTIONS)}")


def data_parallel(trainer: Trainer, group: Any = None) -> Trainer:
    """Makes ``trainer`` this process's part of a data-parallel run over ``torch.distributed`` (``group``:
    the default one; call ``torch.distributed.init_process_group`` first, e.g. under ``torchrun``).

    Every process builds the same trainer (same seed and data), draws the whole batch and trains on its
    rows; gradients are averaged with one all-reduce per step, so every process ends with the weights
    one process gets on whole batches (up to summation order); only rank 0 writes checkpoints.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("data_parallel: torch.distributed is not initialised; call "
                         "torch.distributed.init_process_group first (torchrun sets the environment)")
    trainer.set_data_parallel(dist.get_rank(group), dist.get_world_size(group),
                              functools.partial(_all_reduce_mean, group=group))
    return trainer


def _distributed(distributed: Optional[bool]) -> bool:
    if distributed is not None:
        return bool(distributed)
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _ready(objective: Objective, student: torch.nn.Module, data: Any, steps: int, *, checkpoint: PathArg,
           checkpoint_every: int, resume: bool, progress: bool, callback: Optional[Callable],
           distributed: Optional[bool], **options: Any) -> Trainer:
    """The ready loops' common part: a loss trainer, resumed from `checkpoint`, trained up to `steps`."""
    _check_int(steps, "steps", 1)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint should be a path (str or os.PathLike), got {_type_name(checkpoint)}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback should be callable, got {_type_name(callback)}")
    trainer = loss_trainer(objective, student, data, **options)
    if checkpoint is not None:
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
    if _distributed(distributed):
        data_parallel(trainer)
    if checkpoint is not None and resume:
        trainer.resume(checkpoint)
    trainer.train(max(0, steps - trainer.step_count), checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  progress=progress, callback=callback)
    return trainer


class TrainResult(NamedTuple):
    """``train_denoiser``'s result: ``ema, losses = fs.train_denoiser(...)``."""

    ema: torch.nn.Module  # the EMA of the weights (eval mode, no grad): the network to sample with
    losses: list  # batch loss of every update from step 1, restored ones included


def train_denoiser(net: torch.nn.Module, data: Any, schedule: _fewstep.NoiseSchedule, steps: int, *,
                   prediction: str = "eps", weighting: str = "uniform", min_snr_gamma: float = 5.0,
                   time_input: str = "t", time_scale: float = 1.0, t_min: Optional[float] = None,
                   t_max: Optional[float] = None, batch_size: Optional[int] = None, lr: float = 2e-4,
                   min_lr: float = 0.0, warmup: int = 0, weight_decay: float = 0.0, betas: tuple = (0.9, 0.999),
                   ema: float = 0.999, grad_clip: float = 1.0, seed: int = 0, checkpoint: PathArg = None,
                   checkpoint_every: int = 0, resume: bool = True, progress: bool = True,
                   callback: Optional[Callable] = None, distributed: Optional[bool] = None) -> TrainResult:
    """Train ``net`` (in place) by denoising score matching; return its EMA and the loss history.

    The one loop (:func:`loss_trainer`) with :class:`DSMLoss`: each update draws ``t`` and ``eps`` for
    the batch, AdamW with linear warmup over ``warmup`` updates then cosine decay to ``min_lr`` at
    ``steps``, gradient-norm clipping to ``grad_clip`` (0: off), EMA with decay ``ema``.

    Args:
        net: an ``nn.Module`` ``net(x_t, t_input) -> prediction`` with trainable parameters.
        data: see :func:`loss_trainer` (e.g. a tensor, ``fewstep.GaussianMixture(...).sample``, a DataLoader).
        schedule, prediction, weighting, min_snr_gamma, time_input, time_scale, t_min, t_max: see :class:`DSMLoss`.
        steps: total updates of the run; a call that resumes continues from the saved step up to ``steps``
            (``steps`` may differ between calls; every other option must match the checkpoint's).
        batch_size, lr, min_lr, warmup, weight_decay, betas, ema, grad_clip, seed: see :func:`loss_trainer`.
        checkpoint: path of the checkpoint, written atomically every ``checkpoint_every`` updates (0: only at
            the end) and at the end; with ``resume`` an existing one is continued bit-identically.
        progress: a tqdm bar with the loss and learning rate; callback: called with a
            :class:`fewstep.TrainStep` after every update.
        distributed: split every batch across the processes of ``torch.distributed`` (default: when it is
            initialised with more than one process; :func:`data_parallel`).

    Returns:
        ``TrainResult(ema, losses)``: the EMA network (a copy of ``net``, eval mode, no grad) and the batch
        loss of every update (from step 1, restored ones included).
    """
    dsm = DSMLoss(schedule, prediction=prediction, weighting=weighting, min_snr_gamma=min_snr_gamma,
                  time_input=time_input, time_scale=time_scale, t_min=t_min, t_max=t_max)
    trainer = _ready(dsm, net, data, steps, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                     progress=progress, callback=callback, distributed=distributed, batch_size=batch_size, lr=lr,
                     min_lr=min_lr, warmup=warmup, total_steps=steps, weight_decay=weight_decay, betas=betas,
                     ema=ema, grad_clip=grad_clip, seed=seed)
    return TrainResult(trainer.export(), list(trainer.impl.losses))


class _ProgressBar:
    """The tqdm bar of fewstep.Trainer.train (progress=True): mean loss of the last 100 steps, lr, extras."""

    def __init__(self, total: int, kind: str) -> None:
        from ._progress import progress_bar

        self.bar = progress_bar(total, f"fewstep {kind}")
        self.window: list = []

    def update(self, stats: TrainStep) -> None:
        self.window = (self.window + [stats.loss])[-100:]
        extra = {k: f"{v:.4g}" for k, v in stats.extra.items()}
        self.bar.set_postfix(loss=f"{sum(self.window) / len(self.window):.4g}", lr=f"{stats.lr:.3g}", **extra,
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
