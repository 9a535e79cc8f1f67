#!/bin/sh
# Provisions a scrapr cluster the docker-machine way, as the original design
# did: a manager and N workers with the driver of your choice, Swarm formed,
# images moved to every node (docker save | docker load: no registry needed),
# the stack deployed, and where the APIs are printed.
#
#   deploy/provision.sh [--driver D] [--workers N] [--prefix P] [--dry-run] [-- DRIVER-OPTS...]
#     e.g. deploy/provision.sh --driver digitalocean --workers 2 -- --digitalocean-access-token=$T
#          deploy/provision.sh --driver generic --workers 0 -- --generic-ip-address=10.0.0.5 ...
#
# --dry-run prints every command instead of running it. Everything after the
# machines exist is the same code deploy/local-cluster.sh runs (deploy/lib/swarm.sh).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/deploy/lib/swarm.sh"
DRIVER=virtualbox
WORKERS=2
PREFIX=scrapr
DRY_RUN=0
while [ $# -gt 0 ]; do
    case $1 in
    --driver) DRIVER=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "provision: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
export DRY_RUN
case $WORKERS in '' | *[!0-9]*) echo "provision: --workers takes a number" >&2; exit 2 ;; esac
if [ "$DRY_RUN" != 1 ]; then
    command -v docker-machine >/dev/null 2>&1 || {
        echo "provision: docker-machine is not installed (it needs a VM or cloud driver)" >&2
        exit 1
    }
fi

machines="$PREFIX-manager"
i=1
while [ "$i" -le "$WORKERS" ]; do
    machines="$machines $PREFIX-worker-$i"
    i=$((i + 1))
done

# 1. Create the machines.
for m in $machines; do
    run docker-machine create --driver "$DRIVER" "$@" "$m"
done

# host_of MACHINE: the Docker host URL docker-machine gives for it (TLS env exported).
host_of() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ eval \"\$(docker-machine env --shell sh $1)\"" >&2
        echo "tcp://$1:2376"
        return 0
    fi
    eval "$(docker-machine env --shell sh "$1")"
    echo "$DOCKER_HOST"
}
ip_of() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "$1"
        return 0
    fi
    docker-machine ip "$1"
}

# 2. Images: built here once, moved to every node.
run "$ROOT/deploy/images.sh"
for m in $machines; do
    swarm_load_images "$(host_of "$m")"
done

# 3. Swarm: init on the manager, join the workers.
manager_ip=$(ip_of "$PREFIX-manager")
manager_host=$(host_of "$PREFIX-manager")
token=$(swarm_init "$manager_host" "$manager_ip")
for m in $machines; do
    [ "$m" = "$PREFIX-manager" ] && continue
    swarm_join "$(host_of "$m")" "$token" "$manager_ip"
done

# 4. The stack, then where things are.
SCRAPR_PUBLIC_HOST=$manager_ip swarm_deploy "$(host_of "$PREFIX-manager")" "$ROOT/deploy/stack.yml"
swarm_wait_healthy "http://$manager_ip:${CONFIG_DISCOVERY_PORT:-3003}" 300 || {
    echo "provision: config-discovery did not become healthy" >&2
    exit 1
}
echo "config-discovery: http://$manager_ip:${CONFIG_DISCOVERY_PORT:-3003}"
echo "consul: http://$manager_ip:${CONSUL_PORT:-8500}/ui/"
echo "endpoints: scraprctl --url http://$manager_ip:${CONFIG_DISCOVERY_PORT:-3003} endpoints"
