# Shared by the loadtest scripts (sourced, not run): the processes a run starts and how it ends
# them (only ours, by PID), free ports, and the cached 3 Mbps test stream.
# Callers set CACHE and define `log`; lt_init sets WORK and PIDS.

# The benchmarks of passthrough serving (fan-out, ingest, LL-HLS) measure the server without a
# transcode ladder (one would take most of the CPU they measure); loadtest/ladder.sh turns it on.
export TIDECAST__TRANSCODE__ENABLED=${TIDECAST__TRANSCODE__ENABLED:-false}
# Likewise without recording (every live session is recorded by default): the passthrough
# benchmarks measure serving without recording; loadtest/archive.sh measures recording.
export TIDECAST__ARCHIVE__ENABLED=${TIDECAST__ARCHIVE__ENABLED:-false}

# lt_init PREFIX: a work directory under /tmp and the EXIT trap that ends every process we start.
lt_init() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    PIDS=()
    trap lt_cleanup EXIT
    trap 'exit 130' INT TERM
}

lt_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}

# Stop one process we started (by PID) and forget it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# lt_serve NAME LOG: `$TIDECAST serve` with the caller's SERVER_ENV (an array of VAR=value), its
# log (stderr) at LOG and its stdout beside it (LOG with .out for .log); waits until it says it
# is running and sets SERVER_PID, SLOG and the HTTP and RTMP addresses it bound (port 0, read
# from the log). Calls the caller's `die` when it exits or never says where it listens.
lt_serve() {
    SLOG=$2
    # WebRTC's media ports on loopback and free ports (a script may run several servers).
    env TIDECAST__WEBRTC__LISTEN_IP=127.0.0.1 TIDECAST__WEBRTC__UDP_PORT=0 TIDECAST__WEBRTC__TCP_PORT=0 \
        "${SERVER_ENV[@]}" "$TIDECAST" serve >"${SLOG%.log}.out" 2>"$SLOG" &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    for _ in $(seq 200); do
        grep -q "tidecast is running" "$SLOG" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "$1: tidecast exited; see $SLOG"
        sleep 0.1
    done
    HTTP=$(lt_listen_addr http); RTMP=$(lt_listen_addr rtmp)
    [[ -n $HTTP && -n $RTMP ]] || die "$1: listen addresses not found in $SLOG"
}

# lt_listen_addr PROTOCOL: the address the server in SLOG logged for PROTOCOL (http, rtmp, srt).
lt_listen_addr() { grep "listening" "$SLOG" | grep "protocol=\"$1\"" | grep -o 'addr=[0-9.:]*' | head -1 | cut -d= -f2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: until something accepts on 127.0.0.1:PORT (max 10 s).
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ensure_input: the 30 s 720p30 3 Mbps H.264 + AAC test stream, encoded once into $CACHE; sets INPUT.
ensure_input() {
    mkdir -p "$CACHE"
    INPUT=$CACHE/testsrc2-720p30-3M-aac-30s.flv
    if [[ ! -s $INPUT ]]; then
        log "encoding the 3 Mbps test stream once into $INPUT"
        ffmpeg -nostdin -hide_banner -loglevel error -y \
            -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=1000:sample_rate=48000 \
            -t 30 -c:v libx264 -preset veryfast -b:v 3M -maxrate 3M -bufsize 3M -g 60 -pix_fmt yuv420p \
            -c:a aac -b:a 128k -f flv "$INPUT.tmp"
        mv "$INPUT.tmp" "$INPUT"
    fi
}

# lt_tidecast: sets TIDECAST to $TIDECAST_BIN when given, else builds the release binary and runs
# a private copy of it (the target dir may be rebuilt from another checkout while we run).
# Needs ROOT, WORK, CARGO_TARGET_DIR and `log`.
lt_tidecast() {
    if [[ -n ${TIDECAST_BIN:-} ]]; then
        TIDECAST=$TIDECAST_BIN
        return
    fi
    log "building tidecast (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet)
    cp "$CARGO_TARGET_DIR/release/tidecast" "$WORK/tidecast"
    TIDECAST=$WORK/tidecast
}
