#!/usr/bin/env bash
# One-shot sweep of the white-cell detector: recipes x seeds trained in parallel (one process each),
# each run then rescored on its held-back frames at fixed thresholds (rescore.py); summary table on
# stdout; detector.pt, detector.json, rescore.json, logs and summary packed into $OUT/sweep.tar.gz.
# Run from anywhere (it cds to the repo root):   bash models/train/sweep/sweep.sh
# On a machine without ../shared (the GPU machine of 2026-12-04), copy TXL-PBC's train split beside
# the repo and name it in FRAMES; the val split is never read.
# Env overrides (defaults):  PY (python3)  DEVICE (cuda)  JOBS (16: runs at a time)
#   RECIPES ("base fast edge long"; also longer, fastedge, fastlong, fastlonger, fastignore, fastema,
#   fastlrhi, fastlrlo, fastsep, fastedgew3, fastedgew6, fastless, fasthalf, fastpad, faststride4, fastothers, longothers:
#   see recipe_args)  SEEDS ("0 1 2 3")
#   EXTRA ("": appended to every run's arguments, so e.g. "--limit 40 --epochs 1" overrides the recipe's
#   epochs)  FRAMES (../shared/data/frames/txl-pbc)
#   SIZE (160)  HOLDOUT (0.25)  SWEEP (/tmp/sweep: run dirs and logs)  OUT (/tmp/sweep-out)
#   DEADLINE (400: seconds after the start at which unfinished runs are killed; summary and tar follow)
#   TICK (40: seconds between progress lines)
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd "$(dirname "${BASH_SOURCE[0]}")/../../.." || exit 1
PY="${PY:-python3}"; DEVICE="${DEVICE:-cuda}"; JOBS="${JOBS:-16}"
RECIPES="${RECIPES:-base fast edge long}"; SEEDS="${SEEDS:-0 1 2 3}"; EXTRA="${EXTRA:-}"
FRAMES="${FRAMES:-../shared/data/frames/txl-pbc}"; SIZE="${SIZE:-160}"; HOLDOUT="${HOLDOUT:-0.25}"
SWEEP="${SWEEP:-/tmp/sweep}"; OUT="${OUT:-/tmp/sweep-out}"; DEADLINE="${DEADLINE:-400}"; TICK="${TICK:-40}"
START=$(date +%s); END=$((START + DEADLINE))
say() { printf '[%4d s] %s\n' "$(($(date +%s) - START))" "$*"; }

recipe_args() { # recipe -> its detector.py arguments
  case "$1" in
    base) echo "--epochs 40" ;;
    fast) echo "--epochs 40 --stem 4" ;;
    edge) echo "--epochs 40 --keep-visible 0.1 --giou 1" ;;
    long) echo "--epochs 80" ;;
    longer) echo "--epochs 120" ;;
    fastedge) echo "--epochs 40 --stem 4 --keep-visible 0.1 --giou 1" ;;
    fastlong) echo "--epochs 80 --stem 4" ;;
    fastlonger) echo "--epochs 120 --stem 4" ;;
    fastignore) echo "--epochs 80 --stem 4 --ignore-cut" ;;
    fastema) echo "--epochs 120 --stem 4 --ema 0.999" ;;
    fastlrhi) echo "--epochs 120 --stem 4 --lr 6e-3" ;;
    fastlrlo) echo "--epochs 120 --stem 4 --lr 1.5e-3" ;;
    fastsep) echo "--epochs 120 --stem 4 --separable" ;;
    fastedgew3) echo "--epochs 120 --stem 4 --edge-weight 3" ;;
    fastedgew6) echo "--epochs 120 --stem 4 --edge-weight 6" ;;
    fastless) echo "--epochs 141 --stem 4 --train-share 0.833" ;;
    fasthalf) echo "--epochs 245 --stem 4 --train-share 0.5" ;;
    fastpad) echo "--epochs 120 --stem 4 --pad 8" ;;
    faststride4) echo "--epochs 120 --stem 4 --head-stride 4" ;;
    fastothers) echo "--epochs 120 --stem 4 --others 1" ;;
    longothers) echo "--epochs 80 --others 1" ;;
    *) echo "sweep: unknown recipe $1" >&2; return 1 ;;
  esac
}

case "$SWEEP" in /tmp/?*) rm -rf "$SWEEP" ;; esac
mkdir -p "$SWEEP" "$OUT" || exit 1
{ echo "start $(date -u +%FT%TZ) host $(hostname) cores $(nproc --all)"; echo "PY=$PY DEVICE=$DEVICE JOBS=$JOBS EXTRA=$EXTRA"
  git rev-parse HEAD 2>/dev/null; git diff --stat 2>/dev/null
  "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  command -v nvidia-smi >/dev/null && nvidia-smi -L; } >"$SWEEP/env.txt" 2>&1
cat "$SWEEP/env.txt"
GPUMON=""
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 >"$SWEEP/gpu.csv" 2>&1 &
  GPUMON=$!
fi

NAMES=(); SPECS=(); ARGS=()
for r in $RECIPES; do
  ra="$(recipe_args "$r")" || exit 1
  for s in $SEEDS; do
    n="$r-s$s"; NAMES+=("$n"); SPECS+=("$n:$r:$s")
    ARGS+=("--out $SWEEP/$n --frames $FRAMES --size $SIZE --holdout $HOLDOUT --threads 1 --device $DEVICE --seed $s $ra $EXTRA")
  done
done
say "${#NAMES[@]} runs, $JOBS at a time, device $DEVICE, deadline ${DEADLINE} s"

run_one() { # name, arguments (one string): train, then rescore if a checkpoint came out
  local n="$1" a="$2" t0 rc left
  t0=$(date +%s); left=$((END - t0))
  # shellcheck disable=SC2086
  timeout -k 10 "$left" "$PY" models/train/detector.py $a >"$SWEEP/$n.log" 2>&1; rc=$?
  left=$((END - $(date +%s)))
  if [ -s "$SWEEP/$n/detector.pt" ] && [ "$left" -gt 2 ]; then
    # shellcheck disable=SC2086
    timeout -k 5 "$left" "$PY" models/train/sweep/rescore.py $a >>"$SWEEP/$n.log" 2>&1 || echo "rescore failed: $?" >>"$SWEEP/$n.log"
  fi
  echo $(($(date +%s) - t0)) >"$SWEEP/$n.wall"
  echo "$rc" >"$SWEEP/$n.rc"
}

next=0; reported=(); last_tick=$START; total=${#NAMES[@]}
while :; do
  done_n=0; running=0
  for i in "${!NAMES[@]}"; do
    n="${NAMES[$i]}"
    if [ -e "$SWEEP/$n.rc" ]; then
      done_n=$((done_n + 1))
      if [ -z "${reported[$i]:-}" ]; then
        reported[$i]=1
        say "done $n rc $(cat "$SWEEP/$n.rc") in $(cat "$SWEEP/$n.wall" 2>/dev/null) s: $(grep -h '^threshold' "$SWEEP/$n.log" | tail -1)"
      fi
    elif [ "$i" -lt "$next" ]; then
      running=$((running + 1))
    fi
  done
  while [ "$next" -lt "$total" ] && [ "$running" -lt "$JOBS" ]; do
    n="${NAMES[$next]}"
    if [ $((END - $(date +%s))) -lt 10 ]; then
      echo "skipped: deadline" >"$SWEEP/$n.log"; echo skipped >"$SWEEP/$n.rc"
    else
      run_one "$n" "${ARGS[$next]}" &
      running=$((running + 1))
    fi
    next=$((next + 1))
  done
  [ "$done_n" -ge "$total" ] && break
  now=$(date +%s)
  if [ $((now - last_tick)) -ge "$TICK" ]; then
    last_tick=$now; line=""
    for i in "${!NAMES[@]}"; do
      n="${NAMES[$i]}"
      [ "$i" -lt "$next" ] && [ ! -e "$SWEEP/$n.rc" ] || continue
      e="$(grep -o '^epoch [0-9]*/[0-9]*' "$SWEEP/$n.log" 2>/dev/null | tail -1)"; line+=" $n:${e#epoch }"
    done
    say "finished $done_n/$total; running:$line"
  fi
  sleep 2
done
# The GPU monitor first: it never ends by itself, and a bare `wait` would wait for it too.
[ -n "$GPUMON" ] && kill "$GPUMON" 2>/dev/null
wait

say "all runs over; summary"
"$PY" models/train/sweep/summarize.py "$SWEEP" "${SPECS[@]}" | tee "$SWEEP/summary.txt"
( cd "$(dirname "$SWEEP")" && b="$(basename "$SWEEP")" &&
  tar -czf "$OUT/sweep.tar.gz" "$b"/*.log "$b"/*.rc "$b"/*.wall "$b"/env.txt "$b"/summary.* \
    $(ls "$b"/gpu.csv "$b"/*/detector.pt "$b"/*/detector.json "$b"/*/rescore.json "$b"/*/*.ron 2>/dev/null) )
say "packed $OUT/sweep.tar.gz ($(du -k "$OUT/sweep.tar.gz" | cut -f1) KiB, $(tar -tzf "$OUT/sweep.tar.gz" | wc -l) files)"
