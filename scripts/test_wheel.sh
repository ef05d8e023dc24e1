#!/usr/bin/env bash
# Builds the fewstep wheel and installs it into a fresh virtual environment that holds only the
# pinned torch (and numpy, tqdm), away from the checkout, then imports it, samples, and runs the
# `fewstep` command (tests/wheel/check_wheel.py). Prints how long each part took and the wheel's size.
#
# The wheel is built with the development environment's Python (.venv, with scikit-build-core and
# pybind11-stubgen) against its torch. By default it is made from the development build in build/
# (WHEEL_BUILD_DIR): scikit-build-core reconfigures that tree with the same settings, finds
# everything built, and installs the CMake component "wheel" (python/CMakeLists.txt), so CI packages
# exactly what its tests ran. WHEEL_BUILD_DIR=build-wheel builds as `pip install .` on a clean
# machine does, in a tree of its own with only the library, the bindings and the CLI.
# The fresh environment gets torch linked from .venv (see below).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-.venv/bin/python}
build_dir=${WHEEL_BUILD_DIR:-build}
out=build-wheel-test
dist=$out/dist
venv=$out/venv
start=$(date +%s)

settings=(-C "build-dir=$build_dir")
if [ "$build_dir" = build ]; then
  # The development build's settings (Makefile): tests, benchmarks and examples are part of it.
  settings+=(-C cmake.define.FEWSTEP_BUILD_TESTS=ON -C cmake.define.FEWSTEP_BUILD_BENCHMARKS=ON
             -C cmake.define.FEWSTEP_BUILD_EXAMPLES=ON)
fi
rm -rf "$dist"
CMAKE_GENERATOR="Unix Makefiles" CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} \
  "$python" -m pip wheel -q --no-build-isolation --no-deps "${settings[@]}" --wheel-dir "$dist" .
built=$(date +%s)
wheel=$(ls "$dist"/fewstep-*.whl)
size=$(du -k "$wheel" | cut -f1)
echo "[wheel] built $(basename "$wheel") ($((size / 1024)) MiB) in $((built - start)) s"

rm -rf "$venv"
"$python" -m venv "$venv"  # from .venv's base interpreter, without .venv's packages
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
if [ "${WHEEL_TEST_TORCH:-link}" = link ]; then
  # torch (5.8 GB with its CUDA libraries), numpy and tqdm, with everything they require, linked into
  # the fresh environment from .venv (files and metadata, so pip sees them installed); nothing else
  # of .venv (no pytest, no matplotlib, not the checkout's own fewstep). WHEEL_TEST_TORCH=download
  # installs them with pip instead (minutes: the package index here forbids caching them).
  "$python" - "$site" <<'PY'
import importlib.metadata as md
import os
import re
import sys

site = sys.argv[1]
todo, seen, linked = ["torch", "numpy", "tqdm"], set(), 0
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    seen.add(name)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    todo += [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in dist.requires or [] if "extra ==" not in r]
    base = str(dist.locate_file(""))
    for top in sorted({f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}):
        if os.path.exists(os.path.join(base, top)) and not os.path.lexists(os.path.join(site, top)):
            os.symlink(os.path.join(base, top), os.path.join(site, top))
            linked += 1
print(f"[wheel] linked {len(seen)} distributions ({linked} entries) from .venv: torch, numpy, tqdm and their requirements")
PY
else
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -c requirements.txt torch numpy tqdm
fi
# requirements.txt as constraints: the wheel's torch, numpy and tqdm at the pinned versions.
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c requirements.txt "$wheel"
installed=$(date +%s)
echo "[wheel] fresh venv with torch + fewstep in $((installed - built)) s"

# Outside the checkout, with nothing of the development environment on the paths.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && env -u PYTHONPATH -u LD_LIBRARY_PATH PATH="$root/$venv/bin:/usr/bin:/bin" \
   "$root/$venv/bin/python" "$root/tests/wheel/check_wheel.py" "$root")
done_at=$(date +%s)
echo "[wheel] checks in $((done_at - installed)) s; wheel step $((done_at - start)) s in total"
