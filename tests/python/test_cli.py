"""End-to-end tests of the `fewstep` command-line tool (build/bin/fewstep, run through subprocess).

Trains a small Gaussian-mixture MLP, checks the exported TorchScript model, card and sidecar, that
an interrupted run resumed with --resume ends with the same weights as an uninterrupted one, that
`fewstep sample` writes valid PNGs of the expected size, and that bad flags give messages naming
the flag or file with a non-zero exit status. The binary is <repo>/build/bin/fewstep, or
$FEWSTEP_CLI when set (e.g. another build directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")

pytestmark = pytest.mark.skipif(
    not BIN.is_file(), reason=f"{BIN} is not built (cmake --build build --target fewstep_cli, or set FEWSTEP_CLI)"
)

TRAIN = ["train", "--data", "gmm2d", "--net", "mlp", "--steps", "60", "--batch", "128", "--seed", "3",
         "--checkpoint-every", "10", "--threads", "1"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def read_png(path: Path) -> tuple[int, int, int, bytes]:
    """Parses a PNG by hand: checks the signature and every CRC; returns width, height, channels, pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header, kinds = 8, b"", None, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and pos == len(data)
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (0, 2)
    channels = 1 if colour == 0 else 3
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    assert len(raw) == height * stride
    assert all(raw[y * stride] == 0 for y in range(height))  # filter "None" on every row
    pixels = b"".join(raw[y * stride + 1:(y + 1) * stride] for y in range(height))
    return width, height, channels, pixels


def params(path: Path) -> dict[str, torch.Tensor]:
    return dict(torch.jit.load(str(path)).named_parameters())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "full"
    run(*TRAIN, "--out", str(out))
    return out


def test_train_writes_model_card_and_sidecar(full_run: Path) -> None:
    for name in ("model.pt", "model.json", "model.md", "checkpoint.pt", "run.json"):
        assert (full_run / name).is_file(), name
    meta = json.loads((full_run / "model.json").read_text())
    assert meta["format"] == "fewstep.model" and meta["schema"] == 2
    assert meta["model_sha256"] == hashlib.sha256((full_run / "model.pt").read_bytes()).hexdigest()
    assert meta["prediction"] == "eps" and meta["time_input"] == "t"
    assert meta["schedule"]["name"] == "vp_linear" and meta["schedule"]["beta_max"] == 20.0
    assert meta["sample_shape"] == [2]
    assert meta["training"]["steps_done"] == 60 and meta["training"]["seed"] == 3
    net = torch.jit.load(str(full_run / "model.pt"))
    assert meta["parameters"] == sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        y = net(torch.zeros(5, 2), torch.full((5,), 0.5))
    assert y.shape == (5, 2) and torch.isfinite(y).all()
    card = (full_run / "model.md").read_text()
    for text in ("fewstep train --data gmm2d", "| seed | 3 |", "final loss", "parameters", "VPLinear",
                 "| prediction | eps |", "time input", "training time"):
        assert text in card, text
    # The card states the training time, the machine and the mean iterations per second of the run.
    row = next(line for line in card.splitlines() if line.startswith("| training time |"))
    assert meta["training"]["machine"] in row, row
    rate = float(re.search(r"; (\d+\.\d\d) it/s\) \|$", row).group(1))
    assert rate == pytest.approx(60 / meta["training"]["seconds"], rel=0.01, abs=0.006), row


def test_resume_after_stop_matches_an_uninterrupted_run(full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    run(*TRAIN, "--out", str(out), "--stop-at", "30")
    assert json.loads((out / "model.json").read_text())["training"]["steps_done"] == 30
    first = params(out / "model.pt")
    proc = run(*TRAIN, "--out", str(out), "--resume")
    assert "resumed" in proc.stderr and "at step 30" in proc.stderr
    resumed, full = params(out / "model.pt"), params(full_run / "model.pt")
    assert resumed.keys() == full.keys()
    assert any(not torch.equal(first[k], full[k]) for k in full)  # the second session did train
    for key in full:
        assert torch.equal(resumed[key], full[key]), key


def test_resume_refuses_changed_flags_and_fresh_runs_refuse_existing_dirs(full_run: Path) -> None:
    bad = [a if a != "128" else "64" for a in TRAIN]
    proc = run(*bad, "--out", str(full_run), "--resume", check=False)
    assert proc.returncode == 2
    assert "fewstep train: " in proc.stderr and "--batch is 64 here, 128 in the checkpoint" in proc.stderr
    assert "only --steps may change" in proc.stderr
    proc = run(*TRAIN, "--out", str(full_run), check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr and "--resume" in proc.stderr


def test_resume_may_extend_the_run(full_run: Path, tmp_path: Path) -> None:
    # --steps is the one flag that may change on --resume: the run goes on to the new length. The warmup's
    # default (--steps / 10) then changes too, and is refused like any other flag unless given.
    out = tmp_path / "longer"
    shutil.copytree(full_run, out)
    longer = [a if a != "60" else "70" for a in TRAIN]
    proc = run(*longer, "--out", str(out), "--resume", check=False)
    assert proc.returncode == 2 and "--warmup is 7 here, 6 in the checkpoint" in proc.stderr
    proc = run(*longer, "--warmup", "6", "--out", str(out), "--resume")
    assert "resumed" in proc.stderr and "at step 60" in proc.stderr
    assert json.loads((out / "model.json").read_text())["training"]["steps_done"] == 70


def test_sample_scatter_png(full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "gmm.png"
    proc = run("sample", "--model", str(full_run / "model.pt"), "--solver", "dpmpp_2m", "--steps", "8",
               "--n", "200", "--seed", "0", "--size", "256", "--out", str(out))
    assert "8 NFE" in proc.stderr
    width, height, channels, pixels = read_png(out)
    assert (width, height, channels) == (256, 256, 3)
    assert len(set(pixels)) > 2  # background, axes and points


def test_sample_image_grid_from_flags_without_sidecar(tmp_path: Path) -> None:
    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    model = tmp_path / "zero.pt"
    torch.jit.script(Zero()).save(str(model))
    proc = run("sample", "--model", str(model), check=False)
    assert proc.returncode == 2 and "has no sidecar" in proc.stderr and "pass --schedule" in proc.stderr

    out = tmp_path / "grid.png"
    run("sample", "--model", str(model), "--schedule", "vp_linear", "--prediction", "eps", "--shape", "1,28,28",
        "--solver", "ddim", "--steps", "3", "--n", "6", "--nrow", "3", "--padding", "2", "--out", str(out))
    width, height, channels, pixels = read_png(out)
    assert (width, height, channels) == (3 * 30 + 2, 2 * 30 + 2, 1)
    # A zero-noise model's x̂_0 is x/α: with these noise levels the samples saturate at 0 and 255.
    assert min(pixels) == 0 and max(pixels) == 255
    assert pixels[0] == 128  # padding is mid grey
    mpimg = pytest.importorskip("matplotlib.image")
    img = mpimg.imread(str(out))
    assert img.shape == (height, width)
    assert bytes((img * 255).round().astype("uint8").ravel()) == pixels


def test_sample_seeds_are_per_sample(tmp_path: Path) -> None:
    # Sample i starts from seed + i alone: tile 5 of '--seed 0 --n 8' is the image of '--seed 5 --n 1'.
    class Shrink(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 0.3 * torch.tanh(x)

    model = tmp_path / "shrink.pt"
    torch.jit.script(Shrink()).save(str(model))
    common = ["--model", str(model), "--schedule", "vp_linear", "--prediction", "x0", "--shape", "1,28,28",
              "--steps", "4", "--padding", "0", "--quiet"]
    run("sample", *common, "--n", "8", "--nrow", "8", "--seed", "0", "--out", str(tmp_path / "eight.png"))
    run("sample", *common, "--n", "1", "--seed", "5", "--out", str(tmp_path / "one.png"))
    w8, _, _, eight = read_png(tmp_path / "eight.png")
    w1, _, _, one = read_png(tmp_path / "one.png")
    assert (w8, w1) == (8 * 28, 28)
    tile = b"".join(eight[y * w8 + 5 * 28:y * w8 + 6 * 28] for y in range(28))
    assert tile == one
    assert len(set(one)) > 10


def test_bad_flags_name_the_flag_or_file(tmp_path: Path) -> None:
    proc = run("sample", "--model", "x.pt", check=False)
    assert proc.returncode == 2
    assert "fewstep sample: --model 'x.pt' does not exist" in proc.stderr

    model = tmp_path / "m.pt"
    model.write_bytes(b"not a zip")
    proc = run("sample", "--model", str(model), "--schedule", "vp_linear", "--prediction", "eps", "--shape", "2",
               check=False)
    assert proc.returncode == 2 and f"--model '{model}' cannot be loaded as TorchScript" in proc.stderr

    proc = run("sample", "--model", str(model), "--solver", "nope", check=False)
    assert proc.returncode == 2 and "--solver 'nope' is not a solver" in proc.stderr and "dpmpp_2m" in proc.stderr

    proc = run("train", "--data", "mnist", "--steps", "5", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("fewstep train: --data") and "--help" in proc.stderr

    proc = run("train", "--data", "gmm2d", "--steps", "5", check=False)
    assert proc.returncode == 2 and "--out" in proc.stderr

    proc = run("train", "--data", "gmm2d", "--net", "unet", "--steps", "5", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "--net unet needs images" in proc.stderr

    proc = run("sample", "--model", str(model), "--out", str(tmp_path / "no" / "dir.png"), check=False)
    assert proc.returncode == 2 and "--out" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.parametrize("sub", ["train", "sample"])
def test_help_describes_every_flag_with_an_example(sub: str) -> None:
    proc = run(sub, "--help")
    assert proc.returncode == 0
    assert "Example" in proc.stdout and f"fewstep {sub} --" in proc.stdout
    assert "--out" in proc.stdout and "--seed" in proc.stdout
    if sub == "sample":
        assert "dpmpp_2m" in proc.stdout


def test_solvers_lists_the_registry() -> None:
    proc = run("solvers")
    assert "dpmpp_2m: order 2" in proc.stdout and "ddim: order 1" in proc.stdout


class TinyEps(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([x, t[:, None].to(x.dtype) / 1000.0], dim=1))


def test_export_makes_a_model_file_of_a_torchscript_network(tmp_path: Path) -> None:
    """`fewstep export`: the file samples exactly as the TorchScript network with the same settings does."""
    import fewstep as fs

    torch.manual_seed(0)
    torch.jit.script(TinyEps()).save(str(tmp_path / "net.pt"))
    model = tmp_path / "model.pt"
    spec = '{"name": "vp_linear", "beta_min": 0.1, "beta_max": 15}'
    args = ["export", "--network", str(tmp_path / "net.pt"), "--schedule", spec, "--prediction", "eps",
            "--time-scale", "1000", "--shape", "2", "--out", str(model)]
    run(*args)
    info = fs.read_model_file_info(str(model))
    assert info["sample_shape"] == [2] and info["prediction"] == "eps" and info["time_scale"] == 1000
    assert info["sidecar"]["schedule"]["beta_max"] == 15 and info["metadata"]["export"]["source"].endswith("net.pt")
    x_T = fs.randn((8, 2), seeds=range(8))
    direct = fs.Denoiser.torchscript(str(tmp_path / "net.pt"), fs.VPLinear(beta_min=0.1, beta_max=15),
                                     prediction="eps", time_scale=1000)
    expect = fs.sample(direct, x_T, solver="dpmpp_2m", steps=6).x
    assert torch.equal(fs.sample(str(model), x_T, solver="dpmpp_2m", steps=6).x, expect)
    proc = run("sample", "--model", str(model), "--n", "4", "--out", str(tmp_path / "s.png"), "--quiet")
    # Refusals name the flag or file; nothing is replaced without --force.

    def with_flag(flag: str, value: str) -> list:
        bad = list(args)
        bad[bad.index(flag) + 1] = value
        return bad

    cases = [(args, "exists"), (with_flag("--shape", "0") + ["--force"], "--shape"),
             (with_flag("--schedule", "{oops") + ["--force"], "--schedule"),
             (with_flag("--network", str(tmp_path / "s.png")) + ["--force"], "--network"),
             (with_flag("--shape", "5") + ["--force"], str(model))]  # the network cannot take 5 features
    for bad, named in cases:
        proc = run(*bad, check=False)
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr
    assert fs.read_model_file_info(str(model))["sidecar"]["schedule"]["beta_max"] == 15
