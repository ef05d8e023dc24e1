"""Helpers of the fault-injection suite (docs/reliability.md): the `fewstep` binary, a small trained
model, and processes that are signalled once they report progress.

The binary is <repo>/build/bin/fewstep or $FEWSTEP_CLI. FEWSTEP_SOAK=1 turns on the long variants.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
SOAK = os.environ.get("FEWSTEP_SOAK", "") not in ("", "0")

# Progress lines at every step, so a test knows when the loop it interrupts is running.
ENV = dict(os.environ, FEWSTEP_PROGRESS_INTERVAL="0",
           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH", "")])))

needs_cli = pytest.mark.skipif(not BIN.is_file(), reason=f"{BIN} is not built (or set FEWSTEP_CLI)")

TRAIN = ["train", "--data", "gmm2d", "--net", "mlp", "--hidden", "32", "--blocks", "1", "--steps", "120",
         "--batch", "64", "--seed", "7", "--checkpoint-every", "5", "--threads", "1", "--log-every", "1"]


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def signal_when(argv: list[str], sig: int, ready: str, *, stream: str = "stderr", after: float = 0.0,
                count: int = 1, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Starts argv, waits for the `count`-th output line containing `ready` (then `after` seconds), sends
    `sig`; returns the finished process and the seconds from the signal to its exit."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, bufsize=1)
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    seen, lines = 0, []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            break
        lines.append(line)
        if ready in line:
            seen += 1
            if seen >= count:
                break
    else:
        proc.kill()
        raise AssertionError(f"{argv} never printed {ready!r}")
    if seen < count:
        out, err = proc.communicate()
        raise AssertionError(f"{argv} ended before {ready!r} ({proc.returncode}):\n{''.join(lines)}{err}")
    time.sleep(after)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    latency = time.monotonic() - sent
    text = "".join(lines)
    if stream == "stderr":
        err = text + err
    else:
        out = text + out
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), latency


def python_argv(code: str) -> list[str]:
    return [sys.executable, "-c", code]




@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small run: model.pt + sidecar + checkpoint.pt (uninterrupted, the reference bits)."""
    if not BIN.is_file():
        pytest.skip(f"{BIN} is not built")
    out = tmp_path_factory.mktemp("fault") / "full"
    run(*TRAIN, "--out", str(out))
    return out
