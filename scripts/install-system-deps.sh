#!/usr/bin/env bash
# Installs the Debian packages fedtiny's tests use, if missing. Never fails the build when it cannot
# install (not root, no apt): the tests that need a missing tool are then skipped with that reason.
set -u
pkgs=(espeak-ng gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang libclang-rt-14-dev)
need=()
for p in "${pkgs[@]}"; do
  if command -v dpkg-query >/dev/null; then
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  fi
done
if ! command -v dpkg-query >/dev/null; then  # not Debian: look for the tools themselves
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
  command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
  command -v clang >/dev/null || need+=(clang)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-system-deps: cannot install ${need[*]} (need root and apt-get); tests needing them will be skipped" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
  || echo "install-system-deps: apt-get failed; tests needing ${need[*]} will be skipped" >&2
exit 0
