#!/usr/bin/env bash
# Builds stripped release binaries for the boards with Debian's rustc (after cross/setup.sh):
#   bash cross/build.sh                         # aarch64 and armv7
#   bash cross/build.sh aarch64-unknown-linux-gnu
# Binaries land in target/cross/<target>/board/marrowscope (a separate target folder, so the
# host toolchain's build stays untouched). Prints each binary's size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGETS="${*:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}"
export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cross}"
[ -x "$RUSTC" ] || { echo "cross/build.sh: $RUSTC missing; run cross/setup.sh first" >&2; exit 1; }
for t in $TARGETS; do
  echo "building $t with $($RUSTC --version)"
  cargo build --profile board --locked --no-default-features --target "$t" --bin marrowscope
  bin="$CARGO_TARGET_DIR/$t/board/marrowscope"
  echo "$t: $bin $(stat -c %s "$bin") bytes"
done
