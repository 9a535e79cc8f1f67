#!/bin/bash
# Orchestrator, swarm driver, on a single-node Swarm (initialised here when the
# engine is not in one, and left again afterwards), with the real
# config-discovery and Consul of the test bed: a configuration → its services
# (scraper + Redis, endpoint + Redis) with labels, env, restart policy and a
# published port from the range, the assignment recorded; a config change
# (version bump) updates the service in place (same ID, new spec); a killed
# task is rescheduled; kill -9 + restart → the same services; a deleted
# configuration's services are removed; a spare claimed through the claim API
# is adopted by relabelling its service without restarting its task.
set -euo pipefail
. "$(dirname "$0")/orchestrator_lib.sh"
ot_init os
SWARM_BEFORE=$(docker info -f '{{.Swarm.LocalNodeState}}')
GWBRIDGE_BEFORE=$(docker network ls -q --filter name=^docker_gwbridge$)
swarm_cleanup() {
    ot_cleanup
    if [ "$SWARM_BEFORE" = inactive ]; then
        docker swarm leave --force >/dev/null 2>&1 || true
        # swarm init made docker_gwbridge; leave the engine as we found it
        [ -n "$GWBRIDGE_BEFORE" ] || docker network rm docker_gwbridge >/dev/null 2>&1 || true
    fi
}
trap swarm_cleanup EXIT
if [ "$SWARM_BEFORE" = inactive ]; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
[ "$(docker info -f '{{.Swarm.ControlAvailable}}')" = true ] || ot_fail "this node is not a swarm manager"

OT_PORTS=$(ot_port_range 5)
OT_DRIVER=swarm
ot_start_cd
# The routing mesh (ingress) does not forward on this kind of sandboxed host
# (no IPVS); host-mode publishing is what we can check end to end here.
ot_start_orch a SCRAPR_PUBLISH_MODE=host
ot_wait 15 "leader" ot_is_leader "$OT_PORT_a"

svc_running() { # svc_running NAME: at least one running task
    docker service ps --filter desired-state=running --format '{{.CurrentState}}' "$1" 2>/dev/null | grep -q '^Running'
}
svc_absent() { ! docker service inspect "$1" >/dev/null 2>&1; }

ot_step "a configuration → services with labels, env, Redis, overlay network"
coll="quotes-$OT_ID"
SID=$(ot_post_config "$(ot_scraper_config "$coll")") || ot_fail "POST /configurations"
EID=$(ot_endpoint_id "$coll") || ot_fail "no endpoint configuration for $coll"
S="$OT_PREFIX-scraper-$SID-0"; E="$OT_PREFIX-endpoint-$EID"
for n in "$S" "$S-redis" "$E" "$E-redis"; do
    ot_wait 60 "service $n running" svc_running "$n"
done
labels=$(docker service inspect -f '{{json .Spec.Labels}}' "$S")
for kv in "\"scrapr.config-id\":\"$SID\"" '"scrapr.type":"scraper"' "\"scrapr.collection\":\"$coll\"" '"scrapr.version":"1"' \
    "\"scrapr.owner\":\"$OT_OWNER\"" '"scrapr.role":"app"'; do
    [[ $labels == *"$kv"* ]] || ot_fail "label $kv missing in $labels"
done
[ "$(docker service inspect -f '{{index .Spec.Labels "scrapr.role"}}' "$S-redis")" = redis ] || ot_fail "redis role label"
envs=$(docker service inspect -f '{{json .Spec.TaskTemplate.ContainerSpec.Env}}' "$S")
[[ $envs == *"\"REDIS_URL=redis://$S-redis:6379\""* ]] || ot_fail "REDIS_URL in $envs"
[[ $envs == *"\"CONFIG_ID=$SID\""* ]] || ot_fail "CONFIG_ID in $envs"
[ "$(docker service inspect -f '{{.Spec.TaskTemplate.RestartPolicy.Condition}}' "$S")" = any ] || ot_fail "restart policy"
[ "$(docker network inspect -f '{{.Driver}} {{.Attachable}}' "$OT_NET")" = "overlay true" ] || ot_fail "network is not an attachable overlay"
[ "$(docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "$E")" = 1 ] || ot_fail "endpoint replicas"
[ "$(docker service inspect -f '{{range .Spec.EndpointSpec.Ports}}{{.PublishMode}}{{end}}' "$E")" = host ] || ot_fail "publish mode"
port=$(docker service inspect -f '{{range .Endpoint.Ports}}{{.PublishedPort}}{{end}}' "$E")
lo=${OT_PORTS%-*}; hi=${OT_PORTS#*-}
((port >= lo && port <= hi)) || ot_fail "published port '$port' outside $OT_PORTS"
ot_wait 30 "scraper assignment recorded" ot_field_is "$SID" container "$S"
ot_wait 30 "endpoint URL recorded" ot_field_is "$EID" url "http://127.0.0.1:$port/items"
[ "$(ot_get_field "$EID" container)" = "$E" ] || ot_fail "endpoint container not recorded"
ot_wait 30 "endpoint answers on its published port" curl -sf "http://127.0.0.1:$port/health"

ot_step "a config change (version bumped) updates the service in place"
sid_before=$(docker service inspect -f '{{.ID}}' "$S")
hash_before=$(docker service inspect -f '{{index .Spec.Labels "scrapr.config-hash"}}' "$S")
redis_ver=$(docker service inspect -f '{{.Version.Index}}' "$S-redis")
ot_patch_config "$SID" '{"ttl":30}'
ot_wait 20 "config hash label updated" bash -c "[ \"\$(docker service inspect -f '{{index .Spec.Labels \"scrapr.config-hash\"}}' $S)\" != $hash_before ]"
[ "$(docker service inspect -f '{{.ID}}' "$S")" = "$sid_before" ] || ot_fail "service was recreated, not updated"
[ "$(docker service inspect -f '{{.Version.Index}}' "$S-redis")" = "$redis_ver" ] || ot_fail "redis service was updated"
ot_wait 60 "updated service running" svc_running "$S"
v=$(ot_get_field "$SID" version)
[ "$(docker service inspect -f '{{index .Spec.Labels "scrapr.version"}}' "$S")" = "$v" ] || ot_fail "scrapr.version label, want $v"

ot_step "a killed task is rescheduled"
cid=$(docker ps -q --filter "label=com.docker.swarm.service.name=$S" | head -1)
[ -n "$cid" ] || ot_fail "no task container for $S"
docker rm -f "$cid" >/dev/null
ot_wait 60 "task rescheduled" bash -c "docker ps -q --filter label=com.docker.swarm.service.name=$S | grep -v $cid | grep -q ."

ot_step "endpoint replicas: one service, N tasks"
ot_patch_config "$EID" '{"replicas":2}'
ot_wait 20 "endpoint scaled" bash -c "[ \"\$(docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' $E)\" = 2 ]"

ot_step "kill -9 and restart: the same services, no duplicates"
before=$(docker service ls -q --filter "label=scrapr.owner=$OT_OWNER" | sort | tr '\n' ' ')
kill -9 "$OT_PID_a"
ot_start_orch a2 SCRAPR_PUBLISH_MODE=host
ot_wait 25 "restarted orchestrator leads" ot_is_leader "$OT_PORT_a2"
ot_wait 15 "restarted orchestrator has reconciled" ot_has_passed "$OT_PORT_a2"
after=$(docker service ls -q --filter "label=scrapr.owner=$OT_OWNER" | sort | tr '\n' ' ')
[ "$before" = "$after" ] || ot_fail "services changed across restart: $before vs $after"
[ "$(docker service ls -q --filter "label=scrapr.owner=$OT_OWNER" | wc -l)" -eq 4 ] || ot_fail "duplicate services"

ot_step "a deleted configuration → its services removed (and its collection's endpoint)"
ot_delete_config "$SID" || ot_fail "DELETE $SID"
for n in "$S" "$S-redis" "$E" "$E-redis"; do
    ot_wait 30 "service $n removed" svc_absent "$n"
done
[ "$(docker service ls -q --filter "label=scrapr.owner=$OT_OWNER" | wc -l)" -eq 0 ] || ot_fail "services left"

ot_step "spares: an adopted spare's service labels follow its configuration, its task is not restarted"
kill "$OT_PID_a2"
ot_start_orch sp SCRAPR_PUBLISH_MODE=host SCRAPR_SPARES=1 SCRAPR_SPARE_WAIT_SECONDS=30
ot_wait 25 "spare orchestrator leads" ot_is_leader "$OT_PORT_sp"
SS="$OT_PREFIX-spare-scraper-0"
for n in "$SS" "$SS-redis" "$OT_PREFIX-spare-endpoint-0" "$OT_PREFIX-spare-endpoint-0-redis"; do
    ot_wait 60 "spare service $n running" svc_running "$n"
done
task=$(docker service ps -q --filter desired-state=running "$SS")
coll="spare-$OT_ID"
SID=$(ot_post_config "$(ot_scraper_config "$coll")") || ot_fail "POST /configurations"
claimed=$(curl -sf -X POST -H 'Content-Type: application/json' \
    -d "{\"type\":\"scraper\",\"container\":\"$SS\"}" "$OT_CD/configurations/claim" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])')
[ "$claimed" = "$SID" ] || ot_fail "claim returned $claimed, not $SID"
ot_wait 30 "adopted spare's service labelled with its configuration" bash -c \
    "[ \"\$(docker service inspect -f '{{index .Spec.Labels \"scrapr.config-id\"}} {{index .Spec.Labels \"scrapr.collection\"}}' $SS)\" = '$SID $coll' ]"
ot_wait 60 "a new free spare scraper" svc_running "$OT_PREFIX-spare-scraper-1"
[ "$(docker service ps -q --filter desired-state=running "$SS")" = "$task" ] || ot_fail "the adopted spare's task was restarted"
[ "$(docker inspect -f '{{index .Config.Labels "scrapr.config-id"}}' "$(docker ps -q --filter "label=com.docker.swarm.service.name=$SS")")" = "" ] ||
    ot_fail "the task's container labels changed"
svc_absent "$OT_PREFIX-scraper-$SID-0" || ot_fail "adopted configuration got a service of its own"
ot_delete_config "$SID" || ot_fail "DELETE $SID"
ot_wait 30 "the adopted spare removed with its configuration" svc_absent "$SS"
echo "PASS"
