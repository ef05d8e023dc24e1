"""Damaged, odd and unwritable files (docs/reliability.md): corrupted and truncated model files and
checkpoints, deep and huge JSON, directories where files belong, a full disk. Every case must end in an
error naming the file (exit status 1 or 2, never a crash) and leave the files that were there intact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

import fewstep as fs
from faultlib import TRAIN, needs_cli, run, trained  # noqa: F401 - the fixture

pytestmark = needs_cli


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "model.json"):
        shutil.copy(src / name, dst / name)
    return dst / "model.pt"


def assert_clean_failure(proc: subprocess.CompletedProcess, *names: str) -> None:
    assert proc.returncode in (1, 2), f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    for name in names:
        assert name in proc.stderr, (name, proc.stderr[-2000:])


def sample_args(model: Path, tmp: Path) -> list[str]:
    return ["sample", "--model", str(model), "--steps", "2", "--n", "4", "--out", str(tmp / "s.png"), "--quiet"]


def test_every_flipped_byte_of_a_model_is_refused(trained: Path, tmp_path: Path) -> None:
    model = copy_model(trained, tmp_path / "m")
    good = model.read_bytes()
    size = len(good)
    positions = sorted({0, size // 7, size // 3, size // 2, 2 * size // 3, size - 30, size - 1})
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 0x20
        model.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=str(model)):
            fs.load_model_file(str(model))
    model.write_bytes(good[: size // 2])  # truncated
    assert_clean_failure(run(*sample_args(model, tmp_path), check=False), str(model))


def test_truncated_or_edited_sidecar_is_refused(trained: Path, tmp_path: Path) -> None:
    model = copy_model(trained, tmp_path / "m")
    side = tmp_path / "m" / "model.json"
    text = side.read_text()
    side.write_text(text[: len(text) // 2])
    assert_clean_failure(run(*sample_args(model, tmp_path), check=False), str(side))
    side.write_text(text.replace('"prediction": "eps"', '"prediction": "x0"'))
    assert_clean_failure(run(*sample_args(model, tmp_path), check=False), str(side))


def test_corrupted_and_truncated_checkpoints_do_not_resume(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    ck = out / "checkpoint.pt"
    good = ck.read_bytes()
    for bad in (good[: len(good) // 2], good[:100] + bytes([good[100] ^ 1]) + good[101:]):
        ck.write_bytes(bad)
        proc = run(*TRAIN, "--out", str(out), "--resume", check=False)
        assert_clean_failure(proc, str(ck))
    assert (out / "model.pt").read_bytes() == (trained / "model.pt").read_bytes()  # the export is untouched


def test_deep_and_huge_json(trained: Path, tmp_path: Path) -> None:
    model = copy_model(trained, tmp_path / "m")
    side = tmp_path / "m" / "model.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps(meta)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_clean_failure(run(*sample_args(model, tmp_path), check=False), str(side), "nest")
    with pytest.raises(ValueError, match="nest"):
        fs.load_model_file(str(model))
    meta["huge"] = list(range(1_000_000))  # ~7 MB: read, then refused by its checksum, without a crash
    side.write_text(json.dumps(meta))
    assert_clean_failure(run(*sample_args(model, tmp_path), check=False), str(side))


def test_directories_where_files_belong(trained: Path, tmp_path: Path) -> None:
    model = copy_model(trained, tmp_path / "m")
    side = tmp_path / "m" / "model.json"
    side.unlink()
    side.mkdir()
    assert_clean_failure(run(*sample_args(model, tmp_path), check=False), str(side), "directory")
    with pytest.raises(ValueError, match="directory"):
        fs.load_model_file(str(model))
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "checkpoint.pt").unlink()
    (out / "checkpoint.pt").mkdir()
    assert_clean_failure(run(*TRAIN, "--out", str(out), "--resume", check=False), str(out / "checkpoint.pt"))
    assert_clean_failure(run("sample", "--model", str(tmp_path / "m"), check=False), str(tmp_path / "m"))


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk(trained: Path, tmp_path: Path) -> None:
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    if not _mount_tmpfs(disk, "192k"):
        pytest.skip("needs root and mount(8) for a small tmpfs")
    try:
        # A model file that does not fit: an error naming the file, no temp files, the old pair intact.
        model = copy_model(trained, disk / "m")  # fits (the MLP is small)
        before = model.read_bytes()
        filler = disk / "filler"
        free = shutil.disk_usage(disk).free
        filler.write_bytes(b"\0" * max(0, free - 4096))
        net = torch.jit.load(str(model))
        with pytest.raises((ValueError, RuntimeError), match=str(model)):
            fs.save_model_file(str(model), net, schedule=fs.VPLinear(), prediction="eps", sample_shape=[2])
        assert model.read_bytes() == before
        assert [p.name for p in (disk / "m").iterdir() if ".tmp." in p.name] == []
        # Training into a full disk: a clean error naming the checkpoint.
        proc = run(*TRAIN, "--out", str(disk / "run"), check=False)
        assert proc.returncode == 1 and "No space left" in proc.stderr, proc.stderr[-2000:]
        if (disk / "run").exists():
            assert [p.name for p in (disk / "run").iterdir() if ".tmp." in p.name] == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
