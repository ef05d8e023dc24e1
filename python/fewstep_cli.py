"""The ``fewstep`` command of a pip installation: runs the C++ command-line tool.

The wheel ships the tool as ``fewstep/bin/fewstep`` beside ``fewstep/libfewstep.so``; it needs
LibTorch's libraries, which belong to the ``torch`` package of the same environment. This
launcher finds that package without importing it (an import would cost seconds), puts its
``lib/`` first on ``LD_LIBRARY_PATH`` and replaces itself with the tool. It is a module of its own
rather than part of ``fewstep`` so that starting the command does not import torch.

In a checkout (the editable install) the tool is the one the build wrote, ``build/bin/fewstep``;
``FEWSTEP_CLI=/path/to/fewstep`` chooses another.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["cli_path", "main"]


def _package_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("fewstep")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def cli_path() -> Path:
    """The fewstep executable this command runs (FileNotFoundError naming the places looked at)."""
    tried: List[Path] = []
    override = os.environ.get("FEWSTEP_CLI")
    if override:
        tried.append(Path(override))
    package = _package_dir()
    if package is not None:
        tried.append(package / "bin" / "fewstep")  # wheel
        tried.append(package.parent.parent / "build" / "bin" / "fewstep")  # checkout: python/fewstep -> build/
    for candidate in tried:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("the fewstep executable was not found; looked at: " + ", ".join(map(str, tried)) +
                            " (set FEWSTEP_CLI to its path)")


def _torch_lib() -> Optional[str]:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return str(lib) if lib.is_dir() else None


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        exe = cli_path()
    except FileNotFoundError as e:
        print(f"fewstep: {e}", file=sys.stderr)
        return 127
    env = dict(os.environ)
    torch_lib = _torch_lib()
    if torch_lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (torch_lib, env.get("LD_LIBRARY_PATH", "")) if p)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(exe), [str(exe), *args], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
