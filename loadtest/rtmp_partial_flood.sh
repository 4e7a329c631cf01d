#!/usr/bin/env bash
# RTMP partial-message flood (hardening issue, defect 5): N unauthenticated connections each
# complete the handshake, announce a 64 KiB chunk size, declare an 8 MiB video message and send
# 6 MiB of it, then hold. Prints the server's RSS before each round, with the connections held,
# and after they closed, for ROUNDS rounds. Before the fix the server took them all (measured 31
# -> 324 -> 264 MiB with 40 connections: rml_rtmp reserves the declared length and glibc keeps
# the freed memory); since, a message over 64 KiB before a publish is accepted closes the
# connection at its header.
#
# Usage: bash loadtest/rtmp_partial_flood.sh
# Environment (all optional):
#   CONNS=40          connections per round (1..1000)
#   ROUNDS=3          rounds (1..20)
#   DECLARED_MIB=8    declared message length, MiB (1..15; rtmp.max_message_size is 8 MiB)
#   SENT_MIB=6        bytes of it sent per connection, MiB (<= DECLARED_MIB)
#   SETTLE=5          seconds to wait after closing before measuring
#   TIDECAST_BIN      run this binary instead of building the release one (A/B comparisons;
#                     its environment is passed on, e.g. GLIBC_TUNABLES)
#   KEEP=1            keep the temp dir (server log)
#
# Loopback only; every process this script starts is ended by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
CONNS=${CONNS:-40}
ROUNDS=${ROUNDS:-3}
DECLARED_MIB=${DECLARED_MIB:-8}
SENT_MIB=${SENT_MIB:-6}
SETTLE=${SETTLE:-5}

die() { echo "rtmp_partial_flood.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $CONNS =~ ^[0-9]+$ ]] && (( CONNS >= 1 && CONNS <= 1000 )) || die "CONNS must be 1..1000"
[[ $ROUNDS =~ ^[0-9]+$ ]] && (( ROUNDS >= 1 && ROUNDS <= 20 )) || die "ROUNDS must be 1..20"
[[ $DECLARED_MIB =~ ^[0-9]+$ ]] && (( DECLARED_MIB >= 1 && DECLARED_MIB <= 15 )) || die "DECLARED_MIB must be 1..15"
[[ $SENT_MIB =~ ^[0-9]+$ ]] && (( SENT_MIB >= 1 && SENT_MIB <= DECLARED_MIB )) || die "SENT_MIB must be 1..DECLARED_MIB"
[[ $SETTLE =~ ^[0-9]+$ ]] && (( SETTLE <= 120 )) || die "SETTLE must be 0..120"
command -v python3 >/dev/null || die "python3 is not installed"
ulimit -n 4096 2>/dev/null || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-flood

if [[ -n ${TIDECAST_BIN:-} ]]; then
    TIDECAST=$TIDECAST_BIN
else
    log "building tidecast (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet)
    TIDECAST=$CARGO_TARGET_DIR/release/tidecast
fi

port=$(free_port)
TIDECAST__SERVER__DATA_DIR=$WORK \
TIDECAST__DATABASE__URL=sqlite://$WORK/t.db \
TIDECAST__HTTP__LISTEN=127.0.0.1:0 \
TIDECAST__RTMP__LISTEN=127.0.0.1:$port \
TIDECAST__RTMP__MAX_CONNECTIONS=$(( CONNS + 100 )) \
TIDECAST__LOG__LEVEL=${TIDECAST_LOG_LEVEL:-warn} \
    "$TIDECAST" > "$WORK/stdout.log" 2> "$WORK/stderr.log" &
pid=$!
PIDS+=("$pid")
wait_port "$port" || { cat "$WORK/stderr.log" >&2; die "tidecast is not listening on $port"; }
sleep 1

log "$CONNS connections x $SENT_MIB MiB of a declared $DECLARED_MIB MiB message, $ROUNDS rounds, binary $TIDECAST"
timeout $(( ROUNDS * (SETTLE + 120) )) python3 - "$pid" "$port" "$CONNS" "$ROUNDS" "$DECLARED_MIB" "$SENT_MIB" "$SETTLE" <<'PY'
import os, socket, struct, sys, time

pid, port, conns, rounds, declared_mib, sent_mib, settle = map(int, sys.argv[1:])
CHUNK = 65536

def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("server is gone")

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise ConnectionError("closed during the handshake")
        buf += b
    return buf

def flood_one():
    """Handshake, SetChunkSize 64 KiB, declare the message, send part of it. Returns the socket
    if the server took every byte, None if it closed the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\x03" + bytes(8) + os.urandom(1528))
    s1 = recv_exact(s, 1 + 1536 + 1536)[1:1537]
    s.sendall(s1)  # C2 echoes S1
    # SetChunkSize (type 1) on chunk stream 2, message stream 0.
    s.sendall(bytes([0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]) + struct.pack(">I", CHUNK))
    declared = declared_mib << 20
    header = bytes([0x04, 0, 0, 0]) + declared.to_bytes(3, "big") + bytes([9, 1, 0, 0, 0])
    try:
        s.sendall(header)
        payload = bytes(CHUNK)
        for i in range((sent_mib << 20) // CHUNK):
            s.sendall((b"\xc4" if i else b"") + payload)
        return s
    except OSError:
        s.close()
        return None

for r in range(1, rounds + 1):
    before = rss_mib()
    held, refused = [], 0
    for _ in range(conns):
        try:
            s = flood_one()
        except OSError:
            s = None
        if s is None:
            refused += 1
        else:
            held.append(s)
    time.sleep(1)
    loaded = rss_mib()
    for s in held:
        s.close()
    time.sleep(settle)
    after = rss_mib()
    print(f"round {r}: RSS before {before:.0f} MiB, with {len(held)} held ({refused} refused) "
          f"{loaded:.0f} MiB, {settle} s after closing {after:.0f} MiB", flush=True)
PY
stop_pid "$pid"
