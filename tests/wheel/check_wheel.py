"""Checks of an installed fewstep wheel in a fresh environment (run by scripts/test_wheel.sh).

Usage: python check_wheel.py CHECKOUT, from a directory outside the checkout. A failed check raises
(the script exits non-zero); each passed one prints a line.
"""

from __future__ import annotations

import importlib.metadata
import os
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

checkout = Path(sys.argv[1]).resolve()

import torch  # noqa: E402

import fewstep as fs  # noqa: E402

passed = 0
site = Path(sysconfig.get_paths()["platlib"]).resolve()
package = Path(fs.__file__).resolve().parent
assert package.parent == site, f"fewstep imported from {package}, not from the fresh environment's {site}"
assert package != checkout / "python" / "fewstep", f"fewstep imported from the checkout: {package}"
assert importlib.metadata.version("fewstep") == fs.__version__, (importlib.metadata.version("fewstep"), fs.__version__)
for name in ("py.typed", "_fewstep.pyi", "libfewstep.so.0", "bin/fewstep"):  # the library under its soname
    assert (package / name).is_file(), f"{name} is missing from the wheel"
print(f"ok  fewstep {fs.__version__} from {package} (torch {torch.__version__}) with py.typed, stubs, "
      "libfewstep.so.0, bin/fewstep")
passed += 1

# The exact Gaussian mixture of examples/cmake_consumer: 10 DPM-Solver++(2M) steps are close to 400.
model = fs.Denoiser.exact(fs.GaussianMixture.random(2, 3, seed=0), fs.VPLinear(0.1, 20.0))
x_T = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
fast = fs.sample(model, x_T, solver="dpmpp_2m", steps=10)
fine = fs.sample(model, x_T, solver="dpmpp_2m", steps=400)
err = (fast.x - fine.x).norm(dim=1).median().item()
assert fast.nfe == 10 and err < 0.1, (fast.nfe, err)
print(f"ok  exact mixture: 10 steps of dpmpp_2m within {err:.2e} of 400 steps")
passed += 1

teacher = fs.model_path("fmnist-unet-eps")
assert package in teacher.parents, f"shipped model {teacher} is not in the wheel"
loaded = fs.load_model_file(str(teacher))
denoiser = loaded["denoiser"] if isinstance(loaded, dict) else loaded.denoiser
out = fs.sample(denoiser, torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)), solver="dpmpp_2m",
                steps=4)
grid = fs.save_image_grid(out.x, "grid.png", nrow=2, scale=2)
side = 2 * (2 * 30 + 2)  # 2 images of 28 pixels + 3 paddings of 2, doubled
assert tuple(grid.shape) == (side, side, 1), tuple(grid.shape)
print(f"ok  shipped teacher sampled, grid {tuple(grid.shape)} written")
passed += 1


def png_size(path: str) -> tuple:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# The console script (fewstep_cli) and the binary itself, with no LD_LIBRARY_PATH: its RUNPATH finds
# libfewstep.so beside it and torch's libraries in the sibling torch/ package.
env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
version = subprocess.run(["fewstep", "--version"], capture_output=True, text=True, env=env, check=True).stdout
assert fs.__version__ in version, version
direct = subprocess.run([str(package / "bin" / "fewstep"), "--version"], capture_output=True, text=True, env=env)
assert direct.returncode == 0 and fs.__version__ in direct.stdout, direct
subprocess.run(["fewstep", "sample", "--model", str(teacher), "--steps", "4", "--n", "4", "--out", "cli.png",
                "--scale", "2", "--quiet"], check=True, env=env)
assert png_size("cli.png") == (side, side), png_size("cli.png")
print(f"ok  `fewstep` command: {version.strip()}; sample wrote a {png_size('cli.png')} PNG")
passed += 1
print(f"wheel checks: all {passed} ok")
