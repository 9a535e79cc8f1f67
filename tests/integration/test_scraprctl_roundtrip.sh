#!/bin/bash
# scraprctl against a real scrapr-config-discovery (test bed FerretDB, own
# database; a private Consul agent for the discovery check): apply (file,
# stdin, array, PUT of an edited `get`), get (table, --json, by id, filters),
# endpoints, delete, and readable errors with a non-zero exit status.
set -euo pipefail
: "${MONGO_URL:?MONGO_URL is not set: run under tests/lib/testbed.sh}"
: "${CONSUL_HTTP_ADDR:?CONSUL_HTTP_ADDR is not set: run under tests/lib/testbed.sh}"
: "${SCRAPR_BIN_DIR:?SCRAPR_BIN_DIR is not set}"
ROOT=${SCRAPR_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CTL="$SCRAPR_BIN_DIR/scraprctl"

tmp=$(mktemp -d /tmp/t_scraprctl.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
fail() {
    echo "FAIL: $*" >&2
    echo "--- service log:" >&2
    tail -30 "$tmp/cd.log" >&2 || true
    exit 1
}
# expect STATUS OUT_PATTERN ERR_PATTERN -- CMD...: runs CMD, checks its exit
# status and that stdout/stderr contain the patterns ('' = anything).
expect() {
    local want=$1 out_pat=$2 err_pat=$3
    shift 4
    local rc=0
    "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" = "$want" ] || fail "$* exited $rc, want $want; stdout: $(cat "$tmp/out"); stderr: $(cat "$tmp/err")"
    if [ -n "$out_pat" ]; then grep -qF -- "$out_pat" "$tmp/out" || fail "$*: stdout lacks '$out_pat': $(cat "$tmp/out")"; fi
    if [ -n "$err_pat" ]; then grep -qF -- "$err_pat" "$tmp/err" || fail "$*: stderr lacks '$err_pat': $(cat "$tmp/err")"; fi
    return 0
}

# A private Consul agent, so that discovery finds exactly our service.
cport=$(free_port)
"$ROOT/tools/bin/consul" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$cport" \
    -dns-port -1 -grpc-port -1 -serf-lan-port "$(free_port)" -serf-wan-port "$(free_port)" \
    -server-port "$(free_port)" -node "t-ctl-$$" -log-level warn >"$tmp/consul.log" 2>&1 &
pids+=($!)
disown $!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$cport/v1/status/leader" | grep -q '"127.0.0.1' && break
    sleep 0.1
done

port=$(free_port)
url="http://127.0.0.1:$port"
base=${MONGO_URL%/}
MONGO_URL="$base/t_ctl_$$" PORT=$port SCRAPR_API_TOKEN=sekrit SERVICE_ADDRESS=127.0.0.1 \
    CONSUL_HTTP_ADDR=127.0.0.1:$cport SCRAPR_CD_REVISION_KEY="t/rev/ctl_$$" \
    "$SCRAPR_BIN_DIR/scrapr-config-discovery" >"$tmp/cd.log" 2>&1 &
pids+=($!)
disown $!
for _ in $(seq 100); do
    curl -sf "$url/health" >/dev/null && break
    sleep 0.1
done
curl -sf "$url/health" >/dev/null || fail "config-discovery did not come up"

export SCRAPR_API_TOKEN=sekrit
unset SCRAPR_CONFIG_DISCOVERY_URL
cat >"$tmp/quotes.json" <<'EOF'
{"collection": "quotes", "ttl": 60, "source": {"url": "http://127.0.0.1:9/", "type": "html"},
 "scope": "div.quote", "fields": {"text": "span.text", "author": "small.author"}}
EOF

# apply a file: created
expect 0 "created " "" -- "$CTL" --url "$url" apply "$tmp/quotes.json"
id=$(awk '{print $2}' "$tmp/out")
[ ${#id} = 24 ] || fail "apply printed no id: $(cat "$tmp/out")"

# get: table with the scraper and the auto-created endpoint configuration
expect 0 "$id  scraper" "" -- "$CTL" --url "$url" get
grep -q "endpoint  quotes" "$tmp/out" || fail "no endpoint row: $(cat "$tmp/out")"
expect 0 '"type": "endpoint"' "" -- "$CTL" --url "$url" get --type endpoint --json
expect 0 "\"_id\": \"$id\"" "" -- "$CTL" --url "$url" get "$id"
cp "$tmp/out" "$tmp/got.json"

# apply of an edited `get` (has _id): updated, version 2
sed -i 's/"ttl": 60/"ttl": 120/' "$tmp/got.json"
expect 0 "updated $id (collection quotes, version 2)" "" -- "$CTL" --url "$url" apply "$tmp/got.json"
expect 0 '"ttl": 120' "" -- "$CTL" --url "$url" get "$id"

# stdin, an array of two
printf '[{"collection":"books","source":{"url":"http://127.0.0.1:9/b"},"fields":{"t":"h1"}},
        {"collection":"books","source":{"url":"http://127.0.0.1:9/c"},"fields":{"t":"h2"}}]' >"$tmp/two.json"
expect 0 "created " "" -- "$CTL" --url "$url" apply - <"$tmp/two.json"
[ "$(grep -c '^created ' "$tmp/out")" = 2 ] || fail "stdin array: $(cat "$tmp/out")"
expect 0 "books" "" -- "$CTL" --url "$url" get --collection books --type scraper
[ "$(grep -c ' scraper ' "$tmp/out")" = 2 ] || fail "filter: $(cat "$tmp/out")"

# endpoints: not deployed, then the URL the orchestrator records
expect 0 "(not deployed yet)" "" -- "$CTL" --url "$url" endpoints
epid=$("$CTL" --url "$url" get --type endpoint --collection quotes --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["configurations"][0]["_id"])')
curl -sf -X PUT -H "Authorization: Bearer sekrit" "$url/configurations/$epid" \
    -d '{"collection":"quotes","ttl":60,"url":"http://quotes.example.local/"}' >/dev/null ||
    fail "PUT endpoint url"
expect 0 "http://quotes.example.local/" "" -- "$CTL" --url "$url" endpoints
grep -q "^quotes  *http://quotes.example.local/" "$tmp/out" || fail "endpoints: $(cat "$tmp/out")"
expect 0 '"quotes": "http://quotes.example.local/"' "" -- "$CTL" --url "$url" --json endpoints

# discovery: through Consul (no --url), and through the env override. Consul
# lists a service as passing only after its first health check ran (within
# the check's interval of the registration): wait for that first.
for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$cport/v1/health/service/config-discovery?passing" | grep -q '"ServiceID"' && break
    sleep 0.2
done
expect 0 "$id" "" -- env CONSUL_HTTP_ADDR=127.0.0.1:$cport "$CTL" get
expect 0 "$id" "" -- env SCRAPR_CONFIG_DISCOVERY_URL="$url/" CONSUL_HTTP_ADDR=127.0.0.1:1 "$CTL" get

# errors: readable, non-zero
echo '{"collection": "bad", "ttl": -5}' >"$tmp/bad.json"
expect 1 "" "invalid configuration" -- "$CTL" --url "$url" apply "$tmp/bad.json"
grep -q '^  \$\.[a-z]*: ' "$tmp/err" || fail "problems not printed as 'path: message': $(cat "$tmp/err")"
grep -qF '  $.fields: ' "$tmp/err" || fail "no \$.fields problem: $(cat "$tmp/err")"
printf '{\n  "collection": "x",\n  oops\n}\n' >"$tmp/broken.json"
expect 1 "" "broken.json:3:" -- "$CTL" --url "$url" apply "$tmp/broken.json"
expect 1 "" "No such file" -- "$CTL" --url "$url" apply "$tmp/missing.json"
expect 1 "" "HTTP 401" -- env -u SCRAPR_API_TOKEN "$CTL" --url "$url" apply "$tmp/quotes.json"
grep -q "SCRAPR_API_TOKEN" "$tmp/err" || fail "no token hint: $(cat "$tmp/err")"
expect 1 "" "HTTP 401" -- env SCRAPR_API_TOKEN=wrong "$CTL" --url "$url" delete "$id"
expect 1 "" "24 hexadecimal digits" -- "$CTL" --url "$url" delete nope
expect 1 "" "no configuration with id" -- "$CTL" --url "$url" get 00000000000000000000000a
expect 1 "" "still has scraper configurations" -- "$CTL" --url "$url" delete "$epid"
expect 1 "" "cannot reach config-discovery" -- "$CTL" --url "http://127.0.0.1:$(free_port)" get
expect 2 "" "unknown command" -- "$CTL" --url "$url" frobnicate
expect 2 "" "usage: delete ID" -- "$CTL" --url "$url" delete
expect 0 "usage: scraprctl" "" -- "$CTL" --help

# delete: the last scraper of quotes takes the endpoint configuration along
expect 0 "deleted $id" "" -- "$CTL" --url "$url" delete "$id"
expect 0 "" "" -- "$CTL" --url "$url" get --collection quotes --json
grep -q '"total": 0' "$tmp/out" || fail "quotes not gone: $(cat "$tmp/out")"
expect 1 "" "no configuration with id" -- "$CTL" --url "$url" delete "$id"
echo "ok test_scraprctl_roundtrip"
