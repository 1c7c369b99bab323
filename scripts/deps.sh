#!/usr/bin/env bash
# Installs the Debian packages Nitride needs to build and test, only those that are missing.
# Runs 'apt-get update' once, and only when something must be installed. Needs root.
set -euo pipefail

packages=(
  # toolchain
  gcc make meson ninja-build pkg-config clang libclang-rt-14-dev clang-format git
  # libraries
  libssl-dev libjansson-dev libjose-dev libcmocka-dev
  libmicrohttpd-dev libgnutls28-dev libcurl4-openssl-dev libsqlite3-dev
  libcryptsetup-dev
  # tools used by tests and the demo
  openssl jq xxd procps util-linux sqlite3 curl python3 python3-jwcrypto
  python3-cryptography cryptsetup-bin
  # Debian 12 OVMF image for the launch-measurement known-answer test (tests/vectors/measure)
  ovmf
  # the peer bench-release compares with (Clevis with a Tang server behind socat)
  clevis clevis-luks tang socat
  # the VM test (tests/vm): Debian's kernel booted under qemu with a test-built initramfs
  qemu-system-x86 busybox-static cpio kmod
  # the PKCS#11 module: its header, the real clients its tests drive, SoftHSM2 for bench-pkcs11
  libp11-kit-dev opensc gnutls-bin libengine-pkcs11-openssl python3-pykcs11 softhsm2
  openssh-server openssh-client
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages and not root; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
