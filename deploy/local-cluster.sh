#!/bin/sh
# A real N-node Docker Swarm on this one machine: each node is its own dockerd
# in a container (scrapr/node; --cap-add=ALL --cap-drop=SYS_RESOURCE instead of
# --privileged), images loaded on every node, the stack deployed on node 1.
#   deploy/local-cluster.sh up [N]    (default 3)
#   deploy/local-cluster.sh down
#   deploy/local-cluster.sh env       prints DOCKER_HOST for the manager
# SCRAPR_BUILD=0: use the scrapr/* images already built on this engine.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/deploy/lib/swarm.sh"
NET=scrapr-cluster
PREFIX=scrapr-node

node_ip() {
    docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$PREFIX-$1"
}

up() {
    n=${1:-3}
    # SCRAPR_BUILD=0 uses the scrapr/* images already on this engine as they are.
    if [ "${SCRAPR_BUILD:-1}" != 0 ]; then
        "$ROOT/deploy/images.sh"
        "$ROOT/deploy/images.sh" node
    elif ! docker image inspect scrapr/node:latest >/dev/null 2>&1; then
        "$ROOT/deploy/images.sh" node
    fi
    docker network inspect "$NET" >/dev/null 2>&1 || docker network create "$NET" >/dev/null
    for i in $(seq 1 "$n"); do
        docker inspect "$PREFIX-$i" >/dev/null 2>&1 && continue
        # Host cgroups (v1 is read-only inside a container) under a parent of its own.
        docker run -d --name "$PREFIX-$i" --hostname "node-$i" --network "$NET" \
            --cap-add=ALL --cap-drop=SYS_RESOURCE \
            --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
            -v /sys/fs/cgroup:/sys/fs/cgroup:rw --cgroupns=host \
            --label scrapr.cluster=local -v "$PREFIX-$i:/var/lib/docker" \
            scrapr/node:latest --cgroup-parent="/$PREFIX-$i" >/dev/null
    done
    for i in $(seq 1 "$n"); do
        h="tcp://$(node_ip "$i"):2375"
        t=0
        until docker --host "$h" info >/dev/null 2>&1; do
            t=$((t + 1))
            [ $t -lt 60 ] || { echo "local-cluster: node $i did not start" >&2; exit 1; }
            sleep 1
        done
        echo "local-cluster: loading images on node-$i"
        swarm_load_images "$h" &
    done
    wait
    m=$(node_ip 1)
    token=$(swarm_init "tcp://$m:2375" "$m")
    for i in $(seq 2 "$n"); do
        swarm_join "tcp://$(node_ip "$i"):2375" "$token" "$m"
    done
    SCRAPR_PUBLIC_HOST=$m SCRAPR_ALLOW_PRIVATE_TARGETS=${SCRAPR_ALLOW_PRIVATE_TARGETS:-1} \
        swarm_deploy "tcp://$m:2375" "$ROOT/deploy/stack.yml"
    # Host-mode ports: config-discovery answers on the node Swarm put it on.
    cd_addr=$(swarm_service_addr "tcp://$m:2375" "${SCRAPR_STACK:-scrapr}_config-discovery" 240) || {
        echo "local-cluster: config-discovery has no running task" >&2
        exit 1
    }
    swarm_wait_healthy "http://$cd_addr:${CONFIG_DISCOVERY_PORT:-3003}" 240 || {
        echo "local-cluster: config-discovery did not become healthy" >&2
        exit 1
    }
    echo "local-cluster: $n nodes up"
    echo "config-discovery: http://$cd_addr:${CONFIG_DISCOVERY_PORT:-3003}"
    echo "manager: DOCKER_HOST=tcp://$m:2375"
}

down() {
    ids=$(docker ps -aq --filter label=scrapr.cluster=local)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    vols=$(docker volume ls -q --filter name="$PREFIX-")
    [ -z "$vols" ] || docker volume rm $vols >/dev/null
    docker network rm "$NET" >/dev/null 2>&1 || true
    echo "local-cluster: down"
}

case "${1:-}" in
up) up "${2:-3}" ;;
down) down ;;
env) echo "DOCKER_HOST=tcp://$(node_ip 1):2375" ;;
*) echo "usage: $0 up [N] | down | env" >&2; exit 2 ;;
esac
