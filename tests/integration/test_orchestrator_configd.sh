#!/bin/bash
# Orchestrator (engine driver) with the real config-discovery (FerretDB +
# Consul from the test bed): POST a scraper configuration → config-discovery
# creates its endpoint configuration and bumps the revision key → the
# orchestrator runs a scraper + Redis and an endpoint + Redis, and PUTs
# `container` (and the endpoint's `url`) back; that PUT bumps `version` but
# causes no redeploy and no PUT loop; DELETE → everything removed.
set -euo pipefail
. "$(dirname "$0")/orchestrator_lib.sh"
ot_init oc
: "${MONGO_URL:?MONGO_URL is not set: run under tests/lib/testbed.sh}"
trap ot_cleanup EXIT
OT_PORTS=$(ot_port_range 3)
OT_CD_PORT=$(ot_free_port)
env PORT="$OT_CD_PORT" SERVICE_ADDRESS=127.0.0.1 MONGO_URL="${MONGO_URL%/}/t_orch_cd_$$" \
    "$SCRAPR_BIN_DIR/scrapr-config-discovery" >"$OT_DIR/cd.log" 2>&1 &
OT_PIDS+=($!)
OT_CD="http://127.0.0.1:$OT_CD_PORT"
ot_wait 30 "config-discovery" curl -sf "$OT_CD/health"
ot_start_orch a SCRAPR_REVISION_KEY=scrapr/revisions/configurations
ot_wait 15 "leader" ot_is_leader "$OT_PORT_a"

field() { curl -sf "$OT_CD/configurations/$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2'))"; }

coll="orchcd$$"
body="{\"collection\":\"$coll\",\"ttl\":60,\"source\":{\"url\":\"http://site.invalid/\",\"type\":\"html\"},\"scope\":\"div.quote\",\"fields\":{\"text\":\"span.text\"}}"
SID=$(curl -sf -X POST -H 'Content-Type: application/json' -d "$body" "$OT_CD/configurations" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])') || ot_fail "POST /configurations"
ot_wait 20 "endpoint configuration created" bash -c "curl -sf '$OT_CD/configurations?type=endpoint&collection=$coll' | grep -q '\"_id\"'"
EID=$(curl -sf "$OT_CD/configurations?type=endpoint&collection=$coll" | python3 -c 'import json,sys; print(json.load(sys.stdin)["configurations"][0]["_id"])')
S="$OT_PREFIX-scraper-$SID-0"; E="$OT_PREFIX-endpoint-$EID"
for n in "$S" "$S-redis" "$E" "$E-redis"; do ot_wait 30 "$n running" ot_running "$n"; done
ot_wait 20 "scraper assignment recorded" bash -c "[ \"\$(curl -sf $OT_CD/configurations/$SID | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"container\"])')\" = $S ]"
ot_wait 20 "endpoint url recorded" bash -c "curl -sf $OT_CD/configurations/$EID | grep -q 'http://127.0.0.1:'"
[ "$(field "$EID" container)" = "$E" ] || ot_fail "endpoint container"
url=$(field "$EID" url); port=${url##*:}; port=${port%%/*}
ot_wait 10 "endpoint answers at its recorded url" curl -sf "http://127.0.0.1:$port/health"

s_id=$(ot_cid "$S"); e_id=$(ot_cid "$E"); v=$(field "$SID" version)
sleep 4
[ "$(ot_cid "$S")" = "$s_id" ] && [ "$(ot_cid "$E")" = "$e_id" ] || ot_fail "assignment PUT caused a redeploy"
[ "$(field "$SID" version)" = "$v" ] || ot_fail "version keeps moving: PUT loop"
[ "$(ot_count)" -eq 4 ] || ot_fail "expected 4 containers, got $(ot_count)"

curl -sf -X DELETE "$OT_CD/configurations/$SID" >/dev/null || ot_fail "DELETE"
ot_wait 30 "scraper removed" ot_absent "$S"
ot_wait 30 "scraper redis removed" ot_absent "$S-redis"
echo "PASS"
