#!/usr/bin/env bash
# Runs every cargo-fuzz target of tests/fuzz (bodies in src/fuzzing.rs) for MINUTES each, at most
# JOBS at once, and prints per target: runs executed, new corpus entries, and crashes found (the
# reproducer paths). New corpus entries and crashers land in tests/fuzz/corpus/<target>/ and
# tests/fuzz/artifacts/<target>/, where `cargo test --test fuzz_replay` replays them on stable.
#
# Usage: loadtest/fuzz.sh [TARGET...]        (default: every target)
# Environment:
#   MINUTES  minutes per target (default 5, 1-120)
#   JOBS     targets run at once (default 2, at most 2: the machine has 2 cores)
#   CMIN=1   minimise each target's corpus afterwards (keeps the hand-made seed-* files)
#   SANITIZER  none (default) or address. The targets are safe Rust, so what they catch is a
#            panic or an overflow (debug assertions are on); AddressSanitizer only adds checks
#            inside the dependencies' unsafe code, and makes the first build about 3x longer.
#   FUZZ_TARGET_DIR  cargo's target directory for the fuzz build (default
#            ~/.cache/tidecast-fuzz-target, outside the clone like the main build's)
#   OUT      where the libFuzzer logs go (default a temp directory, printed at the end)
# Needs: a nightly toolchain (`rustup toolchain install nightly`); cargo-fuzz is installed from
# crates.io if missing. Without nightly it says so and exits 0 (nothing to run on stable).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ="$ROOT/tests/fuzz"
MINUTES=${MINUTES:-5}
JOBS=${JOBS:-2}
[[ $MINUTES =~ ^[0-9]+$ ]] && ((MINUTES >= 1 && MINUTES <= 120)) || { echo "MINUTES must be 1-120" >&2; exit 2; }
[[ $JOBS =~ ^[12]$ ]] || { echo "JOBS must be 1 or 2" >&2; exit 2; }

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "================================================================" >&2
    echo "SKIPPED: no nightly toolchain (cargo fuzz needs it)." >&2
    echo "Install it with: rustup toolchain install nightly" >&2
    echo "================================================================" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

if (($# > 0)); then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cd "$FUZZ/fuzz_targets" && ls -1 ./*.rs | sed 's|^\./||; s|\.rs$||')
fi
OUT=${OUT:-$(mktemp -d /tmp/tidecast-fuzz.XXXXXX)}
mkdir -p "$OUT"

# One build for all targets (release with debug assertions, see tests/fuzz/Cargo.toml, and
# the chosen sanitizer), then the binaries run directly so parallel runs do not contend for cargo's lock.
echo "building the fuzz targets (cargo +nightly fuzz build)" >&2
SANITIZER=${SANITIZER:-none}
[[ $SANITIZER == none || $SANITIZER == address ]] || { echo "SANITIZER must be none or address" >&2; exit 2; }
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/tidecast-fuzz-target}
(cd "$ROOT" && cargo +nightly fuzz build --fuzz-dir tests/fuzz --sanitizer "$SANITIZER" \
    --target-dir "$FUZZ_TARGET_DIR" 2>&1 | tail -3) >&2
BIN="$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release"

count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }

run_one() {
    local t=$1 corpus="$FUZZ/corpus/$1" artifacts="$FUZZ/artifacts/$1"
    mkdir -p "$corpus" "$artifacts"
    count "$corpus" >"$OUT/$t.before"
    find "$artifacts" -maxdepth 1 -type f | sort >"$OUT/$t.artifacts.before"
    # libFuzzer stops at max_total_time; `timeout` is the backstop if it hangs on exit.
    timeout --kill-after=30 $((MINUTES * 60 + 120)) "$BIN/$t" "$corpus" \
        -artifact_prefix="$artifacts/" -max_total_time=$((MINUTES * 60)) -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -max_len=65536 >"$OUT/$t.log" 2>&1 || true
}

running=0
for t in "${TARGETS[@]}"; do
    [[ -x $BIN/$t ]] || { echo "no binary for target $t" >&2; exit 2; }
    echo "$(date +%T) fuzzing $t for $MINUTES min" >&2
    run_one "$t" &
    running=$((running + 1))
    if ((running >= JOBS)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
for t in "${TARGETS[@]}"; do count "$FUZZ/corpus/$t" >"$OUT/$t.after"; done

if [[ ${CMIN:-0} == 1 ]]; then
    for t in "${TARGETS[@]}"; do
        tmp=$(mktemp -d "$OUT/cmin-$t.XXXXXX")
        cp "$FUZZ/corpus/$t"/seed-* "$tmp/" 2>/dev/null || true
        "$BIN/$t" -merge=1 "$tmp" "$FUZZ/corpus/$t" -rss_limit_mb=2048 -max_len=65536 >"$OUT/$t.cmin.log" 2>&1
        find "$FUZZ/corpus/$t" -maxdepth 1 -type f -delete
        cp "$tmp"/* "$FUZZ/corpus/$t/"
        rm -rf "$tmp"
    done
fi

printf '\n%-18s %12s %8s %8s  %s\n' target runs new kept crashes
found=0
for t in "${TARGETS[@]}"; do
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$OUT/$t.log" | awk '{print $2}' | tail -1)
    before=$(cat "$OUT/$t.before")
    after=$(cat "$OUT/$t.after")
    kept=$(count "$FUZZ/corpus/$t")
    crashes=$(comm -13 "$OUT/$t.artifacts.before" <(find "$FUZZ/artifacts/$t" -maxdepth 1 -type f | sort) | tr '\n' ' ')
    [[ -n $crashes ]] && found=1
    printf '%-18s %12s %8s %8s  %s\n' "$t" "${runs:-?}" "$((after - before))" "$kept" "${crashes:-none}"
done
echo "logs: $OUT" >&2
if ((found)); then
    echo "CRASHES FOUND: reproduce with cargo +nightly fuzz run --fuzz-dir tests/fuzz TARGET FILE" >&2
    exit 1
fi
