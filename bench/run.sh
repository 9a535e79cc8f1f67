#!/bin/bash
# Runs every benchmark; each prints our figures beside its peer's from the same
# run, with the command and core count. Benchmarks never fail on slowness.
#   bench/run.sh [area...]   areas: extract fetch datasource endpoint config-discovery orchestrator e2e
# e2e needs the running system (`make up`); the others start what they need.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$ROOT/tools/bin:$PATH"
areas=${*:-"extract fetch datasource endpoint config-discovery orchestrator"}
status=0
for a in $areas; do
    echo "=== bench/$a ($(nproc) cores, $(date -u +%FT%TZ))"
    if ! "$ROOT/bench/$a/run.sh"; then
        echo "=== bench/$a did not run to the end" >&2
        status=1
    fi
done
exit $status
