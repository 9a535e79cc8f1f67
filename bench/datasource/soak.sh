#!/bin/bash
# Datasource soak on FerretDB: a fresh FerretDB (SQLite) + scrapr-datasource,
# then bench/datasource/soak.py (concurrent POST /items to several
# collections, 30 long-polls, list/page reads) for SECONDS. Reports the
# client-side failures, the datasource's storage errors by kind (the FerretDB
# stall shows as "interrupted (9)", "database is locked (517)" and "seq ...
# already taken") and whether the reducer kept up (ingested vs reduced).
#
#   bench/datasource/soak.sh [SECONDS] [FERRETDB_BINARY]
#
# Extra datasource settings through the environment, e.g. DS_TAIL_MODE=cursor
# to run the old tailable-cursor path. Exit 1 on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=${1:-600}
FERRET=${2:-$ROOT/tools/bin/ferretdb}
BUILD=${BUILD:-$ROOT/build}
if [ ! -x "$BUILD/bin/scrapr-datasource" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target scrapr-datasource >/dev/null
fi
work=$(mktemp -d /tmp/soak_datasource.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(free_port)
"$FERRET" -listen "127.0.0.1:$mport" -dir "$work/ferretdb" >"$work/ferretdb.log" 2>&1 &
fpid=$!
cleanup() {
    kill "${dpid:-}" "$fpid" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "soak: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.1; done

inner() {
    local port
    port=$(free_port)
    MONGO_URL="mongodb://127.0.0.1:$mport/scrapr" PORT=$port SERVICE_ADDRESS=127.0.0.1 LOG_LEVEL=info \
        "$BUILD/bin/scrapr-datasource" >"$work/ds.log" 2>&1 &
    dpid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    echo "soak: ${SECS}s, ferretdb $FERRET on :$mport, datasource :$port (DS_TAIL_MODE=${DS_TAIL_MODE:-auto})"
    local rc=0
    python3 "$ROOT/bench/datasource/soak.py" "http://127.0.0.1:$port" --seconds "$SECS" \
        --pollers 30 --writers 3 --batch 5 --pause 0.5 --collections 6 | tail -6 || rc=1
    # let the reducer finish what was accepted
    for _ in $(seq 120); do
        m=$(curl -sf "http://127.0.0.1:$port/metrics" || true)
        ing=$(echo "$m" | awk '/^scrapr_datasource_ingest_batches_total/{print $2}')
        red=$(echo "$m" | awk '/^scrapr_datasource_reduced_batches_total/{print $2}')
        [ -n "$ing" ] && [ "$ing" = "$red" ] && break
        sleep 1
    done
    echo "batches ingested: ${ing:-?}, reduced: ${red:-?} (30 s after the load stopped)"
    echo "datasource errors by kind:"
    for k in "interrupted (9)" "database is locked" "already taken" "reduce_failed" "collection_read_failed" "ingest_failed"; do
        printf '  %-24s %s\n' "$k" "$(grep -c -- "$k" "$work/ds.log" || true)"
    done
    [ "${ing:-x}" = "${red:-y}" ] || rc=1
    if grep -q "level=error\| error " "$work/ds.log"; then rc=1; fi
    kill "$dpid" 2>/dev/null || true
    wait "$dpid" 2>/dev/null || true
    return $rc
}

if [ -n "${CONSUL_HTTP_ADDR:-}" ]; then
    inner
else
    export -f inner free_port
    export SECS BUILD ROOT work mport FERRET DS_TAIL_MODE
    MONGO_URL="mongodb://127.0.0.1:$mport" "$ROOT/tests/lib/testbed.sh" run -- bash -c inner
fi
