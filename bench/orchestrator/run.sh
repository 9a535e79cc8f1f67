#!/bin/bash
# Orchestrator benchmark: config POST → spawned scraper running (vs a plain
# `docker run` of the same image, same run) and Consul notification latency.
#   bench/orchestrator/run.sh            (BENCH_N=20 by default; build/ must exist)
#   BENCH_DRIVER=swarm bench/orchestrator/run.sh   (Swarm services; the engine
#       must be a swarm manager already: this never initialises or leaves a swarm)
# Starts the test bed (FerretDB, Consul) when CONSUL_HTTP_ADDR is unset, the
# real config-discovery and one orchestrator (engine driver); removes
# everything it created. Never fails on slowness.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${CONSUL_HTTP_ADDR:-}" ] || [ -z "${MONGO_URL:-}" ]; then
    exec "$ROOT/tests/lib/testbed.sh" run -- "$0" "$@"
fi
export SCRAPR_SOURCE_DIR=$ROOT SCRAPR_BIN_DIR=${SCRAPR_BIN_DIR:-$ROOT/build/bin}
[ -x "$SCRAPR_BIN_DIR/scrapr-orchestrator" ] || { echo "build first: $SCRAPR_BIN_DIR/scrapr-orchestrator missing" >&2; exit 1; }
. "$ROOT/tests/integration/orchestrator_lib.sh"
ot_init ob
# Peer containers carry scrapr.bench (not our owner label: the orchestrator
# would remove them as orphans mid-run).
bench_cleanup() {
    docker service ls -q --filter "label=scrapr.bench=$OT_OWNER" | xargs -r docker service rm >/dev/null 2>&1 || true
    docker ps -aq --filter "label=scrapr.bench=$OT_OWNER" | xargs -r docker rm -f >/dev/null 2>&1 || true
    ot_cleanup
}
trap bench_cleanup EXIT
OT_PORTS=$(ot_port_range 12)
ot_start_cd
OT_DRIVER=${BENCH_DRIVER:-engine}
if [ "$OT_DRIVER" = swarm ] && [ "$(docker info -f '{{.Swarm.ControlAvailable}}')" != true ]; then
    echo "BENCH_DRIVER=swarm: this engine is not a swarm manager" >&2
    exit 1
fi
ot_start_orch a LOG_LEVEL="${BENCH_LOG_LEVEL:-warn}" SCRAPR_PUBLISH_MODE=host
ot_wait 20 "leader" ot_is_leader "$OT_PORT_a"
export OT_DRIVER OT_CD OT_ORCH="http://127.0.0.1:$OT_PORT_a" OT_CONSUL OT_KV OT_PREFIX OT_NET OT_IMAGE OT_OWNER
python3 "$ROOT/bench/orchestrator/bench.py"
