"""Optimised time grids (docs/grids.md): fs.optimize_timesteps, the sidecar's tuned_grids, their use
by fs.sample(path) and `fewstep sample`, and `fewstep tune-grid`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import fewstep as fs

REPO = Path(__file__).resolve().parents[2]
MLP2D = REPO / "models" / "gmm2d-mlp-eps.pt"
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
SMALL = dict(n=16, heldout_n=16, candidates=30, substeps=2)


@pytest.fixture
def mixture() -> fs.Denoiser:
    return fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=4, seed=0), fs.VPLinear())


def copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "teacher.pt"
    shutil.copy(MLP2D, dst)
    shutil.copy(MLP2D.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_dp_grid_is_written_verified_and_used_by_sample(tmp_path: Path, caplog) -> None:
    path = copy_model(tmp_path)
    g = fs.optimize_timesteps(str(path), "dpmpp_2m", 4, "dp", write_sidecar=True, dtype=torch.float32, **SMALL)
    assert g.method == "dp" and g.nfe == 4 and g.solver == "dpmpp_2m" and len(g.times) == 5
    assert g.fit["train"] == {"seed": 0, "n": 16} and g.fit["reference"]["steps"] == 60
    # The sidecar stays sealed: it loads (checksums verified) with the grid in it.
    file = fs.load_model_file(str(path))
    assert len(file["tuned_grids"]) == 1
    entry = file["tuned_grids"][0]
    assert entry["solver"] == "dpmpp_2m" and entry["nfe"] == 4 and entry["options"] == {}
    assert torch.equal(entry["timesteps"], g.times)
    assert entry["fit"]["method"] == "dp"
    # Fitting again for the same key replaces the entry; another NFE adds one.
    fs.optimize_timesteps(str(path), "dpmpp_2m", 4, "dp", write_sidecar=True, dtype=torch.float32, **SMALL)
    fs.optimize_timesteps(str(path), "dpmpp_2m", 3, "dp", write_sidecar=True, dtype=torch.float32, **SMALL)
    assert sorted(e["nfe"] for e in fs.load_model_file(str(path))["tuned_grids"]) == [3, 4]

    x = fs.randn((8, 2), seeds=range(8))
    with caplog.at_level(logging.INFO, logger="fewstep"):
        tuned = fs.sample(str(path), x, solver="dpmpp_2m", steps=4)
    assert tuned.tuned_grid and torch.equal(tuned.timesteps, g.times) and tuned.nfe == 4
    assert "tuned grid" in caplog.text
    assert fs.sample(str(path), x, solver="dpmpp_2m", nfe=4).tuned_grid
    generated = fs.timesteps(file["schedule"], 4, "logsnr")
    for kwargs in ({"grid": "default"}, {"spacing": "logsnr"}):
        plain = fs.sample(str(path), x, solver="dpmpp_2m", steps=4, **kwargs)
        assert not plain.tuned_grid and torch.allclose(plain.timesteps, generated)
    assert not fs.sample(str(path), x, solver="unipc", steps=4).tuned_grid
    assert not fs.sample(str(path), x, solver="dpmpp_2m", steps=5).tuned_grid
    with pytest.raises(ValueError, match="grid should be 'tuned' or 'default', got 'best'"):
        fs.sample(str(path), x, solver="dpmpp_2m", steps=4, grid="best")


def test_a_tampered_tuned_grid_is_refused(tmp_path: Path) -> None:
    path = copy_model(tmp_path)
    fs.optimize_timesteps(str(path), "unipc", 3, "dp", write_sidecar=True, dtype=torch.float32, **SMALL)
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["tuned_grids"][0]["timesteps"][1] = 0.5
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="changed after it was written|sidecar_sha256|checksum"):
        fs.load_model_file(str(path))


def test_gradient_method_lowers_the_loss(mixture: fs.Denoiser) -> None:
    g = fs.optimize_timesteps(mixture, "dpmpp_2m", 4, "gradient", sample_shape=[2], iterations=20, lr=0.1,
                              **SMALL)
    assert g.method == "gradient" and len(g.loss) == 21
    assert min(g.loss) < g.loss[0]
    assert g.fit["iterations"] == 20 and g.fit["train_loss"]["first"] == g.loss[0]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"nfe": 0}, ValueError, "nfe must be >= 1, got 0"),
    ({"method": "anneal"}, ValueError, "method must be 'dp' or 'gradient', got 'anneal'"),
    ({"solver": "nope"}, ValueError, "nope"),
    ({"n": 2.5}, TypeError, "n should be an int"),
])
def test_bad_arguments_name_the_value(mixture: fs.Denoiser, kwargs, error, message) -> None:
    args = {"solver": "unipc", "nfe": 3, "method": "dp", **kwargs}
    with pytest.raises(error, match=message):
        fs.optimize_timesteps(mixture, args.pop("solver"), args.pop("nfe"), args.pop("method"),
                              sample_shape=[2], **{**SMALL, **args})
    with pytest.raises(ValueError, match="sample_shape is required"):
        fs.optimize_timesteps(mixture, "unipc", 3)
    with pytest.raises(ValueError, match="write_sidecar=True needs model to be a model file path"):
        fs.optimize_timesteps(mixture, "unipc", 3, sample_shape=[2], write_sidecar=True)


@pytest.mark.skipif(not BIN.is_file(), reason=f"{BIN} is not built")
def test_cli_tune_grid_writes_the_sidecar_and_sample_uses_it(tmp_path: Path) -> None:
    path = copy_model(tmp_path)
    common = ["--n", "16", "--heldout-n", "16", "--candidates", "30", "--substeps", "2", "--no-cache", "--quiet"]
    proc = subprocess.run([str(BIN), "tune-grid", "--model", str(path), "--solver", "unipc", "--nfe", "4",
                           "--method", "dp", "--write-sidecar", "--json", str(tmp_path / "g.json"), *common],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "held-out" in proc.stdout and "wrote" in proc.stdout
    written = json.loads((tmp_path / "g.json").read_text())
    assert written["nfe"] == 4 and len(written["times"]) == 5
    sample = [str(BIN), "sample", "--model", str(path), "--solver", "unipc", "--steps", "4", "--n", "4",
              "--out", str(tmp_path / "s.png")]
    proc = subprocess.run(sample, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tuned grid for unipc at NFE 4" in proc.stderr
    for override in (["--grid", "default"], ["--spacing", "logsnr"]):
        proc = subprocess.run(sample + override, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "tuned grid" not in proc.stderr
    bad = subprocess.run([str(BIN), "tune-grid", "--model", str(path), "--solver", "unipc", "--nfe", "4",
                          "--method", "anneal", *common], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'anneal'" in bad.stderr
