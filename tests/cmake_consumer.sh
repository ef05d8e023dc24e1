#!/usr/bin/env bash
# The installed CMake package is relocatable and works for downstream projects:
#  1. installs the build into a scratch prefix, copies the prefix elsewhere and deletes the original;
#  2. checks that no installed file names the build or source tree or the original prefix: the
#     library has no RUNPATH, the CLI's is $ORIGIN/../lib plus LibTorch's directory, and
#     fewstepConfig.cmake finds LibTorch when an application is configured;
#  3. runs the copied bin/fewstep (--version, and a sample written as a PNG);
#  4. builds two applications against the copy through find_package(fewstep) and runs them:
#     examples/cmake_consumer (exact mixture, checks its accuracy) and examples/sample_teacher
#     (loads the shipped TorchScript teacher, writes a PNG that is checked).
# Arguments: <build dir> <source dir> <python>.
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd) python=$3
first="$build/tests/install-prefix"
prefix="$build/tests/install-moved"
rm -rf "$first" "$prefix" "$build/tests/cmake_consumer" "$build/tests/sample_teacher"
cmake --install "$build" --prefix "$first" >/dev/null
cp -a "$first" "$prefix"
rm -rf "$first"

torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
runpath() { readelf -d "$1" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p; s/.*(RPATH).*\[\(.*\)\]/\1/p'; }
lib=$(ls "$prefix"/lib*/libfewstep.so.[0-9]* | head -n 1)
[ -z "$(runpath "$lib")" ] || { echo "FAIL: $lib has RUNPATH '$(runpath "$lib")' (expected none)"; exit 1; }
cli_runpath=$(runpath "$prefix/bin/fewstep")
libdir=$(basename "$(dirname "$lib")")
[ "$cli_runpath" = "\$ORIGIN/../$libdir:$torch_lib" ] || {
  echo "FAIL: bin/fewstep has RUNPATH '$cli_runpath' (expected '\$ORIGIN/../$libdir:$torch_lib')"; exit 1; }
# Text files (CMake package files, headers) name neither tree nor the first prefix.
if grep -rlI -e "$build" -e "$src" -e "$first" "$prefix"; then
  echo "FAIL: the files above name the build tree, the source tree or the install prefix"; exit 1
fi
echo "installed prefix is relocatable: libfewstep RUNPATH none, bin/fewstep RUNPATH '$cli_runpath'"

"$prefix/bin/fewstep" --version
png="$build/tests/cli_sample.png"
rm -f "$png"
"$prefix/bin/fewstep" sample --model "$src/models/gmm2d-mlp-eps.pt" --steps 4 --n 64 --size 64 --out "$png" --quiet
[ -s "$png" ] || { echo "FAIL: the installed fewstep wrote no $png"; exit 1; }

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
