#!/bin/bash
# Orchestrator spares (engine driver; the real Docker engine, Consul and
# config-discovery on the test bed's FerretDB): a free spare scraper and
# endpoint, each with its Redis, run without CONFIG_ID; a new configuration is
# left to them (no units of its own) while they claim it through
# config-discovery's real claim API — as the real scrapr-scraper and
# scrapr-endpoint do when started without CONFIG_ID — and the orchestrator then
# adopts them: no restart, `container` stays the spare, the endpoint's URL is
# recorded, and a new free spare of each type is started. A configuration no
# spare claims gets units of its own after SCRAPR_SPARE_WAIT_SECONDS. Deleting
# an adopted configuration leaves exactly one free spare of each type.
set -euo pipefail
. "$(dirname "$0")/orchestrator_lib.sh"
ot_init os
trap ot_cleanup EXIT
OT_PORTS=$(ot_port_range 6)
WAIT_S=4
ot_start_cd
ot_start_orch a SCRAPR_SPARES=1 SCRAPR_SPARE_WAIT_SECONDS=$WAIT_S
ot_wait 15 "orchestrator a becomes leader" ot_is_leader "$OT_PORT_a"

SS="$OT_PREFIX-spare-scraper-0"
SE="$OT_PREFIX-spare-endpoint-0"
ot_step "free spares start before any configuration exists"
for n in "$SS" "$SS-redis" "$SE" "$SE-redis"; do ot_wait 40 "$n running" ot_running "$n"; done
envs=$(docker inspect -f '{{json .Config.Env}}' "$SS")
[[ $envs != *'"CONFIG_ID='* ]] || ot_fail "a spare got a CONFIG_ID: $envs"
for kv in "REDIS_URL=redis://$SS-redis:6379" "SERVICE_ADDRESS=$SS" "SCRAPR_REVISION_KEY=$OT_KV/revision"; do
    [[ $envs == *"\"$kv\""* ]] || ot_fail "spare env $kv missing in $envs"
done
[ "$(docker inspect -f '{{.Config.Hostname}}' "$SS")" = "$SS" ] || ot_fail "spare hostname is not its name"
[ "$(ot_label "$SS" scrapr.spare)" = 1 ] || ot_fail "spare label"
ot_wait 20 "/status counts one running free spare of each type" bash -c \
    "curl -sf http://127.0.0.1:$OT_PORT_a/status | python3 -c 'import json,sys; s=json.load(sys.stdin)[\"state\"][\"spares\"]; sys.exit(0 if s[\"scraper\"][\"running\"]==1 and s[\"endpoint\"][\"running\"]==1 else 1)'"
ss_id=$(ot_cid "$SS"); se_id=$(ot_cid "$SE")
se_port=$(docker inspect -f '{{(index (index .HostConfig.PortBindings "3000/tcp") 0).HostPort}}' "$SE")

ot_step "a new configuration is left to the spares, which claim it; the orchestrator adopts them"
claim() { # claim TYPE CONTAINER → prints the claimed _id
    curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"type\":\"$1\",\"container\":\"$2\"}" "$OT_CD/configurations/claim" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])'
}
coll="spare-$OT_ID"
SID=$(ot_post_config "$(ot_scraper_config "$coll")") || ot_fail "POST /configurations"
EID=$(ot_endpoint_id "$coll") || ot_fail "no endpoint configuration for $coll"
sleep 1
ot_absent "$OT_PREFIX-scraper-$SID-0" || ot_fail "units created although a spare was free"
ot_absent "$OT_PREFIX-endpoint-$EID" || ot_fail "endpoint created although a spare was free"
[ "$(claim scraper "$SS")" = "$SID" ] || ot_fail "the spare scraper did not claim $SID"
[ "$(claim endpoint "$SE")" = "$EID" ] || ot_fail "the spare endpoint did not claim $EID"
ot_wait 30 "endpoint URL recorded for the adopted spare" \
    ot_field_is "$EID" url "http://127.0.0.1:$se_port/items"
for n in "$OT_PREFIX-spare-scraper-1" "$OT_PREFIX-spare-endpoint-1"; do
    ot_wait 40 "replacement free spare $n running" ot_running "$n"
done
sleep $((WAIT_S + 2)) # past the wait: still nothing of its own, nothing restarted
ot_absent "$OT_PREFIX-scraper-$SID-0" || ot_fail "adopted configuration got units of its own"
ot_absent "$OT_PREFIX-endpoint-$EID" || ot_fail "adopted endpoint configuration got units of its own"
ot_field_is "$SID" container "$SS" || ot_fail "container of $SID is $(ot_get_field "$SID" container)"
ot_field_is "$EID" container "$SE" || ot_fail "container of $EID is $(ot_get_field "$EID" container)"
[ "$(ot_cid "$SS")" = "$ss_id" ] && [ "$(ot_cid "$SE")" = "$se_id" ] || ot_fail "an adopted spare was recreated"
[ "$(ot_count --filter label=scrapr.spare=1)" = 8 ] || ot_fail "expected 8 spare containers, got $(ot_count --filter label=scrapr.spare=1)"

ot_step "a configuration no spare claims gets its own units after the wait"
t0=$SECONDS
coll2="own-$OT_ID"
SID2=$(ot_post_config "$(ot_scraper_config "$coll2")") || ot_fail "POST /configurations"
ot_wait 40 "own scraper of an unclaimed configuration" ot_running "$OT_PREFIX-scraper-$SID2-0"
echo "own units after $((SECONDS - t0)) s (wait $WAIT_S s)"
ot_wait 20 "container recorded" ot_field_is "$SID2" container "$OT_PREFIX-scraper-$SID2-0"
ot_running "$OT_PREFIX-spare-scraper-1" || ot_fail "the free spare went away"

ot_step "deleting the adopted configuration leaves one free spare of each type"
ot_delete_config "$SID"
ot_wait 40 "one free spare scraper left" bash -c \
    "[ \$(docker ps -q --filter label=scrapr.owner=$OT_OWNER --filter label=scrapr.spare=1 --filter label=scrapr.type=scraper --filter label=scrapr.role=app | wc -l) = 1 ]"
ot_wait 40 "one free spare endpoint left" bash -c \
    "[ \$(docker ps -q --filter label=scrapr.owner=$OT_OWNER --filter label=scrapr.spare=1 --filter label=scrapr.type=endpoint --filter label=scrapr.role=app | wc -l) = 1 ]"
ot_wait 20 "/status: one free spare of each type" bash -c \
    "curl -sf http://127.0.0.1:$OT_PORT_a/status | python3 -c 'import json,sys; s=json.load(sys.stdin)[\"state\"][\"spares\"]; sys.exit(0 if s[\"scraper\"][\"free\"]==1 and s[\"endpoint\"][\"free\"]==1 else 1)'"
echo "ok"
