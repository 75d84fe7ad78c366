#!/usr/bin/env bash
# Short fuzz run for CI (issue 8): builds the cargo-fuzz targets and runs each for SECONDS (default
# 20) from the committed seeds; fails on any crash, panic, OOM or timeout. Usage: fuzz/ci.sh [SECONDS]
# Works on the stable toolchain: cargo-fuzz needs nightly flags, RUSTC_BOOTSTRAP=1 allows them.
set -euo pipefail

run_seconds="${1:-20}"
# Pinned cargo-fuzz, installed when `cargo fuzz` is missing.
cargo_fuzz_version="0.13.2"
# No sanitizer: the code under test is safe Rust, so panics, aborts, OOM and timeouts are what a run
# can find; without ASan the cold build is faster (see fuzz/README.md). --dev: an unoptimized build
# compiles in about 5 min instead of 12 on CI's two cores and still runs ~1,200 inputs/s on
# frame_decode (the optimized build: ~1,800/s); the long runs in fuzz/README.md use the optimized one.
build_flags=(-s none --dev)
targets=(board_profile frame_decode model_manifest)

export RUSTC_BOOTSTRAP=1
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "=${cargo_fuzz_version}" --locked
fi

started=$(date +%s)
cargo fuzz build "${build_flags[@]}"
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - started)) s"

failed=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/${target}" "artifacts/${target}"
    cp -n "seeds/${target}/"* "corpus/${target}/" 2>/dev/null || true
    log="artifacts/${target}/ci.log"
    status=ok
    if ! cargo fuzz run "${build_flags[@]}" "${target}" "corpus/${target}" -- \
        -max_total_time="${run_seconds}" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"${log}" 2>&1; then
        status=FAILED
        failed=1
        tail -n 40 "${log}"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "${log}" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "${log}" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "${log}" | tail -n 1)
    summary+=("fuzz ${target}: ${status}, ${execs:-?} execs in ${run_seconds} s (${rate:-?}/s), ${cov:-no coverage line}, peak RSS ${rss:-?} MB")
done

printf '%s\n' "${summary[@]}"
if [ "${failed}" -ne 0 ]; then
    echo "fuzz: a target failed; the crashing input is under fuzz/artifacts/<target>/ (reproduce: cargo fuzz run ${build_flags[*]} <target> <file>)" >&2
    exit 1
fi
