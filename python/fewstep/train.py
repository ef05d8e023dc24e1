"""Denoiser training by denoising score matching (DSM), in Python.

Two ways in, over one definition of the loss (the C++ ``fewstep::dsm_inputs`` / ``dsm_loss`` of
``include/fewstep/train/dsm_loss.h``, so the Python and C++ trainers compute the same numbers):

* :class:`DSMLoss` — a loss module for **your own** PyTorch loop. ``loss = dsm(net, x0)`` draws
  ``t ~ U[t_min, t_max]`` and ``eps ~ N(0, I)``, builds ``x_t = alpha_t x0 + sigma_t eps``, the
  network's native target and the per-sample weight, calls ``net(x_t, t_input)`` *in Python* and
  returns the scalar loss. Because the network call is an ordinary forward, autograd, AMP,
  ``torch.compile`` and :class:`torch.nn.parallel.DistributedDataParallel` work unchanged: wrap
  your network in DDP and pass the wrapper as ``net``.
* :func:`train_denoiser` — a ready loop: AdamW with linear warmup and cosine decay, gradient-norm
  clipping, an exponential moving average (EMA) of the weights, a tqdm bar showing loss and
  learning rate, and atomic checkpoints that resume bit-exactly.

The loss (see ``dsm_loss.h`` for the derivation). A network predicting ``prediction`` (``"eps"``,
``"x0"``, ``"v"``, ``"score"`` or ``"flow"``) regresses its native target ``a_t x0 + b_t eps``. An
error ``e`` in the implied data prediction ``x0_hat`` is an error ``sqrt(c_t) e`` in the native
output, so the per-sample loss ``weight_t * mean((output - target)^2)`` equals
``w_t * mean((x0_hat - x0)^2)`` with

=================  ==========================  =====================================
``weighting``      ``w_t`` (x0-error scale)    reference
=================  ==========================  =====================================
``uniform``        ``c_t``                     plain MSE of the native output (Ho et al. 2020)
``truncated_snr``  ``max(SNR_t, 1)``           Salimans & Ho 2022
``min_snr``        ``min(SNR_t, gamma)``       Hang et al. 2023 (``min_snr_gamma``)
=================  ==========================  =====================================

where ``SNR_t = alpha_t^2 / sigma_t^2`` and ``c_t`` is ``SNR_t`` for eps, 1 for x0, ``SNR_t + 1``
for v under VP (:func:`native_error_scale`, :func:`x0_loss_weight`).

Everything is importable from ``fewstep.train`` and, for the main names, from ``fewstep``::

    import fewstep as fs
    dsm = fs.DSMLoss(fs.VPLinear(), prediction="eps")          # == fs.train.DSMLoss
    ema, losses = fs.train_denoiser(net, data, fs.VPLinear(), steps=10_000)

See ``docs/python_training.md`` for the ready loop, the loss in your own loop and a DDP example.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Union

import torch

from . import _fewstep

__all__ = [
    "DSMInputs",
    "DSMLoss",
    "TrainResult",
    "TrainStep",
    "lr_at",
    "native_error_scale",
    "train_denoiser",
    "x0_loss_weight",
]

PREDICTIONS = ("eps", "x0", "v", "score", "flow")
WEIGHTINGS = ("uniform", "truncated_snr", "min_snr")
TIME_INPUTS = ("t", "index", "sigma", "lambda")

#: Format tag of the checkpoints written by :func:`train_denoiser`.
CHECKPOINT_FORMAT = "fewstep.python.train_denoiser.v1"



def native_error_scale(prediction: str, schedule: _fewstep.NoiseSchedule, t: float) -> float:
    """``c_t = |native output error|^2 / |x0 error|^2`` at time ``t`` for a network predicting ``prediction``.

    ``SNR_t`` for eps, 1 for x0, ``SNR_t + 1`` for v under VP, ``SNR_t / sigma_t^2`` for score.
    """
    return _fewstep.native_error_scale(prediction, schedule, t)


def x0_loss_weight(weighting: str, prediction: str, schedule: _fewstep.NoiseSchedule, t: float,
                   min_snr_gamma: float = 5.0) -> float:
    """``w_t``: the weight of the per-sample x0 mean squared error that ``weighting`` gives at time ``t``.

    ``uniform``: ``native_error_scale(prediction, schedule, t)``; ``truncated_snr``: ``max(SNR_t, 1)``;
    ``min_snr``: ``min(SNR_t, min_snr_gamma)``.
    """
    return _fewstep.x0_loss_weight(weighting, prediction, schedule, t, min_snr_gamma)


# ----------------------------------------------------------------------------------------------
# Argument checks: messages name the argument, the bad value and what was expected.


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
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
        raise ValueError(f"generator should be a CPU torch.Generator (t and eps are drawn on the host and moved to "
                         f"x0's device, so runs do not depend on the device), got one on {generator.device}")


def _check_optimisation(lr: Any, min_lr: Any, warmup: Any, weight_decay: Any, ema: Any,
                        grad_clip: Any) -> tuple[float, float, float, float, float]:
    """The ready loops' AdamW / EMA / clipping settings, checked: (lr, min_lr, weight_decay, ema, grad_clip)."""
    lr = _check_real(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr should be positive, got {lr}")
    min_lr = _check_real(min_lr, "min_lr")
    if not 0 <= min_lr <= lr:
        raise ValueError(f"min_lr should be in [0, lr = {lr:g}], got {min_lr:g}")
    _check_int(warmup, "warmup", 0)
    weight_decay = _check_real(weight_decay, "weight_decay")
    if weight_decay < 0:
        raise ValueError(f"weight_decay should be >= 0, got {weight_decay:g}")
    ema = _check_real(ema, "ema")
    if not 0 <= ema <= 1:
        raise ValueError(f"ema should be a decay in [0, 1], got {ema:g}")
    grad_clip = _check_real(grad_clip, "grad_clip")
    if grad_clip < 0:
        raise ValueError(f"grad_clip should be >= 0 (0 disables clipping), got {grad_clip:g}")
    return lr, min_lr, weight_decay, ema, grad_clip


def _check_run(seed: Any, checkpoint: Any, checkpoint_every: Any, callback: Any) -> None:
    """The ready loops' seed, checkpoint path and interval, and callback, checked."""
    _check_int(seed, "seed", 0)
    if seed >= 2**64:
        raise ValueError(f"seed should be < 2**64, got {seed}")
    _check_int(checkpoint_every, "checkpoint_every", 0)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint should be a path (str or os.PathLike), got {_type_name(checkpoint)}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback should be callable, got {_type_name(callback)}")


# ----------------------------------------------------------------------------------------------
# The loss.


class DSMInputs(NamedTuple):
    """What one DSM evaluation feeds the network and compares it with.

    ``x_t`` and ``target`` have x0's shape, dtype and device; ``t_input`` and ``weight`` are
    ``[batch]`` tensors of x0's dtype and device; ``t`` is the ``[batch]`` float64 CPU tensor of
    times and ``eps`` the noise (x0's shape, dtype and device).
    """

    x_t: torch.Tensor
    t_input: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor


class DSMLoss(torch.nn.Module):
    """Denoising score matching loss of a network ``net(x_t, t_input) -> native prediction``.

    ``loss = dsm(net, x0)`` is a differentiable scalar; call ``loss.backward()`` as usual. It
    works with any ``net`` callable in Python: an ``nn.Module``, a TorchScript module, or a
    :class:`torch.nn.parallel.DistributedDataParallel` wrapper (whose gradient all-reduce then
    averages the loss over ranks exactly as one process would over the concatenated batch).

    Args:
        schedule: the noise schedule (``fewstep.VPLinear()``, ``fewstep.VE()``, ...).
        prediction: what the network outputs: ``"eps"``, ``"x0"``, ``"v"``, ``"score"`` or ``"flow"``.
        weighting: ``"uniform"``, ``"truncated_snr"`` or ``"min_snr"`` (table in the module docstring).
        min_snr_gamma: gamma of ``"min_snr"`` (> 0).
        time_input: what the network receives as time: the continuous ``"t"``, the discrete
            ``"index"`` (``t N - 1``), ``"sigma"`` or ``"lambda"`` — as in :class:`fewstep.Denoiser`.
        time_scale: multiplies the time input (e.g. 1000 for networks trained on ``1000 t``).
        t_min, t_max: training time range, default the schedule's ``[t_min, t_max]``.

    The network must be wrapped for sampling with the same ``prediction``, ``time_input`` and
    ``time_scale``: ``fewstep.Denoiser(net, schedule=schedule, prediction=..., time_input=..., time_scale=...)``.
    """

    def __init__(
        self,
        schedule: _fewstep.NoiseSchedule,
        prediction: str = "eps",
        weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        time_input: str = "t",
        time_scale: float = 1.0,
        t_min: Optional[float] = None,
        t_max: Optional[float] = None,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, _fewstep.NoiseSchedule):
            raise TypeError(f"schedule should be a fewstep schedule (e.g. fewstep.VPLinear()), got "
                            f"{_type_name(schedule)}")
        _check_choice(prediction, "prediction", PREDICTIONS)
        _check_choice(weighting, "weighting", WEIGHTINGS)
        _check_choice(time_input, "time_input", TIME_INPUTS)
        min_snr_gamma = _check_real(min_snr_gamma, "min_snr_gamma")
        if min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma should be positive, got {min_snr_gamma}")
        time_scale = _check_real(time_scale, "time_scale")
        if time_scale == 0:
            raise ValueError(f"time_scale should be non-zero, got {time_scale}")
        lo = schedule.t_min if t_min is None else _check_real(t_min, "t_min")
        hi = schedule.t_max if t_max is None else _check_real(t_max, "t_max")
        for name, value in (("t_min", lo), ("t_max", hi)):
            if not schedule.t_min <= value <= schedule.t_max:
                raise ValueError(f"{name} should be within the schedule's range [{schedule.t_min:g}, "
                                 f"{schedule.t_max:g}], got {value:g}")
        if not lo < hi:
            raise ValueError(f"t_min should be less than t_max, got t_min = {lo:g}, t_max = {hi:g}")
        # The C++ side checks the combination ("index" needs a discrete schedule) up front.
        _fewstep._dsm_options(prediction, time_input, time_scale, weighting, min_snr_gamma)
        _fewstep.network_time(schedule, hi, time_input, time_scale)
        self.schedule = schedule
        self.prediction = prediction
        self.weighting = weighting
        self.min_snr_gamma = min_snr_gamma
        self.time_input = time_input
        self.time_scale = time_scale
        self.t_min = lo
        self.t_max = hi

    def extra_repr(self) -> str:
        return (f"schedule={self.schedule!r}, prediction={self.prediction!r}, weighting={self.weighting!r}, "
                f"min_snr_gamma={self.min_snr_gamma:g}, time_input={self.time_input!r}, "
                f"time_scale={self.time_scale:g}, t_min={self.t_min:g}, t_max={self.t_max:g}")

    def sample_times(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` times ``t ~ U[t_min, t_max]`` as a float64 CPU tensor (drawn from ``generator``)."""
        _check_int(n, "n", 1)
        _check_generator(generator)
        return self.t_min + (self.t_max - self.t_min) * torch.rand(n, generator=generator, dtype=torch.float64)

    def inputs(
        self,
        x0: torch.Tensor,
        *,
        t: Optional[torch.Tensor] = None,
        eps: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> DSMInputs:
        """Draw (unless given) ``t`` and ``eps`` and build ``x_t``, the time input, target and weight.

        The draws come from ``generator`` (a CPU generator; the global one if None), ``t`` first,
        then ``eps`` in x0's dtype, on the host — the order of fewstep's C++ trainer. ``t`` may be
        given as a ``[batch]`` tensor of times in the schedule's range, ``eps`` as a tensor like x0.
        """
        if not isinstance(x0, torch.Tensor):
            raise TypeError(f"x0 should be a torch.Tensor, got {_type_name(x0)}")
        if not x0.is_floating_point():
            raise TypeError(f"x0 should be a floating-point tensor, got {x0.dtype}")
        if x0.dim() < 2 or x0.shape[0] < 1:
            raise ValueError(f"x0 should be a batch [B, ...] with at least 2 dimensions and B >= 1, got shape "
                             f"{tuple(x0.shape)}")
        _check_generator(generator)
        n = x0.shape[0]
        if t is None:
            t = self.sample_times(n, generator)
        else:
            if not isinstance(t, torch.Tensor):
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
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"net(x_t, t) should return a torch.Tensor, got {_type_name(output)}")
        if output.shape != inputs.target.shape:
            raise ValueError(f"net(x_t, t) returned shape {tuple(output.shape)}, expected x0's shape "
                             f"{tuple(inputs.target.shape)}")
        return _fewstep._dsm_loss(output, inputs.target, inputs.weight)

    def forward(
        self,
        net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        *,
        t: Optional[torch.Tensor] = None,
        eps: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The scalar DSM loss of ``net`` on the clean batch ``x0`` (see :meth:`inputs` for the draws)."""
        if not callable(net):
            raise TypeError(f"net should be a callable or torch.nn.Module taking (x_t, t), got {_type_name(net)}")
        inputs = self.inputs(x0, t=t, eps=eps, generator=generator)
        return self.loss(net(inputs.x_t, inputs.t_input), inputs)


# ----------------------------------------------------------------------------------------------
# Learning rate and data sources of the ready loop.


def lr_at(step: int, lr: float, warmup: int = 0, total: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate of the update with 0-based index ``step`` (the C++ ``LrSchedule``).

    Linear warmup ``lr (step + 1) / warmup`` for ``step < warmup``, then cosine decay from ``lr``
    to ``min_lr`` at ``step = total`` (constant ``lr`` if ``total <= warmup``).
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_tensor(batch: Any) -> torch.Tensor:
    """A batch from an iterable: a tensor, or a tuple/list/dict whose first entry is one (e.g. (images, labels))."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    elif isinstance(batch, dict) and batch:
        batch = next(iter(batch.values()))
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"data should yield tensors (or tuples whose first item is the tensor), got "
                        f"{_type_name(batch)}")
    return batch


class _TensorData:
    """Consecutive slices of a random permutation, reshuffled each epoch; an epoch's leftover is dropped."""

    kind = "tensor"

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int) -> None:
        self.data = data
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm: Optional[torch.Tensor] = None
        self.pos = 0
        self.epoch = 0

    def next_index(self) -> torch.Tensor:
        """The row indices of the next batch."""
        if self.perm is None or self.pos + self.batch_size > self.perm.numel():
            if self.perm is not None:
                self.epoch += 1
            self.perm = torch.randperm(self.data.shape[0], generator=self.generator)
            self.pos = 0
        index = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return index

    def next(self) -> torch.Tensor:
        return self.data[self.next_index().to(self.data.device)]

    def state(self) -> dict:
        return {"kind": self.kind, "generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos,
                "epoch": self.epoch}

    def load(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos, self.epoch = state["perm"], state["pos"], state["epoch"]


class _CallableData:
    """``data(batch_size, generator)`` draws a fresh batch (e.g. ``fewstep.GaussianMixture.sample``)."""

    kind = "callable"

    def __init__(self, fn: Callable[[int, torch.Generator], torch.Tensor], batch_size: int, seed: int) -> None:
        self.fn = fn
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        out = self.fn(self.batch_size, self.generator)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"data(batch_size, generator) should return a torch.Tensor, got {_type_name(out)}")
        return out

    def state(self) -> dict:
        return {"kind": self.kind, "generator": self.generator.get_state()}

    def load(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class _IterableData:
    """Batches of an iterable, started again when exhausted; resume skips the batches already used."""

    kind = "iterable"

    def __init__(self, data: Iterable) -> None:
        self.data = data
        self.iterator: Optional[Iterator] = None
        self.consumed = 0

    def next(self) -> torch.Tensor:
        for attempt in range(2):
            if self.iterator is None:
                self.iterator = iter(self.data)
            try:
                batch = next(self.iterator)
                self.consumed += 1
                return _batch_tensor(batch)
            except StopIteration:
                self.iterator = None
        raise ValueError("data is an empty iterable: a new pass over it yielded no batch")

    def state(self) -> dict:
        return {"kind": self.kind, "consumed": self.consumed}

    def load(self, state: dict) -> None:
        target = state["consumed"]
        self.iterator, self.consumed = None, 0
        while self.consumed < target:
            self.next()


def _data_source(data: Any, batch_size: Optional[int], seed: int) -> Any:
    data_seed = (seed + 0x9E3779B97F4A7C15) % 2**64  # a stream of its own, away from the noise seed
    if isinstance(data, torch.Tensor):
        if not data.is_floating_point():
            raise TypeError(f"data should be a floating-point tensor [N, ...], got {data.dtype}")
        if data.dim() < 2:
            raise ValueError(f"data should be a tensor [N, ...] with at least 2 dimensions, got shape "
                             f"{tuple(data.shape)}")
        batch_size = 64 if batch_size is None else batch_size
        _check_int(batch_size, "batch_size", 1)
        if batch_size > data.shape[0]:
            raise ValueError(f"batch_size should be at most the number of samples in data ({data.shape[0]}), got "
                             f"{batch_size}")
        return _TensorData(data, batch_size, data_seed)
    if callable(data) and not hasattr(data, "__iter__"):
        batch_size = 64 if batch_size is None else batch_size
        _check_int(batch_size, "batch_size", 1)
        return _CallableData(data, batch_size, data_seed)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"data should be a tensor [N, ...], a callable (batch_size, generator) -> tensor, or an "
                        f"iterable of batches, got {_type_name(data)}")
    if hasattr(data, "__next__"):
        raise TypeError("data should be re-iterable (a DataLoader, a list, ...), not a one-shot iterator: "
                        "exact resume starts a new pass and skips the batches already used")
    if batch_size is not None:
        raise ValueError(f"batch_size applies to tensor or callable data; an iterable (here "
                         f"{_type_name(data)}) gives its own batches, got batch_size={batch_size}")
    return _IterableData(data)


# ----------------------------------------------------------------------------------------------
# The ready loop.


@dataclass(frozen=True)
class TrainStep:
    """What ``train_denoiser``'s callback receives after each update."""

    step: int  # updates done so far (1 after the first)
    loss: float  # the batch loss of this update
    lr: float  # learning rate used by this update
    grad_norm: float  # global gradient L2 norm before clipping (nan when grad_clip is 0)


class TrainResult(NamedTuple):
    """``train_denoiser``'s result: ``ema, losses = fs.train_denoiser(...)``."""

    ema: torch.nn.Module  # the EMA of the weights (eval mode, no grad): the network to sample with
    losses: list[float]  # batch loss of every update from step 1, restored ones included


def _parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def _global_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file beside ``path``, flushed to disk, then renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# Options that define the objective and the random streams: a checkpoint only resumes a run that
# agrees on them. (lr, ema, grad_clip, steps, ... may change between calls, at the user's risk.)
_RESUME_KEYS = ("prediction", "weighting", "min_snr_gamma", "time_input", "time_scale", "t_min", "t_max",
                "schedule", "batch_size", "seed", "data")


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.copy_(b)


def train_denoiser(
    net: torch.nn.Module,
    data: Union[torch.Tensor, Callable[[int, torch.Generator], torch.Tensor], Iterable],
    schedule: _fewstep.NoiseSchedule,
    steps: int,
    *,
    prediction: str = "eps",
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
    time_input: str = "t",
    time_scale: float = 1.0,
    t_min: Optional[float] = None,
    t_max: Optional[float] = None,
    batch_size: Optional[int] = None,
    lr: float = 2e-4,
    min_lr: float = 0.0,
    warmup: int = 0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    ema: float = 0.999,
    grad_clip: float = 1.0,
    seed: int = 0,
    checkpoint: Union[str, os.PathLike, None] = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    progress: bool = True,
    callback: Optional[Callable[[TrainStep], None]] = None,
) -> TrainResult:
    """Train ``net`` by denoising score matching; return its EMA and the loss history.

    Each update: a batch ``x0`` from ``data``; ``t ~ U[t_min, t_max]`` and ``eps`` from the run's noise
    generator (:class:`DSMLoss`); backward; learning rate :func:`lr_at` (linear warmup over ``warmup``
    updates, then cosine decay to ``min_lr`` at ``steps``); gradient-norm clipping to ``grad_clip``;
    :class:`torch.optim.AdamW`; EMA update ``ema_w <- ema * ema_w + (1 - ema) * w``. ``net`` is
    trained in place (batches are moved to its device and floating dtype).

    Args:
        net: an ``nn.Module`` (or TorchScript module) ``net(x_t, t_input) -> prediction`` with
            trainable parameters. For several processes, use :class:`DSMLoss` in your own loop.
        data: one of
            - a floating tensor ``[N, ...]``: shuffled each epoch by the run's own data generator,
              ``batch_size`` samples per update (an epoch's leftover smaller than a batch is dropped);
            - a callable ``data(batch_size, generator) -> tensor`` drawing a fresh batch from the given
              CPU generator (e.g. ``fewstep.GaussianMixture(...).sample``);
            - a re-iterable of batches (``DataLoader``, list): tensors or tuples whose first item is
              the tensor, started again when exhausted; ``batch_size`` must then be None.
        schedule: the noise schedule.
        steps: total number of updates of the run. A call that resumes from ``checkpoint`` continues
            from the saved step up to ``steps`` (and returns at once if it is already there).
        prediction, weighting, min_snr_gamma, time_input, time_scale, t_min, t_max: see :class:`DSMLoss`.
        batch_size: samples per update for tensor or callable data (default 64).
        lr, min_lr, warmup: peak learning rate, final learning rate and warmup updates.
        weight_decay, betas: AdamW's (decoupled) weight decay and betas (eps is 1e-8).
        ema: EMA decay in [0, 1] (0 keeps a copy of the latest weights).
        grad_clip: maximum global gradient L2 norm; 0 disables clipping.
        seed: seeds the noise (t, eps) and data-order generators. The global torch RNG (dropout,
            ...) is not seeded, but its state is saved in checkpoints and restored on resume.
        checkpoint: path of the checkpoint file (None: no checkpoints). It is written atomically
            (temporary file + rename) every ``checkpoint_every`` updates and at the end, and holds
            the network, the EMA, AdamW's state, the step, the loss history, every RNG state and the
            data position. If it exists and ``resume`` is true, training continues from it, and the
            result is bit-identical to a run that never stopped (same machine, threads and library
            versions; for iterable data, provided a new pass over it yields the same batches).
        checkpoint_every: updates between checkpoints (0: only at the end).
        resume: continue from an existing ``checkpoint`` (False: start afresh and overwrite it).
        progress: show a tqdm bar with the loss (mean of the last 100 updates) and the learning rate.
        callback: called after every update with a :class:`TrainStep`.

    Returns:
        ``TrainResult(ema, losses)``: the EMA network (a deep copy of ``net``, eval mode, parameters
        without grad) and the batch loss of every update (from step 1, including restored ones).

    Raises:
        ValueError / TypeError naming the argument for bad arguments or a checkpoint from another run;
        RuntimeError if the loss becomes non-finite (nothing is updated by that batch).
    """
    if not isinstance(net, (torch.nn.Module, torch.jit.ScriptModule)):
        raise TypeError(f"net should be a torch.nn.Module taking (x_t, t), got {_type_name(net)}")
    params = _parameters(net)
    if not params:
        raise ValueError("net has no parameters that require grad; nothing to train")
    if not isinstance(schedule, _fewstep.NoiseSchedule):
        raise TypeError(f"schedule should be a fewstep schedule (e.g. fewstep.VPLinear()), got "
                        f"{_type_name(schedule)}")
    _check_int(steps, "steps", 1)
    lr, min_lr, weight_decay, ema, grad_clip = _check_optimisation(lr, min_lr, warmup, weight_decay, ema, grad_clip)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"betas should be a pair of floats, got {betas!r}")
    betas = (_check_real(betas[0], "betas[0]"), _check_real(betas[1], "betas[1]"))
    for i, b in enumerate(betas):
        if not 0 <= b < 1:
            raise ValueError(f"betas[{i}] should be in [0, 1), got {b:g}")
    _check_run(seed, checkpoint, checkpoint_every, callback)
    dsm = DSMLoss(schedule, prediction=prediction, weighting=weighting, min_snr_gamma=min_snr_gamma,
                  time_input=time_input, time_scale=time_scale, t_min=t_min, t_max=t_max)
    source = _data_source(data, batch_size, seed)

    device, dtype = params[0].device, params[0].dtype
    noise = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, eps=1e-8, weight_decay=weight_decay)
    ema_net = copy.deepcopy(net)
    for p in ema_net.parameters():
        p.requires_grad_(False)
    config = {
        "prediction": dsm.prediction, "weighting": dsm.weighting, "min_snr_gamma": dsm.min_snr_gamma,
        "time_input": dsm.time_input, "time_scale": dsm.time_scale, "t_min": dsm.t_min, "t_max": dsm.t_max,
        "schedule": repr(schedule), "batch_size": getattr(source, "batch_size", None), "seed": seed,
        "data": source.kind,
    }
    step = 0
    losses: list[float] = []
    path = os.fspath(checkpoint) if checkpoint is not None else None

    if path is not None and resume and os.path.exists(path):
        step, losses = _load_checkpoint(path, config, net, ema_net, optimizer, noise, source)

    def save() -> None:
        _atomic_save({
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "config": config,
            "model": net.state_dict(),
            "ema": ema_net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": {"noise": noise.get_state(), "global": _global_rng_state()},
            "data": source.state(),
            "losses": list(losses),
        }, path)

    bar = None
    if progress and step < steps:
        from ._progress import progress_bar

        bar = progress_bar(steps, "fewstep train", initial=step)
    net.train()
    try:
        while step < steps:
            x0 = source.next()
            if not x0.is_floating_point():
                raise TypeError(f"data batches should be floating point, got {x0.dtype}")
            x0 = x0.to(device=device, dtype=dtype)
            loss = dsm(net, x0, noise)
            value = loss.item()
            if not math.isfinite(value):
                raise RuntimeError(f"train_denoiser: the loss is {value} at update {step + 1}; lower lr or check "
                                   f"the data and network")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float("nan")
            if grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
            rate = lr_at(step, lr, warmup, steps, min_lr)
            for group in optimizer.param_groups:
                group["lr"] = rate
            optimizer.step()
            _ema_update(ema_net, net, ema)
            step += 1
            losses.append(value)
            if path is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
                save()
            if bar is not None:
                window = losses[-100:]
                bar.set_postfix(loss=f"{sum(window) / len(window):.4g}", lr=f"{rate:.3g}", refresh=False)
                bar.update(1)
            if callback is not None:
                callback(TrainStep(step=step, loss=value, lr=rate, grad_norm=grad_norm))
        if path is not None:
            save()
    finally:
        if bar is not None:
            bar.close()
    ema_net.eval()
    return TrainResult(ema_net, losses)


def _load_checkpoint(path: str, config: dict, net: torch.nn.Module, ema_net: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, noise: torch.Generator, source: Any) -> tuple[int, list]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"checkpoint '{path}' could not be read as a train_denoiser checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint '{path}' is not a train_denoiser checkpoint (expected format "
                         f"{CHECKPOINT_FORMAT!r}); pass resume=False to overwrite it")
    saved = state["config"]
    for key in _RESUME_KEYS:
        if saved.get(key) != config[key]:
            raise ValueError(f"checkpoint '{path}' was written with {key}={saved.get(key)!r}, this run has "
                             f"{key}={config[key]!r}; use the same arguments to resume, or resume=False")
    try:
        net.load_state_dict(state["model"])
        ema_net.load_state_dict(state["ema"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint '{path}' holds another network: {e}") from e
    optimizer.load_state_dict(state["optimizer"])
    noise.set_state(state["rng"]["noise"])
    source.load(state["data"])
    # Last, since a resumed iterable may draw from the global RNG while it skips batches.
    _set_global_rng_state(state["rng"]["global"])
    return int(state["step"]), list(state["losses"])
