#!/bin/bash
# deploy/provision.sh --dry-run prints the docker-machine way step by step:
# machines created with the chosen driver and its options, images moved to
# every node, swarm init on the manager, every worker joined, the stack deployed.
set -euo pipefail
ROOT=${SCRAPR_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
out=$("$ROOT/deploy/provision.sh" --dry-run --driver virtualbox --workers 2 --prefix t \
    -- --virtualbox-memory=2048 2>&1)
fail() { echo "FAIL: $1"; echo "$out"; exit 1; }
expect() { grep -qF -- "$1" <<<"$out" || fail "missing: $1"; }
expect "+ docker-machine create --driver virtualbox --virtualbox-memory=2048 t-manager"
expect "+ docker-machine create --driver virtualbox --virtualbox-memory=2048 t-worker-1"
expect "+ docker-machine create --driver virtualbox --virtualbox-memory=2048 t-worker-2"
for m in t-manager t-worker-1 t-worker-2; do
    expect "| docker --host tcp://$m:2376 load"
done
expect "+ docker --host tcp://t-manager:2376 swarm init --advertise-addr t-manager"
expect "+ docker --host tcp://t-worker-1:2376 swarm join --token SWMTKN-dry-run t-manager:2377"
expect "+ docker --host tcp://t-worker-2:2376 swarm join --token SWMTKN-dry-run t-manager:2377"
expect "stack deploy --prune -c $ROOT/deploy/stack.yml scrapr"
# Order: create before load, init before join, join before deploy.
line() { grep -nF -- "$1" <<<"$out" | head -1 | cut -d: -f1; }
(($(line "create --driver virtualbox --virtualbox-memory=2048 t-worker-2") < $(line "t-manager:2376 load"))) || fail "order create/load"
(($(line "swarm init") < $(line "t-worker-1:2376 swarm join"))) || fail "order init/join"
(($(line "t-worker-2:2376 swarm join") < $(line "stack deploy"))) || fail "order join/deploy"
# Bad input is refused with a message.
if "$ROOT/deploy/provision.sh" --dry-run --workers x >/dev/null 2>err.$$; then fail "--workers x accepted"; fi
grep -q "takes a number" err.$$ || fail "no message for --workers x"
rm -f err.$$
echo "ok"
