#!/bin/bash
# Endpoint benchmark: GET of a 1,000-item (~200 KB) and a 50-item collection
# with wrk (keep-alive), plain and gzip, against nginx (Debian nginx-light,
# the identical bytes from a file, gzip_static for gzip) and a plain Node.js
# `http` server holding the identical bytes in memory; all three with the same
# number of worker threads. Then freshness (POST /items to the datasource ->
# first GET at the endpoint that shows the item, p50/p95) and idle RSS.
#
#   bench/endpoint/run.sh [SECONDS_PER_RUN] [CONNECTIONS]
#
# Env: THREADS (default: number of cores), FRESH_N (default 100), ROUNDS
# (default 3: each case is run ROUNDS times, servers interleaved, and the
# median req/s and p99 are reported — the machine is shared and noisy),
# BUILD_DIR (default build-bench: a RelWithDebInfo build without sanitizers).
# Prints figures side by side; never fails on slowness (only on a broken set-up).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
HERE="$ROOT/bench/endpoint"
DUR=${1:-10}
CONNS=${2:-32}
CORES=$(nproc)
THREADS=${THREADS:-$CORES}
FRESH_N=${FRESH_N:-100}
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
export PATH="$ROOT/tools/bin:$PATH"

WORK=$(mktemp -d /tmp/bench_endpoint.XXXXXX)
chmod 755 "$WORK" # nginx workers (www-data) read the files below
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
    "$ROOT/tests/lib/testbed.sh" stop "$WORK/bed" >/dev/null 2>&1 || true
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() { # URL SECONDS
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        ((SECONDS < deadline)) || { echo "bench: $1 did not come up" >&2; return 1; }
        sleep 0.1
    done
}
rss_kb() { # PID... -> summed VmRSS of the pids and their children
    local total=0 p c
    for p in "$@"; do
        for c in $p $(pgrep -P "$p" || true); do
            total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)))
        done
    done
    echo "$total"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== build ($BUILD_DIR, RelWithDebInfo, no sanitizers)" >&2
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCRAPR_SANITIZE=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$CORES" --target scrapr-endpoint scrapr-datasource >/dev/null
BIN="$BUILD_DIR/bin"

echo "== test bed" >&2
"$ROOT/tests/lib/testbed.sh" start "$WORK/bed" >&2
# shellcheck disable=SC1091
source "$WORK/bed/env"
REDIS_PORT=${REDIS_URL##*:}
REDIS_PORT=${REDIS_PORT%%/*}

DS_PORT=$(free_port)
PORT=$DS_PORT MONGO_URL="$MONGO_URL/bench_endpoint_$$" SERVICE_ADDRESS=127.0.0.1 \
    LOG_LEVEL=warn "$BIN/scrapr-datasource" >"$WORK/datasource.log" 2>&1 &
PIDS+=($!)
DS="http://127.0.0.1:$DS_PORT"
wait_http "$DS/health" 30

post_collection() { # COLLECTION N
    python3 "$HERE/gen_items.py" "$2" "$1" >"$WORK/$1.items.json"
    python3 - "$DS" "$1" "$WORK/$1.items.json" <<'EOF'
import http.client, json, sys, urllib.parse
ds, coll, path = sys.argv[1:4]
items = json.load(open(path))
u = urllib.parse.urlsplit(ds)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
for i in range(0, len(items), 250):
    body = json.dumps({"collection": coll, "config_id": "bench", "batch_id": "%s-%d" % (coll, i),
                       "key": ["id"], "data": items[i:i + 250]})
    c.request("POST", "/items", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 202:
        sys.exit("POST /items answered %d" % r.status)
EOF
}

start_endpoint() { # COLLECTION -> sets EP_URL, EP_PID
    local coll=$1 port id
    port=$(free_port)
    id=$(printf '%024x' "$port")
    redis-cli -p "$REDIS_PORT" SET "scrapr:config:$id" \
        "{\"_id\":\"$id\",\"type\":\"endpoint\",\"collection\":\"$coll\",\"ttl\":60}" >/dev/null
    PORT=$port CONFIG_ID=$id SCRAPR_CONFIG_DISCOVERY_URL=http://127.0.0.1:9 SCRAPR_DATASOURCE_URL=$DS \
        SERVICE_ADDRESS=127.0.0.1 EP_THREADS=$THREADS LOG_LEVEL=warn \
        "$BIN/scrapr-endpoint" >"$WORK/endpoint_$coll.log" 2>&1 &
    EP_PID=$!
    PIDS+=($EP_PID)
    EP_URL="http://127.0.0.1:$port"
    wait_http "$EP_URL/health" 30
}

wait_count() { # URL N
    local deadline=$((SECONDS + 600)) n
    while :; do
        n=$(curl -s -o /dev/null -D - "$1/items?limit=0" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-total-count" {print $2}')
        [ "$n" = "$2" ] && return 0
        ((SECONDS < deadline)) || { echo "bench: $1 has ${n:-?} items, want $2" >&2; return 1; }
        sleep 0.2
    done
}

echo "== data" >&2
post_collection bench1000 1000
post_collection bench50 50
start_endpoint bench1000
EP1000=$EP_URL
EP1000_PID=$EP_PID
start_endpoint bench50
EP50=$EP_URL
EP50_PID=$EP_PID
wait_count "$EP1000" 1000
wait_count "$EP50" 50

# Identical bytes for the peers: exactly what the endpoint serves.
mkdir -p "$WORK/www"
for c in 1000 50; do
    url=$([ $c = 1000 ] && echo "$EP1000" || echo "$EP50")
    curl -s "$url/items" -o "$WORK/www/c$c.json"
    curl -s -H 'Accept-Encoding: gzip' "$url/items" -o "$WORK/www/c$c.json.gz"
    gzip -t "$WORK/www/c$c.json.gz"
    touch -r "$WORK/www/c$c.json" "$WORK/www/c$c.json.gz"
done

NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<EOF
worker_processes $THREADS;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120;
    keepalive_requests 100000000;
    types { application/json json; }
    default_type application/json;
    gzip off;
    gzip_static on;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
    }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;' 2>>"$WORK/nginx.err" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
NGINX="http://127.0.0.1:$NGINX_PORT"

NODE_PORT=$(free_port)
node "$HERE/node_server.js" "$NODE_PORT" "$THREADS" "$WORK/www" >"$WORK/node.log" 2>&1 &
NODE_PID=$!
PIDS+=($NODE_PID)
NODE="http://127.0.0.1:$NODE_PORT"
wait_http "$NGINX/c50.json" 10
wait_http "$NODE/c50.json" 10

# Same bytes everywhere (plain and gzip).
for c in 1000 50; do
    ep=$([ $c = 1000 ] && echo "$EP1000" || echo "$EP50")
    for enc in plain gzip; do
        h=()
        [ $enc = gzip ] && h=(-H 'Accept-Encoding: gzip')
        a=$(curl -s "${h[@]}" "$ep/items" | sha256sum)
        b=$(curl -s "${h[@]}" "$NGINX/c$c.json" | sha256sum)
        d=$(curl -s "${h[@]}" "$NODE/c$c.json" | sha256sum)
        if [ "$a" != "$b" ] || [ "$a" != "$d" ]; then
            echo "bench: bodies differ for c$c $enc: endpoint $a nginx $b node $d" >&2
            curl -s -D - -o /dev/null "${h[@]}" "$ep/items" >&2
            curl -s -D - -o /dev/null "${h[@]}" "$NGINX/c$c.json" >&2
            exit 1
        fi
    done
done

IDLE_EP=$(rss_kb "$EP1000_PID")
IDLE_NGINX=$(rss_kb "$NGINX_PID")
IDLE_NODE=$(rss_kb "$NODE_PID")

cpu_ticks() { # PID -> utime+stime clock ticks of the process and its children
    local t=0 c
    for c in $1 $(pgrep -P "$1" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

run_wrk() { # URL ENC SERVER_PID -> "req/s p99 cpu_us_per_request"
    local h=() out rps p99 n t0 t1 cpu
    [ "$2" = gzip ] && h=(-H 'Accept-Encoding: gzip')
    t0=$(cpu_ticks "$3")
    out=$(wrk -t "$THREADS" -c "$CONNS" -d "${DUR}s" --latency "${h[@]}" "$1" 2>&1)
    t1=$(cpu_ticks "$3")
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "?" }')
    if grep -q "Non-2xx" <<<"$out"; then rps="$rps(!non-2xx)"; fi
    echo "${rps:-?} ${p99:-?} $cpu"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "?")}'; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f\n", v}'; }

declare -A RPS P99 CPU
echo "== wrk -t $THREADS -c $CONNS -d ${DUR}s --latency [-H 'Accept-Encoding: gzip'] URL, $ROUNDS rounds" >&2
for c in 1000 50; do
    ep=$([ $c = 1000 ] && echo "$EP1000" || echo "$EP50")
    for enc in plain gzip; do
        for r in $(seq "$ROUNDS"); do
            for s in ep nginx node; do
                case $s in
                ep) url="$ep/items" pid=$([ $c = 1000 ] && echo "$EP1000_PID" || echo "$EP50_PID") ;;
                nginx) url="$NGINX/c$c.json" pid=$NGINX_PID ;;
                node) url="$NODE/c$c.json" pid=$NODE_PID ;;
                esac
                wrk -t 1 -c 4 -d 1s "$url" >/dev/null 2>&1 || true
                read -r rps p99 cpu <<<"$(run_wrk "$url" $enc "$pid")"
                RPS[$c,$enc,$s]+="$rps "
                P99[$c,$enc,$s]+="$(to_ms <<<"$p99") "
                CPU[$c,$enc,$s]+="$cpu "
                echo "  c$c $enc $s round $r: $rps req/s p99 $p99 cpu ${cpu}us/req" >&2
            done
        done
    done
done
declare -A R
for k in "${!RPS[@]}"; do
    R[$k]="$(tr ' ' '\n' <<<"${RPS[$k]}" | grep -v '^$' | sed 's/(.*//' | median) $(tr ' ' '\n' <<<"${P99[$k]}" | grep -v '^$' | median)ms $(tr ' ' '\n' <<<"${CPU[$k]}" | grep -v '^$' | median)"
done

echo "== freshness ($FRESH_N x POST /items -> first GET /items/{key} that shows it)" >&2
python3 "$HERE/freshness.py" "$DS" "$EP50" bench50 bench "$FRESH_N" >"$WORK/fresh.txt" ||
    echo "bench: freshness probe stopped early (datasource trouble); figures over $(wc -l <"$WORK/fresh.txt") rounds" >&2
pct() { # COLUMN -> "p50 x ms  p95 y ms  max z ms"
    awk -v c="$1" '{print $c}' "$WORK/fresh.txt" | sort -g | awk '{a[NR]=$1} END {
        p50=a[int((NR+1)*0.50)]; i=int(NR*0.95+0.999); if (i<1) i=1; p95=a[i];
        printf "p50 %.1f ms  p95 %.1f ms  max %.1f ms", p50, p95, a[NR]}'
}
FRESH="$(pct 1) (n=$(wc -l <"$WORK/fresh.txt"))"
FRESH_DS=$(pct 2)
FRESH_OWN=$(awk '{d=$1-$2; if (d<0) d=0; print d}' "$WORK/fresh.txt" | sort -g | awk '{a[NR]=$1} END {
    i=int(NR*0.95+0.999); if (i<1) i=1; printf "p50 %.1f ms  p95 %.1f ms", a[int((NR+1)*0.5)], a[i]}')

size1000=$(stat -c %s "$WORK/www/c1000.json")
size1000gz=$(stat -c %s "$WORK/www/c1000.json.gz")
size50=$(stat -c %s "$WORK/www/c50.json")
size50gz=$(stat -c %s "$WORK/www/c50.json.gz")

echo
echo "scrapr endpoint benchmark — $(date -u +%FT%TZ) — $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
echo "command: wrk -t $THREADS -c $CONNS -d ${DUR}s --latency [-H 'Accept-Encoding: gzip'] URL  (median of $ROUNDS interleaved rounds; load average at start: $LOAD0)"
echo "servers: scrapr-endpoint EP_THREADS=$THREADS (libmicrohttpd epoll thread pool) | nginx $(nginx -v 2>&1 | cut -d/ -f2) worker_processes $THREADS (sendfile, gzip_static) | node $(node --version) http, cluster of $THREADS"
echo "bodies: 1000 items = $size1000 B (gzip $size1000gz B), 50 items = $size50 B (gzip $size50gz B); identical bytes verified (sha256)"
echo
printf "%-20s | %-27s | %-27s | %-27s | %s\n" "case" "endpoint req/s p99 cpu/req" "nginx req/s p99 cpu/req" "node req/s p99 cpu/req" "endpoint vs nginx, vs node (req/s)"
printf -- "---------------------+-----------------------------+-----------------------------+-----------------------------+-----------------------------------\n"
ratio() { awk -v a="${1%%(*}" -v b="${2%%(*}" 'BEGIN { if (b+0 > 0) printf "%.2fx", a/b; else print "?" }'; }
for c in 1000 50; do
    for enc in plain gzip; do
        read -r e_r e_p e_c <<<"${R[$c,$enc,ep]}"
        read -r n_r n_p n_c <<<"${R[$c,$enc,nginx]}"
        read -r o_r o_p o_c <<<"${R[$c,$enc,node]}"
        printf "%-20s | %6s %9s %7sus | %6s %9s %7sus | %6s %9s %7sus | %s, %s\n" "GET $c items $enc" \
            "$e_r" "$e_p" "$e_c" "$n_r" "$n_p" "$n_c" "$o_r" "$o_p" "$o_c" "$(ratio "$e_r" "$n_r")" "$(ratio "$e_r" "$o_r")"
    done
done
echo "(cpu/req = server CPU time (user+sys, all its processes) / requests served: robust to the noise of a shared machine)"
echo
echo "freshness, POST /items -> first GET at the endpoint showing the item: $FRESH"
echo "  of which datasource (POST -> its long-poll answer contains the item): $FRESH_DS"
echo "  endpoint's own share (difference):                                  $FRESH_OWN"
echo "idle RSS with data loaded: endpoint $((IDLE_EP / 1024)) MiB (1000 items) | nginx $((IDLE_NGINX / 1024)) MiB (master + $THREADS workers) | node $((IDLE_NODE / 1024)) MiB (primary + $THREADS workers)"
