#!/usr/bin/env bash
# Guest instructions per classified crop for an ARM build, counted by a QEMU plugin (cross/insn_count.c)
# under qemu-user: a repeatable figure for comparing builds, where wall time under emulation is not.
# Per crop = (instructions for 9 crops - instructions for 1 crop) / 8, so start-up (model load and
# optimization) is left out; start-up is printed on its own.
#   bash cross/insns.sh [TARGET] [MODEL_RON...]
# Needs gcc, the dynamically linked qemu-user (cross/setup.sh installs it), ../shared/data and the ARM
# binary from cross/build.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${1:-aarch64-unknown-linux-gnu}"
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(models/marrow-int8.ron models/marrow-f32.ron)
DATA="${MARROWSCOPE_DATA:-../shared/data}"
ARM_BIN="${ARM_BIN:-target/cross/$TARGET/board/marrowscope}"
source cross/qemu.sh
qemu_for "$TARGET" dynamic || exit 2
[ -x "$ARM_BIN" ] || { echo "insns: $ARM_BIN missing (cross/build.sh)" >&2; exit 1; }
command -v "${QEMU[0]}" >/dev/null || { echo "insns: ${QEMU[0]} missing (apt install qemu-user)" >&2; exit 1; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$tmp/insn_count.so" cross/insn_count.c
mapfile -t crops < <(find "$DATA/marrow" -type f -name '*.jpg' | sort | head -n 9)
[ "${#crops[@]}" -eq 9 ] || { echo "insns: need 9 crops under $DATA/marrow" >&2; exit 1; }

count() { # model, crops...: guest instructions of one classify run
  local model="$1"; shift
  "${QEMU[@]}" -plugin "$tmp/insn_count.so" -d plugin -D "$tmp/log" \
    "$ARM_BIN" classify --model "$model" "$@" >/dev/null 2>&1
  sed -n 's/^insns: \([0-9]*\)$/\1/p' "$tmp/log" | tail -1
}
for model in "${MODELS[@]}"; do
  one=$(count "$model" "${crops[0]}")
  nine=$(count "$model" "${crops[@]}")
  [ -n "$one" ] && [ -n "$nine" ] || { echo "insns: the plugin printed no count" >&2; exit 1; }
  echo "insns: $TARGET $(basename "$model" .ron): $(( (nine - one) / 8 )) instructions per crop," \
    "start-up and first crop $one (${QEMU[*]:0:3})"
done
