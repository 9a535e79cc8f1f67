#!/bin/bash
# bench/e2e: configuration POST → first item visible at the collection's public
# endpoint, over N fresh collections on the running single-node Swarm (`make up`
# first), printed beside the peer: a plain `docker run` of the scraper image
# doing one scrape of the same page (`scrapr-scraper --once`) until its first item.
# Each run's configuration is deleted after it, and the next run starts once
# the orchestrator's free spares (SCRAPR_SPARES, docs/orchestrator.md) run
# again, so every run meets the steady state a user meets, not the previous
# run's leftovers.
#   bench/e2e/run.sh [N]   (default 10)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-10}
CD=${SCRAPR_CONFIG_DISCOVERY_URL:-http://127.0.0.1:${CONFIG_DISCOVERY_PORT:-3003}}
curl -fsS "$CD/health" >/dev/null || { echo "config-discovery not reachable at $CD: run make up first" >&2; exit 1; }
auth=()
[ -n "${SCRAPR_API_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $SCRAPR_API_TOKEN")
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
config() { # config COLLECTION
    printf '{"collection":"%s","ttl":60,"source":{"url":"http://demo-site/","type":"html"},"scope":"div.quote","fields":{"text":"span.text","author":"small.author"},"key":["text"]}' "$1"
}
pct() { # pct P < numbers
    sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if(i<1)i=1; printf "%.2f", a[i]}'
}

# Free spare services (labels name no configuration) not yet running; "none"
# when the stack runs no spares at all.
spares_starting() {
    local total=0 starting=0 id cid reps
    while read -r id reps; do
        [ -n "$id" ] || continue
        cid=$(docker service inspect -f '{{index .Spec.Labels "scrapr.config-id"}}' "$id" 2>/dev/null) || continue
        [ -z "$cid" ] || continue
        total=$((total + 1))
        [ "$reps" = 1/1 ] || starting=$((starting + 1))
    done < <(docker service ls --filter label=scrapr.spare=1 --format '{{.ID}} {{.Replicas}}')
    if [ "$total" = 0 ]; then echo none; else echo "$starting"; fi
}
wait_spares() {
    local deadline=$((SECONDS + 180)) st
    while st=$(spares_starting); [ "$st" != none ] && [ "$st" != 0 ]; do
        ((SECONDS < deadline)) || { echo "spares still starting after 180 s" >&2; return; }
        sleep 0.5
    done
}

ours=() peer=() ids=()
cfgfile=$(mktemp)
trap 'rm -f "$cfgfile"; for id in "${ids[@]}"; do curl -sS -o /dev/null -X DELETE "${auth[@]}" "$CD/configurations/$id" || true; done' EXIT
for i in $(seq 1 "$N"); do
    c="bench$$x$i"
    wait_spares
    # The client must not be what is measured: on 2 cores a python3 start per
    # poll cost more than the system under test, so the loop is curl + sed only.
    t0=$(now)
    id=$(config "$c" | curl -fsS -X POST -H 'Content-Type: application/json' "${auth[@]}" --data-binary @- "$CD/configurations" |
        sed -n 's/.*"_id":"\([0-9a-f]*\)".*/\1/p')
    [ -n "$id" ] || { echo "POST /configurations gave no _id" >&2; exit 1; }
    ids+=("$id")
    url=""
    while :; do
        if [ -z "$url" ]; then
            url=$(curl -fsS "$CD/configurations?type=endpoint&collection=$c" | sed -n 's/.*"url":"\([^"]*\)".*/\1/p')
        fi
        if [ -n "$url" ] && curl -fsS -m 2 "$url?limit=1" 2>/dev/null | grep -q '"text"'; then
            break
        fi
        sleep 0.05
    done
    ours+=("$(since "$t0")")
    served_by=$(curl -fsS "$CD/configurations/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("container"))')
    curl -fsS -o /dev/null -X DELETE "${auth[@]}" "$CD/configurations/$id" || true
    # Peer: a plain docker run of the same image scraping the same page once,
    # on the same quiet machine (the replacement spares started first).
    config "$c" >"$cfgfile"
    wait_spares
    t0=$(now)
    docker run --rm -i --network scrapr -e SCRAPR_ALLOW_PRIVATE_TARGETS=1 --entrypoint sh scrapr/scraper:latest \
        -c 'cat > /tmp/c.json; exec scrapr-scraper --once /tmp/c.json' <"$cfgfile" 2>/dev/null | head -1 >/dev/null
    peer+=("$(since "$t0")")
    echo "run $i: scrapr ${ours[-1]} s (scraper $served_by), docker run ${peer[-1]} s" >&2
done
echo "bench/e2e: config POST -> first item at the public endpoint ($N runs, $(nproc) cores)"
echo "command: bench/e2e/run.sh $N   (spares: $(spares_starting | sed 's/^[0-9]*$/yes/'))"
printf '%-34s %8s %8s\n' "" "p50 (s)" "p95 (s)"
printf '%-34s %8s %8s\n' "scrapr (POST -> item at endpoint)" "$(printf '%s\n' "${ours[@]}" | pct 50)" "$(printf '%s\n' "${ours[@]}" | pct 95)"
printf '%-34s %8s %8s\n' "docker run scraper --once" "$(printf '%s\n' "${peer[@]}" | pct 50)" "$(printf '%s\n' "${peer[@]}" | pct 95)"
