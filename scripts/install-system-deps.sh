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
# QEMU >= 9 for the B-L475E-IOT01A (STM32L475) machine: Debian 12's QEMU 7.2 lacks it, bookworm-backports has
# QEMU 10 (about 25 s to install). mps2-an386 works on both; when backports cannot be reached QEMU 7.2 stays and
# make test-l475 prints a SKIP line.
l475_qemu() {
  command -v qemu-system-arm >/dev/null && qemu-system-arm -M help 2>/dev/null | grep -q '^b-l475e-iot01a ' && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release || return 0
  local src=/etc/apt/sources.list.d/fedtiny-backports.sources
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ || printf '%s\n' 'Types: deb' \
    'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' \
    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > "$src"
  echo "install-system-deps: installing qemu-system-arm from bookworm-backports (b-l475e-iot01a)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-arm; } \
    || echo "install-system-deps: bookworm-backports unreachable; keeping QEMU $(qemu-system-arm --version 2>/dev/null | head -c 30)" >&2
}
trap l475_qemu EXIT
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-system-deps: cannot install ${need[*]} (need root and apt-get); tests needing them will be skipped" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
  || echo "install-system-deps: apt-get failed; tests needing ${need[*]} will be skipped" >&2
exit 0
