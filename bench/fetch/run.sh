#!/bin/bash
# Fetch rate of the scraper's multi-interface fetcher against wrk, both on the
# same URLs of a local nginx (Debian nginx-light) serving a generated corpus,
# in the same run. Prints both side by side; never fails on slowness.
#
#   bench/fetch/run.sh [PAGES=200] [CONCURRENCY=32] [SECONDS=10]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PAGES=${1:-200}
CONC=${2:-32}
SECS=${3:-10}
TMP=$(mktemp -d)
NGINX_PID=
cleanup() {
    if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
command -v nginx >/dev/null || { echo "nginx not installed (apt-get install nginx-light)"; exit 1; }
command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk)"; exit 1; }

# 1. an optimised build of the fetcher (no sanitizers) and the bench driver
BUILD=$ROOT/build-bench
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSCRAPR_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j2 --target scraper_core shared >/dev/null
# shellcheck disable=SC2046
cc -O2 -D_GNU_SOURCE -I"$ROOT/services/scraper" -I"$ROOT/libshared/include" \
    "$ROOT/bench/fetch/bench_fetch.c" -o "$TMP/bench_fetch" \
    "$BUILD/services/scraper/libscraper_core.a" "$BUILD/libshared/libshared.a" \
    $(pkg-config --libs libcurl jansson hiredis libmongoc-1.0 libmicrohttpd libxml-2.0 zlib) -lpthread -lm

# 2. corpus: PAGES html pages of 8-24 KiB, like list pages of a quotes site
mkdir -p "$TMP/www/p"
chmod 755 "$TMP" "$TMP/www" "$TMP/www/p" # workers may run as nobody when started by root
python3 - "$TMP/www/p" "$PAGES" <<'PY'
import random, sys
d, n = sys.argv[1], int(sys.argv[2])
random.seed(42)
words = "the quick brown fox jumps over lazy dog lorem ipsum dolor sit amet scraper quote author".split()
for i in range(n):
    items = []
    for k in range(random.randint(10, 30)):
        t = " ".join(random.choice(words) for _ in range(random.randint(20, 60)))
        items.append('<div class="quote"><span class="text">%s</span><small class="author">A%d</small>'
                     '<a href="/author/%d">about</a><div class="tags"><a class="tag">t%d</a></div></div>' % (t, k, k, k))
    open("%s/%d.html" % (d, i), "w").write("<html><head><title>page %d</title></head><body>%s"
        '<li class="next"><a href="/p/%d.html">next</a></li></body></html>' % (i, "\n".join(items), i + 1))
PY
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
CORES=$(nproc)
cat >"$TMP/nginx.conf" <<NGX
worker_processes $CORES;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    types { text/html html; }
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    server {
        listen 127.0.0.1:$PORT;
        root $TMP/www;
    }
}
NGX
nginx -c "$TMP/nginx.conf" -p "$TMP" 2>"$TMP/nginx.stderr" &
NGINX_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/p/0.html" -o /dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/p/0.html" -o /dev/null || { echo "nginx did not start: $(cat "$TMP/nginx.stderr" "$TMP/error.log")"; exit 1; }

seq 0 $((PAGES - 1)) | sed "s|^|http://127.0.0.1:$PORT/p/|; s|$|.html|" >"$TMP/urls.txt"
BYTES=$(du -sb "$TMP/www/p" | cut -f1)

# wrk cycles through the same paths
cat >"$TMP/urls.lua" <<LUA
local paths = {}
for line in io.lines("$TMP/urls.txt") do paths[#paths + 1] = line:gsub("^http://[^/]+", "") end
local i = 0
request = function()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end
LUA

echo "== fetch benchmark: $PAGES pages ($((BYTES / PAGES / 1024)) KiB avg), concurrency $CONC, ${SECS}s each, $CORES cores, nginx $(nginx -v 2>&1 | sed 's/.*\///')"
ROUNDS=${ROUNDS:-2}
best() { sort -g | tail -1; }
OURS_ALL=""
W1_ALL=""
# alternate the two clients so background load hits both alike; keep each one's best round
for r in $(seq "$ROUNDS"); do
    echo "-- round $r: scrapr fetcher (libcurl multi, 1 thread): bench_fetch urls.txt $CONC $SECS"
    OURS=$("$TMP/bench_fetch" "$TMP/urls.txt" "$CONC" "$SECS" || true)
    echo "   $OURS"
    OURS_ALL="$OURS_ALL $(echo "$OURS" | sed -n 's/.*rate=\([0-9.]*\) req.*/\1/p')"
    echo "-- round $r: wrk -t1 -c$CONC -d${SECS}s -s urls.lua http://127.0.0.1:$PORT/"
    WRK1=$(wrk -t1 -c"$CONC" -d"${SECS}s" -s "$TMP/urls.lua" "http://127.0.0.1:$PORT/" | grep -E "Requests/sec|Transfer/sec|requests in")
    echo "$WRK1" | sed 's/^/   /'
    W1_ALL="$W1_ALL $(echo "$WRK1" | awk '/Requests\/sec/ {print $2}')"
done
echo "-- wrk -t2 -c$CONC -d${SECS}s -s urls.lua http://127.0.0.1:$PORT/ (both cores; for scale)"
WRK2=$(wrk -t2 -c"$CONC" -d"${SECS}s" -s "$TMP/urls.lua" "http://127.0.0.1:$PORT/" | grep -E "Requests/sec|Transfer/sec|requests in")
echo "$WRK2" | sed 's/^/   /'
o=$(echo "$OURS_ALL" | tr ' ' '\n' | grep . | best || true)
w1=$(echo "$W1_ALL" | tr ' ' '\n' | grep . | best || true)
w2=$(echo "$WRK2" | awk '/Requests\/sec/ {print $2}')
printf "\n%-34s %12s   (best of %s rounds)\n" "client" "req/s" "$ROUNDS"
printf "%-34s %12s\n" "scrapr fetcher (1 thread)" "$o" "wrk -t1 (1 thread)" "$w1" "wrk -t2 (2 threads)" "$w2"
if [ -n "$o" ] && [ -n "$w1" ] && [ -n "$w2" ]; then
    python3 -c "print('ratio scrapr/wrk-t1 = %.2f  scrapr/wrk-t2 = %.2f  (goal >= 0.5)' % ($o/$w1, $o/$w2))"
fi
echo "(nginx shares the same $CORES cores with the client under test)"
