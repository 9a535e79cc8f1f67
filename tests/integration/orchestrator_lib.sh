# Helpers for the orchestrator tests and bench (sourced, bash). Needs
# CONSUL_HTTP_ADDR (test bed), SCRAPR_BIN_DIR and SCRAPR_SOURCE_DIR (ctest).
# Everything started here is labelled/named with $OT_ID and removed by
# ot_cleanup (call it from an EXIT trap).

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

ot_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# A free run of N consecutive ports (best effort) → "LO-HI".
ot_port_range() {
    python3 - "$1" <<'PY'
import socket, random, sys
n = int(sys.argv[1])
for _ in range(200):
    lo = random.randint(20000, 60000 - n)
    ok = True
    for p in range(lo, lo + n):
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(f"{lo}-{lo + n - 1}")
        sys.exit(0)
sys.exit(1)
PY
}

ot_start_fake_cd() {
    OT_CD_PORT=$(ot_free_port)
    python3 "$SCRAPR_SOURCE_DIR/tests/integration/fake_config_discovery.py" "$OT_CD_PORT" \
        "$CONSUL_HTTP_ADDR" "$OT_KV/revision" >"$OT_DIR/cd.log" 2>&1 &
    OT_PIDS+=($!)
    OT_CD="http://127.0.0.1:$OT_CD_PORT"
    ot_wait 10 "fake config-discovery" curl -sf "$OT_CD/health"
}

# ot_start_orch NAME [extra env...]: starts an orchestrator, sets OT_PORT_<NAME>, OT_PID_<NAME>.
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
        "$@" "$SCRAPR_BIN_DIR/scrapr-orchestrator" >"$OT_DIR/orch-$name.log" 2>&1 &
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

ot_post_config() { # ot_post_config JSON → prints the _id
    curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$OT_CD/configurations" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])'
}
ot_put_config() { curl -sf -X PUT -H 'Content-Type: application/json' -d "$2" "$OT_CD/configurations/$1" >/dev/null; }
ot_delete_config() { curl -sf -X DELETE "$OT_CD/configurations/$1" >/dev/null; }
ot_get_field() { curl -sf "$OT_CD/configurations/$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2'))"; }

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
    local i
    for i in $(seq 30); do
        docker network rm "$OT_NET" >/dev/null 2>&1 && break
        docker network inspect "$OT_NET" >/dev/null 2>&1 || break
        sleep 1
    done
    curl -sf -X DELETE "$OT_CONSUL/v1/kv/$OT_KV?recurse" >/dev/null 2>&1 || true
    if [ -n "${OT_KEEP_LOGS:-}" ] || [ "${OT_FAILED:-0}" = 1 ]; then
        echo "logs kept in $OT_DIR" >&2
        tail -n 30 "$OT_DIR"/*.log >&2 || true
    else
        rm -rf "$OT_DIR"
    fi
}
