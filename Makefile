# Thin wrapper over scripts/, CMake and ctest. The README's two commands:
#   make up     run the system (single-node Swarm, demo configuration)
#   make test   install dependencies, build with sanitizers, run every test
BUILD ?= build
TEST_BUILD ?= build-test
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps build test test-unit format format-check up down bench clean

all: build

deps:
	scripts/deps.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

$(TEST_BUILD)/CMakeCache.txt:
	cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSCRAPR_SANITIZE=ON

test: deps $(TEST_BUILD)/CMakeCache.txt
	cmake --build $(TEST_BUILD) -j $(JOBS)
	tests/lib/testbed.sh run -- ctest --test-dir $(TEST_BUILD) --output-on-failure \
		--no-tests=error -j $(JOBS) $(CTEST_ARGS)

test-unit: $(TEST_BUILD)/CMakeCache.txt
	cmake --build $(TEST_BUILD) -j $(JOBS)
	ctest --test-dir $(TEST_BUILD) -L unit --output-on-failure

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

up:
	deploy/up.sh

down:
	deploy/down.sh

bench: build
	bench/run.sh

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
