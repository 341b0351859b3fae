# lumen: the commands a newcomer needs. CMake does the building underneath.
#   make          build build/lumen (Release; CUDA compiled in when nvcc is found)
#   make test     build and run every test (unit, end-to-end, fuzz smoke)
#   make run      install deps, fetch the default model, build, and chat with it
#   make asan     unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-gpu GPU-against-CPU parity tests (on a machine with a GPU)
#   make test-simt the same tests on the CUDA backend run by the host emulator (any machine)

BUILD     ?= build
CUDA_ARCH ?= 90
JOBS      ?= $(shell nproc)
MODEL     ?= smollm2-135m-instruct
FUZZ_SECONDS ?= 60
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
CMAKE_FLAGS ?=

.PHONY: all build deps test unit e2e fuzz asan models run clean test-gpu test-simt

all: build

deps:
	@tools/install-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release -DCUDA_ARCH=$(CUDA_ARCH) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

models:
	@tools/fetch-model $(MODEL) >/dev/null

unit: build
	$(BUILD)/lumen_tests

e2e: build models
	@LUMEN=$(BUILD)/lumen tests/e2e/run.sh

fuzz: deps
	@tools/run-fuzz $(FUZZ_SECONDS)

test: build models
	$(BUILD)/lumen_tests
	@LUMEN=$(BUILD)/lumen tests/e2e/run.sh
	@tools/run-fuzz $(FUZZ_SECONDS)

asan: deps
	cmake -S . -B build-asan $(GENERATOR) -DCMAKE_BUILD_TYPE=Debug -DLUMEN_SANITIZE=ON -DLUMEN_CUDA=OFF
	cmake --build build-asan -j $(JOBS) --target lumen_tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build-asan/lumen_tests

test-gpu: build
	$(BUILD)/lumen_tests --test-suite='gpu*'

test-simt: build
	$(BUILD)/lumen_tests --test-suite='simt*'

run: build models
	$(BUILD)/lumen chat -m "$$(tools/fetch-model $(MODEL))"

clean:
	rm -rf $(BUILD) build-asan build-fuzz
