#!/usr/bin/env bash
# Installs everything fewstep needs to build and test, and prints how long it took.
#  - Debian packages (GoogleTest, Google Benchmark, CLI11, nlohmann-json, ccache, zlib,
#    Fashion-MNIST),
#    through apt-get when running as root and a package is missing;
#  - a virtual environment .venv/ at the repository root with the pinned PyTorch (its
#    LibTorch is what the C++ library links), the Python test tools, and the test-only
#    interop packages (diffusers, k-diffusion: requirements-interop.txt);
#  - this checkout installed editable into .venv (fewstep imported from python/, the `fewstep` command).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)

apt_packages=(cmake g++ make libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev ccache
              zlib1g-dev dataset-fashion-mnist)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "[deps] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[deps] missing Debian packages: ${missing[*]}" >&2
    echo "[deps] install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# Disk space first: torch with its CUDA libraries takes about 7 GB in .venv and pip unpacks the
# wheels beside it; a build adds about 2 GB. Running out half-way leaves a broken .venv and a pip
# traceback, so say what is needed up front (FEWSTEP_MIN_FREE_GB overrides the estimate).
if .venv/bin/python -c 'import torch' >/dev/null 2>&1; then need_gb=3; else need_gb=12; fi
need_gb=${FEWSTEP_MIN_FREE_GB:-$need_gb}
free_gb=$(( $(df -Pk "$root" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
if (( free_gb < need_gb )); then
  echo "[deps] only ${free_gb} GB free on the file system of $root; installing and building needs" \
       "about ${need_gb} GB (set FEWSTEP_MIN_FREE_GB to change the check)" >&2
  exit 1
fi

python=${FEWSTEP_BOOTSTRAP_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[deps] creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt; then
  echo "[deps] pip install -r requirements.txt failed (see above)" >&2
  exit 1
fi
# Test/benchmark-only interop dependencies (diffusers, k-diffusion), fully pinned: --no-deps keeps
# k-diffusion's training extras out (requirements-interop.txt says why).
if ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-interop.txt; then
  echo "[deps] pip install --no-deps -r requirements-interop.txt failed (see above)" >&2
  exit 1
fi
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null  # notebook tests' kernel: this .venv
# This checkout as an editable install (pyproject.toml): python/ on sys.path, `pip show fewstep`
# finds it, `.venv/bin/fewstep` runs build/bin/fewstep. No build happens here; `make build` writes
# the extension into python/fewstep/.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site/fewstep-dev.pth"  # the path entry of earlier checkouts, before the editable install
if ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .; then
  echo "[deps] pip install -e . failed (see above)" >&2
  exit 1
fi
echo "[deps] done in $(( $(date +%s) - start )) s; torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
