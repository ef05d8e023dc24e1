# The two commands of the README:  `make demo` (the main job) and `make test` (everything).
# Both install what they need (scripts/install_deps.sh) and build into build/.
VENV     := .venv
PYTHON   := $(VENV)/bin/python
BUILD    := build
JOBS     ?= $(shell nproc)
CMAKE_ARGS ?=

# ccache: paths relative to the checkout (so a fresh clone, and the wheel build in build-wheel/,
# reuse earlier compilations) and the sloppiness CMake's precompiled headers need.
CCACHE_BASEDIR ?= $(CURDIR)
CCACHE_SLOPPINESS ?= pch_defines,time_macros
export CCACHE_BASEDIR CCACHE_SLOPPINESS
# CI (CI=true) builds with warnings as errors: the build stays warning-free with -Wall -Wextra.
ifeq ($(CI),true)
  CMAKE_ARGS += -DFEWSTEP_WARNINGS_AS_ERRORS=ON
  export FEWSTEP_WARNINGS_AS_ERRORS := ON
endif

.PHONY: all deps configure build test test-cpp test-python test-wheel demo bench clean

all: build

deps: $(VENV)/.deps-stamp
$(VENV)/.deps-stamp: requirements.txt scripts/install_deps.sh
	bash scripts/install_deps.sh
	@touch $@

$(BUILD)/CMakeCache.txt: $(VENV)/.deps-stamp CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DFEWSTEP_PYTHON=$(abspath $(PYTHON)) \
	      -DPython3_EXECUTABLE=$(abspath $(PYTHON)) $(CMAKE_ARGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	@start=$$(date +%s); cmake --build $(BUILD) -j $(JOBS) && echo "[build] $$(( $$(date +%s) - start )) s"

test-cpp: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-python: build
	$(PYTHON) -m pytest -q tests/python tests/fault

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(PYTHON) -m pytest -q tests/python tests/fault

# The pip wheel, made from the build above (scripts/test_wheel.sh; WHEEL_BUILD_DIR=build-wheel builds
# it from scratch as `pip install .` does), installed into a fresh virtual environment with only the
# pinned torch, imported, sampled, its `fewstep` command run.
test-wheel: build
	JOBS=$(JOBS) PYTHON=$(PYTHON) bash scripts/test_wheel.sh

# The main job: the shipped Fashion-MNIST teacher sampled by several solvers at 10 NFE beside a
# high-NFE reference; grids (PNG), table.md and demo.json land in out/demo/.
demo: build
	$(BUILD)/bin/fewstep-bench demo --out out/demo

# Accuracy of every solver against exact float64 solves on a Gaussian mixture.
bench: build
	$(BUILD)/bin/fewstep-bench solvers --json out/bench/solvers.json

clean:
	rm -rf $(BUILD) build-wheel build-wheel-test python/fewstep/_fewstep*.so python/fewstep/_fewstep.pyi
