"""End-to-end tests of `fewstep eval` and `fewstep train-classifier` (the binary run through subprocess).

`fewstep eval` on a small Gaussian-mixture MLP (coupled error only: JSON fields, the reference cache,
--reference files, a reference equal to the evaluated run) and on a scripted 28x28 image model with
the shipped classifier (FD-FMNIST with its floor, class KL, the statistics cache); bad flags give
messages naming the flag or file. The binary is <repo>/build/bin/fewstep, or $FEWSTEP_CLI when set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
CLASSIFIER = REPO / "models" / "fmnist-classifier.pt"
FMNIST_DIR = Path(os.environ.get("FEWSTEP_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(
    not BIN.is_file(), reason=f"{BIN} is not built (cmake --build build --target fewstep_cli, or set FEWSTEP_CLI)"
)
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FMNIST_DIR} (apt-get install dataset-fashion-mnist)",
)


def run(*args: str, check: bool = True):
    import subprocess

    proc = subprocess.run([str(BIN), *args, "--threads", "1"], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def mixture_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "gmm"
    run("train", "--data", "gmm2d", "--net", "mlp", "--steps", "40", "--batch", "128", "--seed", "1",
        "--checkpoint-every", "0", "--out", str(out))
    return out / "model.pt"


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scripted 'denoiser' whose x0 prediction is a fixed smooth function of x (no training needed)."""

    class Shrink(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 0.8 * torch.tanh(x)

    path = tmp_path_factory.mktemp("eval") / "shrink.pt"
    torch.jit.script(Shrink()).save(str(path))
    return path


IMAGE_FLAGS = ["--schedule", "vp_linear", "--prediction", "x0", "--shape", "1,28,28"]


def test_eval_mixture_coupled_error_json_and_reference_cache(mixture_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["eval", "--model", str(mixture_model), "--solver", "dpmpp_2m", "--steps", "5", "--n", "64",
            "--seed", "3", "--reference-steps", "40", "--batch", "24", "--cache-dir", str(cache)]
    first = run(*args, "--json", str(tmp_path / "a.json"))
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["n"] == 64 and a["seed"] == 3 and a["nfe"] == 5 and a["solver"] == "dpmpp_2m"
    assert a["fd_fmnist"] is None and "FD-FMNIST      n/a" in first.stdout
    ce = a["coupled_error"]
    assert 0 < ce["median"] <= ce["max"] and 0 < ce["mean"] <= ce["rmse"] <= ce["max"]
    ref = a["reference"]
    assert ref["solver"] == "dpmpp_2m" and ref["steps"] == 40 and ref["nfe"] == 40 and ref["cached"] is False
    cached_file = Path(ref["file"])
    assert cached_file.parent == cache / "teacher-solves" and cached_file.is_file()
    assert f"cached in {cached_file}" in first.stderr
    assert "coupled error  median" in first.stdout and "NFE 5" in first.stdout

    # The second eval reads the reference from the cache and reports the same numbers.
    second = run(*args, "--json", str(tmp_path / "b.json"))
    b = json.loads((tmp_path / "b.json").read_text())
    assert f"reference read from {cached_file}" in second.stderr and b["reference"]["cached"] is True
    assert b["coupled_error"] == ce

    # The cache file is a plain torch file (x at the solve's kept points: x_T and the end) and works as
    # --reference; so does a bare tensor saved with torch.save.
    x = torch.load(str(cached_file), weights_only=False)["x"][:, -1]
    assert x.shape == (64, 2) and x.dtype == torch.float32
    cached = run(*args, "--reference", str(cached_file), "--json", str(tmp_path / "e.json"))
    assert json.loads((tmp_path / "e.json").read_text())["coupled_error"] == ce, cached.stderr
    torch.save(x, str(tmp_path / "ref.pt"))
    third = run(*args, "--reference", str(tmp_path / "ref.pt"), "--json", str(tmp_path / "c.json"))
    assert json.loads((tmp_path / "c.json").read_text())["coupled_error"] == ce
    assert "from --reference" in third.stdout

    # Evaluating the reference setting itself gives zero error; batching does not change samples.
    same = run("eval", "--model", str(mixture_model), "--steps", "40", "--n", "64", "--seed", "3", "--batch", "64",
               "--reference", str(tmp_path / "ref.pt"), "--json", str(tmp_path / "d.json"))
    assert json.loads((tmp_path / "d.json").read_text())["coupled_error"]["max"] == 0.0, same.stdout


@needs_fmnist
def test_eval_images_fd_fmnist_with_floor(image_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["eval", "--model", str(image_model), *IMAGE_FLAGS, "--solver", "ddim", "--steps", "3", "--n", "24",
            "--reference-solver", "ddim", "--reference-steps", "12", "--classifier", str(CLASSIFIER),
            "--cache-dir", str(cache), "--quiet"]
    proc = run(*args, "--json", str(tmp_path / "e.json"))
    e = json.loads((tmp_path / "e.json").read_text())
    fd = e["fd_fmnist"]
    assert fd["fd"] > fd["fd_floor"] > 0 and fd["class_kl"] >= 0 and fd["class_kl_floor"] >= 0
    assert fd["classifier_test_accuracy"] >= 0.9 and sum(fd["class_counts"]) == 24
    assert e["coupled_error"]["median"] > 0 and e["nfe"] == 3 and e["reference"]["nfe"] == 12
    assert "FD-FMNIST" in proc.stdout and "(floor: 24 train vs test images:" in proc.stdout
    assert "class KL" in proc.stdout and proc.stderr == ""  # --quiet
    assert len(list((cache / "fmnist").glob("fmnist-stats-*.pt"))) == 1

    # Second run: statistics from the cache, FD only (--no-reference), same numbers.
    run(*[a for a in args if a != "--quiet"], "--no-reference", "--json", str(tmp_path / "f.json"))
    f = json.loads((tmp_path / "f.json").read_text())
    assert f["coupled_error"] is None and f["reference"] is None
    assert f["fd_fmnist"]["fd"] == fd["fd"] and f["fd_fmnist"]["fd_floor"] == fd["fd_floor"]


def test_eval_errors_name_the_flag_or_file(mixture_model: Path, image_model: Path, tmp_path: Path) -> None:
    def fails(*args: str) -> str:
        proc = run("eval", *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("fewstep eval: "), proc.stderr
        return proc.stderr

    assert "--model 'nope.pt' does not exist" in fails("--model", "nope.pt")
    model = ["--model", str(mixture_model), "--n", "8", "--cache-dir", str(tmp_path)]
    assert "--solver 'rk99' is not a solver" in fails(*model, "--solver", "rk99")
    assert "--reference-solver 'ddpm' is stochastic" in fails(*model, "--reference-solver", "ddpm")
    assert "--reference 'missing.pt' does not exist" in fails(*model, "--reference", "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    assert f"--reference '{tmp_path / 'garbage.pt'}' is not a tensor file" in fails(*model, "--reference",
                                                                                     str(tmp_path / "garbage.pt"))
    torch.save(torch.zeros(5, 2), str(tmp_path / "short.pt"))
    msg = fails(*model, "--reference", str(tmp_path / "short.pt"))
    assert "holds a tensor of shape [5,2], expected [8,2]" in msg
    assert "--no-reference leaves nothing to measure" in fails(*model, "--no-reference")
    assert "--json" in fails(*model, "--json", str(tmp_path / "no" / "dir" / "x.json"))
    msg = fails("--model", str(image_model), *IMAGE_FLAGS, "--classifier", str(tmp_path / "none.pt"))
    assert f"--classifier '{tmp_path / 'none.pt'}' does not exist" in msg
    proc = run("eval", "--model", str(mixture_model), "--n", "1", check=False)
    assert proc.returncode == 2 and "--n" in proc.stderr and "--help" in proc.stderr


def test_eval_help_has_examples() -> None:
    out = run("eval", "--help").stdout
    for text in ("Example", "fewstep eval --model", "--reference-steps", "--classifier", "FD-FMNIST", "floor",
                 "coupled error", "dpmpp_2m"):
        assert text in out, text


@needs_fmnist
def test_train_classifier_writes_model_sidecar_and_card(tmp_path: Path) -> None:
    out = tmp_path / "clf"
    proc = run("train-classifier", "--out", str(out), "--name", "tiny", "--epochs", "1", "--train-images", "256",
               "--batch", "64", "--channels", "8", "--feature-dim", "16", "--seed", "2")
    assert "test accuracy" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["tiny.json", "tiny.md", "tiny.pt"]  # checkpoint removed
    meta = json.loads((out / "tiny.json").read_text())
    assert meta["format"] == "fewstep.classifier.v1" and meta["training"]["steps"] == 4
    assert 0.0 <= meta["test"]["accuracy"] <= 1.0 and meta["test"]["images"] == 10000
    net = torch.jit.load(str(out / "tiny.pt"))
    assert meta["parameters"] == sum(p.numel() for p in net.parameters())
    x = torch.zeros(3, 1, 28, 28)
    with torch.no_grad():
        assert net(x).shape == (3, 10) and net.features(x).shape == (3, 16)
    card = (out / "tiny.md").read_text()
    for text in ("fewstep train-classifier --out", "| seed | 2 |", "| training time |", "| final loss |",
                 "| parameters |", "| test accuracy |"):
        assert text in card, text
    proc = run("train-classifier", "--out", str(out), "--channels", "12", check=False)
    assert proc.returncode == 2 and "--channels" in proc.stderr


def test_eval_of_a_student_names_its_own_grid_and_keeps_its_solver(tmp_path: Path) -> None:
    student = REPO / "models" / "distilled" / "gmm16d-pd-4step.pt"
    common = ["--n", "32", "--reference-steps", "20", "--cache-dir", str(tmp_path / "cache")]
    own = run("eval", "--model", str(student), *common, "--json", str(tmp_path / "own.json"))
    a = json.loads((tmp_path / "own.json").read_text())
    assert (a["solver"], a["spacing"], a["nfe"]) == ("ddim", "own", 4)
    assert "ddim 4 steps (the model file's own grid), NFE 4" in own.stdout
    # --steps without --solver: the student's own solver on the generated grid.
    other = run("eval", "--model", str(student), *common, "--steps", "2", "--json", str(tmp_path / "two.json"))
    b = json.loads((tmp_path / "two.json").read_text())
    assert (b["solver"], b["spacing"], b["nfe"]) == ("ddim", "logsnr", 2)
    assert "ddim 2 steps (logsnr), NFE 2" in other.stdout
