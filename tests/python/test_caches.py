"""Cached teacher solves are keyed by the teacher's content: fingerprints, the cache directory
policy, and the probes that used to return another teacher's outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

import fewstep as fs
from conftest import GaussianEps

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "build" / "bin" / "fewstep"
MLP2D = REPO / "models" / "gmm2d-mlp-eps.pt"


def rollouts(teacher: fs.Denoiser, cache, n: int = 16) -> tuple:
    return fs.teacher_rollouts(teacher, [3], n, solver="ddim", steps=6, seed=1, batch=8, cache=cache)


def test_module_fingerprints_follow_the_weights() -> None:
    vp = fs.VPLinear()
    net = GaussianEps()
    d = fs.Denoiser(net, schedule=vp)
    first = d.fingerprint
    assert isinstance(first, str) and len(first) == 64 and d.fingerprint == first
    with torch.no_grad():
        net.mu += 1.0
    assert d.fingerprint != first  # computed at each use: training moves it
    assert fs.Denoiser(GaussianEps(), schedule=vp).fingerprint == first
    assert fs.Denoiser(GaussianEps(), schedule=vp, prediction="x0").fingerprint != first
    assert fs.Denoiser(lambda x, t: x, schedule=vp).fingerprint is None
    assert fs.Denoiser(lambda x, t: x, schedule=vp, fingerprint="mine").fingerprint is not None
    assert fs.Denoiser(lambda x, t: x, schedule=vp, fingerprint=lambda: "v2").fingerprint != \
        fs.Denoiser(lambda x, t: x, schedule=vp, fingerprint=lambda: "v1").fingerprint
    with pytest.raises(TypeError, match="fingerprint should be None, a str or a callable"):
        fs.Denoiser(net, schedule=vp, fingerprint=3)
    with pytest.raises(TypeError, match="fingerprint\\(\\) should return a str"):
        fs.Denoiser(net, schedule=vp, fingerprint=lambda: 3).fingerprint
    exact = fs.Denoiser.exact(fs.GaussianMixture.random(3, 2, seed=0), vp)
    assert exact.fingerprint == fs.Denoiser.exact(fs.GaussianMixture.random(3, 2, seed=0), vp).fingerprint
    assert exact.fingerprint != fs.Denoiser.exact(fs.GaussianMixture.random(3, 2, seed=1), vp).fingerprint


def test_another_python_net_with_the_same_description_never_gets_the_old_pairs(tmp_path: Path) -> None:
    vp = fs.VPLinear()
    a, b = GaussianEps(), GaussianEps()
    with torch.no_grad():
        b.mu -= 2.0
    da, db = fs.Denoiser(a, schedule=vp), fs.Denoiser(b, schedule=vp)
    assert da.description == db.description
    x_T, x0_a = rollouts(da, tmp_path)
    calls = b.calls
    x_T_b, x0_b = rollouts(db, tmp_path)
    assert b.calls > calls and torch.equal(x_T, x_T_b)  # solved, not read from a's file
    assert (x0_a - x0_b).abs().max() > 0.5
    # The same teacher again: read back, no call.
    calls = a.calls
    _, again = rollouts(da, tmp_path)
    assert a.calls == calls and torch.equal(again, x0_a)
    # Training the net in place changes its content: the old pairs are not returned.
    with torch.no_grad():
        a.mu += 1.0
    _, moved = rollouts(da, tmp_path)
    assert a.calls > calls and not torch.equal(moved, x0_a)


def test_a_retrained_teacher_file_at_the_same_path_never_gets_the_old_pairs(tmp_path: Path) -> None:
    vp = fs.VPLinear()
    path = tmp_path / "teacher.pt"

    class Eps(torch.nn.Module):
        def __init__(self, shift: float) -> None:
            super().__init__()
            self.shift = torch.nn.Parameter(torch.full((3,), shift))

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 0.5 * x + self.shift

    fs.save_model_file(str(path), Eps(0.1), schedule=vp, prediction="eps", sample_shape=[3])
    size = path.stat().st_size
    _, old = rollouts(fs.load_model_file(str(path))["denoiser"], tmp_path / "cache")
    fs.save_model_file(str(path), Eps(0.7), schedule=vp, prediction="eps", sample_shape=[3])  # "retrained"
    assert path.stat().st_size == size
    _, new = rollouts(fs.load_model_file(str(path))["denoiser"], tmp_path / "cache")
    assert (new - old).abs().max() > 0.1
    assert len(list((tmp_path / "cache" / "teacher-solves").iterdir())) == 2


def test_caching_a_teacher_without_identity_is_refused_with_what_to_pass(tmp_path: Path) -> None:
    vp = fs.VPLinear()
    anonymous = fs.Denoiser(lambda x, t: 0.5 * x, schedule=vp)
    with pytest.raises(ValueError, match="has none .*fingerprint=") as e:
        rollouts(anonymous, tmp_path)
    assert "fs.Denoiser(net, ..., fingerprint=...)" in str(e.value)
    x_T, x0 = rollouts(anonymous, None)  # without a cache it is just solved
    named = fs.Denoiser(lambda x, t: 0.5 * x, schedule=vp, fingerprint="half-x v1")
    assert torch.equal(rollouts(named, tmp_path)[1], x0)
    with pytest.raises(TypeError, match="cache should be None, True"):
        rollouts(named, 3)


def test_cache_true_uses_the_one_cache_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWSTEP_CACHE_DIR", str(tmp_path / "root"))
    assert fs.cache_directory() == str(tmp_path / "root")
    teacher = fs.Denoiser.exact(fs.GaussianMixture.random(3, 2, seed=0), fs.VPLinear())
    rollouts(teacher, True)
    assert len(list((tmp_path / "root" / "teacher-solves").iterdir())) == 1
    data = fs.dense_trajectories(teacher, "exact", [3], 8, segments=2, substeps=2, cache=True, progress=False)
    assert not data.from_cache
    assert fs.dense_trajectories(teacher, "exact", [3], 8, segments=2, substeps=2, cache=True,
                                 progress=False).from_cache
    assert len(list((tmp_path / "root" / "teacher-solves").iterdir())) == 2


@pytest.mark.skipif(not BIN.is_file(), reason="fewstep CLI not built")
def test_kd_cache_follows_the_teacher_content_and_the_environment(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.pt"
    info = fs.read_model_file_info(str(MLP2D))
    net = torch.jit.load(str(MLP2D))

    def save() -> None:
        fs.save_model_file(str(teacher), net, schedule=info["schedule"], prediction=info["prediction"],
                           sample_shape=info["sample_shape"], network=info["network"], metadata=info["metadata"])

    save()
    env = dict(os.environ, FEWSTEP_CACHE_DIR=str(tmp_path / "cache"))
    args = [str(BIN), "distill", "kd", "--teacher", str(teacher), "--steps", "1", "--pairs", "32", "--teacher-steps",
            "4", "--iterations", "2", "--batch", "16", "--threads", "1"]

    def kd(out: str) -> str:
        proc = subprocess.run([*args, "--out", str(tmp_path / out)], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    first = kd("a")
    assert "made and cached 32 pairs" in first and str(tmp_path / "cache" / "teacher-solves") in first
    assert "loaded 32 pairs" in kd("b")
    # Retrained in place: same path, same size, other weights. The pairs are made again.
    with torch.no_grad():
        next(net.parameters()).add_(0.01)
    size = teacher.stat().st_size
    save()
    assert teacher.stat().st_size == size
    assert "made and cached 32 pairs" in kd("c")
