"""The README's three examples run as written: the command-line block line by line with the built
`fewstep`, the Python block in a fresh interpreter, and the C++ block, which must be
examples/readme_example.cpp character for character, as the built build/bin/example_readme.
Each runs in a scratch directory holding only a link to models/, as from the root of a checkout.
The quick start keeps its two commands, and the README states no test counts (they go stale)."""

from __future__ import annotations

import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BIN_DIR = Path(os.environ.get("FEWSTEP_CLI") or ROOT / "build" / "bin" / "fewstep").parent
MODEL = ROOT / "models" / "fmnist-unet-eps.pt"


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else len(README)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture()
def checkout_like(tmp_path: Path) -> Path:
    """A scratch working directory that sees the shipped models as models/."""
    (tmp_path / "models").symlink_to(ROOT / "models")
    return tmp_path


def test_quick_start_is_the_two_commands_and_no_counts() -> None:
    (quick,) = blocks(section("Quick start"), "sh")
    assert [line.split("#")[0].strip() for line in quick.strip().splitlines()] == ["make demo", "make test"]
    # Counts of tests or test binaries go stale with every change.
    assert not re.search(r"\b\d+\s+(tests|test binaries|test files)\b", README), "no hard-coded test counts"


def test_cli_example(checkout_like: Path) -> None:
    if not (BIN_DIR / "fewstep").is_file():
        pytest.skip(f"{BIN_DIR / 'fewstep'} is not built (cmake --build build --target fewstep_cli)")
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is absent")
    (block,) = blocks(section("Three examples"), "sh")
    commands = [line.split(" #")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) >= 2 and all(c.startswith("fewstep ") for c in commands), commands
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        proc = subprocess.run([str(BIN_DIR / argv[0]), *argv[1:]], cwd=checkout_like, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        outputs.append(proc)
        if "--out" in argv:
            out = checkout_like / argv[argv.index("--out") + 1]
            scale = int(argv[argv.index("--scale") + 1]) if "--scale" in argv else 1
            # 16 images of 28 x 28 in a 4 x 4 grid with 2-pixel padding: 4 * 30 + 2 pixels, times the scale.
            assert png_size(out) == (122 * scale, 122 * scale), command
    assert "unipc" in outputs[0].stdout
    assert ", 10 NFE in " in outputs[1].stderr, outputs[1].stderr   # the teacher: 10 network evaluations
    assert ", 4 NFE in " in outputs[2].stderr, outputs[2].stderr    # the 4-step student on its own grid


def test_python_example(checkout_like: Path) -> None:
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is absent")
    (code,) = blocks(section("Three examples"), "python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=checkout_like, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10", "8"], proc.stdout
    assert png_size(checkout_like / "grid.png") == (244, 244)


def test_cpp_example(checkout_like: Path) -> None:
    (code,) = blocks(section("Three examples"), "cpp")
    assert code == (ROOT / "examples" / "readme_example.cpp").read_text(), \
        "the README's C++ example and examples/readme_example.cpp differ: copy one onto the other"
    exe = BIN_DIR / "example_readme"
    if not exe.is_file():
        pytest.skip(f"{exe} is not built (cmake --build build --target example_readme)")
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is absent")
    proc = subprocess.run([str(exe)], cwd=checkout_like, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8 samples, 10 network evaluations each", proc.stdout
    # 8 images: ceil(sqrt(8)) = 3 per row, 3 rows of 30 pixels plus the outer padding.
    assert png_size(checkout_like / "grid_cpp.png") == (92, 92)
