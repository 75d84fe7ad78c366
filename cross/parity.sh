#!/usr/bin/env bash
# Runs the ARM build of marrowscope under qemu-user on real crops and compares its top-1 labels with the
# host (x86_64) build's on the same crops and model; reports the largest probability difference.
#   bash cross/parity.sh [TARGET] [MODEL_RON] [CROPS_PER_CLASS]
# Needs ../shared/data (marrow and pbc crops), the host release binary (cargo build --release) and
# the ARM binary from cross/build.sh. Exit status non-zero when any label differs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${1:-aarch64-unknown-linux-gnu}"
MODEL="${2:-models/marrow-int8.ron}"
PER_CLASS="${3:-3}"
DATA="${MARROWSCOPE_DATA:-../shared/data}"
HOST_BIN="${HOST_BIN:-target/release/marrowscope}"
ARM_BIN="${ARM_BIN:-target/cross/$TARGET/release/marrowscope}"
case "$TARGET" in
  aarch64-*) RUN=(qemu-aarch64-static -L /usr/aarch64-linux-gnu) ;;
  armv7-*) RUN=(qemu-arm-static -L /usr/arm-linux-gnueabihf) ;;
  *) echo "parity: unknown target $TARGET" >&2; exit 2 ;;
esac
for b in "$HOST_BIN" "$ARM_BIN"; do
  [ -x "$b" ] || { echo "parity: $b missing (cargo build --release / cross/build.sh)" >&2; exit 1; }
done
crops=()
for dir in "$DATA"/marrow/* "$DATA"/pbc/*; do
  [ -d "$dir" ] || continue
  while IFS= read -r f; do crops+=("$f"); done < <(find "$dir" -type f -name '*.jpg' | sort | head -n "$PER_CLASS")
done
[ "${#crops[@]}" -gt 0 ] || { echo "parity: no crops under $DATA" >&2; exit 1; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$HOST_BIN" classify --json --model "$MODEL" "${crops[@]}" > "$tmp/host.jsonl"
start=$(date +%s)
"${RUN[@]}" "$ARM_BIN" classify --json --model "$MODEL" "${crops[@]}" > "$tmp/arm.jsonl"
echo "parity: $TARGET classified ${#crops[@]} crops under qemu in $(( $(date +%s) - start )) s"
python3 - "$tmp/host.jsonl" "$tmp/arm.jsonl" <<'PY'
import json, sys
host = [json.loads(l) for l in open(sys.argv[1])]
arm = [json.loads(l) for l in open(sys.argv[2])]
assert len(host) == len(arm), (len(host), len(arm))
differ = [(h["file"], h["class"], a["class"]) for h, a in zip(host, arm) if h["class"] != a["class"]]
dp = max(abs(h["probability"] - a["probability"]) for h, a in zip(host, arm))
print(f"parity: {len(host) - len(differ)}/{len(host)} labels equal, largest probability difference {dp:.2e}")
for d in differ:
    print("parity: differs:", *d)
sys.exit(1 if differ else 0)
PY
