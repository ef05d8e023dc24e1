"""The `fewstep` command for a person typing it: suggestions for mistyped subcommands and flags,
the subcommand list, complete help, durations in words, images of one's own as training data,
scaled grids and image names that say what the file is. Runs build/bin/fewstep (or $FEWSTEP_CLI)."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fewstep as fs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")

pytestmark = pytest.mark.skipif(not BIN.is_file(), reason=f"{BIN} is not built")


def run(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


SUBCOMMANDS = ("distill", "eval", "sample", "solvers", "train", "train-classifier")


def test_unknown_subcommand_is_explained_with_the_list() -> None:
    proc = run("bogus", check=False)
    assert proc.returncode == 2
    assert "fewstep: 'bogus' is not a subcommand of 'fewstep'" in proc.stderr
    assert "did you mean" not in proc.stderr  # nothing is near "bogus"
    for name in SUBCOMMANDS:
        assert re.search(rf"^  {re.escape(name)} +\S", proc.stderr, re.M), (name, proc.stderr)

    proc = run("smaple", "--steps", "4", check=False)
    assert proc.returncode == 2 and "did you mean 'sample'?" in proc.stderr

    proc = run(check=False)  # no subcommand at all
    assert proc.returncode == 2 and "needs a subcommand" in proc.stderr and "  train " in proc.stderr


def test_mistyped_flags_get_a_suggestion() -> None:
    proc = run("sample", "--model", "m.pt", "--stpes", "4", check=False)
    assert proc.returncode == 2
    assert "fewstep sample: unknown flag '--stpes' for 'fewstep sample'; did you mean '--steps'?" in proc.stderr
    proc = run("--thread", "2", "solvers", check=False)
    assert proc.returncode == 2 and "did you mean '--threads'?" in proc.stderr
    proc = run("distill", "progresive", check=False)
    assert proc.returncode == 2 and "not a subcommand of 'fewstep distill'; did you mean 'progressive'?" in proc.stderr
    # Values of flags are not taken for flags or subcommands.
    proc = run("solvers", "--threads", "1")
    assert proc.returncode == 0


def test_library_errors_are_printed_under_the_subcommand_once(tmp_path: Path) -> None:
    # The library names its function ("sample: ..."); the CLI does not repeat it after "fewstep sample: ".
    proc = run("sample", "--model", str(REPO / "models" / "fmnist-unet-eps.pt"), "--shape", "3,28,28", "--n", "2",
               "--out", str(tmp_path / "s.png"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fewstep sample: x_T has shape [2, 3, 28, 28], but the model file's samples are "
                                  "[batch, 1, 28, 28]"), proc.stderr
    assert not (tmp_path / "s.png").exists()


def test_distill_help_lists_every_method() -> None:
    help_text = run("distill", "--help").stdout
    methods = re.findall(r"^  (\S+)\s", help_text.split("Subcommands:")[1], re.M)
    assert {"consistency", "guidance", "kd", "micro", "progressive"} <= set(methods), help_text
    summary = run("--help").stdout
    line = next(l for l in summary.splitlines() if l.strip().startswith("distill"))
    for method in ("consistency", "guidance", "kd", "micro", "progressive"):
        assert method in line, line


def test_sample_scale_and_png_only(tmp_path: Path) -> None:
    model = str(REPO / "models" / "fmnist-unet-eps.pt")
    out = tmp_path / "grid.png"
    proc = run("sample", "--model", model, "--steps", "2", "--n", "4", "--scale", "3", "--out", str(out))
    assert png_size(out) == (3 * (2 * 30 + 2), 3 * (2 * 30 + 2))
    # "in 1.23 s" or "in 850 ms", never "in 1.23456 s".
    assert re.search(r" NFE in \d+(\.\d+)? (ms|s|min \d\d s) -> ", proc.stderr), proc.stderr
    assert not re.search(r"\d\.\d{4,} s", proc.stderr), proc.stderr

    jpg = tmp_path / "y.jpg"
    proc = run("sample", "--model", model, "--steps", "2", "--n", "4", "--out", str(jpg), check=False)
    assert proc.returncode == 2 and not jpg.exists()
    assert f"--out: image path '{jpg}' should end in .png" in proc.stderr and "'.jpg'" in proc.stderr
    proc = run("sample", "--model", model, "--scale", "0", "--out", str(out), check=False)
    assert proc.returncode == 2 and "--scale" in proc.stderr


def test_progress_lines_when_stderr_is_a_log(tmp_path: Path) -> None:
    # stderr is a pipe here: no bar; with a zero interval one line per step and a final one.
    model = str(REPO / "models" / "gmm2d-mlp-eps.pt")
    proc = run("sample", "--model", model, "--steps", "3", "--n", "8", "--out", str(tmp_path / "a.png"),
               env={"FEWSTEP_PROGRESS_INTERVAL": "0"})
    lines = [l for l in proc.stderr.splitlines() if l.startswith("sample dpmpp_2m")]
    assert [l.split("[")[0].split()[-1] for l in lines] == ["1/3", "2/3", "3/3", "3/3"], proc.stderr
    assert "done in" in lines[-1] and "\r" not in proc.stderr and "\x1b" not in proc.stderr
    quiet = run("sample", "--model", model, "--steps", "3", "--n", "8", "--out", str(tmp_path / "b.png"))
    assert "sample dpmpp_2m" not in quiet.stderr  # default interval 30 s: a short run prints no progress


def _images(n: int, size: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_train_on_your_own_images(tmp_path: Path, kind: str) -> None:
    x = _images(32)
    if kind == "npz":
        data = tmp_path / "mine.npz"
        np.savez_compressed(data, images=x, labels=np.arange(32) % 2)
    else:
        data = tmp_path / "mine"
        for k in range(32):
            (data / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
            fs.save_image_grid(fs_tensor(x[k]), data / f"c{k % 2}" / f"{k:03d}.png", padding=0)
    out = tmp_path / "run"
    proc = run("train", "--data", str(data), "--steps", "2", "--batch", "8", "--base-channels", "8",
               "--channel-mult", "1,2", "--num-classes", "2", "--threads", "1", "--out", str(out))
    assert "32 images of 1x8x8" in proc.stderr, proc.stderr
    import json

    meta = json.loads((out / "model.json").read_text())
    assert meta["sample_shape"] == [1, 8, 8] and meta["data"]["images"] == 32
    assert meta["data"]["classes"] == (["0", "1"] if kind == "npz" else ["c0", "c1"])
    run("sample", "--model", str(out / "model.pt"), "--steps", "2", "--n", "4", "--out", str(tmp_path / "s.png"))
    assert png_size(tmp_path / "s.png") == (2 * 10 + 2, 2 * 10 + 2)


def fs_tensor(image: np.ndarray):
    import torch

    return torch.from_numpy(image.astype(np.float32) / 127.5 - 1.0).view(1, 1, *image.shape)


def test_train_data_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8), dtype=np.float32) + 3.0)
    proc = run("train", "--data", str(bad), "--steps", "2", "--batch", "2", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    assert f"'{bad}' array 'images' spans [3, 3]; floating-point images must lie in [-1, 1]" in proc.stderr
    proc = run("train", "--data", str(tmp_path / "none.npz"), "--steps", "2", "--out", str(tmp_path / "r"),
               check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((4, 8, 12), dtype=np.uint8))
    proc = run("train", "--data", str(wide), "--steps", "2", "--batch", "2", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "square images, these are 12x8" in proc.stderr


NUMERIC_FLAG = re.compile(r"^\s+(--[\w-]+)\s+(?:INT|UINT|FLOAT)\b", re.MULTILINE)


BENCH = BIN.parent / "fewstep-bench"
BENCH_COMMANDS = [("bench", c) for c in ("demo", "distill", "grids", "micro", "psld", "solvers")]


@pytest.mark.parametrize("command", [("distill", "progressive"), ("distill", "consistency"), ("distill", "kd"),
                                     ("distill", "micro"), ("distill", "guidance"), ("train",), ("sample",),
                                     ("eval",), ("train-classifier",), *BENCH_COMMANDS])
def test_numeric_flag_errors_state_a_readable_bound(command: tuple) -> None:
    # A bound the user can act on: "--solver-check-n: must be > 0, got 0", not CLI11's range to DBL_MAX
    # or INT64_MAX printed in full. Both programs: fewstep and fewstep-bench (cli/flag_checks.h).
    binary = BIN
    if command[0] == "bench":
        if not BENCH.is_file():
            pytest.skip(f"{BENCH} is not built")
        binary, command = BENCH, command[1:]

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *command, *args], capture_output=True, text=True, timeout=300)

    flags = sorted(set(NUMERIC_FLAG.findall(call("--help").stdout)))
    assert flags, f"no numeric flags found in `{binary.name} {' '.join(command)} --help`"
    # One process per flag. CLI11 checks values before it reports unexpected arguments, so the trailing
    # unknown flag stops a run whose value was accepted (fewstep-bench has no required flags).
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda flag: call(flag, "-5", "--no-such-flag"), flags))
    for flag, proc in zip(flags, procs):
        if f"{flag}:" not in proc.stderr:
            assert proc.returncode != 0, (flag, proc.stderr)  # accepted; stopped by the unknown flag
            continue
        assert proc.returncode == (2 if binary == BIN else 105), (flag, proc.stderr)  # 105: CLI11's ValidationError
        assert not re.search(r"\d{12,}", proc.stderr), (flag, proc.stderr)
