#!/bin/bash
# End to end on a 3-node local Swarm (deploy/local-cluster.sh: each node its own
# dockerd in a container): the demo configuration → the quotes endpoint serves
# the demo site's 12 items at the URL recorded in its configuration → the worker
# node running the endpoint (else the scraper) is killed (`docker rm -f`) →
# Swarm marks it down and reschedules its tasks → within 60 s the endpoint
# answers again, at the URL now recorded (host-mode ports: the new node's
# address), with all 12 items (none lost). Prints the timings.
#
# Talks only to the cluster's own dockerds (tcp://<node>:2375), never to the
# host engine's Swarm. Builds the scrapr/* images first like `make up` does
# (cached); SCRAPR_BUILD=0 uses the ones already on the host engine as they are.
# SCRAPR_IMAGE_<SERVICE> (e.g. SCRAPR_IMAGE_ORCHESTRATOR=scrapr/orchestrator:mytag)
# pick another tag for a stack service; every tag of scrapr/* is copied to the nodes.
set -euo pipefail
. "$(dirname "$0")/e2e_lib.sh"

LC="$ROOT/deploy/local-cluster.sh"
. "$ROOT/deploy/lib/swarm.sh"
STACK=${SCRAPR_STACK:-scrapr}
FAILOVER_LIMIT=${FAILOVER_LIMIT:-60}

cleanup() { "$LC" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup # leftovers of an earlier run

export SCRAPR_BUILD=${SCRAPR_BUILD:-1}
if [ "$SCRAPR_BUILD" = 0 ]; then
    for img in $SCRAPR_IMAGES; do
        docker image inspect "$img:latest" >/dev/null 2>&1 || fail "image $img missing: run deploy/images.sh"
    done
fi

log "local-cluster up 3"
t_up=$SECONDS
out=$("$LC" up 3 2>&1) || { echo "$out"; fail "local-cluster up failed"; }
echo "$out" | tail -4
up_s=$((SECONDS - t_up))
log "cluster up in ${up_s} s"
M=$(docker inspect -f '{{(index .NetworkSettings.Networks "scrapr-cluster").IPAddress}}' scrapr-node-1)
DH="tcp://$M:2375"
CD=$(sed -n 's/^config-discovery: //p' <<<"$out")
[ -n "$CD" ] || fail "local-cluster did not print the config-discovery URL"
[ "$(docker --host "$DH" node ls -q | wc -l)" = 3 ] || fail "expected 3 Swarm nodes"

# Where config-discovery answers now (host-mode port: the node running it).
cd_url() {
    local n a
    n=$(swarm_task_node "$DH" "${STACK}_config-discovery")
    [ -n "$n" ] && a=$(swarm_node_addr "$DH" "$n") || return 1
    echo "http://$a:${CONFIG_DISCOVERY_PORT:-3003}"
}
# The endpoint URL recorded in the quotes endpoint configuration.
recorded_url() {
    curl -fsS -m 3 "$CD/configurations?type=endpoint&collection=quotes" |
        python3 -c 'import json,sys; c=json.load(sys.stdin)["configurations"]; print(c[0].get("url") or "" if c else "")'
}
# Sorted item texts served at URL (fails on no answer).
texts_at() {
    curl -fsS -m 3 --connect-timeout 2 "$1" |
        python3 -c 'import json,sys; [print(i["text"]) for i in json.load(sys.stdin)]' | sort
}
want=$(demo_texts | sort)
[ "$(wc -l <<<"$want")" = 12 ] || fail "demo site should have 12 quotes"
serves_all() { [ "$(texts_at "$1" 2>/dev/null)" = "$want" ]; }

log "POST deploy/demo-site/quotes.json to $CD"
t_post=$SECONDS
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary @"$ROOT/deploy/demo-site/quotes.json" "$CD/configurations")
[[ $code == 20* ]] || fail "POST /configurations answered $code"

url=
deadline=$((SECONDS + 180))
until [ -n "$url" ] && serves_all "$url"; do
    ((SECONDS < deadline)) || fail "endpoint never served the 12 demo items (recorded url: ${url:-none})"
    sleep 1
    url=$(recorded_url 2>/dev/null || true)
done
first_s=$((SECONDS - t_post))
log "endpoint $url serves 12 items, ${first_s} s after the POST"

# Which nodes run the quotes endpoint and scraper (app units).
svc_of() {
    docker --host "$DH" service ls -q --filter "label=scrapr.type=$1" \
        --filter label=scrapr.collection=quotes --filter label=scrapr.role=app | head -1
}
host_of_node() { docker --host "$DH" node inspect -f '{{.Description.Hostname}}' "$1"; }
ep_svc=$(svc_of endpoint)
sc_svc=$(svc_of scraper)
[ -n "$ep_svc" ] && [ -n "$sc_svc" ] || fail "endpoint/scraper services not found"
# A task may be between states (restarting, updated): wait for a running one.
running_node() {
    local n deadline=$((SECONDS + 60))
    until n=$(swarm_task_node "$DH" "$1") && [ -n "$n" ]; do
        ((SECONDS < deadline)) || fail "service $1 has no running task"
        sleep 1
    done
    host_of_node "$n"
}
ep_node=$(running_node "$ep_svc")
sc_node=$(running_node "$sc_svc")
log "endpoint runs on $ep_node, scraper on $sc_node (node-1 is the manager)"
ep_addr=$(swarm_node_addr "$DH" "$ep_node")
if [ "$ep_node" != node-1 ]; then
    [ "$url" = "http://$ep_addr:${url##*:}" ] ||
        fail "recorded url $url does not name the endpoint's node $ep_node ($ep_addr)"
fi

victim=
for n in "$ep_node" "$sc_node"; do
    if [ "$n" != node-1 ]; then
        victim=$n
        break
    fi
done
[ -n "$victim" ] || fail "both endpoint and scraper run on the manager: nothing on a worker to kill"
k=${victim#node-}
log "killing worker $victim (container scrapr-node-$k)"
t_kill=$SECONDS
docker rm -f "scrapr-node-$k" >/dev/null

down_s= moved_s= url_s= ok_s=
deadline=$((SECONDS + FAILOVER_LIMIT))
new_url=$url
while :; do
    el=$((SECONDS - t_kill))
    if [ -z "$down_s" ] &&
        [ "$(docker --host "$DH" node inspect -f '{{.Status.State}}' "$victim" 2>/dev/null)" = down ]; then
        down_s=$el
        log "+${el} s: Swarm marks $victim down"
    fi
    if [ -z "$moved_s" ]; then
        n=$(swarm_task_node "$DH" "$ep_svc")
        if [ -n "$n" ] && [ "$(host_of_node "$n")" != "$victim" ]; then
            moved_s=$el
            log "+${el} s: endpoint task running on $(host_of_node "$n")"
        fi
    fi
    c=$(cd_url 2>/dev/null) && CD=$c
    u=$(recorded_url 2>/dev/null || true)
    if [ -n "$u" ] && [ "$u" != "$new_url" ]; then
        new_url=$u
        url_s=$el
        log "+${el} s: recorded url is now $new_url"
    fi
    if [ -n "$new_url" ] && serves_all "$new_url"; then
        ok_s=$((SECONDS - t_kill))
        # Only a success once the victim's tasks are really gone from it.
        [ "$ep_node" != "$victim" ] || [ "$new_url" != "$url" ] || ok_s=
        [ -z "$ok_s" ] || break
    fi
    ((SECONDS < deadline)) || break
    sleep 1
done
log "timings: cluster up ${up_s} s; POST → 12 items ${first_s} s; after kill of $victim:" \
    "node down ${down_s:-?} s, endpoint task moved ${moved_s:-n/a} s, url re-recorded ${url_s:-n/a} s," \
    "12 items served again ${ok_s:-never} s (limit ${FAILOVER_LIMIT} s)"
[ -n "$ok_s" ] || fail "the endpoint did not serve the 12 items again within ${FAILOVER_LIMIT} s (recorded url $new_url)"
got=$(texts_at "$new_url")
[ "$got" = "$want" ] || { diff <(echo "$want") <(echo "$got") || true; fail "items lost or changed after the failover"; }
log "ok"
