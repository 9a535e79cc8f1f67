#!/bin/bash
# End to end on a single-node Swarm, through `make up`'s own script:
# the demo configuration → within seconds a scraper and an endpoint run and the
# endpoint serves exactly the demo site's items; a second configuration for the
# same collection adds a scraper, not an endpoint; a change on the site shows at
# the endpoint after the next scrape; a new collection is claimed by the spare
# scraper and endpoint and served within seconds; DELETE → the spawned services go.
set -euo pipefail
. "$(dirname "$0")/e2e_lib.sh"

was_active=$(docker info -f '{{.Swarm.LocalNodeState}}')
export SCRAPR_STACK=scrapre2e
export CONFIG_DISCOVERY_PORT=$(free_port) DATASOURCE_PORT=$(free_port) CONSUL_PORT=$(free_port)
export SCRAPR_ENDPOINT_PORTS=$(free_range 21)
CD="http://127.0.0.1:$CONFIG_DISCOVERY_PORT"
cleanup() {
    "$ROOT/deploy/down.sh" --volumes >/dev/null 2>&1 || true
    if [ "$was_active" != active ]; then
        sleep 2
        docker swarm leave --force >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
"$ROOT/deploy/down.sh" --volumes >/dev/null 2>&1 || true # leftovers of an earlier run

log "make up (deploy/up.sh)"
start=$SECONDS
out=$("$ROOT/deploy/up.sh" 2>&1) || { echo "$out"; fail "deploy/up.sh failed"; }
echo "$out" | tail -8
log "up took $((SECONDS - start)) s"
grep -q "^config-discovery: $CD" <<<"$out" || fail "up did not print the config-discovery URL"
url=$(sed -n 's/^endpoint quotes: //p' <<<"$out")
[ -n "$url" ] || fail "up did not print the endpoint URL"

# Exactly the demo site's items, with the followed field filled.
wait_until 60 "all demo quotes at the endpoint" bash -c \
    "[ \$(curl -fsS '$url' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') -ge 12 ]"
got=$(curl -fsS "$url" | python3 -c 'import json,sys; [print(i["text"]) for i in json.load(sys.stdin)]' | sort)
want=$(demo_texts | sort)
[ "$got" = "$want" ] || { diff <(echo "$want") <(echo "$got") || true; fail "endpoint items differ from the demo site"; }
born=$(curl -fsS "$url" | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin) if i.get("born")))')
[ "$born" = 12 ] || fail "born (follow) filled on $born of 12 items"
[ "$(spawned scraper quotes)" -ge 1 ] || fail "no scraper service"
[ "$(spawned endpoint quotes)" = 1 ] || fail "expected one endpoint service"

# A second configuration for the same collection: one more scraper, no new endpoint.
log "second configuration for quotes"
second=$(curl -fsS -X POST -H 'Content-Type: application/json' "$CD/configurations" --data-binary @- <<'JSON' | python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])'
{"collection": "quotes", "ttl": 3, "source": {"url": "http://demo-site/page/3/", "type": "html"},
 "scope": "div.quote", "fields": {"text": "span.text", "author": "small.author"}, "key": ["text"]}
JSON
)
wait_until 90 "a second scraper service" bash -c ". $(dirname "$0")/e2e_lib.sh; [ \$(spawned scraper quotes) -ge 2 ]"
sleep 3
[ "$(spawned endpoint quotes)" = 1 ] || fail "the second configuration created another endpoint"
[ "$(json_get "$CD/configurations?type=endpoint&collection=quotes" 'j["total"]')" = 1 ] ||
    fail "more than one endpoint configuration for quotes"

# Change the site: a new quote on page 3 shows up after the next scrape.
log "changing the demo site"
site=$(docker ps -q --filter "label=com.docker.swarm.service.name=${SCRAPR_STACK}_demo-site" | head -1)
[ -n "$site" ] || fail "demo-site container not found"
docker exec "$site" sed -i 's|<nav>|<div class="quote"><span class="text">\xe2\x80\x9cE2E fresh quote.\xe2\x80\x9d</span><small class="author">Tester</small></div><nav>|' /srv/site/page/3/index.html
t0=$SECONDS
wait_until 90 "the new quote at the endpoint" bash -c "curl -fsS '$url' | grep -q 'E2E fresh quote'"
log "site change visible after $((SECONDS - t0)) s"

# A new collection once the spares run: claimed by the spare scraper and endpoint
# (no service of its own), served within seconds, with a replacement spare started.
log "a new collection, served by the spares"
free_spares_running() { # free spare apps (labels name no configuration) with a running task
    local n=0 id reps
    while read -r id reps; do
        [ -z "$(docker service inspect -f '{{index .Spec.Labels "scrapr.config-id"}}' "$id")" ] || continue
        [ "$reps" = 1/1 ] && n=$((n + 1))
    done < <(docker service ls --filter label=scrapr.spare=1 --filter label=scrapr.role=app --format '{{.ID}} {{.Replicas}}')
    echo "$n"
}
wait_until 120 "a free spare scraper and endpoint running" bash -c \
    "$(declare -f free_spares_running); [ \$(free_spares_running) -ge 2 ]"
t0=$(date +%s.%N)
sid=$(curl -fsS -X POST -H 'Content-Type: application/json' "$CD/configurations" --data-binary @- <<'JSON' | python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])'
{"collection": "sparequotes", "ttl": 60, "source": {"url": "http://demo-site/", "type": "html"},
 "scope": "div.quote", "fields": {"text": "span.text"}, "key": ["text"]}
JSON
)
deadline=$((SECONDS + 20))
until u=$(curl -fsS "$CD/configurations?type=endpoint&collection=sparequotes" | sed -n 's/.*"url":"\([^"]*\)".*/\1/p') &&
    [ -n "$u" ] && curl -fsS "$u" 2>/dev/null | grep -q '"text"'; do
    ((SECONDS < deadline)) || fail "sparequotes not served within 20 s of its POST"
    sleep 0.2
done
log "sparequotes served $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s after its POST"
container=$(json_get "$CD/configurations/$sid" 'j["container"]')
[[ $container == scrapr-spare-scraper-* ]] || fail "sparequotes was not claimed by a spare scraper: $container"
econtainer=$(json_get "$CD/configurations?type=endpoint&collection=sparequotes" 'j["configurations"][0]["container"]')
[[ $econtainer == scrapr-spare-endpoint-* ]] || fail "sparequotes' endpoint was not a spare: $econtainer"
wait_until 10 "the adopted spare labelled with its collection" bash -c \
    ". $(dirname "$0")/e2e_lib.sh; [ \$(spawned scraper sparequotes) = 1 ]"
wait_until 120 "replacement spares running" bash -c "$(declare -f free_spares_running); [ \$(free_spares_running) -ge 2 ]"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$CD/configurations/$sid")
[[ $code == 20* ]] || fail "DELETE $sid answered $code"
wait_until 60 "the adopted spares removed with their configuration" bash -c \
    "[ \$(docker service ls -q --filter label=scrapr.collection=sparequotes | wc -l) = 0 ]"

# DELETE both scraper configurations → their services go, and the endpoint's too.
log "deleting configurations"
for id in $(json_get "$CD/configurations?type=scraper&collection=quotes" '" ".join(c["_id"] for c in j["configurations"])'); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$CD/configurations/$id")
    [[ $code == 20* ]] || fail "DELETE $id answered $code"
done
wait_until 60 "spawned services removed" bash -c "[ \$(docker service ls -q --filter label=scrapr.collection=quotes | wc -l) = 0 ]"
log "ok"
