"""Reliability of the Python front end (docs/reliability.md): Ctrl-C inside C++ loops, Python's GC
through a Denoiser, and bad input that must be refused with an error naming the argument and value.

Interrupts are delivered in-process with SIGALRM (signal.setitimer) and a handler that raises: the C++
loops run Python's pending signal handlers between steps, so the handler's exception must reach the
caller long before the loop would have ended by itself (each run here asks for minutes of work).
"""

from __future__ import annotations

import gc
import math
import signal
import threading
import time
import weakref

import pytest
import torch

import fewstep as fs


class Alarm(Exception):
    pass


def _raise_alarm(signum, frame):
    raise Alarm()


@pytest.fixture
def alarm():
    """Arms SIGALRM to raise Alarm after `delay` seconds; disarmed and restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    previous = signal.signal(signal.SIGALRM, _raise_alarm)

    def arm(delay: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, delay)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def mixture_model(vp):
    torch.manual_seed(0)
    mix = fs.GaussianMixture(weights=torch.ones(4, dtype=torch.float64) / 4,
                             means=torch.randn(4, 8, dtype=torch.float64),
                             covariances=torch.rand(4, 8, dtype=torch.float64) * 0.1 + 0.01)
    return fs.Denoiser.exact(mix, vp)


# ---- item: Ctrl-C inside C++ loops (core/interrupt.h) ----

def test_sample_interrupted_between_steps(mixture_model, alarm):
    x_T = torch.randn(64, 8, dtype=torch.float64)
    alarm(0.2)
    start = time.monotonic()
    with pytest.raises(Alarm):
        fs.sample(mixture_model, x_T, solver="heun", steps=1_000_000)  # minutes of work uninterrupted
    assert time.monotonic() - start < 30  # not the run's end: the loop stopped at the signal


def test_reference_solve_interrupted(mixture_model, alarm):
    x_T = torch.randn(64, 8, dtype=torch.float64)
    alarm(0.2)
    with pytest.raises(Alarm):
        fs.reference_solve(mixture_model, x_T, rtol=1e-13, atol=1e-13, max_steps=10_000_000)


def test_interrupt_leaves_the_module_usable(mixture_model, alarm):
    x_T = torch.randn(4, 8, dtype=torch.float64)
    alarm(0.1)
    with pytest.raises(Alarm):
        fs.sample(mixture_model, x_T, solver="euler", steps=1_000_000)
    # no stale pending interrupt: the next call runs to the end
    out = fs.sample(mixture_model, x_T, solver="euler", steps=10)
    assert out.steps == 10 and torch.isfinite(out.x).all()


def test_keyboard_interrupt_is_the_exception_raised(mixture_model):
    """Python's own SIGINT handler raises KeyboardInterrupt; it arrives with that type."""
    x_T = torch.randn(8, 8, dtype=torch.float64)
    timer = threading.Timer(0.2, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fs.sample(mixture_model, x_T, solver="heun", steps=1_000_000)
    finally:
        timer.cancel()


# ---- item: Python's GC through a Denoiser ----

class SelfReferencingNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.payload = torch.nn.Parameter(torch.zeros(1 << 20))  # 4 MB, so a leak would show
        self.denoiser = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_net_holding_its_own_denoiser_is_collected(vp):
    net = SelfReferencingNet()
    net.denoiser = fs.Denoiser(net, vp)
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None


def test_plain_function_cycle_is_collected(vp):
    holder = {}

    def net(x, t):
        return holder["d"](x, float(t[0]))[1] * 0

    holder["d"] = fs.Denoiser(net, vp, fingerprint="f")
    gone = weakref.ref(net)
    del net, holder
    gc.collect()
    assert gone() is None


def test_denoiser_in_use_keeps_its_net(vp):
    """The GC never frees a net while a Denoiser that calls it is reachable."""
    net = SelfReferencingNet()
    d = fs.Denoiser(net, vp)
    net.denoiser = d
    del net
    gc.collect()
    x0, eps = d(torch.randn(2, 3), 0.5)
    assert torch.equal(eps, torch.zeros(2, 3))


class TrainerHoldingNet(torch.nn.Module):
    """A student that keeps a reference to the trainer training it (e.g. to read its step)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.payload = torch.nn.Parameter(torch.zeros(1 << 20), requires_grad=False)
        self.trainer = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_student_holding_its_own_trainer_is_collected(vp):
    net = TrainerHoldingNet()
    net.trainer = fs.train.loss_trainer(fs.DSMLoss(vp), net, torch.randn(32, 3), batch_size=8)
    net.trainer.step()
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None


def test_trainer_in_use_keeps_its_student(vp):
    """The GC never frees a Python loss's student while its trainer is reachable."""
    net = TrainerHoldingNet()
    trainer = fs.train.loss_trainer(fs.DSMLoss(vp), net, torch.randn(32, 3), batch_size=8)
    net.trainer = trainer
    del net
    gc.collect()
    assert trainer.step().step == 1 and trainer.impl is not None

# ---- item: NaN and out-of-range values ----

def test_randn_rejects_non_float_dtypes():
    for dtype in (torch.int64, torch.bool, torch.complex64):
        with pytest.raises(TypeError, match="dtype"):
            fs.randn((2, 3), seeds=[0, 1], dtype=dtype)


@pytest.mark.parametrize("dtype,name", [(torch.int64, "Long"), (torch.bool, "Bool"), (torch.complex64, "ComplexFloat")])
def test_net_returning_non_float_names_the_dtype(vp, dtype, name):
    d = fs.Denoiser(lambda x, t: torch.zeros(x.shape, dtype=dtype), vp, fingerprint="f")
    with pytest.raises(TypeError, match=f"the network returned a {name} tensor at t = 0.5"):
        d(torch.randn(2, 3), 0.5)
    with pytest.raises(TypeError, match=f"returned a {name} tensor"):
        fs.sample(d, torch.randn(2, 3), solver="euler", steps=2)


@pytest.mark.parametrize("t", [5.0, -0.1, 0.0, math.nan])
def test_denoiser_call_rejects_time_outside_the_schedule(vp, t):
    d = fs.Denoiser(lambda x, t: x * 0, vp, fingerprint="f")
    with pytest.raises(ValueError, match=r"t must be a finite time in \[t_min, t_max\]"):
        d(torch.randn(2, 3), t)


def test_denoiser_call_accepts_the_ends_of_the_schedule(vp):
    d = fs.Denoiser(lambda x, t: x * 0, vp, fingerprint="f")
    for t in (vp.t_min, vp.t_max, vp.t_max * (1 + 1e-14)):
        d(torch.randn(2, 3), t)


def test_scaled_error_norm_rejects_negative_tolerances():
    e = torch.ones(2, 3)
    with pytest.raises(ValueError, match="rtol"):
        fs.scaled_error_norm(e, e, e, rtol=-1.0, atol=0.1)
    with pytest.raises(ValueError, match="atol"):
        fs.scaled_error_norm(e, e, e, rtol=0.1, atol=math.nan)


def test_progressive_grid_time_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        fs.progressive_grid_time(0.0, 0, 0.001, 1.0)


# ---- item: errors that say what is wrong ----

def test_huge_int_option_names_the_option(exact_gaussian):
    with pytest.raises(ValueError, match="option 'eta' must fit in a 64-bit integer, got 1180591620717411303424"):
        fs.sample(exact_gaussian, torch.randn(2, 3), solver="ddim", steps=4, eta=2**70)


def test_huge_step_counts_fail_before_allocation(exact_gaussian):
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000000\], got 4611686018427387904"):
        fs.sample(exact_gaussian, torch.randn(2, 3), solver="euler", steps=2**62)
    with pytest.raises(ValueError, match=r"nfe must be in \[1, 1000000\]"):
        fs.sample(exact_gaussian, torch.randn(2, 3), solver="euler", nfe=2**40)
    with pytest.raises(ValueError, match="steps must be in"):
        fs.timesteps(exact_gaussian.schedule, 2**62)


def test_nan_in_x_T_is_named_at_once(exact_gaussian):
    x_T = torch.randn(2, 3)
    x_T[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"x_T must be finite, got NaN at index \(1, 2\)"):
        fs.sample(exact_gaussian, x_T, solver="dpm_adaptive")


def test_nan_from_the_net_stops_adaptive_sampling_at_the_first_evaluation(vp):
    calls = []

    def net(x, t):
        calls.append(1)
        return torch.full_like(x, math.nan)

    d = fs.Denoiser(net, vp, fingerprint="nan-net")
    with pytest.raises(RuntimeError, match=r"non-finite values \(NaN/Inf\) in x̂_0 at step 0 .*NaN at index \(0, 0\)"):
        fs.sample(d, torch.randn(2, 3), solver="dpm_adaptive", check_finite=True)
    assert len(calls) < 10  # not 4096 evaluations blaming the tolerances


def test_directory_as_model_file_names_the_path(tmp_path, exact_gaussian):
    (tmp_path / "m.pt").mkdir()
    with pytest.raises((ValueError, RuntimeError), match=str(tmp_path / "m")):
        fs.sample(str(tmp_path / "m.pt"), torch.randn(2, 3))


def test_directory_as_checkpoint_names_the_path(tmp_path):
    d = tmp_path / "ck.pt"
    d.mkdir()
    with pytest.raises(ValueError, match=f"'{d}' is a directory"):
        fs.Checkpoint.load(str(d))


def test_export_student_validates_its_grid_before_writing(tmp_path):
    teacher = fs.__file__ and __import__("pathlib").Path(__file__).resolve().parents[2] / "models" / "fmnist-unet-eps.pt"

    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    path = tmp_path / "student.pt"
    for grid, pattern in (([5.0, 0.001], "5"), ([0.001, 1.0], "decreas"), ([1.0, math.nan], "nan|NaN")):
        with pytest.raises(ValueError, match=pattern):
            fs.export_student(Zero(), path, teacher=str(teacher), prediction="x0", timesteps=grid)
        assert not path.exists() and not path.with_suffix(".json").exists()


# ---- the command line: NaN is never "unset", integers are never wrapped or clamped ----

_REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
_BIN = __import__("pathlib").Path(__import__("os").environ.get("FEWSTEP_CLI") or _REPO / "build" / "bin" / "fewstep")
_MODEL = str(_REPO / "models" / "fmnist-unet-eps.pt")


@pytest.mark.skipif(not _BIN.is_file(), reason="the fewstep binary is not built")
@pytest.mark.parametrize("args,needle", [
    (["--guidance", "nan"], "--guidance"),
    (["--rtol", "nan"], "--rtol"),
    (["--atol", "inf"], "--atol"),
    (["--time-scale", "nan"], "--time-scale"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "18446744073709551616"], "--seed"),
    (["--n", "1000000000000"], "--n"),
    (["--n", "1e12"], "--n"),
    (["--threads", "5000"], "--threads"),
    (["--option", "order=99999999999999999999"], "99999999999999999999"),
])
def test_cli_refuses_nan_and_out_of_range_flags(tmp_path, args, needle):
    import subprocess
    base = ["sample", "--model", _MODEL, "--steps", "1"] + ([] if "--n" in args else ["--n", "1"])
    proc = subprocess.run([str(_BIN), *base, *args, "--out", str(tmp_path / "x.png"), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert not (tmp_path / "x.png").exists()
