#!/bin/bash
# Orchestrator, engine driver, against the real Docker engine, Consul and
# config-discovery (on the test bed's FerretDB): a new configuration → its
# scraper and endpoint containers with labels, env, Redis and network (an
# engine refusal is reported and retried with backoff); the assignment
# (`container`, the endpoint's `url`) is recorded with one PUT each and causes
# neither a redeploy nor a PUT loop (the versions stay put); a configuration
# change (version bump) replaces the app but keeps its Redis; a killed
# container runs again, a removed/stopped one is replaced; replicas up/down;
# kill -9 + restart → no duplicates; two orchestrators → one acts; the standby
# takes over within 10 s; a deleted configuration is removed.
set -euo pipefail
. "$(dirname "$0")/orchestrator_lib.sh"
ot_init oe
trap ot_cleanup EXIT
OT_PORTS=$(ot_port_range 5)
ot_start_cd
ot_start_orch a
ot_wait 15 "orchestrator a becomes leader" ot_is_leader "$OT_PORT_a"

ot_step "a new scraper configuration: scraper + its Redis, endpoint + its Redis, labels and env"
# The first endpoint port is held by another process: the engine refuses the
# endpoint's start, which the orchestrator reports with the engine's message
# and answers by moving the endpoint to another free port of the range (not
# by retrying the held one).
lo=${OT_PORTS%-*}; hi=${OT_PORTS#*-}
python3 -c 'import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); time.sleep(600)' "$lo" &
holder=$!
OT_PIDS+=($holder)
ot_wait 10 "port $lo held" bash -c "exec 3<>/dev/tcp/127.0.0.1/$lo"
coll="quotes-$OT_ID"
SID=$(ot_post_config "$(ot_scraper_config "$coll")") || ot_fail "POST /configurations"
EID=$(ot_endpoint_id "$coll") || ot_fail "no endpoint configuration for $coll"
S="$OT_PREFIX-scraper-$SID-0"
E="$OT_PREFIX-endpoint-$EID"
failures() { curl -sf "http://127.0.0.1:$1/metrics" | awk '/^scrapr_orchestrator_failures_total /{print $2}'; }
ot_wait 30 "the engine's refusal reported in /status" bash -c "curl -sf http://127.0.0.1:$OT_PORT_a/status | grep -q 'create $E: docker'"
for n in "$S" "$S-redis"; do ot_wait 30 "$n running" ot_running "$n"; done
for n in "$E" "$E-redis"; do ot_wait 40 "$n running on another port" ot_running "$n"; done
f0=$(failures "$OT_PORT_a"); sleep 4; f1=$(failures "$OT_PORT_a")
((${f1%.*} - ${f0%.*} == 0)) || ot_fail "still failing after the move: $f0 → $f1 failures in 4 s"
kill "$holder"
labels=$(docker inspect -f '{{json .Config.Labels}}' "$S")
for kv in "\"scrapr.config-id\":\"$SID\"" '"scrapr.type":"scraper"' "\"scrapr.collection\":\"$coll\"" \
    '"scrapr.role":"app"' "\"scrapr.owner\":\"$OT_OWNER\"" '"scrapr.version":"1"' '"scrapr.config-hash"'; do
    [[ $labels == *"$kv"* ]] || ot_fail "label $kv missing in $labels"
done
[ "$(ot_label "$S-redis" scrapr.role)" = redis ] || ot_fail "redis role label"
[ "$(ot_label "$E" scrapr.type)" = endpoint ] || ot_fail "endpoint type label"
[ "$(ot_label "$E" scrapr.config-id)" = "$EID" ] || ot_fail "endpoint config-id label"
envs=$(docker inspect -f '{{json .Config.Env}}' "$S")
for kv in "CONFIG_ID=$SID" "REDIS_URL=redis://$S-redis:6379" "SERVICE_ADDRESS=$S" "PORT=3002" \
    "CONSUL_HTTP_ADDR=consul.invalid:8500" "LOG_LEVEL=${OT_LOG_LEVEL:-info}" "LOG_FORMAT=text"; do
    [[ $envs == *"\"$kv\""* ]] || ot_fail "env $kv missing in $envs"
done
[[ $(docker inspect -f '{{json .Config.Env}}' "$E") == *"\"REDIS_URL=redis://$E-redis:6379\""* ]] ||
    ot_fail "endpoint REDIS_URL"
[ "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$S")" = unless-stopped ] || ot_fail "restart policy"
[[ $(docker inspect -f '{{json .NetworkSettings.Networks}}' "$S") == *"\"$OT_NET\""* ]] || ot_fail "network"
# The scraper reaches its own Redis by name on the network.
docker exec "$S" nslookup "$S-redis" >/dev/null 2>&1 || docker exec "$S" ping -c1 -W2 "$S-redis" >/dev/null ||
    ot_fail "scraper cannot resolve its redis"

ot_step "the assignment is recorded once; the endpoint publishes a port from the range"
ot_wait 20 "scraper container recorded" ot_field_is "$SID" container "$S"
ot_wait 20 "endpoint container recorded" ot_field_is "$EID" container "$E"
url=$(ot_get_field "$EID" url)
[[ $url == http://127.0.0.1:*/items ]] || ot_fail "endpoint url '$url'"
port=${url##*:}; port=${port%%/*}
[ "$port" = "$((lo + 1))" ] || ot_fail "endpoint port $port, want $((lo + 1)): the first free one after the held $lo"
ot_wait 10 "endpoint answers at its recorded url" curl -sf "http://127.0.0.1:$port/health"
# POST made version 1; the orchestrator's one PUT (container, url) version 2 —
# the endpoint's maybe 3: a URL on the held port may have been recorded first.
[ "$(ot_get_field "$SID" version)" = 2 ] || ot_fail "scraper config version $(ot_get_field "$SID" version), want 2"
ev=$(ot_get_field "$EID" version)
[ "$ev" = 2 ] || [ "$ev" = 3 ] || ot_fail "endpoint config version $ev, want 2 (or 3 after the move)"

ot_step "our own PUT (a version bump) neither redeploys nor loops"
s_id=$(ot_cid "$S"); r_id=$(ot_cid "$S-redis"); e_id=$(ot_cid "$E")
sleep 3
[ "$(ot_cid "$S")" = "$s_id" ] && [ "$(ot_cid "$E")" = "$e_id" ] || ot_fail "the assignment PUT caused a redeploy"
[ "$(ot_get_field "$SID" version)" = 2 ] && [ "$(ot_get_field "$EID" version)" = "$ev" ] ||
    ot_fail "versions keep moving (PUT loop): $(ot_get_field "$SID" version) $(ot_get_field "$EID" version)"
[ "$(ot_count)" -eq 4 ] || ot_fail "expected 4 containers, got $(ot_count)"

ot_step "a configuration change (version bumped) replaces the app, keeps its Redis"
ot_patch_config "$SID" '{"ttl":30}'
ot_wait 20 "scraper replaced" bash -c "[ \"\$(docker inspect -f '{{.Id}}' $S 2>/dev/null)\" != $s_id ] && [ \"\$(docker inspect -f '{{.State.Running}}' $S 2>/dev/null)\" = true ]"
[ "$(ot_cid "$S-redis")" = "$r_id" ] || ot_fail "redis was replaced on a config change"
v=$(ot_get_field "$SID" version)
[ "$v" = 3 ] || ot_fail "version after the user's PUT: $v, want 3"
[ "$(ot_label "$S" scrapr.version)" = "$v" ] || ot_fail "scrapr.version label $(ot_label "$S" scrapr.version), want $v"
[ "$(ot_get_field "$SID" container)" = "$S" ] || ot_fail "assignment lost on update"
s_id=$(ot_cid "$S")

ot_step "a killed container runs again; a removed one is re-created; a stopped one replaced"
pid=$(docker inspect -f '{{.State.Pid}}' "$S")
kill -9 "$pid"
ot_wait 15 "killed scraper running again" bash -c "[ \"\$(docker inspect -f '{{.State.Running}} {{.State.Pid}}' $S 2>/dev/null)\" != 'true $pid' ] && [ \"\$(docker inspect -f '{{.State.Running}}' $S 2>/dev/null)\" = true ]"
s_id=$(ot_cid "$S")
docker rm -f "$S" >/dev/null
ot_wait 15 "removed scraper re-created" ot_running "$S"
[ "$(ot_cid "$S")" != "$s_id" ] || ot_fail "not re-created"
docker stop -t 0 "$S-redis" >/dev/null
ot_wait 15 "stopped redis replaced" ot_running "$S-redis"
s_id=$(ot_cid "$S")

ot_step "replicas: 2 scrapers, each with its own Redis; scaling keeps replica 0"
S1="$OT_PREFIX-scraper-$SID-1"
ot_patch_config "$SID" '{"replicas":2}'
ot_wait 20 "second replica" ot_running "$S1"
ot_wait 20 "second replica redis" ot_running "$S1-redis"
[[ $(docker inspect -f '{{json .Config.Env}}' "$S1") == *"REDIS_URL=redis://$S1-redis:6379"* ]] || ot_fail "replica redis url"
ot_wait 15 "both replicas recorded" ot_field_is "$SID" container "$S,$S1"
ot_patch_config "$SID" '{"replicas":1}'
ot_wait 20 "second replica removed" ot_absent "$S1"
ot_wait 20 "second replica redis removed" ot_absent "$S1-redis"
ot_wait 15 "one replica recorded" ot_field_is "$SID" container "$S"
[ "$(ot_cid "$S")" = "$s_id" ] || ot_fail "scaling replaced replica 0"

ot_step "kill -9 and restart: no duplicates, nothing replaced"
before=$(docker ps -q --filter "label=scrapr.owner=$OT_OWNER" | sort | tr '\n' ' ')
v_before=$(ot_get_field "$SID" version)
kill -9 "$OT_PID_a"
ot_start_orch a2
ot_wait 25 "restarted orchestrator leads" ot_is_leader "$OT_PORT_a2"
ot_wait 10 "restarted orchestrator has reconciled" ot_has_passed "$OT_PORT_a2"
after=$(docker ps -q --filter "label=scrapr.owner=$OT_OWNER" | sort | tr '\n' ' ')
[ "$before" = "$after" ] || ot_fail "containers changed across restart: $before vs $after"
[ "$(ot_count)" -eq 4 ] || ot_fail "duplicates: $(ot_count) containers"
[ "$(ot_get_field "$SID" version)" = "$v_before" ] || ot_fail "restart rewrote the assignment"

ot_step "two orchestrators: one acts, the other stands by"
ot_start_orch b
sleep 2
[ "$(ot_role "$OT_PORT_a2")" = leader ] || ot_fail "a2 should lead"
[ "$(ot_role "$OT_PORT_b")" = standby ] || ot_fail "b should stand by"
X=$(ot_post_config "$(ot_scraper_config "other-$OT_ID")") || ot_fail "POST other"
XE=$(ot_endpoint_id "other-$OT_ID")
ot_wait 30 "leader creates the new scraper" ot_running "$OT_PREFIX-scraper-$X-0"
ot_wait 30 "leader creates the new endpoint" ot_running "$OT_PREFIX-endpoint-$XE"
ot_wait 15 "new scraper recorded" ot_field_is "$X" container "$OT_PREFIX-scraper-$X-0"
grep -q "create unit=" "$OT_DIR/orch-b.log" && ot_fail "standby acted"
ot_wait 15 "8 containers" bash -c "[ \$(docker ps -aq --filter label=scrapr.owner=$OT_OWNER | wc -l) -eq 8 ]"

ot_step "leader killed: the standby takes over within 10 s"
kill -9 "$OT_PID_a2"
t0=$SECONDS
ot_wait 10 "standby becomes leader" ot_is_leader "$OT_PORT_b"
echo "takeover after $((SECONDS - t0)) s"
Y=$(ot_post_config "$(ot_scraper_config "third-$OT_ID")") || ot_fail "POST third"
ot_wait 30 "new leader acts" ot_running "$OT_PREFIX-scraper-$Y-0"
ot_wait 15 "new leader records" ot_field_is "$Y" container "$OT_PREFIX-scraper-$Y-0"

ot_step "a deleted configuration is removed (with its collection's endpoint)"
ot_delete_config "$X" || ot_fail "DELETE $X"
for n in "$OT_PREFIX-scraper-$X-0" "$OT_PREFIX-scraper-$X-0-redis" "$OT_PREFIX-endpoint-$XE" "$OT_PREFIX-endpoint-$XE-redis"; do
    ot_wait 30 "$n removed" ot_absent "$n"
done
[ "$(ot_count)" -eq 8 ] || ot_fail "expected 8 containers, got $(ot_count)"
echo "PASS"
