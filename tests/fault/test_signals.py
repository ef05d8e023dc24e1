"""SIGINT, SIGTERM and SIGKILL during sampling, training and checkpoint writes (docs/reliability.md).

Each interrupted run must stop promptly between steps (core/interrupt.h), exit with 128 + the signal,
leave every file it had written complete, and resume to the same bits as an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import textwrap
from pathlib import Path

import pytest
import torch

from faultlib import BIN, SOAK, TRAIN, needs_cli, python_argv, run, signal_when, trained  # noqa: F401 - the fixture

pytestmark = needs_cli

# A latency far below the uninterrupted run (minutes) and far above a loaded machine's scheduling noise.
PROMPT = 20.0


def params(path: Path) -> dict[str, torch.Tensor]:
    return dict(torch.jit.load(str(path)).named_parameters())


def same_bits(a: Path, b: Path) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp." in p.name]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_sample_stops_on_signal(trained: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "s.png"
    argv = [str(BIN), "sample", "--model", str(trained / "model.pt"), "--solver", "heun", "--steps", "1000000",
            "--n", "256", "--out", str(out), "--threads", "1"]
    proc, latency = signal_when(argv, sig, "sample", count=2)
    assert proc.returncode == 128 + sig, proc.stderr[-2000:]
    assert "interrupted by signal" in proc.stderr
    assert not out.exists() and temp_files(tmp_path) == []
    assert latency < PROMPT
    print(f"fewstep sample: exit {latency * 1000:.0f} ms after signal {sig}")


def test_cli_train_sigint_keeps_checkpoint_and_resumes_bitwise(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc, latency = signal_when([str(BIN), *TRAIN, "--out", str(out)], signal.SIGINT, "step 2", stream="stdout")
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "checkpoint in" in proc.stderr and latency < PROMPT
    assert (out / "checkpoint.pt").is_file() and temp_files(out) == []
    resumed = run(*TRAIN, "--out", str(out), "--resume")
    assert "resumed" in resumed.stderr
    same_bits(out / "model.pt", trained / "model.pt")


def test_cli_train_sigkill_then_resume_bitwise(trained: Path, tmp_path: Path) -> None:
    """SIGKILL gives no chance to clean up: the last complete checkpoint resumes, stale temp files go."""
    out = tmp_path / "run"
    rng = random.Random(0)
    attempts = 12 if SOAK else 2
    for i in range(attempts):
        argv = [str(BIN), *TRAIN, "--out", str(out)] + (["--resume"] if out.exists() else [])
        proc, _ = signal_when(argv, signal.SIGKILL, "step ", stream="stdout", count=rng.randint(2, 30))
        assert proc.returncode == -signal.SIGKILL
    run(*TRAIN, "--out", str(out), "--resume")
    same_bits(out / "model.pt", trained / "model.pt")
    assert temp_files(out) == []


def test_cli_sigkill_during_checkpoint_writes_never_loses_the_checkpoint(tmp_path: Path) -> None:
    """Checkpoints every step: kills land inside writes; every checkpoint left behind loads (or the run
    has none yet), and the run resumes."""
    out = tmp_path / "run"
    # --checkpoint-every 1: a checkpoint (and model export) after every step
    train = [a if a != "5" else "1" for a in TRAIN]
    rng = random.Random(1)
    for i in range(10 if SOAK else 3):
        argv = [str(BIN), *train, "--out", str(out)] + (["--resume"] if out.exists() else [])
        # A resume from a damaged checkpoint would fail before its first step ("ended before 'step '").
        proc, _ = signal_when(argv, signal.SIGKILL, "step ", stream="stdout", count=rng.randint(1, 20),
                              after=rng.random() * 0.02)
        assert proc.returncode == -signal.SIGKILL
    run(*train, "--out", str(out), "--resume")
    assert (out / "model.pt").is_file() and temp_files(out) == []


PY_INTERRUPT = textwrap.dedent("""
    import sys, time, torch, fewstep as fs
    kind = sys.argv[1]
    if kind == "torchscript":
        model = fs.load_model_file(sys.argv[2])["denoiser"]
        x = torch.randn(256, 2)
    else:
        torch.manual_seed(0)
        mix = fs.GaussianMixture(weights=torch.ones(8, dtype=torch.float64) / 8,
                                 means=torch.randn(8, 16, dtype=torch.float64),
                                 covariances=torch.rand(8, 16, dtype=torch.float64) + 0.01)
        model = fs.Denoiser.exact(mix, fs.VPLinear())
        x = torch.randn(256, 16, dtype=torch.float64)
    print("ready", flush=True)
    try:
        if sys.argv[3] == "sample":
            fs.sample(model, x, solver="heun", steps=1000000)
        else:
            fs.reference_solve(model, x, rtol=1e-13, atol=1e-13, max_steps=10**8)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(130)
    print("finished", flush=True)
""")


@pytest.mark.parametrize("kind,call", [("exact", "sample"), ("torchscript", "sample"), ("exact", "reference_solve")])
def test_python_ctrl_c_raises_keyboard_interrupt_promptly(trained: Path, kind: str, call: str) -> None:
    argv = python_argv(PY_INTERRUPT) + [kind, str(trained / "model.pt"), call]
    proc, latency = signal_when(argv, signal.SIGINT, "ready", stream="stdout", after=0.5)
    assert proc.returncode == 130 and "KeyboardInterrupt" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert latency < PROMPT
    print(f"fs.{call} ({kind}, no callback): KeyboardInterrupt {latency * 1000:.0f} ms after SIGINT")
