# Helpers for the orchestrator tests and bench (sourced, bash). Needs
# CONSUL_HTTP_ADDR and MONGO_URL (test bed), SCRAPR_BIN_DIR and
# SCRAPR_SOURCE_DIR (ctest). Real parts only: the real config-discovery on the
# test bed's FerretDB and Consul, the real Docker engine. Everything started
# here is labelled/named with $OT_ID and removed by ot_cleanup (call it from an
# EXIT trap).

ot_fail() { OT_FAILED=1; echo "FAIL: $*" >&2; [ -z "${OT_PAUSE_ON_FAIL:-}" ] || sleep "$OT_PAUSE_ON_FAIL"; exit 1; }

ot_init() { # ot_init NAME
    : "${CONSUL_HTTP_ADDR:?CONSUL_HTTP_ADDR is not set: run under tests/lib/testbed.sh}"
    : "${SCRAPR_BIN_DIR:?SCRAPR_BIN_DIR is not set: run through ctest}"
    : "${SCRAPR_SOURCE_DIR:?SCRAPR_SOURCE_DIR is not set: run through ctest}"
    OT_ID="$1$$"
    OT_DIR=$(mktemp -d "/tmp/ot_${OT_ID}_XXXX")
    OT_OWNER="scrapr-test-$OT_ID"
    OT_PREFIX="t$OT_ID"
    OT_NET="scrapr-test-$OT_ID"
    OT_KV="scrapr-test/$OT_ID"
    OT_IMAGE=$("$SCRAPR_SOURCE_DIR/tests/integration/orchestrator_image.sh")
    OT_PIDS=()
    OT_CONSUL="http://${CONSUL_HTTP_ADDR#http://}"
    command -v python3 >/dev/null || ot_fail "python3 missing"
}

ot_step() { echo "-- [${SECONDS}s] $*"; } # a test section, with the seconds elapsed so far

ot_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# A free run of N consecutive ports → "LO-HI" (tests/lib/port_range.py).
ot_port_range() { python3 "$SCRAPR_SOURCE_DIR/tests/lib/port_range.py" "$1"; }

# ot_start_cd: the real scrapr-config-discovery on the test bed's FerretDB
# (a database of its own) and Consul, bumping the revision key $OT_KV/revision
# that ot_start_orch watches. Sets OT_CD (base URL).
ot_start_cd() {
    : "${MONGO_URL:?MONGO_URL is not set: run under tests/lib/testbed.sh}"
    OT_CD_PORT=$(ot_free_port)
    env PORT="$OT_CD_PORT" SERVICE_ADDRESS=127.0.0.1 MONGO_URL="${MONGO_URL%/}/t_orch_$OT_ID" \
        SCRAPR_CD_REVISION_KEY="$OT_KV/revision" LOG_LEVEL="${OT_LOG_LEVEL:-info}" \
        "$SCRAPR_BIN_DIR/scrapr-config-discovery" >"$OT_DIR/cd.log" 2>&1 &
    OT_PIDS+=($!)
    OT_CD="http://127.0.0.1:$OT_CD_PORT"
    ot_wait 60 "config-discovery" curl -sf "$OT_CD/health"
}

# ot_start_orch NAME [extra env...]: starts an orchestrator, sets OT_PORT_<NAME>, OT_PID_<NAME>.
# No spares unless the extra env asks for them (SCRAPR_SPARES=N).
ot_start_orch() {
    local name=$1 port
    shift
    port=$(ot_free_port)
    env PORT="$port" SERVICE_ADDRESS=127.0.0.1 \
        SCRAPR_DRIVER="${OT_DRIVER:-engine}" \
        SCRAPR_IMAGE_SCRAPER="$OT_IMAGE" SCRAPR_IMAGE_ENDPOINT="$OT_IMAGE" SCRAPR_IMAGE_REDIS="$OT_IMAGE" \
        SCRAPR_CMD_SCRAPER="httpd -f -p 3002 -h /www" SCRAPR_CMD_ENDPOINT="httpd -f -p 3000 -h /www" \
        SCRAPR_CMD_REDIS="sleep 86400" SCRAPR_STOP_TIMEOUT=1 \
        SCRAPR_NETWORK="$OT_NET" SCRAPR_OWNER="$OT_OWNER" SCRAPR_NAME_PREFIX="$OT_PREFIX" \
        SCRAPR_ENDPOINT_PORTS="$OT_PORTS" SCRAPR_PUBLIC_HOST=127.0.0.1 \
        SCRAPR_CONFIG_DISCOVERY_URL="$OT_CD" SCRAPR_INSTANCE_ID="$OT_ID-$name" \
        SCRAPR_LOCK_KEY="$OT_KV/lock" SCRAPR_REVISION_KEY="$OT_KV/revision" \
        SCRAPR_SPAWN_CONSUL_ADDR=consul.invalid:8500 LOG_LEVEL="${OT_LOG_LEVEL:-info}" \
        SCRAPR_SPARES=0 "$@" "$SCRAPR_BIN_DIR/scrapr-orchestrator" >"$OT_DIR/orch-$name.log" 2>&1 &
    local pid=$!
    OT_PIDS+=($pid)
    printf -v "OT_PID_$name" %s "$pid"
    printf -v "OT_PORT_$name" %s "$port"
    ot_wait 15 "orchestrator $name" curl -sf "http://127.0.0.1:$port/health"
}

ot_status() { curl -sf "http://127.0.0.1:$1/status"; }
ot_role() { ot_status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])' 2>/dev/null || echo down; }
ot_is_leader() { [ "$(ot_role "$1")" = leader ]; }
ot_passes() { ot_status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reconcile"]["passes"])' 2>/dev/null || echo 0; }
ot_has_passed() { [ "$(ot_passes "$1")" -gt 0 ]; }

ot_wait() { # ot_wait SECONDS WHAT CMD...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || ot_fail "timed out waiting for: $what"
        sleep 0.2
    done
}

ot_running() { # ot_running NAME: container NAME is running
    [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]
}
ot_absent() { ! docker inspect "$1" >/dev/null 2>&1; }
ot_cid() { docker inspect -f '{{.Id}}' "$1" 2>/dev/null; }
ot_count() { docker ps -aq --filter "label=scrapr.owner=$OT_OWNER" "$@" | wc -l; }

# A valid scraper configuration for collection $1 (its site never answers:
# the stand-in image does not scrape), extra top-level JSON members in $2.
ot_scraper_config() {
    printf '{"collection":"%s","ttl":60,"source":{"url":"http://site.invalid/","type":"html"},"scope":"div.quote","fields":{"text":"span.text"}%s}' \
        "$1" "${2:+,$2}"
}
ot_post_config() { # ot_post_config JSON → prints the _id (POST answers once materialised)
    curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$OT_CD/configurations" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])'
}
ot_endpoint_id() { # ot_endpoint_id COLLECTION → _id of its (automatic) endpoint configuration
    curl -sf "$OT_CD/configurations?type=endpoint&collection=$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["configurations"][0]["_id"])'
}
# ot_patch_config ID JSON: read-modify-write (PUT is a full replace), made
# conditional on the version read; retried on 409 (the orchestrator may
# record an assignment in between).
ot_patch_config() {
    python3 - "$OT_CD" "$1" "$2" <<'PY' || ot_fail "PUT /configurations/$1 $2"
import json, sys, time, urllib.request, urllib.error
base, cid, patch = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for _ in range(20):
    with urllib.request.urlopen(f"{base}/configurations/{cid}", timeout=10) as r:
        doc = json.load(r)
    doc.update(patch)
    req = urllib.request.Request(f"{base}/configurations/{cid}", data=json.dumps(doc).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10).read()
        sys.exit(0)
    except urllib.error.HTTPError as e:
        if e.code != 409:
            sys.exit(f"HTTP {e.code}: {e.read()[:300]!r}")
    time.sleep(0.2)
sys.exit("409 twenty times")
PY
}
ot_delete_config() { curl -sf -X DELETE "$OT_CD/configurations/$1" >/dev/null; }
ot_get_field() { curl -sf "$OT_CD/configurations/$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2'))"; }
ot_field_is() { [ "$(ot_get_field "$1" "$2")" = "$3" ]; } # ot_field_is ID FIELD VALUE
ot_label() { docker inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; } # ot_label CONTAINER KEY

ot_cleanup() {
    local pid
    for pid in "${OT_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${OT_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${OT_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    docker service ls -q --filter "label=scrapr.owner=$OT_OWNER" 2>/dev/null | xargs -r docker service rm >/dev/null 2>&1 || true
    docker ps -aq --filter "label=scrapr.owner=$OT_OWNER" | xargs -r docker rm -f >/dev/null 2>&1 || true
    # A unit the killed orchestrator was still creating may appear after the
    # first sweep, and a loaded engine takes a while to detach: sweep again.
    local i
    for i in $(seq 60); do
        docker network rm "$OT_NET" >/dev/null 2>&1 && break
        docker network inspect "$OT_NET" >/dev/null 2>&1 || break
        docker service ls -q --filter "label=scrapr.owner=$OT_OWNER" 2>/dev/null | xargs -r docker service rm >/dev/null 2>&1 || true
        docker ps -aq --filter "label=scrapr.owner=$OT_OWNER" | xargs -r docker rm -f >/dev/null 2>&1 || true
        sleep 1
    done
    docker network inspect "$OT_NET" >/dev/null 2>&1 && echo "ot_cleanup: network $OT_NET could not be removed" >&2
    curl -sf -X DELETE "$OT_CONSUL/v1/kv/$OT_KV?recurse" >/dev/null 2>&1 || true
    if [ -n "${OT_KEEP_LOGS:-}" ] || [ "${OT_FAILED:-0}" = 1 ]; then
        echo "logs kept in $OT_DIR" >&2
        tail -n 30 "$OT_DIR"/*.log >&2 || true
    else
        rm -rf "$OT_DIR"
    fi
}
