#!/usr/bin/env bash
# The ARM part of CI (called by .ci/run after the host tests): installs the cross toolchains, builds the
# board binaries for each target, and checks each under qemu-user against the host build:
#   - stripped size (goal <= 10 MB, a failure above it),
#   - parity with the host build (cross/parity.sh): top-1 labels on real crops (2 per class of marrow
#     and pbc, int8), and the live pipeline (`run`) on real smear frames and on the virtual slide,
#   - guest instructions per crop (cross/insns.sh), printed for the README.
#   HOST_BIN=target/debug/marrowscope bash cross/ci.sh [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
MAX_BYTES=$((10 * 1000 * 1000))
start=$(date +%s)
step() { echo; echo "== arm: $* ($(( $(date +%s) - start )) s)"; }

arches=()
for t in "${TARGETS[@]}"; do
  case "$t" in
    aarch64-*) arches+=(arm64) ;;
    armv7-*) arches+=(armhf) ;;
    *) echo "cross/ci.sh: unknown target $t" >&2; exit 2 ;;
  esac
done
if [ "${CROSS_SETUP_DONE:-0}" = 1 ]; then
  step "toolchains: installed already (.ci/run ran cross/setup.sh beside the host build)"
else
  step "toolchains (${arches[*]})"
  bash cross/setup.sh "${arches[@]}"
fi

# The board builds run side by side: each spends minutes in a single-threaded fat-LTO link, so two
# of them (and the fuzz build that .ci/run starts beside this step) keep both cores busy. Each target
# builds in its own target folder; one shared folder would make the second cargo wait for its lock.
step "build ${TARGETS[*]} (side by side)"
declare -A build_pid build_log
for t in "${TARGETS[@]}"; do
  build_log[$t]="$(mktemp)"
  CARGO_TARGET_DIR="target/cross/$t.build" bash cross/build.sh "$t" >"${build_log[$t]}" 2>&1 &
  build_pid[$t]=$!
done
failed=0
for t in "${TARGETS[@]}"; do
  if wait "${build_pid[$t]}"; then
    grep -v '^ *Compiling\|^ *Downloaded\|^ *Downloading' "${build_log[$t]}" | tail -n 5
  else
    echo "cross/ci.sh: the $t build failed:" >&2
    tail -n 60 "${build_log[$t]}" >&2
    failed=1
  fi
  rm -f "${build_log[$t]}"
done
[ "$failed" -eq 0 ] || exit 1
step "built"

# check_target TARGET: size goal, parity and instruction counts of one board binary. qemu-user runs
# one guest thread, so the targets' checks run side by side, each into its own log.
check_target() {
  local t="$1" bin="target/cross/$1.build/$1/board/marrowscope" size
  size=$(stat -c %s "$bin")
  echo "size: $t stripped binary $size bytes (goal <= $MAX_BYTES)"
  [ "$size" -le "$MAX_BYTES" ] || { echo "cross/ci.sh: $t binary is over the size goal" >&2; return 1; }
  step "parity $t (qemu-user)"
  ARM_BIN="$bin" bash cross/parity.sh "$t" models/marrow-int8.ron 2
  step "instructions per crop $t"
  ARM_BIN="$bin" bash cross/insns.sh "$t"
  step "checked $t"
}
step "size, parity, instructions: ${TARGETS[*]} (side by side)"
declare -A check_pid check_log
for t in "${TARGETS[@]}"; do
  check_log[$t]="$(mktemp)"
  check_target "$t" >"${check_log[$t]}" 2>&1 &
  check_pid[$t]=$!
done
for t in "${TARGETS[@]}"; do
  wait "${check_pid[$t]}" || { failed=1; echo "cross/ci.sh: the $t checks failed" >&2; }
  cat "${check_log[$t]}"
  rm -f "${check_log[$t]}"
done
[ "$failed" -eq 0 ] || exit 1
step "done"
