#!/usr/bin/env bash
# Installs the built library into a scratch prefix, then builds two applications against it through
# find_package(fewstep) and runs them: examples/cmake_consumer (exact mixture, checks its accuracy)
# and examples/sample_teacher (loads the shipped TorchScript teacher, writes a PNG that is checked).
# Arguments: <build dir> <source dir> <python>.
set -euo pipefail
build=$1 src=$2 python=$3
prefix="$build/tests/install-prefix"
rm -rf "$prefix" "$build/tests/consumer" "$build/tests/sample_teacher"
cmake --install "$build" --prefix "$prefix" >/dev/null
for app in cmake_consumer sample_teacher; do
  cmake -S "$src/examples/$app" -B "$build/tests/$app" -DCMAKE_PREFIX_PATH="$prefix" \
        -DFEWSTEP_PYTHON="$python" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build/tests/$app" -j 2 >/dev/null
done
"$build/tests/cmake_consumer/consumer"

png="$build/tests/sample_teacher/grid.png"
rm -f "$png"
"$build/tests/sample_teacher/sample_teacher" "$src/models/fmnist-unet-eps.pt" "$png" dpmpp_2m 10 16
# A 4x4 grid of 28x28 images with 2-pixel padding: 4*30+2 = 122 pixels square, PNG signature first.
"$python" - "$png" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height = struct.unpack(">II", data[16:24])
assert (width, height) == (122, 122), (width, height)
print(f"sample_teacher wrote a {width}x{height} PNG")
PY
