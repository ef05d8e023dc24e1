"""Where the models shipped with fewstep are: ``fewstep/models/`` of a wheel, ``models/`` of a checkout."""

from __future__ import annotations

from pathlib import Path
from typing import List

__all__ = ["model_path", "models_dir", "shipped_models"]


def models_dir() -> Path:
    """The directory of the shipped models (TorchScript ``.pt`` files with their ``.json`` sidecars
    and ``.md`` cards): ``fewstep/models`` in an installed wheel, ``models/`` in a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "models", package.parent.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no shipped models next to {package} (looked for {package / 'models'} and "
                            f"{package.parent.parent / 'models'})")


def shipped_models() -> List[str]:
    """Names of the shipped models (file names without ``.pt``; distilled students as ``distilled/<name>``)."""
    root = models_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.pt"))


def model_path(name: str) -> Path:
    """The ``.pt`` file of the shipped model ``name`` (e.g. ``"fmnist-unet-eps"``), for
    :func:`fewstep.load_model_file` or ``fewstep sample --model``; ValueError listing the names
    for an unknown one."""
    if not isinstance(name, str):
        raise TypeError(f"name should be a str, got {type(name).__name__}")
    path = models_dir() / (name if name.endswith(".pt") else name + ".pt")
    if not path.is_file():
        raise ValueError(f"no shipped model named {name!r}; the shipped models are: {', '.join(shipped_models())}")
    return path
