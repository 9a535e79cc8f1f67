#!/bin/bash
# scrapr-scraper --once over the fixture site: exact items on stdout,
# diagnostics on stderr, exit status; validation errors with their paths;
# robots.txt and the SSRF guard honoured.
set -euo pipefail
SRC=${SCRAPR_SOURCE_DIR:?SCRAPR_SOURCE_DIR is not set}
BIN=${SCRAPR_BIN_DIR:?SCRAPR_BIN_DIR is not set}/scrapr-scraper
SITE=$SRC/tests/fixtures/site
TMP=$(mktemp -d)
SITE_PID=
cleanup() {
    if [ -n "$SITE_PID" ]; then kill "$SITE_PID" 2>/dev/null || true; wait "$SITE_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 "$SITE/server.py" >"$TMP/port" 2>"$TMP/site.log" &
SITE_PID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(head -1 "$TMP/port")
[ -n "$PORT" ] || fail "fixture site did not start: $(cat "$TMP/site.log")"
BASE="http://127.0.0.1:$PORT"

config() { sed "s|{{BASE}}|$BASE|g" "$SITE/configs/$1.json" >"$TMP/$1.json"; echo "$TMP/$1.json"; }

# 1. exact items for list pages + follows + pagination, JSON API, a cycle, malformed HTML
for c in quotes api cycle malformed; do
    cfg=$(config "$c")
    rc=0
    SCRAPR_ALLOW_PRIVATE_TARGETS=1 "$BIN" --once "$cfg" >"$TMP/$c.out" 2>"$TMP/$c.err" || rc=$?
    [ "$rc" = 0 ] || fail "$c: exit $rc: $(cat "$TMP/$c.err")"
    sed "s|{{BASE}}|$BASE|g" "$SITE/expected/$c.jsonl" >"$TMP/$c.want"
    diff -u "$TMP/$c.want" "$TMP/$c.out" || fail "$c: items differ"
    grep -q "^run: .*items=$(wc -l <"$TMP/$c.want")" "$TMP/$c.err" || fail "$c: no run summary: $(cat "$TMP/$c.err")"
    echo "ok $c ($(wc -l <"$TMP/$c.out") items)"
done
grep -q "follows fetched=5 failed=0" "$TMP/quotes.err" || fail "quotes: each author page should be fetched once: $(head -1 "$TMP/quotes.err")"
grep -Eq "^field text +matches=7 +filled=7 +fill_rate=100.0%" "$TMP/quotes.err" || fail "quotes: text diagnostics: $(cat "$TMP/quotes.err")"
grep -Eq "^field born +" "$TMP/quotes.err" || fail "quotes: follow field diagnostics missing"
grep -q "pages fetched=3 .*cycles=1" "$TMP/cycle.err" || fail "cycle: not detected: $(head -1 "$TMP/cycle.err")"
grep -Eq "^field missing +matches=0 +filled=0 +fill_rate=  0.0%" "$TMP/malformed.err" || fail "malformed: missing field diagnostics"
echo "ok diagnostics"

# 2. an invalid configuration: every problem with its path, exit 1, nothing on stdout
rc=0
"$BIN" --once "$(config invalid)" >"$TMP/invalid.out" 2>"$TMP/invalid.err" || rc=$?
[ "$rc" = 1 ] || fail "invalid: exit $rc"
[ ! -s "$TMP/invalid.out" ] || fail "invalid: printed items"
for p in '$.collection:' '$.ttl:' '$.limt:' '$.source.url:' '$.scope:' '$.fields.born.follow:'; do
    grep -qF "$p" "$TMP/invalid.err" || fail "invalid: no problem for $p: $(cat "$TMP/invalid.err")"
done
echo "ok invalid"

# 3. robots.txt disallows the source page: exit 1, the page never requested
rc=0
SCRAPR_ALLOW_PRIVATE_TARGETS=1 "$BIN" --once "$(config robots)" >"$TMP/robots.out" 2>"$TMP/robots.err" || rc=$?
[ "$rc" = 1 ] || fail "robots: exit $rc"
grep -q "robots_denied" "$TMP/robots.err" || fail "robots: $(cat "$TMP/robots.err")"
[ "$(curl -s "$BASE/hits?path=/private/secret")" = '{"hits": 0}' ] || fail "robots: /private/secret was requested"
echo "ok robots"

# 4. without SCRAPR_ALLOW_PRIVATE_TARGETS the loopback site is refused
rc=0
env -u SCRAPR_ALLOW_PRIVATE_TARGETS "$BIN" --once "$TMP/quotes.json" >"$TMP/ssrf.out" 2>"$TMP/ssrf.err" || rc=$?
[ "$rc" = 1 ] || fail "ssrf: exit $rc"
grep -q "non-public address 127.0.0.1" "$TMP/ssrf.err" || fail "ssrf: $(cat "$TMP/ssrf.err")"
[ ! -s "$TMP/ssrf.out" ] || fail "ssrf: printed items"
echo "ok ssrf"

# 5. an unreadable file and broken JSON are reported, not crashed on
rc=0
"$BIN" --once "$TMP/nope.json" 2>"$TMP/nofile.err" || rc=$?
[ "$rc" = 1 ] || fail "missing file: exit $rc"
printf '{"collection": ' >"$TMP/broken.json"
rc=0
"$BIN" --once "$TMP/broken.json" 2>"$TMP/broken.err" || rc=$?
[ "$rc" = 1 ] || fail "broken json: exit $rc"
grep -q "broken.json:1:" "$TMP/broken.err" || fail "broken json: $(cat "$TMP/broken.err")"
echo "ok bad files"
