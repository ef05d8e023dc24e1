"""fs.load_model_file: a shipped TorchScript model with its sidecar becomes a ready Denoiser."""

from __future__ import annotations

import pathlib
import shutil

import pytest
import torch

import fewstep as fs

ROOT = pathlib.Path(__file__).resolve().parents[2]
MLP2D = ROOT / "models" / "gmm2d-mlp-eps.pt"


def test_loads_the_shipped_2d_teacher_and_samples_near_the_exact_flow():
    m = fs.load_model_file(str(MLP2D))
    assert m["prediction"] == "eps" and m["sample_shape"] == [2] and m["name"] == "gmm2d-mlp-eps"
    assert "VPLinear(beta_min=0.1, beta_max=20" in repr(m["schedule"])
    # The teacher of GaussianMixture.random(2, 8, seed 0): its ODE samples stay close to the exact
    # model's from the same x_T (its card measures a median distance of 0.012 at 2000 samples).
    exact = fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=8, seed=0), m["schedule"])
    x = fs.randn((256, 2), seeds=list(range(256)))
    learned = fs.sample(m["denoiser"], x, solver="unipc", steps=30).x.double()
    truth = fs.sample(exact, x.double(), solver="unipc", steps=30).x
    assert (learned - truth).norm(dim=1).median().item() < 0.05


def test_missing_file_and_missing_sidecar_are_named(tmp_path):
    with pytest.raises(ValueError, match="model_path '.*nothing.pt' is not a file"):
        fs.load_model_file(str(tmp_path / "nothing.pt"))
    lone = tmp_path / "lone.pt"
    shutil.copy(MLP2D, lone)
    with pytest.raises(ValueError, match="has no sidecar '.*lone.json'"):
        fs.load_model_file(str(lone))


def test_sidecar_with_an_unknown_schedule_parameter_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    shutil.copy(MLP2D, bad)
    text = MLP2D.with_suffix(".json").read_text().replace('"beta_max"', '"beta_maxx"', 1)
    bad.with_suffix(".json").write_text(text)
    with pytest.raises(ValueError, match="schedule 'vp_linear' has no parameter 'beta_maxx'"):
        fs.load_model_file(str(bad))
