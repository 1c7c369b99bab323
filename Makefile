# Thin wrapper over Meson. Every target installs missing Debian packages first (scripts/deps.sh).
.PHONY: all deps build check demo bench fuzz clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@[ -f build/build.ninja ] || meson setup build
	@ninja -C build

check: deps
	@bash scripts/check.sh

demo: build
	@bash scripts/demo.sh

bench: build
	@bash scripts/bench.sh

clean:
	rm -rf build build-asan build-fuzz build-bench build-release *.setup.log
