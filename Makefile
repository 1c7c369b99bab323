# Thin wrapper over Meson. Every target installs missing Debian packages first (scripts/deps.sh).
.PHONY: all deps build check soak demo bench fuzz clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@[ -f build/build.ninja ] || meson setup build
	@ninja -C build

check: deps
	@bash scripts/check.sh

# Long runs kept out of make check: the hostile-tenant soak for NT_SOAK_SECONDS (default 600).
soak: build
	@NT_SOAK_SECONDS=$${NT_SOAK_SECONDS:-600} meson test -C build --print-errorlogs \
	  --timeout-multiplier 10 vhsm-soak

demo: build
	@bash scripts/demo.sh

bench: build
	@bash scripts/bench.sh

clean:
	rm -rf build build-asan build-fuzz build-bench build-release *.setup.log
