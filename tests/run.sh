#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests drive (ffmpeg, ffprobe),
# then checks formatting and lints and runs every unit and integration test.
#
# Needs: Rust stable; PostgreSQL on 127.0.0.1:5432 for the store tests (override the admin URL
# with TIDECAST_TEST_PG_URL) and Redis on 127.0.0.1:6379 where a test uses it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one target directory outside the clone, so a fresh clone does not rebuild everything.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]} with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
