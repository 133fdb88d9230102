# A thin front over CMake. `make` builds everything and leaves the tools at the repository
# root (./ppl_eval, ./convert, ./tokenize, ...). See README.md.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
export PATH := $(PATH):/usr/local/cuda/bin

.PHONY: all setup configure build tools test test-all test-slow test-emulated demo bench gpu-check format format-check clean

all: build

setup:
	@scripts/setup.sh

configure: setup
	@test -f $(BUILD_DIR)/CMakeCache.txt || cmake -S . -B $(BUILD_DIR) -G "$(GENERATOR)" $(CMAKE_ARGS)

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# The tools and the libraries they link, not the tests: what the demo needs.
tools: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target ll_tools

# The default suite: everything but the slow label (GPU tests skip without a GPU).
test: build
	@cd $(BUILD_DIR) && ctest -LE slow -j $(JOBS) --output-on-failure

test-slow: build
	@cd $(BUILD_DIR) && ctest -L slow -j $(JOBS) --output-on-failure

test-all: build
	@cd $(BUILD_DIR) && ctest -j $(JOBS) --output-on-failure

# The GPU tests without a GPU: the CUDA backend built for the SIMT emulator (LL_CUDA_BACKEND_EMULATED:
# kernels run on the CPU, host stand-ins for the CUDA runtime and cuBLASLt, no NCCL) in
# build-emulated. Slow: on a 2-core VM about 30 min of build, then 7 min of GPU tests (they
# skip their longest cases there, each with a message).
test-emulated: setup
	@test -f build-emulated/CMakeCache.txt || cmake -S . -B build-emulated -G "$(GENERATOR)" -DLL_CUDA_BACKEND_EMULATED=ON -DLL_ENABLE_MPI=OFF
	@cmake --build build-emulated -j $(JOBS)
	@cd build-emulated && ctest -L gpu -j $(JOBS) --output-on-failure --timeout 7200

# The quick start's main job on the built-in tiny model (CPU).
demo: tools
	@scripts/demo.sh

bench: build
	@scripts/bench_cpu.sh
	@bench/train_cpu.sh

# On a GPU machine: build for its card, run the GPU tests (and compute-sanitizer), report.
gpu-check:
	@scripts/gpu_check.sh gpu-check

# The sources' format (.clang-format); `make test` runs the check too (ctest format_check).
format-check:
	@scripts/format_check.sh

format:
	@scripts/format_check.sh --fix

clean:
	rm -rf $(BUILD_DIR) ppl_eval convert tokenize train_longlora init_model bench_s2attn bench_cpu_forward bench_train
