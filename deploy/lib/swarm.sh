# Steps shared by deploy/provision.sh (docker-machine) and deploy/local-cluster.sh
# once the machines exist: move images, form the Swarm, deploy the stack, wait.
# Each function takes the Docker host to talk to (tcp://ip:port; TLS settings
# come from DOCKER_TLS_VERIFY / DOCKER_CERT_PATH as for the docker CLI).
# With DRY_RUN=1 every command is printed instead of run.

SCRAPR_IMAGES="scrapr/scraper scrapr/endpoint scrapr/datasource scrapr/config-discovery
scrapr/orchestrator scrapr/redis scrapr/consul scrapr/mongo scrapr/demo-site"

run() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ $*" >&2
    else
        "$@"
    fi
}

# swarm_load_images HOST: copies every scrapr image onto HOST (no registry needed).
swarm_load_images() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ docker save $(echo $SCRAPR_IMAGES) | docker --host $1 load" >&2
        return 0
    fi
    # shellcheck disable=SC2086
    docker save $SCRAPR_IMAGES | docker --host "$1" load -q >/dev/null
}

# swarm_init HOST ADDR: makes HOST a manager advertising ADDR; prints the worker join token.
swarm_init() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ docker --host $1 swarm init --advertise-addr $2" >&2
        echo "+ docker --host $1 swarm join-token -q worker" >&2
        echo "SWMTKN-dry-run"
        return 0
    fi
    if [ "$(docker --host "$1" info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
        docker --host "$1" swarm init --advertise-addr "$2" >/dev/null
    fi
    docker --host "$1" swarm join-token -q worker
}

# swarm_join HOST TOKEN MANAGER_ADDR
swarm_join() {
    if [ "${DRY_RUN:-0}" != 1 ] &&
        [ "$(docker --host "$1" info -f '{{.Swarm.LocalNodeState}}')" = active ]; then
        return 0
    fi
    run docker --host "$1" swarm join --token "$2" "$3:2377" >/dev/null
}

# swarm_deploy HOST STACK_FILE: deploys (or updates) the stack on the manager HOST
# ("" = the local engine). Docker's "--detach=false was not specified" notice is
# dropped; real errors still reach stderr.
swarm_deploy() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ docker ${1:+--host $1 }stack deploy --prune -c $2 ${SCRAPR_STACK:-scrapr}" >&2
        return 0
    fi
    _log=$(mktemp)
    if ! docker ${1:+--host "$1"} stack deploy --prune -c "$2" "${SCRAPR_STACK:-scrapr}" >/dev/null 2>"$_log"; then
        cat "$_log" >&2
        rm -f "$_log"
        return 1
    fi
    grep -v -e 'detach=false' -e 'will become the default' "$_log" >&2 || true
    rm -f "$_log"
}

# swarm_wait_healthy URL SECONDS: waits until URL/health answers 200.
swarm_wait_healthy() {
    [ "${DRY_RUN:-0}" = 1 ] && { echo "+ wait for $1/health" >&2; return 0; }
    _deadline=$(($(date +%s) + $2))
    until curl -fsS "$1/health" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$_deadline" ] || return 1
        sleep 1
    done
}

# swarm_node_addr HOST NODE: the address NODE (ID or hostname) is reached on
# (Status.Addr; a manager may report 0.0.0.0 there, then ManagerStatus.Addr).
swarm_node_addr() {
    _a=$(docker --host "$1" node inspect -f '{{.Status.Addr}}' "$2") || return 1
    if [ -z "$_a" ] || [ "$_a" = 0.0.0.0 ]; then
        _a=$(docker --host "$1" node inspect -f '{{if .ManagerStatus}}{{.ManagerStatus.Addr}}{{end}}' "$2")
        _a=${_a%:*}
    fi
    [ -n "$_a" ] && echo "$_a"
}

# swarm_task_node HOST SERVICE: node ID of SERVICE's first running task on the
# manager HOST (nothing when none runs).
swarm_task_node() {
    docker --host "$1" service ps -q --no-trunc --filter desired-state=running "$2" 2>/dev/null |
        while read -r _t; do
            docker --host "$1" inspect -f '{{.Status.State}} {{.NodeID}}' "$_t" 2>/dev/null
        done | awk '$1 == "running" { print $2; exit }'
}

# swarm_service_addr HOST SERVICE SECONDS: waits until SERVICE has a running
# task and prints the address of its node. With host-mode published ports (no
# routing mesh, see docs/deploy.md) that is the only node answering on them.
swarm_service_addr() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ docker --host $1 service ps $2; docker node inspect <its node>" >&2
        echo "${1#tcp://}" | cut -d: -f1
        return 0
    fi
    _deadline=$(($(date +%s) + $3))
    while :; do
        _n=$(swarm_task_node "$1" "$2")
        if [ -n "$_n" ] && swarm_node_addr "$1" "$_n"; then
            return 0
        fi
        [ "$(date +%s)" -lt "$_deadline" ] || return 1
        sleep 1
    done
}
