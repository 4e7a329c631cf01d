#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests drive (ffmpeg, ffprobe,
# srt-live-transmit; GStreamer's RTSP server for the RTSP camera;
# Debian's Chromium, node and the npm packages of tests/browser for the hls.js player test;
# schemathesis, moto and aiortc in a Python virtualenv for the API contract, S3 and WHIP tests),
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
# tests/srt_live.rs: libsrt's own sender.
command -v srt-live-transmit >/dev/null 2>&1 || missing+=(srt-tools)
# tests/hlsjs_play.rs, tests/hlsjs_ladder.rs: hls.js in headless Chromium. Debian's Chromium
# only: playwright's own browser download cannot work on these machines. node 20 is usually
# there already.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# tests/rtsp_pull.rs: a camera of our own, GStreamer's RTSP server from Debian's Python (x264enc
# from -ugly, the RTP payloaders from -good, voaacenc/x265enc from -bad).
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); gi.require_version('Gst', '1.0'); \
from gi.repository import Gst, GstRtspServer; Gst.init(None); \
assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'rtpmp4gpay', 'voaacenc'))" \
  >/dev/null 2>&1 || missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad)
# tests/tls.rs: a self-signed certificate and the served-certificate oracle (openssl), HTTPS
# with verification (curl).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# tests/outage.rs stops a PostgreSQL cluster and a redis-server of its own (never the shared ones).
{ command -v initdb >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/initdb ]; } || missing+=(postgresql-15)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# tests/api_contract.rs: schemathesis runs from a Python virtualenv.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]} with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The npm packages of tests/browser (playwright-core drives Chromium; hls.js is served to the
# watch page from node_modules/hls.js/dist). Reinstalled when missing or older than the lockfile.
if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  echo "tests/run.sh: npm ci in tests/browser" >&2
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  touch tests/browser/node_modules
fi

# schemathesis (PyPI, 4.x) for tests/api_contract.rs, in a virtualenv kept outside the clone.
export TIDECAST_VENV="${TIDECAST_VENV:-$HOME/.cache/tidecast-venv}"
if ! "$TIDECAST_VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  echo "tests/run.sh: installing schemathesis into $TIDECAST_VENV" >&2
  python3 -m venv "$TIDECAST_VENV"
  "$TIDECAST_VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi
# moto's standalone S3 server (PyPI) for tests/archive_s3.rs, in the same virtualenv.
if ! "$TIDECAST_VENV/bin/moto_server" --help >/dev/null 2>&1; then
  echo "tests/run.sh: installing moto[server] into $TIDECAST_VENV" >&2
  "$TIDECAST_VENV/bin/pip" install -q 'moto[server]>=5,<6'
fi
# aiortc (PyPI) for tests/webrtc_aiortc.rs: an OBS-shaped WHIP publisher; PyAV's wheels bundle
# the libx264 and libopus encoders it uses.
if ! "$TIDECAST_VENV/bin/python" -c "import aiortc, av; av.codec.Codec('libx264', 'w')" >/dev/null 2>&1; then
  echo "tests/run.sh: installing aiortc into $TIDECAST_VENV" >&2
  "$TIDECAST_VENV/bin/pip" install -q 'aiortc>=1.16,<2'
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The cargo-fuzz targets (tests/fuzz) build on stable too: one that names a body tidecast does
# not export fails here, not only in a nightly fuzzing run (loadtest/fuzz.sh).
cargo check --manifest-path tests/fuzz/Cargo.toml --bins --locked
cargo test --all-targets --locked
