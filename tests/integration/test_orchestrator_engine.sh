#!/bin/bash
# Orchestrator, engine driver, against the real Docker engine and Consul:
# a configuration → its containers with labels, env, Redis and network; the
# assignment is PUT back without causing a redeploy; a config change replaces
# the app but keeps its Redis; a removed/killed container is replaced; a
# deleted configuration is removed; kill -9 + restart → no duplicates; two
# orchestrators → one acts; the standby takes over within 10 s.
set -euo pipefail
. "$(dirname "$0")/orchestrator_lib.sh"
ot_init oe
trap ot_cleanup EXIT
OT_PORTS=$(ot_port_range 5)
ot_start_fake_cd
ot_start_orch a
ot_wait 15 "orchestrator a becomes leader" ot_is_leader "$OT_PORT_a"

echo "-- a new scraper configuration gets a scraper + its Redis with labels and env"
SID=$(ot_post_config '{"type":"scraper","collection":"quotes","ttl":60,"source":{"url":"http://site/"}}')
EID=$(ot_post_config '{"type":"endpoint","collection":"quotes","ttl":60}')
S="$OT_PREFIX-scraper-$SID-0"; E="$OT_PREFIX-endpoint-$EID"
ot_wait 20 "scraper $S running" ot_running "$S"
ot_wait 20 "redis $S-redis running" ot_running "$S-redis"
ot_wait 20 "endpoint $E running" ot_running "$E"
ot_wait 20 "endpoint redis running" ot_running "$E-redis"
labels=$(docker inspect -f '{{json .Config.Labels}}' "$S")
for kv in "\"scrapr.config-id\":\"$SID\"" '"scrapr.type":"scraper"' '"scrapr.collection":"quotes"' \
    '"scrapr.role":"app"' "\"scrapr.owner\":\"$OT_OWNER\"" '"scrapr.version":"1"' '"scrapr.config-hash"'; do
    [[ $labels == *"$kv"* ]] || ot_fail "label $kv missing in $labels"
done
[[ $(docker inspect -f '{{json .Config.Labels}}' "$S-redis") == *'"scrapr.role":"redis"'* ]] || ot_fail "redis role label"
envs=$(docker inspect -f '{{json .Config.Env}}' "$S")
for kv in "CONFIG_ID=$SID" "REDIS_URL=redis://$S-redis:6379" "SERVICE_ADDRESS=$S" "PORT=3002" \
    "CONSUL_HTTP_ADDR=consul.invalid:8500" "LOG_LEVEL=${OT_LOG_LEVEL:-info}" "LOG_FORMAT=text"; do
    [[ $envs == *"\"$kv\""* ]] || ot_fail "env $kv missing in $envs"
done
[ "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$S")" = unless-stopped ] || ot_fail "restart policy"
[[ $(docker inspect -f '{{json .NetworkSettings.Networks}}' "$S") == *"\"$OT_NET\""* ]] || ot_fail "network"
# The scraper reaches its own Redis by name on the network.
docker exec "$S" nslookup "$S-redis" >/dev/null 2>&1 || docker exec "$S" ping -c1 -W2 "$S-redis" >/dev/null || ot_fail "scraper cannot resolve its redis"

echo "-- the endpoint publishes a port from the range and its URL is recorded"
ot_wait 15 "endpoint url recorded" bash -c "curl -sf $OT_CD/configurations/$EID | grep -q '\"url\": \"http://127.0.0.1:'"
url=$(ot_get_field "$EID" url)
[ "$(ot_get_field "$EID" container)" = "$E" ] || ot_fail "endpoint container not recorded"
ot_wait 15 "scraper container recorded" bash -c "[ \"\$(curl -sf $OT_CD/configurations/$SID | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"container\"])')\" = $S ]"
port=${url##*:}; port=${port%%/*}
lo=${OT_PORTS%-*}; hi=${OT_PORTS#*-}
((port >= lo && port <= hi)) || ot_fail "port $port outside $OT_PORTS"
ot_wait 10 "endpoint answers on its published port" curl -sf "http://127.0.0.1:$port/health"

echo "-- our own PUT (version bump) does not redeploy"
s_id=$(ot_cid "$S"); r_id=$(ot_cid "$S-redis"); e_id=$(ot_cid "$E")
puts=$(curl -sf "$OT_CD/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["puts"])')
sleep 3
[ "$(ot_cid "$S")" = "$s_id" ] && [ "$(ot_cid "$E")" = "$e_id" ] || ot_fail "a PUT of container/url caused a redeploy"
puts2=$(curl -sf "$OT_CD/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["puts"])')
[ "$puts" = "$puts2" ] || ot_fail "orchestrator keeps PUTting ($puts → $puts2): loop"
[ "$(ot_count)" -eq 4 ] || ot_fail "expected 4 containers, got $(ot_count)"

echo "-- a configuration change replaces the app, keeps its Redis"
ot_put_config "$SID" '{"ttl":30}'
ot_wait 20 "scraper replaced" bash -c "[ \"\$(docker inspect -f '{{.Id}}' $S 2>/dev/null)\" != $s_id ] && [ \"\$(docker inspect -f '{{.State.Running}}' $S 2>/dev/null)\" = true ]"
[ "$(ot_cid "$S-redis")" = "$r_id" ] || ot_fail "redis was replaced on a config change"
[[ $(docker inspect -f '{{json .Config.Labels}}' "$S") == *'"scrapr.version":"'* ]] || ot_fail "version label"
s_id=$(ot_cid "$S")

echo "-- a removed container is replaced; a killed one too"
docker rm -f "$S" >/dev/null
ot_wait 15 "removed scraper re-created" ot_running "$S"
[ "$(ot_cid "$S")" != "$s_id" ] || ot_fail "not re-created"
docker stop -t 0 "$S-redis" >/dev/null
ot_wait 15 "stopped redis replaced" ot_running "$S-redis"

echo "-- replicas: 2 scrapers, each with its own Redis"
ot_put_config "$SID" '{"replicas":2}'
ot_wait 20 "second replica" ot_running "$OT_PREFIX-scraper-$SID-1"
ot_wait 20 "second replica redis" ot_running "$OT_PREFIX-scraper-$SID-1-redis"
[[ $(docker inspect -f '{{json .Config.Env}}' "$OT_PREFIX-scraper-$SID-1") == *"REDIS_URL=redis://$OT_PREFIX-scraper-$SID-1-redis:6379"* ]] || ot_fail "replica redis url"
ot_put_config "$SID" '{"replicas":1}'
ot_wait 20 "second replica removed" ot_absent "$OT_PREFIX-scraper-$SID-1"
ot_wait 20 "second replica redis removed" ot_absent "$OT_PREFIX-scraper-$SID-1-redis"

echo "-- kill -9 and restart: no duplicates, nothing replaced"
before=$(docker ps -q --filter "label=scrapr.owner=$OT_OWNER" | sort | tr '\n' ' ')
kill -9 "$OT_PID_a"
ot_start_orch a2
ot_wait 25 "restarted orchestrator leads" ot_is_leader "$OT_PORT_a2"
ot_wait 10 "restarted orchestrator has reconciled" ot_has_passed "$OT_PORT_a2"
after=$(docker ps -q --filter "label=scrapr.owner=$OT_OWNER" | sort | tr '\n' ' ')
[ "$before" = "$after" ] || ot_fail "containers changed across restart: $before vs $after"
[ "$(ot_count)" -eq 4 ] || ot_fail "duplicates: $(ot_count) containers"

echo "-- two orchestrators: one acts, the other stands by"
ot_start_orch b
sleep 2
[ "$(ot_role "$OT_PORT_a2")" = leader ] || ot_fail "a2 should lead"
[ "$(ot_role "$OT_PORT_b")" = standby ] || ot_fail "b should stand by"
X=$(ot_post_config '{"type":"scraper","collection":"other","ttl":60}')
ot_wait 20 "leader creates the new scraper" ot_running "$OT_PREFIX-scraper-$X-0"
grep -q "create unit=" "$OT_DIR/orch-b.log" && ot_fail "standby acted"
[ "$(ot_count)" -eq 6 ] || ot_fail "expected 6 containers, got $(ot_count)"

echo "-- leader killed: the standby takes over within 10 s"
kill -9 "$OT_PID_a2"
t0=$SECONDS
ot_wait 10 "standby becomes leader" ot_is_leader "$OT_PORT_b"
echo "takeover after $((SECONDS - t0)) s"
Y=$(ot_post_config '{"type":"scraper","collection":"third","ttl":60}')
ot_wait 20 "new leader acts" ot_running "$OT_PREFIX-scraper-$Y-0"

echo "-- a deleted configuration is removed"
ot_delete_config "$X"
ot_wait 20 "scraper removed" ot_absent "$OT_PREFIX-scraper-$X-0"
ot_wait 20 "its redis removed" ot_absent "$OT_PREFIX-scraper-$X-0-redis"
[ "$(ot_count)" -eq 6 ] || ot_fail "expected 6 containers, got $(ot_count)"
echo "PASS"
