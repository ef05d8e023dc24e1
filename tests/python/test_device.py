"""Device and dtype: --device/--dtype, device=/dtype= on the loaders, parsed once by the library (docs/gpu.md).

CPU paths run everywhere; the CUDA tests run when torch.cuda.is_available() and are skipped otherwise.

Tolerance of float64 against float32. The float32 run rounds every operation to u = 2^-24 relative. One
evaluation of the shipped MLP (width 128) accumulates dot products of at most 256 terms per layer, whose
rounding is about sqrt(256) u = 16 u relative in the typical case; a deterministic solver carries an evaluation
error forward with a gain of order one per step on these contracting ODEs. After N steps the two runs may
therefore differ by about N * 16 u * max|x|; the bound allows 16 times that (N * 256 u * max|x|), and a
float32 run is much farther than that from a run with one step more (checked), so the bound still
separates "the same computation in another precision" from "another computation".
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

import fewstep as fs

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
needs_cli = pytest.mark.skipif(not BIN.is_file(), reason=f"{BIN} is not built (cmake --build build --target fewstep_cli)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given without CUDA")

U = 2.0**-24
STEPS = 8


def model_file() -> str:
    return str(fs.model_path("gmm16d-mlp-eps"))


def tolerance(steps: int, x: torch.Tensor) -> float:
    return steps * 256 * U * float(x.abs().max())


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), "--threads", "1", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def test_float64_load_gives_float64_samples_that_agree_with_float32() -> None:
    x_T = fs.randn((32, 16), seeds=range(32), dtype=torch.float64)
    f64 = fs.load_model_file(model_file(), dtype="float64")
    f32 = fs.load_model_file(model_file())
    x64 = fs.sample(f64["denoiser"], x_T, solver="dpmpp_2m", steps=STEPS).x
    x32 = fs.sample(f32["denoiser"], x_T.float(), solver="dpmpp_2m", steps=STEPS).x
    assert x64.dtype == torch.float64 and x32.dtype == torch.float32
    diff = float((x64 - x32.double()).abs().max())
    assert 0 < diff <= tolerance(STEPS, x64)  # not bit-equal: the float64 run really ran in float64
    # A path sampled from a float64 x_T loads the network in float64 (fs.sample follows x_T's device and dtype).
    assert torch.equal(fs.sample(model_file(), x_T, solver="dpmpp_2m", steps=STEPS).x, x64)
    # The bound is far below the difference a different computation makes.
    other = fs.sample(f64["denoiser"], x_T, solver="dpmpp_2m", steps=STEPS + 1).x
    assert float((other - x64).abs().max()) > 100 * tolerance(STEPS, x64)


def test_torchscript_loader_takes_device_and_dtype(tmp_path: Path) -> None:
    info = fs.read_model_file_info(model_file())
    d = fs.Denoiser.torchscript(model_file(), info["schedule"], info["prediction"], info["time_input"],
                                info["time_scale"], device="cpu", dtype=torch.float64)
    x = fs.randn((4, 16), seeds=range(4), dtype=torch.float64)
    x0, eps = d(x, 0.5)
    assert x0.dtype == torch.float64 and eps.dtype == torch.float64
    ref = fs.load_model_file(model_file(), device=torch.device("cpu"), dtype="torch.float64")["denoiser"]
    assert torch.equal(ref(x, 0.5)[0], x0)


@pytest.mark.parametrize("kwargs, named", [
    ({"device": "gpu"}, "'gpu'"),
    ({"device": "cuda:x"}, "'cuda:x'"),
    ({"device": "mps"}, "'mps'"),
    ({"dtype": "int8"}, "'int8'"),
    ({"dtype": "float16"}, "half precision"),
    ({"dtype": torch.bfloat16}, "'torch.bfloat16'"),
])
def test_bad_device_or_dtype_is_a_value_error_naming_it(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named) as err:
        fs.load_model_file(model_file(), **kwargs)
    assert next(iter(kwargs)) in str(err.value)


@no_cuda
def test_cuda_without_cuda_says_so() -> None:
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{device}': CUDA is not available in this build or on this "
                                              "machine"):
            fs.load_model_file(model_file(), device=device)


@needs_cli
def test_cli_dtype_float64_and_bad_values(tmp_path: Path) -> None:
    common = ["sample", "--model", model_file(), "--n", "32", "--seed", "0", "--solver", "dpmpp_2m", "--steps",
              str(STEPS), "--out", str(tmp_path / "g.png"), "--quiet"]
    cli(*common, "--dtype", "float64", "--device", "cpu", "--save-samples", str(tmp_path / "x64.pt"))
    cli(*common, "--save-samples", str(tmp_path / "x32.pt"))
    x64 = torch.load(tmp_path / "x64.pt", weights_only=False)["x"]
    x32 = torch.load(tmp_path / "x32.pt", weights_only=False)["x"]
    assert x64.dtype == torch.float64 and x32.dtype == torch.float32
    assert float((x64 - x32.double()).abs().max()) <= tolerance(STEPS, x64)
    # The CLI and Python make the same float64 samples from the same seeds.
    x_T = fs.randn((32, 16), seeds=range(32), dtype=torch.float64)
    assert torch.equal(fs.sample(model_file(), x_T, solver="dpmpp_2m", steps=STEPS).x, x64)
    for flag, value, named in (("--dtype", "float16", "half precision"), ("--dtype", "int", "'int'"),
                               ("--device", "tpu", "'tpu'")):
        proc = cli(*common, flag, value, check=False)
        assert proc.returncode == 2, proc.stderr
        assert flag in proc.stderr and named in proc.stderr


@needs_cli
@no_cuda
def test_cli_cuda_without_cuda_says_so(tmp_path: Path) -> None:
    proc = cli("sample", "--model", model_file(), "--n", "2", "--out", str(tmp_path / "g.png"), "--device", "cuda",
               check=False)
    assert proc.returncode == 2
    assert "--device 'cuda': CUDA is not available in this build or on this machine" in proc.stderr


@needs_cuda
def test_cuda_samples_agree_with_cpu() -> None:
    x_T = fs.randn((32, 16), seeds=range(32), dtype=torch.float32)
    cpu = fs.sample(model_file(), x_T, solver="dpmpp_2m", steps=STEPS).x
    gpu = fs.sample(model_file(), x_T.cuda(), solver="dpmpp_2m", steps=STEPS).x
    assert gpu.is_cuda
    assert float((gpu.cpu() - cpu).abs().max()) <= tolerance(STEPS, cpu)
    d = fs.load_model_file(model_file(), device="cuda:0", dtype="float64")["denoiser"]
    x64 = fs.sample(d, x_T.double().cuda(), solver="dpmpp_2m", steps=STEPS).x
    assert x64.is_cuda and x64.dtype == torch.float64


@needs_cli
@needs_cuda
def test_cli_cuda_matches_cpu(tmp_path: Path) -> None:
    common = ["sample", "--model", model_file(), "--n", "32", "--seed", "0", "--solver", "dpmpp_2m", "--steps",
              str(STEPS), "--out", str(tmp_path / "g.png"), "--quiet"]
    cli(*common, "--device", "cuda", "--save-samples", str(tmp_path / "gpu.pt"))
    cli(*common, "--save-samples", str(tmp_path / "cpu.pt"))
    gpu = torch.load(tmp_path / "gpu.pt", weights_only=False)["x"]
    cpu = torch.load(tmp_path / "cpu.pt", weights_only=False)["x"]
    assert not gpu.is_cuda  # written from the host copy
    assert float((gpu - cpu).abs().max()) <= tolerance(STEPS, cpu)


# ---- training on a device: fewstep train / fewstep distill --device ----

TRAIN = ["train", "--data", "gmm2d", "--net", "mlp", "--hidden", "32", "--blocks", "1", "--steps", "12", "--batch",
         "64", "--seed", "1", "--checkpoint-every", "0"]
DISTILL = ["distill", "progressive", "--teacher", str(REPO / "models" / "gmm2d-mlp-eps.pt"), "--initial-steps", "2",
           "--final-steps", "1", "--iterations", "4", "--batch", "32", "--export-from", "0", "--checkpoint-every", "0"]


def model_sha(model: Path) -> str:
    return fs.read_model_file_info(str(model))["model_sha256"]


@needs_cli
def test_cli_training_device_cpu_is_the_default(tmp_path: Path) -> None:
    """--device cpu changes nothing: the same weights, bit for bit, as a run without the flag."""
    cli(*TRAIN, "--out", str(tmp_path / "a"))
    cli(*TRAIN, "--out", str(tmp_path / "b"), "--device", "cpu")
    assert model_sha(tmp_path / "a" / "model.pt") == model_sha(tmp_path / "b" / "model.pt")
    cli(*DISTILL, "--out", str(tmp_path / "pa"))
    cli(*DISTILL, "--out", str(tmp_path / "pb"), "--device", "cpu")
    assert model_sha(tmp_path / "pa" / "student-1step.pt") == model_sha(tmp_path / "pb" / "student-1step.pt")


@needs_cli
def test_cli_training_device_errors_name_the_flag(tmp_path: Path) -> None:
    runs = [(TRAIN, "tpu", "'tpu'"), (DISTILL, "gpu0", "'gpu0'"),
            (["distill", "micro", "--teacher", model_file()], "cuda:x", "'cuda:x'")]
    if not torch.cuda.is_available():
        runs += [(TRAIN, "cuda", "CUDA is not available"), (DISTILL, "cuda:0", "CUDA is not available")]
    for i, (args, device, named) in enumerate(runs):
        proc = cli(*args, "--out", str(tmp_path / f"r{i}"), "--device", device, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "--device" in proc.stderr and named in proc.stderr, proc.stderr


@needs_cli
@needs_cuda
def test_cli_trains_on_cuda_and_the_file_loads_on_the_cpu(tmp_path: Path) -> None:
    cli(*TRAIN, "--out", str(tmp_path / "g"), "--device", "cuda")
    cli(*TRAIN, "--out", str(tmp_path / "c"))
    x_T = fs.randn((16, 2), seeds=range(16))
    gpu = fs.sample(str(tmp_path / "g" / "model.pt"), x_T, solver="dpmpp_2m", steps=STEPS).x
    cpu = fs.sample(str(tmp_path / "c" / "model.pt"), x_T, solver="dpmpp_2m", steps=STEPS).x
    assert not gpu.is_cuda and float((gpu - cpu).abs().max()) < 1e-2 * float(cpu.abs().max())
