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

# Long runs kept out of make check: the hostile-tenant soak for NT_SOAK_SECONDS (default 600),
# then the whole VM matrix (tests/vm: every case, vmlinux and bzImage, NT_VM_REPEAT times).
soak: build
	@NT_SOAK_SECONDS=$${NT_SOAK_SECONDS:-600} meson test -C build --print-errorlogs \
	  --timeout-multiplier 10 vhsm-soak
	@python3 tests/vm/nitride-vm.py --build-dir build --case all --kernel-format both \
	  --repeat $${NT_VM_REPEAT:-3}

demo: build
	@bash scripts/demo.sh

bench: build
	@bash scripts/bench.sh

clean:
	rm -rf build build-asan build-fuzz build-bench build-release *.setup.log
