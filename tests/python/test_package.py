"""fewstep as a Python package: type stubs that cover the extension, py.typed, the editable install
of the checkout, the `fewstep` launcher, the shipped models, image grids and files, the user's
images as data, and the progress lines of a log."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fewstep as fs
import fewstep._fewstep as ext
from fewstep import _progress

PACKAGE = Path(fs.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]


# ---- stubs, py.typed, metadata ---------------------------------------------------------------

def _stub() -> ast.Module:
    path = PACKAGE / "_fewstep.pyi"
    assert path.is_file(), f"{path} is missing: the build generates it with pybind11-stubgen (requirements.txt)"
    return ast.parse(path.read_text(encoding="utf-8"))


def test_stub_covers_every_public_name_of_the_extension() -> None:
    tree = _stub()
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    defined |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    public = {name for name in dir(ext) if not name.startswith("_")}
    assert public - defined == set(), f"not in the stub: {sorted(public - defined)}"


def test_stub_signatures_match_the_extension() -> None:
    # The parameters pybind11 reports in each function's docstring are those of the stub.
    tree = _stub()
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    init = next(f for f in classes["Denoiser"].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assert [a.arg for a in init.args.args] == ["self", "net", "schedule", "prediction", "time_input", "time_scale"]
    grid = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "save_image_grid")
    assert [a.arg for a in grid.args.args] == ["images", "path"]
    assert [a.arg for a in grid.args.kwonlyargs] == ["nrow", "padding", "scale", "value_range", "pad_value"]
    checked = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.decorator_list:
            doc = getattr(ext, node.name).__doc__ or ""
            first = doc.strip().splitlines()[0] if doc.strip() else ""
            if first.startswith(node.name + "("):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                for name in names:
                    assert f"{name}:" in first or f"{name}=" in first or name == "self", (node.name, name, first)
                checked += 1
    assert checked >= 20


def test_py_typed_and_package_metadata() -> None:
    assert (PACKAGE / "py.typed").is_file()
    assert importlib.metadata.version("fewstep") == fs.__version__
    dist = importlib.metadata.distribution("fewstep")
    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert scripts.get("fewstep") == "fewstep_cli:main"


def test_pure_python_functions_have_signatures() -> None:
    for fn in (fs.sample, fs.randn, fs.train_denoiser, fs.model_path):
        assert inspect.signature(fn).parameters


# ---- the `fewstep` launcher and the shipped models -------------------------------------------

def test_launcher_runs_the_cli_with_torchs_libraries(tmp_path: Path) -> None:
    # A stand-in executable reports what the launcher hands it: LD_LIBRARY_PATH and the arguments.
    fake = tmp_path / "fake-fewstep"
    fake.write_text('#!/bin/sh\necho "$LD_LIBRARY_PATH|$*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "FEWSTEP_CLI": str(fake)}
    proc = subprocess.run([sys.executable, "-c", "import fewstep_cli, sys; sys.exit(fewstep_cli.main())",
                           "sample", "--steps", "4"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ld_path, args = proc.stdout.strip().split("|")
    assert ld_path.split(os.pathsep)[0] == str(Path(torch.__file__).resolve().parent / "lib")
    assert args == "sample --steps 4"
    # Without the override, a checkout's launcher runs build/bin/fewstep.
    exe = REPO / "build" / "bin" / "fewstep"
    if exe.is_file():
        env.pop("FEWSTEP_CLI")
        proc = subprocess.run([sys.executable, "-c", "import fewstep_cli, sys; sys.exit(fewstep_cli.main())",
                               "--version"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and fs.__version__ in proc.stdout, proc.stderr


def test_shipped_models() -> None:
    names = fs.shipped_models()
    assert "fmnist-unet-eps" in names and "gmm2d-mlp-eps" in names
    assert fs.model_path("gmm2d-mlp-eps").is_file()
    with pytest.raises(ValueError, match="no shipped model named 'nope'; the shipped models are: .*fmnist-unet-eps"):
        fs.model_path("nope")
    # The path model_path returns (a pathlib.Path) goes straight into the model-file functions.
    teacher = fs.load_model_file(fs.model_path("gmm2d-mlp-eps"))
    assert teacher["name"] == "gmm2d-mlp-eps" and teacher["sample_shape"] == [2]
    assert fs.read_model_file_info(fs.model_path("gmm2d-mlp-eps"))["name"] == "gmm2d-mlp-eps"
    with pytest.raises(TypeError, match="path should be a str or os.PathLike, got int"):
        fs.load_model_file(3)
    # The first Fashion-MNIST teacher stays shipped beside the current one: its students need it.
    v1 = fs.read_model_file_info(fs.model_path("fmnist-unet-eps-v1"))
    for student in ("distilled/fmnist-pd-4step", "distilled/fmnist-kd-1step", "distilled/fmnist-cd-1step"):
        record = fs.read_model_file_info(fs.model_path(student))["metadata"]["distillation"]
        assert record["teacher"] == "models/fmnist-unet-eps-v1.pt" and record["teacher_sha256"] == v1["model_sha256"]


def test_format_duration() -> None:
    # The one formatter of the command line, the benchmarks and the model cards, bound as is.
    assert [fs.format_duration(s) for s in (0.85, 18.5244, 185.4, 7620.0)] == \
        ["850 ms", "18.5 s", "3 min 05 s", "2 h 07 min"]


# ---- images ------------------------------------------------------------------------------

def _grid_by_hand(x: torch.Tensor, nrow: int, padding: int, scale: int, lo: float, hi: float) -> torch.Tensor:
    """image_grid written again here: bytes, tiles row by row, mid-grey padding, pixel blocks."""
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    to_bytes = lambda v: ((v.float() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)
    grid = torch.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), 128, dtype=torch.uint8)
    for k in range(n):
        y, x0 = padding + (k // nrow) * (h + padding), padding + (k % nrow) * (w + padding)
        grid[y:y + h, x0:x0 + w] = to_bytes(x[k]).permute(1, 2, 0)
    return grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def test_save_image_grid_writes_what_image_grid_returns(tmp_path: Path) -> None:
    x = torch.rand(5, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    grid = fs.image_grid(x, nrow=3, padding=1, scale=2, value_range=(0.0, 1.0))
    assert grid.dtype == torch.uint8 and tuple(grid.shape) == (2 * (2 * 5 + 1), 2 * (3 * 7 + 1), 3)
    assert torch.equal(grid, _grid_by_hand(x, 3, 1, 2, 0.0, 1.0))
    saved = fs.save_image_grid(x, tmp_path / "g.png", nrow=3, padding=1, scale=2, value_range=(0.0, 1.0))
    assert torch.equal(saved, grid)
    from PIL import Image

    with Image.open(tmp_path / "g.png") as im:
        assert torch.equal(torch.from_numpy(np.array(im.convert("RGB"))), grid)
    # str paths too; the default range is [-1, 1] with mid-grey padding.
    default = fs.save_image_grid(x * 2 - 1, str(tmp_path / "d.png"))
    assert torch.equal(default, _grid_by_hand(x * 2 - 1, 3, 2, 1, -1.0, 1.0))


def test_image_arguments_are_checked(tmp_path: Path) -> None:
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"image path '.*y\.jpg' should end in \.png .*'\.jpg'"):
        fs.save_image_grid(x, tmp_path / "y.jpg")
    assert not (tmp_path / "y.jpg").exists()
    with pytest.raises(ValueError, match=r"scale must be an integer in \[1, 64\], got 0"):
        fs.image_grid(x, scale=0)
    with pytest.raises(ValueError, match="value_range must be finite with low < high"):
        fs.image_grid(x, value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"images must be \[N, C, H, W\] with C = 1 or 3"):
        fs.image_grid(torch.zeros(2, 2, 4, 4))


def test_load_images_reads_what_pillow_writes(tmp_path: Path) -> None:
    # Pillow's encoder filters rows adaptively and writes palette and alpha images: the decoder's cases.
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(3, 6, 6, 3), dtype=np.uint8)
    for k, a in enumerate(rgb):
        mode = ("RGB", "RGBA", "P")[k]
        im = Image.fromarray(a)
        if mode == "RGBA":
            im = im.convert("RGBA")
        if mode == "P":
            im = im.quantize(colors=16)
            rgb[k] = np.asarray(im.convert("RGB"))
        im.save(tmp_path / f"{k}.png", optimize=True)
    d = fs.load_images(tmp_path)
    assert d["labels"] is None and d["classes"] == []
    want = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert torch.equal(d["images"], want)


def test_load_images_from_npz_layouts(tmp_path: Path) -> None:
    x = np.random.default_rng(2).integers(0, 256, size=(5, 3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", images=x)
    np.savez_compressed(tmp_path / "nhwc.npz", x.transpose(0, 2, 3, 1), y=np.arange(5))
    a, b = fs.load_images(tmp_path / "nchw.npz"), fs.load_images(tmp_path / "nhwc.npz")
    assert torch.equal(a["images"], b["images"])
    assert torch.equal(a["images"], torch.from_numpy(x).float() / 127.5 - 1.0)
    assert torch.equal(b["labels"], torch.arange(5)) and b["classes"] == ["0", "1", "2", "3", "4"]
    np.savez(tmp_path / "none.npz", a=np.zeros(3), b=np.zeros(4))
    with pytest.raises(ValueError, match="has no image array .* it holds: a, b"):
        fs.load_images(tmp_path / "none.npz")


def test_load_fashion_mnist_reads_the_idx_files(tmp_path: Path) -> None:
    # Two tiny IDX files (gzip, as Debian ships them) in a directory of one's own; pixels map to [-1, 1].
    import gzip
    import struct as st

    pixels = np.random.default_rng(3).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(st.pack(">IIII", 0x803, 3, 28, 28) + pixels.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(st.pack(">II", 0x801, 3) + bytes([9, 0, 4]))
    d = fs.load_fashion_mnist("test", tmp_path)
    assert torch.equal(d["images"], torch.from_numpy(pixels).float().unsqueeze(1) / 127.5 - 1.0)
    assert d["labels"].tolist() == [9, 0, 4] and d["classes"][9] == "Ankle boot" and len(d["classes"]) == 10
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        fs.load_fashion_mnist("train", tmp_path)


# ---- progress in a log -----------------------------------------------------------------------

def test_line_progress_prints_every_interval_and_a_final_line(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = _progress.LineProgress(100, "fewstep train", unit="step", interval=30.0, file=out)
    for i in range(100):
        clock[0] += 1.0
        bar.set_postfix(loss="0.5", refresh=False)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [l.split(" [")[0] for l in lines] == ["fewstep train  30% 30/100", "fewstep train  60% 60/100",
                                                 "fewstep train  90% 90/100", "fewstep train 100% 100/100"]
    assert lines[0].endswith("loss=0.5]") and "(done in 01:40)" in lines[-1]

    short = io.StringIO()
    quick = _progress.LineProgress(10, "quick", interval=30.0, file=short)
    quick.update(10)
    quick.close()
    assert short.getvalue() == ""


def test_progress_bar_is_tqdm_on_a_terminal_and_lines_in_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.std import tqdm

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    bar = _progress.progress_bar(3, "x")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(_progress.progress_bar(3, "x"), _progress.LineProgress)
    monkeypatch.setenv("FEWSTEP_PROGRESS_INTERVAL", "7")
    assert _progress.progress_interval() == 7.0
    monkeypatch.setenv("FEWSTEP_PROGRESS_INTERVAL", "-1")
    assert _progress.progress_interval() == 30.0
