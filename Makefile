# The two commands of the README:  `make demo` (the main job) and `make test` (everything).
# Both install what they need (scripts/install_deps.sh) and build into build/.
VENV     := .venv
PYTHON   := $(VENV)/bin/python
BUILD    := build
JOBS     ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps configure build test test-cpp test-python demo bench clean

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
	@start=$$(date +%s); cmake --build $(BUILD) -j $(JOBS); echo "[build] $$(( $$(date +%s) - start )) s"

test-cpp: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-python: build
	$(PYTHON) -m pytest -q tests/python

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(PYTHON) -m pytest -q tests/python

# The main job: the shipped Fashion-MNIST teacher sampled by several solvers at 10 NFE beside a
# high-NFE reference; grids (PNG), table.md and demo.json land in out/demo/.
demo: build
	$(BUILD)/bin/fewstep-bench demo --out out/demo

# Accuracy of every solver against exact float64 solves on a Gaussian mixture.
bench: build
	$(BUILD)/bin/fewstep-bench solvers --json out/bench/solvers.json

clean:
	rm -rf $(BUILD) python/fewstep/_fewstep*.so
