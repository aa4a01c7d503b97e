# modex: two commands set up everything on a fresh Debian 12 machine.
#   make demo   install dependencies, build, export a real trained checkpoint, verify it
#   make test   install dependencies, build, run every test
BUILD ?= build
JOBS ?= $(shell nproc)
CACHE ?= $(HOME)/.cache/modex
PY := /usr/bin/python3

.PHONY: all deps build test demo fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1500

demo: build
	@scripts/demo.sh $(BUILD)/modex $(CACHE)

# libFuzzer targets (clang), each run for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMODEX_FUZZ=ON -DMODEX_BUILD_TESTS=OFF
	cmake --build build-fuzz -j $(JOBS)
	@scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

bench: build
	$(PY) bench/export_speed.py --modex $(BUILD)/modex
	$(PY) bench/tflite_export_speed.py --modex $(BUILD)/modex
	$(PY) bench/runtime_speed.py --modex $(BUILD)/modex
	$(PY) bench/batch_speed.py --modex $(BUILD)/modex
	$(PY) bench/serve_load.py --modex $(BUILD)/modex

clean:
	rm -rf $(BUILD) build-fuzz
