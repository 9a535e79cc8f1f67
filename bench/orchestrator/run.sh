#!/bin/bash
# Orchestrator benchmark: config POST → spawned scraper running (vs a plain
# `docker run` of the same image, same run) and Consul notification latency.
#   bench/orchestrator/run.sh            (BENCH_N=20 by default; build/ must exist)
# Starts the test bed (Consul) when CONSUL_HTTP_ADDR is unset, a stand-in
# config-discovery and one orchestrator (engine driver); removes everything
# it created. Never fails on slowness.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${CONSUL_HTTP_ADDR:-}" ]; then
    exec "$ROOT/tests/lib/testbed.sh" run -- "$0" "$@"
fi
export SCRAPR_SOURCE_DIR=$ROOT SCRAPR_BIN_DIR=${SCRAPR_BIN_DIR:-$ROOT/build/bin}
[ -x "$SCRAPR_BIN_DIR/scrapr-orchestrator" ] || { echo "build first: $SCRAPR_BIN_DIR/scrapr-orchestrator missing" >&2; exit 1; }
. "$ROOT/tests/integration/orchestrator_lib.sh"
ot_init ob
# Peer containers carry scrapr.bench (not our owner label: the orchestrator
# would remove them as orphans mid-run).
bench_cleanup() {
    docker ps -aq --filter "label=scrapr.bench=$OT_OWNER" | xargs -r docker rm -f >/dev/null 2>&1 || true
    ot_cleanup
}
trap bench_cleanup EXIT
OT_PORTS=$(ot_port_range 5)
ot_start_fake_cd
ot_start_orch a LOG_LEVEL=warn
ot_wait 20 "leader" ot_is_leader "$OT_PORT_a"
export OT_CD OT_ORCH="http://127.0.0.1:$OT_PORT_a" OT_CONSUL OT_KV OT_PREFIX OT_NET OT_IMAGE OT_OWNER
python3 "$ROOT/bench/orchestrator/bench.py"
