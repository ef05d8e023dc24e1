"""fs.load_model_file: a shipped TorchScript model with its sidecar becomes a ready Denoiser."""

from __future__ import annotations

import pathlib
import re
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
    with pytest.raises(ValueError, match="does not match its own checksum"):  # an edited sidecar
        fs.load_model_file(str(bad))
    with pytest.raises(ValueError, match="schedule 'vp_linear' has no parameter 'beta_maxx'"):
        fs.upgrade_model_file(str(bad))  # re-sealing checks every field


# ----------------------------------------------------------------------------------------------
# Writing model files, their checksums, and the sidecar's guards.

import json
import struct
import subprocess
import zipfile

BIN = ROOT / "build" / "bin" / "fewstep"
SHIPPED = sorted(p for p in (ROOT / "models").rglob("*.json")
                 if json.loads(p.read_text()).get("format", "").startswith("fewstep.model"))


class TinyEps(torch.nn.Module):
    def __init__(self, dim: int = 2, scale: float = 0.3) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(dim) * scale)
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * (1.0 + t[:, None])


def test_shipped_model_files_are_schema_2_and_verified() -> None:
    assert len(SHIPPED) >= 20
    for side in SHIPPED:
        pt = side.with_suffix(".pt")
        info = fs.read_model_file_info(str(pt))
        assert info["schema"] == 2 and info["model_sha256"] is not None, side
        m = fs.load_model_file(str(pt), 0 if info["num_classes"] > 0 else None,
                               2.0 if info["guidance_input"] else None)
        assert m["sha256"] == info["model_sha256"]


def test_a_student_saved_from_python_is_read_by_sample(tmp_path: Path) -> None:
    sched = fs.VPLinear()
    grid = fs.progressive_timesteps(sched, 2)
    path = tmp_path / "s.pt"
    side = fs.save_model_file(str(path), TinyEps(), schedule=sched, prediction="v", sample_shape=[2], timesteps=grid,
                              metadata={"note": "python"})
    assert side["schema"] == 2 and side["note"] == "python" and side["sampler"]["timesteps"] == grid.tolist()
    info = fs.read_model_file_info(str(path))
    assert info["metadata"] == {"note": "python"} and info["prediction"] == "v" and info["solver"] == "ddim"
    x_T = fs.randn((4, 2), seeds=range(4))
    out = fs.sample(str(path), x_T)
    assert out.nfe == 2
    ref = fs.sample(fs.Denoiser(TinyEps(), schedule=sched, prediction="v"), x_T, solver="ddim", timesteps=grid)
    torch.testing.assert_close(out.x, ref.x)
    # Other steps without a solver: still the student's own solver (ddim), not dpmpp_2m.
    three = fs.sample(str(path), x_T, steps=3)
    assert three.nfe == 3
    student = fs.Denoiser(TinyEps(), schedule=sched, prediction="v")
    torch.testing.assert_close(three.x, fs.sample(student, x_T, solver="ddim", steps=3).x)
    assert not torch.allclose(three.x, fs.sample(student, x_T, solver="dpmpp_2m", steps=3).x)
    # x_T without the file's sample shape is named as such, not left to the network's own error.
    for shape in [(4,), (4, 1, 2), (4, 3)]:
        with pytest.raises(ValueError, match=re.escape(f"x_T has shape {list(shape)}, but the model file's samples "
                                                       "are [batch, 2]")):
            fs.sample(str(path), torch.zeros(shape))
    with pytest.raises(ValueError, match="metadata must not set \"schedule\""):
        fs.save_model_file(str(tmp_path / "t.pt"), TinyEps(), schedule=sched, prediction="eps", sample_shape=[2],
                           metadata={"schedule": 1})
    with pytest.raises(TypeError, match="torch.nn.Module or torch.jit.ScriptModule"):
        fs.save_model_file(str(tmp_path / "t.pt"), lambda x, t: x, schedule=sched, prediction="eps", sample_shape=[2])


@pytest.mark.parametrize("bad, message", [
    ([0.1, 0.5, 1.0], "strictly decreasing"),
    ([1.0, float("nan"), 0.001], "must be finite"),
    ([5.0, 0.001], "outside"),
])
def test_failing_export_leaves_the_previous_student_intact(tmp_path: Path, bad, message) -> None:
    sched = fs.VPLinear()
    path = tmp_path / "student.pt"
    fs.export_student(TinyEps(), path, teacher=MLP2D, prediction="v", timesteps=fs.progressive_timesteps(sched, 2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=message):
        fs.export_student(TinyEps(scale=0.9), path, teacher=MLP2D, prediction="v", timesteps=bad)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # A network that does not fit the teacher's sample shape is refused before writing too.
    with pytest.raises(ValueError, match="cannot run on one sample"):
        fs.export_student(TinyEps(dim=3), path, teacher=MLP2D, prediction="v")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert fs.load_model_file(str(path))["timesteps"].tolist() == fs.progressive_timesteps(sched, 2).tolist()


def test_flipped_bytes_deep_json_and_torn_pairs_are_errors_naming_the_file(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    shutil.copy(MLP2D, model)
    shutil.copy(MLP2D.with_suffix(".json"), model.with_suffix(".json"))
    good = model.read_bytes()
    for pos in (0, 100, len(good) // 3, len(good) // 2, len(good) - 30, len(good) - 1):
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        model.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=f"'{model}' is corrupted or was replaced"):
            fs.load_model_file(str(model))
        with pytest.raises(ValueError, match="is corrupted or was replaced"):
            fs.sample(str(model), torch.zeros(1, 2))
    model.write_bytes(good)
    side = model.with_suffix(".json")
    text = side.read_text()
    side.write_text(text.replace('"beta_max": 20.0', '"beta_max": 21.0'))
    with pytest.raises(ValueError, match="does not match its own checksum"):
        fs.load_model_file(str(model))
    # 100 000 nested arrays: an error naming the sidecar, from Python and the CLI (no segfault).
    side.write_text(text[: text.rindex("}")] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ValueError, match=f"sidecar '{side}' nests JSON"):
        fs.load_model_file(str(model))
    with pytest.raises(ValueError, match="nests JSON"):
        fs.read_model_file_info(str(model))
    if BIN.is_file():
        proc = subprocess.run([str(BIN), "sample", "--model", str(model), "--n", "2", "--out",
                               str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and str(side) in proc.stderr and "nests JSON" in proc.stderr, proc.stderr
    side.unlink()
    side.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        fs.load_model_file(str(model))


def test_schema_1_sidecars_load_and_upgrade(tmp_path: Path) -> None:
    model = tmp_path / "old.pt"
    shutil.copy(MLP2D, model)
    v1 = json.loads(MLP2D.with_suffix(".json").read_text())
    for key in ("schema", "model_sha256", "sidecar_sha256"):
        v1.pop(key, None)
    v1["format"] = "fewstep.model.v1"
    model.with_suffix(".json").write_text(json.dumps(v1, indent=2))
    old = fs.load_model_file(str(model))
    assert old["schema"] == 1
    up = fs.upgrade_model_file(str(model))
    assert up["schema"] == 2 and up["model_sha256"] == old["sha256"]
    new = fs.load_model_file(str(model))
    x = fs.randn((3, 2), seeds=[1, 2, 3])
    assert torch.equal(fs.sample(new["denoiser"], x, steps=3).x, fs.sample(old["denoiser"], x, steps=3).x)


def test_model_sidecar_path_is_the_one_place() -> None:
    assert fs.model_sidecar_path("a/b.pt") == "a/b.json"
    assert fs.model_sidecar_path("a/b") == "a/b.json"


@pytest.mark.skipif(not BIN.is_file(), reason="fewstep CLI not built")
def test_resuming_a_flipped_checkpoint_fails_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train = [str(BIN), "train", "--data", "gmm2d", "--net", "mlp", "--hidden", "16", "--blocks", "1", "--steps", "20",
             "--batch", "32", "--checkpoint-every", "10", "--threads", "1", "--out", str(out)]
    proc = subprocess.run([*train, "--stop-at", "10"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ckpt = out / "checkpoint.pt"
    good = ckpt.read_bytes()
    # Inside the payload of three stored tensors (the zip's local headers are not read at all).
    records = [r for r in zipfile.ZipFile(ckpt).infolist() if "/data/" in r.filename and r.file_size >= 64]
    for record in records[:: max(1, len(records) // 3)][:3]:
        name_len, extra_len = struct.unpack("<HH", good[record.header_offset + 26:record.header_offset + 30])
        pos = record.header_offset + 30 + name_len + extra_len + record.file_size // 2
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        ckpt.write_bytes(bytes(bad))
        proc = subprocess.run([*train, "--resume"], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and str(ckpt) in proc.stderr and "corrupted" in proc.stderr, proc.stderr
    ckpt.write_bytes(good)
    proc = subprocess.run([*train, "--resume"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fs.load_model_file(str(out / "model.pt"))["schema"] == 2
