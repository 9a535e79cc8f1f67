#!/bin/bash
# The real test bed: redis-server, FerretDB (MongoDB protocol, SQLite backend)
# and a Consul dev agent on free loopback ports with temporary data dirs.
#
#   tests/lib/testbed.sh run -- CMD...   start what is missing, export
#       MONGO_URL / REDIS_URL / CONSUL_HTTP_ADDR, run CMD, always tear down.
#   tests/lib/testbed.sh start DIR       start in the background, write DIR/env
#   tests/lib/testbed.sh stop DIR        stop what `start DIR` began
#
# A variable already set (e.g. MONGO_URL pointing at a real MongoDB) is used
# as is and that server is not started. FERRETDB_ARGS adds flags to the
# FerretDB wrapper (e.g. benches: -index-dbs for their databases).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$ROOT/tools/bin:$PATH"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "testbed: $what did not come up" >&2
            return 1
        fi
        sleep 0.1
    done
}

start_all() { # start_all DIR
    local dir=$1
    mkdir -p "$dir"
    : >"$dir/env"
    : >"$dir/pids"
    if [ -z "${REDIS_URL:-}" ]; then
        local rport
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
            --daemonize no >"$dir/redis.log" 2>&1 &
        echo $! >>"$dir/pids"
        disown $!
        wait_for 60 "redis-server on port $rport" redis-cli -p "$rport" ping
        echo "export REDIS_URL=redis://127.0.0.1:$rport" >>"$dir/env"
        echo "testbed: redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$rport" >&2
    fi
    if [ -z "${MONGO_URL:-}" ]; then
        local mport
        mport=$(free_port)
        # shellcheck disable=SC2086 # FERRETDB_ARGS: extra wrapper flags, word-split
        ferretdb -listen "127.0.0.1:$mport" -dir "$dir/ferretdb" ${FERRETDB_ARGS:-} >"$dir/ferretdb.log" 2>&1 &
        echo $! >>"$dir/pids"
        disown $!
        wait_for 90 "ferretdb on port $mport" bash -c "exec 3<>/dev/tcp/127.0.0.1/$mport"
        echo "export MONGO_URL=mongodb://127.0.0.1:$mport" >>"$dir/env"
        echo "testbed: ferretdb $(cat "$ROOT/tools/ferretdb.version" 2>/dev/null) on 127.0.0.1:$mport" >&2
    fi
    if [ -z "${CONSUL_HTTP_ADDR:-}" ]; then
        local cport
        cport=$(free_port)
        consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$cport" \
            -dns-port -1 -grpc-port -1 -serf-lan-port "$(free_port)" -serf-wan-port "$(free_port)" \
            -server-port "$(free_port)" -log-level warn >"$dir/consul.log" 2>&1 &
        echo $! >>"$dir/pids"
        disown $!
        wait_for 90 "consul on port $cport" bash -c \
            "curl -sf http://127.0.0.1:$cport/v1/status/leader | grep -q '\"127.0.0.1'"
        echo "export CONSUL_HTTP_ADDR=127.0.0.1:$cport" >>"$dir/env"
        echo "testbed: consul $(consul version | head -1 | cut -d' ' -f2) on 127.0.0.1:$cport" >&2
    fi
}

stop_all() { # stop_all DIR
    local dir=$1 pid
    [ -f "$dir/pids" ] || return 0
    while read -r pid; do
        kill "$pid" 2>/dev/null || true
    done <"$dir/pids"
    # Give each up to 5 s to exit on SIGTERM before SIGKILL.
    for _ in $(seq 1 50); do
        alive=0
        while read -r pid; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done <"$dir/pids"
        [ $alive = 0 ] && break
        sleep 0.1
    done
    while read -r pid; do
        kill -9 "$pid" 2>/dev/null || true
    done <"$dir/pids"
    rm -f "$dir/pids"
}

case "${1:-}" in
run)
    shift
    [ "${1:-}" = "--" ] && shift
    dir=$(mktemp -d /tmp/scrapr-testbed.XXXXXX)
    cleanup() {
        stop_all "$dir"
        rm -rf "$dir"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    start_all "$dir"
    # shellcheck disable=SC1091
    . "$dir/env"
    export SCRAPR_TESTBED_DIR="$dir"
    set +e
    "$@"
    exit $?
    ;;
start)
    start_all "${2:?usage: testbed.sh start DIR}"
    cat "$2/env"
    ;;
stop)
    stop_all "${2:?usage: testbed.sh stop DIR}"
    ;;
*)
    echo "usage: $0 run -- CMD... | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
