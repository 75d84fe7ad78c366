#!/usr/bin/env bash
# Runs the ARM build of marrowscope under qemu-user and compares it with the host (x86_64) build:
#  1. classifier: top-1 labels on real crops (marrow and pbc), and the largest probability difference;
#  2. pipeline: `run` on real smear frames (BCCD stills) and on the virtual slide (real crops), where the
#     journals must hold the same cells with the same classes (positions and probabilities compared).
#   bash cross/parity.sh [TARGET] [MODEL_RON] [CROPS_PER_CLASS]
# MODEL_RON (default the int8 model) is used for the crops; the pipeline runs PIPELINE_MODEL (default
# the f32 model, which the board profiles use) on PIPELINE_FRAMES frames (default 12) of each source;
# PIPELINE_FRAMES=0 leaves the pipeline part out.
# Needs ../shared/data, a host binary (HOST_BIN; default target/release/marrowscope, else
# target/debug/marrowscope) and the ARM binary from cross/build.sh. Exit status non-zero when any label
# or count differs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${1:-aarch64-unknown-linux-gnu}"
MODEL="${2:-models/marrow-int8.ron}"
PER_CLASS="${3:-3}"
DATA="${MARROWSCOPE_DATA:-../shared/data}"
if [ -z "${HOST_BIN:-}" ]; then
  HOST_BIN=target/release/marrowscope
  [ -x "$HOST_BIN" ] || HOST_BIN=target/debug/marrowscope
fi
ARM_BIN="${ARM_BIN:-target/cross/$TARGET/board/marrowscope}"
FRAMES_DIR="$DATA/frames/bccd/JPEGImages"
PIPELINE_MODEL="${PIPELINE_MODEL:-models/marrow-f32.ron}"
source cross/qemu.sh
qemu_for "$TARGET" static || exit 2
RUN=("${QEMU[@]}")
for b in "$HOST_BIN" "$ARM_BIN"; do
  [ -x "$b" ] || { echo "parity: $b missing (cargo build / cross/build.sh)" >&2; exit 1; }
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

# The live pipeline (localize, track, classify, count) on both builds; each writes a journal.
pipeline() { # name, source spec, frames
  local name="$1" spec="$2" frames="$3"
  "$HOST_BIN" run --source "$spec" --frames "$frames" --model "$PIPELINE_MODEL" --report "$tmp/$name-host" >/dev/null
  start=$(date +%s)
  "${RUN[@]}" "$ARM_BIN" run --source "$spec" --frames "$frames" --model "$PIPELINE_MODEL" --report "$tmp/$name-arm" >/dev/null
  echo "parity: $TARGET ran $frames frames of $name under qemu in $(( $(date +%s) - start )) s"
  python3 - "$name" "$tmp/$name-host/journal.jsonl" "$tmp/$name-arm/journal.jsonl" <<'PY'
import json, sys
name = sys.argv[1]
host = [json.loads(l) for l in open(sys.argv[2])]
arm = [json.loads(l) for l in open(sys.argv[3])]
counts = lambda j: sorted((e["id"], e["class"]) for e in j if e.get("op") == "count")
if not host:
    sys.exit(f"parity: {name}: the host build counted nothing; the test would prove nothing")
if counts(host) != counts(arm):
    print(f"parity: {name}: journals differ: host {counts(host)} arm {counts(arm)}")
    sys.exit(1)
by_id = {e["id"]: e for e in arm if e.get("op") == "count"}
pairs = [(e, by_id[e["id"]]) for e in host if e.get("op") == "count"]
dp = max(abs(h["p"] - a["p"]) for h, a in pairs)
dx = max(max(abs(h["x"] - a["x"]), abs(h["y"] - a["y"])) for h, a in pairs)
print(f"parity: {name}: {len(pairs)} cells counted, same ids and classes; largest probability "
      f"difference {dp:.2e}, largest position difference {dx:.2e} px")
PY
}
if [ "${PIPELINE_FRAMES:-12}" -gt 0 ]; then
  pipeline smear-frames "dir:$FRAMES_DIR" "${PIPELINE_FRAMES:-12}"
  pipeline virtual-slide "virtual:1" "${PIPELINE_FRAMES:-12}"
else
  echo "parity: pipeline part not run (PIPELINE_FRAMES=0)"
fi
