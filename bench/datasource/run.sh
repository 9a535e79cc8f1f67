#!/bin/bash
# Datasource benchmark: ingest items/s (POST /items -> visible in the final
# collection) beside a raw mongoc bulk insert into the same server, and
# write -> reduced latency p50/p95/p99. Never fails on slowness.
#
#   bench/datasource/run.sh [N_ITEMS] [BATCH] [LATENCY_SAMPLES]
#
# BENCH_DB names the database (default: scrapr on the bench's own test bed,
# bench_ds_<pid> on a server given by MONGO_URL).
#
# Uses the test bed (tests/lib/testbed.sh): FerretDB + Consul on free ports,
# unless MONGO_URL / CONSUL_HTTP_ADDR are already set (e.g. a real MongoDB).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${1:-10000}
B=${2:-100}
S=${3:-50}
BUILD=${BUILD:-$ROOT/build}
if [ ! -x "$BUILD/bin/scrapr-datasource" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target scrapr-datasource >/dev/null
fi
work=$(mktemp -d /tmp/bench_datasource.XXXXXX)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2046
cc -O2 -o "$work/bench" "$ROOT/bench/datasource/bench_datasource.c" \
    $(pkg-config --cflags --libs libmongoc-1.0 libcurl) -lpthread

inner() {
    local port db pid
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # A server of our own (the test bed's): use the stack's database name,
    # the one the FerretDB wrapper keeps _id-indexed while running
    # (scripts/ferretdb, -index-dbs). A shared server: a private name.
    db=${BENCH_DB:-bench_ds_$$}
    MONGO_URL="$MONGO_URL/$db" PORT=$port SERVICE_ADDRESS=127.0.0.1 LOG_LEVEL=warn \
        "$BUILD/bin/scrapr-datasource" >"$work/ds.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    # the server's PID when it listens on this machine (its CPU per phase)
    SERVER_PID=$(ss -ltnpH "sport = :${MONGO_URL##*:}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    export SERVER_PID
    echo "command: bench/datasource/run.sh $N $B $S   (server: $(cat "$ROOT/tools/ferretdb.version" 2>/dev/null || echo mongodb) at $MONGO_URL, build: $BUILD)"
    "$work/bench" "http://127.0.0.1:$port" "$MONGO_URL" "$db" "$N" "$B" "$S" || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

if [ -n "${MONGO_URL:-}" ] && [ -n "${CONSUL_HTTP_ADDR:-}" ]; then
    inner
else
    export -f inner
    export N B S BUILD ROOT work
    BENCH_DB=${BENCH_DB:-scrapr} "$ROOT/tests/lib/testbed.sh" run -- bash -c inner
fi
