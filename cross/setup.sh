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
pkgs="rustc-web curl qemu-user-static qemu-user gcc libclang-dev clang"
for a in $ARCHES; do
  $SUDO dpkg --add-architecture "$a"
  case "$a" in
    arm64) pkgs="$pkgs libc6:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    armhf) pkgs="$pkgs libc6:armhf gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
    *) echo "cross/setup.sh: unknown architecture $a (use arm64 or armhf)" >&2; exit 2 ;;
  esac
done
# A mirror mid-sync can fail one index; apt-update.sh tries again and goes on with the rest.
bash "$(dirname "$0")/apt-update.sh"
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs

# The ARM standard library must be the same version as rustc-web. apt installs it when its index
# offers that version. The bookworm-security armhf index has failed to download from this project's
# mirror for days, and on 2026-11-25 a fresh machine's apt offered only 1.85 for arm64 too ("File has unexpected size ... Mirror sync in progress?"); apt then offers only
# bookworm's 1.85 library, which rustc 1.96 cannot use. In that case the package is fetched from the
# same Debian pool by name, checked against the SHA-256 that Debian's index lists for it (pinned
# below), and only its rustlib folder is unpacked into /usr/lib/rustlib, where rustc-web looks.
POOL=http://deb.debian.org/debian-security/pool/updates/main/r/rustc-web
declare -A PINNED_STD_SHA256=(
  [armhf:1.96.0+dfsg1-1~deb12u2]=b9f9dd1d03a903680f918cb2bba00a2a3d76558545d5e6a8061072ab461bb989
  [arm64:1.96.0+dfsg1-1~deb12u2]=02419380801b9f61391294823659b17b90f7a863ca3bbccb9140d2f0f8a2c910
)
rust_version="$(dpkg-query -W -f='${Version}' rustc-web)"
install_std() { # arch, rust target
  local a="$1" target="$2" offered sha deb tmp
  offered="$(apt-cache policy "libstd-rust-web-dev:$a" | sed -n 's/^ *Candidate: //p')"
  if [ "$offered" = "$rust_version" ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "libstd-rust-web-dev:$a"
    return
  fi
  sha="${PINNED_STD_SHA256[$a:$rust_version]:-}"
  if [ -z "$sha" ]; then
    echo "cross/setup.sh: apt offers libstd-rust-web-dev:$a ${offered:-none}, rustc-web is $rust_version, and no pinned package fits" >&2
    exit 1
  fi
  if [ -f "/usr/lib/rustlib/$target/lib/.marrowscope-$sha" ]; then
    echo "cross/setup.sh: libstd-rust-web-dev:$a $rust_version already unpacked"
    return
  fi
  echo "cross/setup.sh: apt offers libstd-rust-web-dev:$a ${offered:-none}; fetching $rust_version from the pool"
  tmp="$(mktemp -d)"
  deb="$tmp/std.deb"
  curl -fsSL --retry 3 -o "$deb" "$POOL/libstd-rust-web-dev_${rust_version}_$a.deb"
  echo "$sha  $deb" | sha256sum -c --quiet - || { echo "cross/setup.sh: checksum mismatch for the $a package" >&2; exit 1; }
  dpkg-deb -x "$deb" "$tmp/x"
  $SUDO rm -rf "/usr/lib/rustlib/$target"
  $SUDO cp -a "$tmp/x/usr/lib/rustlib/$target" /usr/lib/rustlib/
  $SUDO touch "/usr/lib/rustlib/$target/lib/.marrowscope-$sha"
  rm -rf "$tmp"
}
for a in $ARCHES; do
  case "$a" in
    arm64) install_std arm64 aarch64-unknown-linux-gnu ;;
    armhf) install_std armhf armv7-unknown-linux-gnueabihf ;;
  esac
done
/usr/bin/rustc --version
