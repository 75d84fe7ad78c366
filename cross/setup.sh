#!/usr/bin/env bash
# Installs what cross-building marrowscope for ARM needs on a Debian 12 (bookworm) x86_64 machine:
# Debian's rustc 1.96 (`rustc-web`, which carries the ARM standard libraries as multiarch packages;
# rustup cannot fetch targets here), the ARM standard libraries, GNU cross linkers and C libraries,
# qemu-user-static to run the ARM binaries (and their tests) on this machine, and qemu-user with gcc for
# the instruction-counting plugin (cross/insns.sh).
#   sudo bash cross/setup.sh            # both targets
#   sudo bash cross/setup.sh arm64      # one of arm64, armhf
set -euo pipefail
ARCHES="${*:-arm64 armhf}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs="rustc-web qemu-user-static qemu-user gcc libclang-dev clang"
for a in $ARCHES; do
  $SUDO dpkg --add-architecture "$a"
  case "$a" in
    arm64) pkgs="$pkgs libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    armhf) pkgs="$pkgs libstd-rust-web-dev:armhf gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
    *) echo "cross/setup.sh: unknown architecture $a (use arm64 or armhf)" >&2; exit 2 ;;
  esac
done
# A mirror mid-sync can fail one index; try again before giving up on a clean update.
for try in 1 2 3; do
  $SUDO apt-get update -qq && break
  echo "cross/setup.sh: apt-get update failed (try $try of 3)" >&2
  sleep 20
done
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs
/usr/bin/rustc --version
