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
# The fresh environment gets torch from pip's cache.
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
