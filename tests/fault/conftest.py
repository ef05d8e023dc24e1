"""Fixtures of the fault-injection suite (helpers in faultlib.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultlib import BIN, TRAIN, run  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small run: model.pt + sidecar + checkpoint.pt (uninterrupted, the reference bits)."""
    if not BIN.is_file():
        pytest.skip(f"{BIN} is not built")
    out = tmp_path_factory.mktemp("fault") / "full"
    run(*TRAIN, "--out", str(out))
    return out
