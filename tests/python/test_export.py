"""fs.export: adapters out as TorchScript model files that the C++ binaries sample without Python (docs/interop.md).

A small randomly initialised diffusers UNet2DModel + DDPMScheduler (no hub access) and an EDM-preconditioned
network are exported, then sampled by `fewstep sample` (C++, the TorchScript file) and by Python (the eager
module through the adapter) from the same per-sample seeds, solver and steps.

Tolerance. Both runs are float32 and execute the same ATen kernels on the same inputs: a trace records
the operations the module ran, and the TorchScript interpreter calls those kernels. The only possible
difference is float32 reassociation (a kernel choosing another blocking or reduction order), which changes
one evaluation by a few units of round-off u = 2^-24 relative per accumulated term. A deterministic solver
carries an evaluation error forward with a gain of order one per step on these contracting ODEs, so after N
steps the samples may differ by about N * (a few hundred u) * max|x|; the bound below allows
N * 256 u * max|x|. A wrong time map, prediction, schedule or shape moves samples by O(1) (checked).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import fewstep as fs
from conftest import tiny_unet2d

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
needs_cli = pytest.mark.skipif(not BIN.is_file(), reason=f"{BIN} is not built (cmake --build build --target fewstep_cli)")

U = 2.0**-24
N_SAMPLES = 3


def tolerance(steps: int, x: torch.Tensor) -> float:
    return steps * 256 * U * float(x.abs().max())


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), "--threads", "1", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def cli_samples(tmp_path: Path, model: Path, *args: str) -> torch.Tensor:
    out = tmp_path / f"{model.stem}-samples.pt"
    cli("sample", "--model", str(model), "--n", str(N_SAMPLES), "--seed", "0", "--out", str(tmp_path / "grid.png"),
        "--save-samples", str(out), "--quiet", *args)
    return torch.load(out, weights_only=False)["x"]


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return tiny_unet2d(1)


class TinyEDMNet(torch.nn.Module):
    """An EDM network F(x_in, c_noise): a convolution modulated by the noise level (random weights)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 1, 3, padding=1)
        self.embed = torch.nn.Linear(1, 8)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.conv1(x) + self.embed(c_noise.reshape(-1, 1))[:, :, None, None])
        return self.conv2(h)


def test_exported_diffusers_unet_samples_identically_from_cpp_and_python(unet, tmp_path: Path) -> None:
    adapter = fs.adapters.from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=1000))
    path = tmp_path / "unet.pt"
    sidecar = fs.export(adapter, path)
    # The sidecar says how C++ reads the network: the exact discrete schedule, eps, the timestep as input.
    assert sidecar["prediction"] == "eps" and sidecar["time_input"] == "index" and sidecar["sample_shape"] == [1, 8, 8]
    assert sidecar["schedule"]["name"] == "vp_discrete"
    assert sidecar["export"] == {**sidecar["export"], "how": "traced", "conditioning": [], "source": "diffusers UNet2DModel"}
    info = fs.read_model_file_info(str(path))
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    assert torch.equal(info["schedule"].alpha(t), adapter.schedule.alpha(t))

    x_T = fs.randn((N_SAMPLES, 1, 8, 8), seeds=range(N_SAMPLES), dtype=torch.float32)
    steps = 8
    python = fs.sample(adapter.denoiser, x_T, solver="dpmpp_2m", steps=steps).x  # the eager diffusers module
    from_file = fs.sample(str(path), x_T, solver="dpmpp_2m", steps=steps).x  # the TorchScript file, from Python
    tol = tolerance(steps, python)
    assert float((from_file - python).abs().max()) <= tol
    if BIN.is_file():
        cpp = cli_samples(tmp_path, path, "--solver", "dpmpp_2m", "--steps", str(steps))
        assert cpp.dtype == torch.float32 and cpp.shape == python.shape
        assert float((cpp - python).abs().max()) <= tol
    # What the tolerance rules out: the same file read as another prediction moves the samples by O(max|x|).
    wrong = fs.Denoiser.torchscript(str(path), info["schedule"], "v", "index")
    off = fs.sample(wrong, x_T, solver="dpmpp_2m", steps=steps).x
    assert float((off - python).abs().max()) > 1e3 * tol


def test_exported_edm_denoiser_samples_identically_from_cpp_and_python(tmp_path: Path) -> None:
    model = fs.adapters.edm_denoiser(TinyEDMNet().eval(), sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
    path = tmp_path / "edm.pt"
    sidecar = fs.export(model, path, sample_shape=[1, 8, 8])
    assert sidecar["prediction"] == "x0" and sidecar["time_input"] == "t"
    assert sidecar["schedule"]["name"] == "ve" and sidecar["export"]["source"] == "EDM-preconditioned TinyEDMNet"

    # `fewstep sample` starts a VE model from the prior N(0, sigma_max^2 I); Python passes that x_T.
    x_T = fs.randn((N_SAMPLES, 1, 8, 8), seeds=range(N_SAMPLES), dtype=torch.float32) * 80.0
    steps = 6
    python = fs.sample(model, x_T, solver="heun", steps=steps, spacing="karras").x
    tol = tolerance(2 * steps, python)  # Heun: two evaluations per step
    if BIN.is_file():
        cpp = cli_samples(tmp_path, path, "--solver", "heun", "--steps", str(steps), "--spacing", "karras")
        assert float((cpp - python).abs().max()) <= tol
    from_file = fs.sample(str(path), x_T, solver="heun", steps=steps, spacing="karras").x
    assert float((from_file - python).abs().max()) <= tol
    # Another sigma_data is another model: far outside the tolerance.
    other = fs.adapters.edm_denoiser(TinyEDMNet().eval(), sigma_min=0.002, sigma_max=80.0, sigma_data=1.0)
    assert float((fs.sample(other, x_T, solver="heun", steps=steps, spacing="karras").x - python).abs().max()) > 1e3 * tol


def test_export_records_fixed_conditioning_and_refuses_what_it_cannot_write(unet, tmp_path: Path) -> None:
    cond_unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=3,
    ).eval()
    labels = torch.tensor([2])
    adapter = fs.adapters.from_diffusers(cond_unet, diffusers.DDPMScheduler(), cond={"class_labels": labels})
    sidecar = fs.export(adapter, tmp_path / "cond.pt")
    assert sidecar["export"]["conditioning"] == ["class_labels"]  # baked into the trace, as documented
    x_T = fs.randn((2, 1, 8, 8), seeds=[4, 5], dtype=torch.float32)
    a = fs.sample(adapter.denoiser, x_T, steps=4).x
    b = fs.sample(str(tmp_path / "cond.pt"), x_T, steps=4).x
    assert float((a - b).abs().max()) <= tolerance(4, a)

    guided = fs.adapters.from_diffusers(cond_unet, diffusers.DDPMScheduler(), cond={"class_labels": labels},
                                        uncond={"class_labels": torch.tensor([0])}, guidance_scale=3.0)
    with pytest.raises(ValueError, match="guidance"):
        fs.export(guided, tmp_path / "guided.pt")
    with pytest.raises(TypeError, match="nn.Module"):
        fs.export(fs.Denoiser(lambda x, t: x, fs.VPLinear()), tmp_path / "plain.pt", sample_shape=[2])
    with pytest.raises(ValueError, match="schedule= and prediction="):
        fs.export(unet, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="come from the model"):
        fs.export(adapter, tmp_path / "x.pt", prediction="v")
    assert not (tmp_path / "x.pt").exists()


def test_export_refuses_a_trace_that_froze_input_dependent_control_flow(tmp_path: Path) -> None:
    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return x if bool(t[0] > 0.5) else -x  # a Python branch on a value: the trace keeps one side

    with pytest.raises(ValueError, match="differs from the module"):
        fs.export(Branchy(), tmp_path / "b.pt", schedule=fs.VPLinear(), prediction="x0", sample_shape=[2])
    assert not (tmp_path / "b.pt").exists()
    # A scripted module keeps its control flow and is written as it is.
    sidecar = fs.export(torch.jit.script(Branchy()), tmp_path / "b.pt", schedule=fs.VPLinear(), prediction="x0",
                        sample_shape=[2])
    assert sidecar["export"]["how"] == "scripted"
    assert json.loads((tmp_path / "b.json").read_text())["model_sha256"] == sidecar["model_sha256"]


def test_pipeline_folder_converts_with_one_command(unet, tmp_path: Path, capsys) -> None:
    from fewstep.adapters.__main__ import main

    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    diffusers.DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    assert main([str(tmp_path / "pipe"), str(tmp_path / "pipe.pt")]) == 0
    assert "diffusers UNet2DModel" in capsys.readouterr().out
    adapter = fs.adapters.load_diffusers(tmp_path / "pipe")
    info = fs.read_model_file_info(str(tmp_path / "pipe.pt"))
    assert info["sample_shape"] == [1, 8, 8]
    # The scaled_linear schedule travels exactly (alphas_cumprod in the sidecar, as diffusers computes it).
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.equal(info["schedule"].alpha(t), adapter.schedule.alpha(t))
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "x.pt")]) == 2
    assert "model_index.json" in capsys.readouterr().err


BENCH = BIN.parent / "fewstep-bench"


@needs_cli
def test_exported_model_runs_in_eval_and_the_benchmark(unet, tmp_path: Path) -> None:
    adapter = fs.adapters.from_diffusers(unet, diffusers.DDPMScheduler())
    path = tmp_path / "unet.pt"
    fs.export(adapter, path)
    # fewstep eval: the coupled error of 4 DDIM steps against a 40-step reference from the same x_T.
    cli("eval", "--model", str(path), "--solver", "ddim", "--steps", "4", "--n", "3", "--reference-steps", "40",
        "--no-cache", "--quiet", "--json", str(tmp_path / "eval.json"))
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["nfe"] == 4 and report["coupled_error"]["median"] > 0
    # fewstep-bench solvers on the file: every cell runs at its NFE against a float64 reference solve. The
    # random UNet's ODE is stiff near t = 1 (x̂₀ = (x − σ ε̂)/α with α = 0.006): the two adaptive references
    # agree to 1e-2 only from rtol 1e-7 / 1e-9 (at 1e-4 / 1e-6 they differ by 2.6, at 1e-6 / 1e-8 by 3e-2).
    if not BENCH.is_file():
        pytest.skip(f"{BENCH} is not built")
    proc = subprocess.run([str(BENCH), "--threads", "1", "solvers", "--model", str(path), "--dtype", "float32",
                           "--samples", "2", "--nfe", "4,8", "--solvers", "ddim,dpmpp_2m", "--ref-tol", "1e-7",
                           "--ref-tight-tol", "1e-9", "--ref-agreement", "1e-2", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["config"]["model"] == str(path)
    assert "model file" in proc.stdout
    cells = {(r["solver"], r["nfe_target"]): r for r in bench["results"]}
    assert all(r["status"] == "ok" for r in cells.values()), cells
    for solver in ("ddim", "dpmpp_2m"):  # more evaluations, closer to the reference
        assert cells[(solver, 8)]["error"]["median"] < cells[(solver, 4)]["error"]["median"]
