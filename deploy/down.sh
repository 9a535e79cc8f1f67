#!/bin/sh
# `make down`: removes the stack and everything the orchestrator spawned.
# Data volumes (MongoDB, Consul) are kept unless --volumes is given.
set -eu
STACK=${SCRAPR_STACK:-scrapr}
volumes=0
[ "${1:-}" = "--volumes" ] && volumes=1
docker stack rm "$STACK" >/dev/null 2>&1 || true
# The stack's services go asynchronously, and a stopping orchestrator may still
# create a unit (a replacement spare): remove what it spawned until the
# orchestrator's containers are gone and nothing spawned is left (bounded).
for _ in $(seq 1 60); do
    spawned=$(docker service ls -q --filter label=scrapr.type 2>/dev/null || true)
    [ -z "$spawned" ] || docker service rm $spawned >/dev/null 2>&1 || true
    orch=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_orchestrator" 2>/dev/null || true)
    [ -n "$orch" ] || [ -n "$spawned" ] || break
    sleep 1
done
containers=$(docker ps -aq --filter label=scrapr.type)
[ -z "$containers" ] || docker rm -f $containers >/dev/null
# The overlay network goes once its last service is gone.
for _ in $(seq 1 30); do
    docker network inspect scrapr >/dev/null 2>&1 || break
    docker network rm scrapr >/dev/null 2>&1 || sleep 1
done
if [ $volumes = 1 ]; then
    # Volumes can be removed once the stack's containers are gone.
    for v in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK"); do
        for _ in $(seq 1 30); do
            docker volume rm "$v" >/dev/null 2>&1 && break
            sleep 1
        done
    done
fi
echo "down: stack $STACK removed"
