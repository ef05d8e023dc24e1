#!/usr/bin/env bash
# Installs the built library into a scratch prefix, builds examples/cmake_consumer against it
# through find_package(fewstep), and runs it. Arguments: <build dir> <source dir> <python>.
set -euo pipefail
build=$1 src=$2 python=$3
prefix="$build/tests/install-prefix"
rm -rf "$prefix" "$build/tests/consumer"
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S "$src/examples/cmake_consumer" -B "$build/tests/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
      -DFEWSTEP_PYTHON="$python" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build/tests/consumer" -j 2 >/dev/null
"$build/tests/consumer/consumer"
