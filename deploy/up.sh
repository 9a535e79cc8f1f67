#!/bin/sh
# `make up`: runs scrapr on a single-node Docker Swarm from a fresh machine.
# Installs what is missing, builds the images, starts Swarm if none, deploys
# the stack, applies the demo configuration (a quotes site served inside the
# stack), waits until its endpoint serves items and prints where everything is.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK=${SCRAPR_STACK:-scrapr}
HOST=${SCRAPR_PUBLIC_HOST:-127.0.0.1}
CD_PORT=${CONFIG_DISCOVERY_PORT:-3003}
WAIT=${SCRAPR_UP_TIMEOUT:-240}
export SCRAPR_PUBLIC_HOST="$HOST"
# The demo site lives on the stack's private network, which the scraper's SSRF
# guard refuses by default; the demo allows it (unset it for public targets only).
export SCRAPR_ALLOW_PRIVATE_TARGETS=${SCRAPR_ALLOW_PRIVATE_TARGETS:-1}

. "$ROOT/deploy/lib/swarm.sh"
say() { echo "up: $*"; }

"$ROOT/scripts/deps.sh" --apt
"$ROOT/deploy/images.sh"

if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != "active" ]; then
    addr=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
    say "starting a single-node Swarm (advertise ${addr:-127.0.0.1})"
    docker swarm init --advertise-addr "${addr:-127.0.0.1}" >/dev/null
fi

say "deploying stack $STACK"
swarm_deploy "" "$ROOT/deploy/stack.yml"

auth=""
[ -n "${SCRAPR_API_TOKEN:-}" ] && auth="Authorization: Bearer $SCRAPR_API_TOKEN"
CD="http://$HOST:$CD_PORT"
deadline=$(($(date +%s) + WAIT))
until curl -fsS "$CD/health" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "config-discovery did not become healthy"; exit 1; }
    sleep 1
done
say "config-discovery healthy"

# Apply the demo configuration once (re-running make up keeps the existing one).
if ! curl -fsS "$CD/configurations?type=scraper&collection=quotes" | grep -q '"_id"'; then
    code=$(curl -sS -o /tmp/scrapr-up.json -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        ${auth:+-H "$auth"} --data-binary @"$ROOT/deploy/demo-site/quotes.json" "$CD/configurations")
    case $code in 20*) ;; *) say "POST /configurations answered $code: $(cat /tmp/scrapr-up.json)"; exit 1 ;; esac
    say "demo configuration applied"
fi

url=""
while :; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "the quotes endpoint did not serve items within ${WAIT}s"; exit 1; }
    # Read again each time: after a redeploy the recorded URL is the old
    # deployment's until the orchestrator records the new one.
    url=$(curl -fsS "$CD/configurations?type=endpoint&collection=quotes" 2>/dev/null \
        | python3 -c 'import json,sys; c=json.load(sys.stdin)["configurations"]; print(c[0].get("url") or "" if c else "")' 2>/dev/null || true)
    if [ -n "$url" ] && curl -fsS "$url" 2>/dev/null | grep -q '"text"'; then
        break
    fi
    sleep 1
done

echo
echo "config-discovery: $CD"
echo "endpoint quotes: $url"
echo "consul: http://$HOST:${CONSUL_PORT:-8500}/ui/"
echo
echo "try: curl -s '$url?limit=2'"
curl -fsS "$url?limit=2"
echo
