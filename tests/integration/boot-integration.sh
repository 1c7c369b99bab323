#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Boot integration on the host (docs/luks.md "Boot"); the real boot is tests/vm.
#  1. `meson install` into a DESTDIR puts the plugin into libcryptsetup's token directory, the
#     initramfs-tools hook and scripts, the unlock script, the units and the crypttab examples.
#  2. The shell scripts parse (sh -n); the units pass `systemd-analyze verify` with no ordering
#     cycle (vhsmd.service is pulled in before cryptsetup-pre.target).
#  3. The hook runs against a temporary DESTDIR with initramfs-tools' own hook-functions (the
#     installed ones, else initramfs-tools-core fetched with apt-get download and unpacked with
#     dpkg-deb -x, never installed), with the installed tree bind-mounted in a private mount
#     namespace so the machine is never changed. The tree it builds is then used as a chroot:
#     its cryptsetup, with only the libraries copy_exec put there, opens a sealed volume through
#     the plugin (test mode: this host has no device-mapper).
#  4. nitride-crypttab-unlock unlocks the crypttab entries with a nitride token (test mode),
#     skips the others, and reports a refused one.
set -euo pipefail

NITRIDE=${1:?usage: boot-integration.sh NITRIDE BUILDDIR}
BUILDDIR=${2:?usage: boot-integration.sh NITRIDE BUILDDIR}
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup not installed"; exit 77; }
tokdir=$(cryptsetup --help | sed -n 's/^LUKS2 external token plugin path: \(.*\)\.$/\1/p')
[ -n "$tokdir" ] && [ -d "$tokdir" ] || { echo "SKIP: this cryptsetup has no external token directory"; exit 77; }
unshare -m true 2>/dev/null || { echo "SKIP: cannot make a private mount namespace (unshare -m)"; exit 77; }

tmp=$(mktemp -d /tmp/nt-boot-XXXXXX)
# A sanitizer build of the plugin needs its runtimes loaded first in (uninstrumented) cryptsetup.
preload_of() { ldd "$1" | awk '$1 ~ /^lib(asan|ubsan)\.so/ {print $3}' | paste -sd: -; }
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$tmp/root

# 1. meson install.
meson install -C "$BUILDDIR" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "meson install"; }
prefix=$(meson introspect "$BUILDDIR" --buildoptions | jq -r '.[] | select(.name=="prefix") | .value')
irdir=$(meson introspect "$BUILDDIR" --buildoptions | jq -r '.[] | select(.name=="initramfs_tools_dir") | .value')
for f in "$tokdir/libcryptsetup-token-nitride.so" "$irdir/hooks/nitride" \
         "$irdir/scripts/init-premount/nitride" \
         "$prefix/lib/nitride/nitride-crypttab-unlock" "$prefix/lib/systemd/system/vhsmd.service" \
         "$prefix/lib/systemd/system/nitride-agent.service" \
         "$prefix/share/doc/nitride/examples/crypttab" "$prefix/bin/nitride" "$prefix/sbin/vhsmd"; do
  [ -e "$root$f" ] || fail "meson install did not install $f"
done
for f in hooks/nitride scripts/init-premount/nitride; do
  [ -x "$root$irdir/$f" ] || fail "$irdir/$f is not executable"
done
grep -q "$prefix/bin/nitride" "$root$irdir/hooks/nitride" || fail "hook: paths not substituted"

# 2. Syntax and units.
for f in "$root$irdir/hooks/nitride" "$root$irdir/scripts/init-premount/nitride" \
         "$root$prefix/lib/nitride/nitride-crypttab-unlock"; do
  sh -n "$f" || fail "sh -n $f"
done
if command -v systemd-analyze >/dev/null; then
  mkdir "$tmp/units"
  for u in vhsmd.service nitride-agent.service; do
    # The binaries are not installed on this host: verify the units' dependencies and ordering.
    sed 's#^ExecStart=.*#ExecStart=/bin/true#' "$root$prefix/lib/systemd/system/$u" >"$tmp/units/$u"
  done
  (cd "$tmp/units" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no ./vhsmd.service ./nitride-agent.service) \
    >"$tmp/verify" 2>&1 || { cat "$tmp/verify" >&2; fail "systemd-analyze verify"; }
  grep -qi 'cycle' "$tmp/verify" && { cat "$tmp/verify" >&2; fail "ordering cycle in the units"; }
  grep -q '^Wants=cryptsetup-pre.target' "$tmp/units/vhsmd.service" || fail "vhsmd does not pull in cryptsetup-pre.target"
  grep -q '^Before=cryptsetup-pre.target' "$tmp/units/vhsmd.service" || fail "vhsmd not before cryptsetup-pre.target"
else
  echo "note: systemd-analyze absent, units not verified"
fi

# A sealed volume and its configuration, for the unlock checks below.
chip=$tmp/chip
"$NITRIDE" sim init "$chip" --product genoa >/dev/null
mkimg() { truncate -s 32M "$1"; printf '%s' "$2" | cryptsetup luksFormat --type luks2 --batch-mode \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "$1" -; }
mkimg "$tmp/sealed.img" pw1
printf pw1 >"$tmp/kf1"
"$NITRIDE" luks seal "$tmp/sealed.img" --bind measurement --key-file "$tmp/kf1" --sim-dir "$chip" >/dev/null
mkimg "$tmp/plain.img" pw2
mkimg "$tmp/other.img" pw3
printf pw3 >"$tmp/kf3"
"$NITRIDE" luks seal "$tmp/other.img" --bind measurement --key-file "$tmp/kf3" --sim-dir "$chip" >/dev/null
mkdir -p "$tmp/etc"
echo '{"provider":"sim"}' >"$tmp/etc/luks.conf"

# 3. The hook against a temporary DESTDIR with initramfs-tools' hook-functions.
hf=/usr/share/initramfs-tools/hook-functions
if [ ! -e "$hf" ]; then
  mkdir "$tmp/deb"
  if (cd "$tmp/deb" && timeout 60 apt-get download initramfs-tools-core >/dev/null 2>&1); then
    dpkg-deb -x "$tmp/deb"/initramfs-tools-core_*.deb "$tmp/deb/x"
    hf=$tmp/deb/x/usr/share/initramfs-tools/hook-functions
  fi
fi
if [ -e "$hf" ]; then
  initrd=$tmp/initrd
  mkdir -p "$initrd"
  # mkinitramfs's merged-/usr layout.
  for d in bin sbin lib lib64; do mkdir -p "$initrd/usr/$d"; ln -s "usr/$d" "$initrd/$d"; done
  printf 'cryptroot /img/sealed.img none luks\n' >"$tmp/crypttab"
  # The installed tree in place of the system's, for this namespace only.
  unshare -m --propagation private sh -c '
    set -e
    mount --bind "$1$2" "$2"
    mkdir -p "$1/empty"; [ -d "$3" ] && mount --bind "$1$3" "$3"
    DESTDIR=$4 verbose=n version=$(uname -r) MODULESDIR=/nonexistent CONFDIR=/nonexistent \
      NITRIDE_HOOK_FUNCTIONS=$5 NITRIDE_LUKS_CONF=$6 NITRIDE_CRYPTTAB=$7 sh "$1$8/hooks/nitride"
  ' sh "$root" "$tokdir" "$prefix" "$initrd" "$hf" "$tmp/etc/luks.conf" "$tmp/crypttab" "$irdir" \
    >"$tmp/hook.log" 2>&1 || { cat "$tmp/hook.log" >&2; fail "the hook failed"; }
  for f in usr/sbin/cryptsetup "usr$tokdir/libcryptsetup-token-nitride.so" "${prefix#/}/bin/nitride" \
           "${prefix#/}/lib/nitride/nitride-crypttab-unlock" \
           etc/nitride/luks.conf etc/nitride/crypttab; do
    [ -e "$initrd/$f" ] || { ls -R "$initrd" | head -50 >&2; fail "the hook did not put $f into the initramfs"; }
  done
  grep -q '^cryptroot /img/sealed.img' "$initrd/etc/nitride/crypttab" || fail "hook: crypttab"
  # The initramfs tree as a chroot: its cryptsetup and plugin, with only the libraries the hook
  # copied, open the sealed volume through the token (test mode).
  mkdir -p "$initrd/img" "$initrd/dev" "$initrd/proc" "$initrd/chip" "$initrd/run/cryptsetup"
  cp "$tmp/sealed.img" "$initrd/img/"
  cp -a "$chip/." "$initrd/chip/"
  preload=$(preload_of "$root$tokdir/libcryptsetup-token-nitride.so")
  unshare -m --propagation private sh -c '
    set -e
    mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"
    exec env -i NITRIDE_SIM_DIR=/chip NITRIDE_LUKS_CONF=/etc/nitride/luks.conf LD_PRELOAD="$2" \
      ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
      /usr/sbin/chroot "$1" /sbin/cryptsetup open --token-only --test-passphrase /img/sealed.img
  ' sh "$initrd" "$preload" >"$tmp/chroot.log" 2>&1 || { cat "$tmp/chroot.log" >&2; fail "the initramfs tree's cryptsetup did not unlock with the token"; }
  # Without the plugin in the tree it does not (so the check above did use it).
  rm "$initrd/usr$tokdir/libcryptsetup-token-nitride.so"
  if unshare -m --propagation private sh -c 'mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc";
      exec env -i NITRIDE_SIM_DIR=/chip /usr/sbin/chroot "$1" /sbin/cryptsetup open --token-only --test-passphrase /img/sealed.img' \
      sh "$initrd" >/dev/null 2>&1; then
    fail "the initramfs tree unlocked without the plugin"
  fi
else
  echo "note: initramfs-tools' hook-functions unavailable (not installed, apt-get download failed): hook run skipped"
fi

# 4. The unlock script over a crypttab (test mode), with the plugin in place.
mkdir "$tmp/plugins"
cp "$root$tokdir/libcryptsetup-token-nitride.so" "$tmp/plugins/"
cat >"$tmp/crypttab2" <<EOT
# comment
sealed $tmp/sealed.img none luks
plain  $tmp/plain.img  none luks
EOT
run_unlock() { # crypttab
  unshare -m --propagation private sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh \
    "$tmp/plugins" "$tokdir" env LD_PRELOAD="$(preload_of "$tmp/plugins/libcryptsetup-token-nitride.so")" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 NITRIDE_UNLOCK_TEST=1 NITRIDE_UNLOCK_WAIT=1 NITRIDE_SIM_DIR="$chip" \
    NITRIDE_LUKS_CONF="$tmp/etc/luks.conf" sh "$root$prefix/lib/nitride/nitride-crypttab-unlock" "$1"
}
run_unlock "$tmp/crypttab2" >"$tmp/u.out" 2>&1 || { cat "$tmp/u.out" >&2; fail "unlock script: sealed volume"; }
grep -q 'sealed: unlocked with its nitride token' "$tmp/u.out" || fail "unlock script: message $(cat "$tmp/u.out")"
grep -q 'plain' "$tmp/u.out" && fail "unlock script touched a volume without a nitride token"
# A refused one (another measurement) and a missing source: exit 1, each named.
cp -a "$chip" "$tmp/chip-orig"
"$NITRIDE" sim set "$chip" --measurement "$(printf 'cd%.0s' $(seq 48))" >/dev/null
printf 'other %s none luks\nmissing /dev/disk/by-uuid/00000000-0000-4000-8000-00000000dead none luks\n' \
  "$tmp/other.img" >"$tmp/crypttab3"
if run_unlock "$tmp/crypttab3" >"$tmp/u.out" 2>&1; then fail "unlock script: refused volume reported success"; fi
grep -q 'other: the nitride token did not unlock it' "$tmp/u.out" || fail "unlock script: refusal message $(cat "$tmp/u.out")"
grep -q 'missing: source .* did not appear' "$tmp/u.out" || fail "unlock script: missing source message"

echo "OK: boot integration (install, units, initramfs hook and tree, unlock script; host test mode)"
