#!/bin/bash
# config-discovery benchmark: POST and GET throughput and latency (p50/p99)
# with wrk, our service beside a peer measured in the same run on the same
# FerretDB: the original design's config-discovery data path in Go with the
# official MongoDB driver (peer/: insert into the capped collection and
# answer at once; no validation, no materialisation, no endpoint config, no
# Consul). Prints the commands, the core count and a table. Never fails on
# slowness; fails only if something does not run.
#   bench/config-discovery/run.sh [SECONDS] [CONNECTIONS]   (default 10 16)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DUR=${1:-10}
CONNS=${2:-16}
B=${BENCH_BUILD:-$ROOT/build-bench}
command -v wrk >/dev/null || { echo "bench: wrk missing (scripts/deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/bench-cd.XXXXXX)
pids=()
bed=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$bed" ] && "$ROOT/tests/lib/testbed.sh" stop "$bed" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() {
    for _ in $(seq 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "bench: $1 did not answer" >&2
    return 1
}

cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DSCRAPR_SANITIZE=OFF >/dev/null
cmake --build "$B" --target scrapr-config-discovery -j2 >/dev/null
if [ -z "${MONGO_URL:-}" ] || [ -z "${CONSUL_HTTP_ADDR:-}" ]; then
    bed="$tmp/bed"
    # the peer's database gets the wrapper's _id index repair too (fresh
    # names, never dropped: see scripts/ferretdb/main.go)
    FERRETDB_ARGS="-index-dbs scrapr,bench_peer_*" "$ROOT/tests/lib/testbed.sh" start "$bed" >/dev/null 2>&1
    # shellcheck disable=SC1091
    . "$bed/env"
    # Our own server: the stack's database name, whose _id indexes the
    # FerretDB wrapper keeps usable (scripts/ferretdb, -index-dbs), as in
    # the stack. A shared server: a private name.
    BENCH_DB=${BENCH_DB:-scrapr}
fi
base=${MONGO_URL%/}
export BENCH_TOKEN=bench-token

port=$(free_port)
MONGO_URL="$base/${BENCH_DB:-bench_cd_$$}" PORT=$port SCRAPR_API_TOKEN=$BENCH_TOKEN SERVICE_ADDRESS=127.0.0.1 \
    SCRAPR_CD_REVISION_KEY="bench/revisions/cd_$$" LOG_LEVEL=warn \
    "$B/bin/scrapr-config-discovery" >"$tmp/cd.log" 2>&1 &
pids+=($!)
ours="http://127.0.0.1:$port"
wait_http "$ours/health"

peer=""
if command -v go >/dev/null &&
    (cd "$HERE/peer" && GOFLAGS=-mod=mod go build -o "$tmp/cdpeer" .) 2>"$tmp/peer-build.log"; then
    pport=$(free_port)
    MONGO_URL="$base" PEER_DB="bench_peer_$$" PEER_ADDR="127.0.0.1:$pport" "$tmp/cdpeer" >"$tmp/peer.log" 2>&1 &
    pids+=($!)
    peer="http://127.0.0.1:$pport"
    wait_http "$peer/configurations?limit=1"
else
    echo "# peer: Go toolchain or modules missing, peer skipped ($(head -1 "$tmp/peer-build.log" 2>/dev/null))"
fi

results="$tmp/results"
: >"$results"
# bench NAME OP URL [wrk args...]: runs wrk and appends "name op rps p50 p99 errors".
bench() {
    local name=$1 op=$2 url=$3
    shift 3
    local cmd=(wrk -t2 -c"$CONNS" -d"${DUR}s" --latency --timeout 30s "$@" "$url")
    echo "#   ${cmd[*]}"
    "${cmd[@]}" >"$tmp/wrk.out" 2>&1 || { cat "$tmp/wrk.out" >&2; return 1; }
    python3 - "$name" "$op" "$tmp/wrk.out" >>"$results" <<'PY'
import re, sys
name, op, path = sys.argv[1:4]
t = open(path).read()
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
def ms(pat):
    m = re.search(pat + r"\s+([\d.]+)(us|ms|s|m|h)\b", t)
    return float(m.group(1)) * UNIT[m.group(2)] if m else float("nan")
p50 = ms(r"50%")
p99 = ms(r"99%")
m = re.search(r"Requests/sec:\s+([\d.]+)", t)
rps = float(m.group(1)) if m else 0.0
m = re.search(r"(\d+) requests in", t)
reqs = int(m.group(1)) if m else 0
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
err = re.search(r"Socket errors: (.*)", t)
print("%s %s %.1f %.2f %.2f %d %d %s" % (name, op, rps, p50, p99, reqs, int(bad.group(1)) if bad else 0,
      "socket_errors:" + err.group(1).replace(" ", "") if err else "-"))
PY
}

echo "# config-discovery benchmark — $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), ${DUR}s per run, $CONNS connections, wrk 2 threads; wrk, service, peer and FerretDB share the machine"
echo "# commands:"
bench scrapr POST "$ours/configurations" -s "$HERE/post.lua"
[ -n "$peer" ] && bench peer POST "$peer/configurations" -s "$HERE/post.lua"
bench scrapr "GET-list" "$ours/configurations?limit=10"
[ -n "$peer" ] && bench peer "GET-list" "$peer/configurations?limit=10"
id=$(curl -s "$ours/configurations?limit=1&type=scraper" | python3 -c 'import json,sys; print(json.load(sys.stdin)["configurations"][0]["_id"])')
bench scrapr "GET-id" "$ours/configurations/$id"
if [ -n "$peer" ]; then
    pid_=$(curl -s "$peer/configurations?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["configurations"][0]["_id"])')
    bench peer "GET-id" "$peer/configurations/$pid_"
fi

# exactly-once check after the POST storm: every 201 is a scraper
# configuration, one endpoint configuration per collection.
sleep 1
scrapers=$(curl -s "$ours/configurations?type=scraper&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
endpoints=$(curl -s "$ours/configurations?type=endpoint&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')

python3 - "$results" "$scrapers" "$endpoints" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print()
print("%-8s %-9s %10s %9s %9s %9s %8s" % ("server", "op", "req/s", "p50 ms", "p99 ms", "requests", "non-2xx"))
for r in rows:
    print("%-8s %-9s %10s %9s %9s %9s %8s %s" % (r[0], r[1], r[2], r[3], r[4], r[5], r[6], "" if r[7] == "-" else r[7]))
by = {(r[0], r[1]): r for r in rows}
print()
for op in ("POST", "GET-list", "GET-id"):
    if ("peer", op) in by:
        o, p = by[("scrapr", op)], by[("peer", op)]
        ratio = lambda a, b: "%.2fx" % (float(a) / float(b)) if float(b) > 0 else "n/a"
        print("%-9s scrapr/peer throughput %s, p99 latency %s" % (op, ratio(o[2], p[2]), ratio(o[4], p[4])))
post = by[("scrapr", "POST")]
print("\nafter the POST run: %s scraper configurations for %s requests (%s non-2xx); %s endpoint configurations for 20 collections"
      % (sys.argv[2], post[5], post[6], sys.argv[3]))
print("(scrapr's POST answers 201 only after the tailer materialised the document and its endpoint config;")
print(" the peer answers after one insert, as the 2016 design did)")
PY
