# Helpers for the e2e tests (sourced). They run the real stack on Docker Swarm.
ROOT=${SCRAPR_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export PATH="$ROOT/tools/bin:$PATH"

fail() {
    echo "FAIL: $*" >&2
    diagnose >&2
    exit 1
}

# On failure: what every scrapr service said last.
diagnose() {
    command -v docker >/dev/null 2>&1 || return 0
    for s in $(docker service ls --format '{{.Name}}' 2>/dev/null); do
        echo "--- $s"
        docker service logs --no-task-ids --tail 25 "$s" 2>&1 | cut -c1-300
    done
}

log() { echo "e2e: $(date +%T) $*" >&2; }

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every 0.5 s.
wait_until() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after the wait for: $what"
        sleep 0.5
    done
}

free_range() { python3 "$ROOT/tests/lib/port_range.py" "$1"; } # N ports → "LO-HI"
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1]); s.close()'
}

# json_get URL PYEXPR: fetches URL and prints PYEXPR evaluated with j = the JSON body.
json_get() {
    curl -fsS -m 10 "$1" | python3 -c "import json,sys; j=json.load(sys.stdin); print($2)"
}

# count of spawned Swarm services with a scrapr.type label value
spawned() {
    docker service ls -q --filter "label=scrapr.type=$1" --filter "label=scrapr.collection=$2" \
        --filter label=scrapr.role=app | wc -l
}

# The demo site's quotes (text only), from its generator.
demo_texts() {
    python3 -c "
import sys; sys.path.insert(0, '$ROOT/deploy/demo-site'); import generate
for t, a, g in generate.QUOTES: print('\u201c' + t + '\u201d')"
}
